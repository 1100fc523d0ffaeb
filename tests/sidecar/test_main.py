"""``natroute-sidecar`` as a person starts it: one line naming the setting, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

_SIDECAR = str(Path(sys.executable).parent / "natroute-sidecar")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_SIDECAR, "--registry-url", "http://127.0.0.1:9", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_a_taken_admin_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("--identity", str(tmp_path / "id.json"), "--http-listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"natroute-sidecar: cannot listen on 127.0.0.1:{port} (--http-listen / "
        "NATROUTE_SIDECAR_HTTP_LISTEN): Address already in use; free the port or choose "
        "another address"
    )
    assert "Traceback" not in result.stderr


def test_a_taken_data_plane_port_fails_before_registering(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = _run(
            "--identity",
            str(tmp_path / "id.json"),
            "--http-listen",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--app-listen",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 2
    assert "cannot bind app_listen" in result.stderr
    assert "--app-listen / NATROUTE_SIDECAR_APP_LISTEN" in result.stderr
    assert "registered" not in result.stderr  # nothing was registered first
    assert "Traceback" not in result.stderr


def test_an_unwritable_identity_names_the_setting() -> None:
    result = _run("--identity", "/proc/natroute/identity.json", "--http-listen", "off")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert line.startswith(
        "natroute-sidecar: cannot use the identity file /proc/natroute/identity.json "
        "(--identity / NATROUTE_SIDECAR_IDENTITY): "
    )
    assert line.endswith("; choose a writable path")


def test_bad_values_name_the_flag_and_the_variable() -> None:
    result = _run("--tick-interval", "-1", env={"NATROUTE_SIDECAR_LISTEN": "nope"})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "natroute-sidecar: invalid settings:"
    assert "--listen / NATROUTE_SIDECAR_LISTEN: missing port in address 'nope'" in lines[1]
    assert lines[2].startswith("--tick-interval / NATROUTE_SIDECAR_TICK_INTERVAL:")
