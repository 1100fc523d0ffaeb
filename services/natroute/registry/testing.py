"""Test and benchmark helpers: a real ``natroute-registry`` process on 127.0.0.1.

``registry_process`` starts the console script (``--http-listen 127.0.0.1:0
--port-file``), waits until the port file appears and yields the running
process with its base URL; on exit the process is killed (SIGKILL) unless the
caller stopped it. The environment is the caller's minus every
``NATROUTE_REGISTRY_*`` variable, so only the given flags and ``env`` count::

    with registry_process(tmp_path, "--dev") as reg:
        httpx.get(f"{reg.url}/healthz")
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .settings import ENV_PREFIX

__all__ = ["RegistryProcess", "registry_command", "registry_process", "rss_bytes"]


@dataclass(frozen=True, slots=True)
class RegistryProcess:
    """A started registry: the process, its base URL and its log file."""

    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        """The process ID (for ``/proc`` readings)."""
        return self.popen.pid


def registry_command() -> list[str]:
    """The ``natroute-registry`` console script beside this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("natroute-registry")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "natroute.registry.main"]


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(extra or {})
    return env


@contextmanager
def registry_process(
    directory: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    name: str = "registry",
    timeout: float = 20.0,
) -> Iterator[RegistryProcess]:
    """Run ``natroute-registry`` on 127.0.0.1 port 0 with ``args``.

    Args:
        directory: where the port file and the log (``<name>.log``) go.
        args: extra flags (``--db``, ``--token``/``--dev``, ...).
        env: extra environment variables.
        name: distinguishes several processes sharing ``directory``.
        timeout: seconds to wait for the port file.

    Raises:
        RuntimeError: the process exited or did not listen in time (the
            message carries its log).
    """
    port_file = directory / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_path = directory / f"{name}.log"
    cmd = [
        *registry_command(),
        "--http-listen",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
        *args,
    ]
    with log_path.open("ab") as log:
        popen = subprocess.Popen(cmd, stdout=log, stderr=log, env=_env(env))
    try:
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"registry did not start: {log_path.read_text()}")
            time.sleep(0.02)
        port = int(port_file.read_text())
        yield RegistryProcess(popen, f"http://127.0.0.1:{port}", log_path)
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(10)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
