"""Every console script as a person starts it: --version, --help, and failures in one line.

Subprocess tests of the shared settings layer (:mod:`natroute._service.cli`)
through each daemon, plus the ``natroute`` command line's environment names.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import ClassVar

import pytest

_BIN = Path(sys.executable).parent
DAEMONS = (
    "natroute-beacon",
    "natroute-registry",
    "natroute-sidecar",
    "natroute-demo",
    "natroute-probe",
)
PREFIX = {
    "natroute-beacon": "NATROUTE_BEACON_",
    "natroute-registry": "NATROUTE_REGISTRY_",
    "natroute-sidecar": "NATROUTE_SIDECAR_",
    "natroute-demo": "NATROUTE_DEMO_",
    "natroute-probe": "NATROUTE_PROBE_",
}
# A number setting of each daemon, for a malformed value.
NUMBER = {
    "natroute-beacon": "node_ttl",
    "natroute-registry": "node_ttl",
    "natroute-sidecar": "stream_after",
    "natroute-demo": "interval",
    "natroute-probe": "interval",
}


def _run(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NATROUTE_")}
    return subprocess.run(
        [str(_BIN / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean | (env or {}),
        check=False,
    )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("script", ["natroute", *DAEMONS])
def test_every_script_prints_its_version(script: str) -> None:
    result = _run(script, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"natroute {version('natroute')}\n"


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """Each daemon's ``--help``."""
    out = {}
    for script in DAEMONS:
        result = _run(script, "--help")
        assert result.returncode == 0, result.stderr
        out[script] = result.stdout
    return out


@pytest.mark.parametrize("script", DAEMONS)
def test_help_is_clean(script: str, helps: dict[str, str]) -> None:
    text = helps[script]
    assert text.startswith(f"usage: {script} [options]\n\n{script.replace('-', ' ')}: ")
    for wrong in ("SecretStr", "{bool,null}", "(default: )", "``", "null", "None", "%("):
        assert wrong not in text, wrong
    assert not re.search(r"\bstr\b", text)
    for option in ("--version", "--config FILE", "--log-level", "--log-format {json,text}"):
        assert option in text
    assert f"{PREFIX[script]}<OPTION>" in " ".join(text.split())
    options = re.split(r"\n(?=  --)", text.split("\noptions:\n", 1)[1].split("\n\n")[0])
    assert len(options) > 5
    for block in options[1:]:  # after -h: each option says what it is
        name, _, rest = block.strip().partition(" ")
        assert rest.strip(), f"{script} {name} has no help"


def test_daemons_share_option_names(helps: dict[str, str]) -> None:
    for script in ("natroute-beacon", "natroute-registry", "natroute-sidecar"):
        assert "--http-listen HOST:PORT" in helps[script]
    for script in ("natroute-beacon", "natroute-sidecar", "natroute-demo", "natroute-probe"):
        assert "--registry-url URL" in helps[script]
        assert "--listen HOST:PORT" in helps[script]
    for old in ("--http ", "--admin-listen", "--registry ", "--bind ", "--admin "):
        assert not any(old in text for text in helps.values()), old


@pytest.mark.parametrize("script", DAEMONS)
def test_a_malformed_variable_names_the_variable_and_the_flag(script: str) -> None:
    field = NUMBER[script]
    env = PREFIX[script] + field.upper()
    result = _run(script, env={env: "soon"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{script}: invalid settings:",
        f"--{field.replace('_', '-')} / {env}: Input should be a valid number, unable to parse "
        f"string as a number (got 'soon' from {env})",
    ]


@pytest.mark.parametrize("script", DAEMONS)
def test_a_bad_config_file_is_named(script: str, tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('log_level = "info"\nlog_levle = "debug"\n')
    result = _run(script, "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{script}: invalid settings:",
        f"--config / {PREFIX[script]}CONFIG {config}: unknown setting(s) log_levle (see --help)",
    ]


@contextmanager
def _taken_udp() -> Iterator[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{taken.getsockname()[1]}"


@pytest.mark.parametrize("script", ["natroute-beacon", "natroute-demo", "natroute-probe"])
def test_a_taken_udp_port_is_one_line(script: str) -> None:
    with _taken_udp() as busy:
        extra = ("--http-listen", "off") if script == "natroute-beacon" else ()
        result = _run(script, "--listen", busy, *extra)
    assert _last_line(result) == (
        f"{script}: cannot listen on {busy} (--listen / {PREFIX[script]}LISTEN): "
        "Address already in use; free the port or choose another address"
    )


def test_the_beacon_names_a_taken_http_port_and_bad_tls_files(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        result = _run("natroute-beacon", "--listen", "127.0.0.1:0", "--http-listen", busy)
    assert _last_line(result) == (
        f"natroute-beacon: cannot listen on {busy} (--http-listen / "
        "NATROUTE_BEACON_HTTP_LISTEN): Address already in use; free the port or choose "
        "another address"
    )
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    result = _run(
        "natroute-beacon", "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", "/no"
    )
    line = _last_line(result)
    assert line.startswith(
        f"natroute-beacon: cannot use the TLS certificate {cert} with key /no "
        "(--tls-cert / NATROUTE_BEACON_TLS_CERT): "
    )
    assert line.endswith("(--tls-key / NATROUTE_BEACON_TLS_KEY)")
    result = _run("natroute-beacon", "--tls-cert", str(cert))
    assert result.stderr.splitlines()[-1] == (
        "--tls-cert and --tls-key (NATROUTE_BEACON_TLS_CERT, NATROUTE_BEACON_TLS_KEY) go "
        "together: set both or neither"
    )


def test_a_daemon_runs_from_a_config_file_and_old_names_still_work(tmp_path: Path) -> None:
    config = tmp_path / "registry.yaml"
    port_file = tmp_path / "port"
    config.write_text(f"dev: true\ndb: {tmp_path / 'r.db'}\nport-file: {port_file}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        # NATROUTE_REGISTRY_LISTEN is --http-listen's former name: still read
        result = _run(
            "natroute-registry",
            env={"NATROUTE_REGISTRY_CONFIG": str(config), "NATROUTE_REGISTRY_LISTEN": busy},
        )
    lines = result.stderr.strip().splitlines()
    assert json.loads(lines[0]) | {"ts": ""} == {
        "ts": "",
        "level": "warning",
        "logger": "natroute._service.cli",
        "event": "setting_deprecated",
        "old": "NATROUTE_REGISTRY_LISTEN",
        "new": "NATROUTE_REGISTRY_HTTP_LISTEN",
    }
    assert _last_line(result).startswith(
        f"natroute-registry: cannot listen on {busy} (--http-listen / "
        "NATROUTE_REGISTRY_HTTP_LISTEN): "
    )
    assert (tmp_path / "r.db").exists()  # the file's db was opened first


# -- the operator's command line ------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization", "")))
        body = b'{"source": "registry"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _admin_api() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_reads_its_own_names_then_the_sidecars(tmp_path: Path) -> None:
    with _admin_api() as (port, seen):
        sidecar_env = {
            "NATROUTE_SIDECAR_HTTP_LISTEN": f"0.0.0.0:{port}",
            "NATROUTE_SIDECAR_ADMIN_TOKEN": "sidecar-token",
        }
        done = _run("natroute", "refresh", "--json", env=sidecar_env)
        assert done.returncode == 0, done.stderr
        assert seen[-1] == ("/v1/beacons/refresh", "Bearer sidecar-token")
        own = sidecar_env | {
            "NATROUTE_SIDECAR_HTTP_LISTEN": "127.0.0.1:1",
            "NATROUTE_ADMIN_URL": f"http://127.0.0.1:{port}",
            "NATROUTE_ADMIN_TOKEN": "cli-token",
        }
        done = _run("natroute", "refresh", "--json", env=own)
        assert done.returncode == 0, done.stderr
        assert seen[-1] == ("/v1/beacons/refresh", "Bearer cli-token")
        flags = ("--admin-url", f"http://127.0.0.1:{port}", "--admin-token", "flag-token")
        done = _run("natroute", "refresh", "--json", *flags, env=own)
        assert seen[-1] == ("/v1/beacons/refresh", "Bearer flag-token")
    usage = _run("natroute", "netcheck", env={"NATROUTE_SIDECAR_BEACONS": "", "X": "1"})
    assert usage.returncode == 2
    assert "netcheck needs --beacons or --registry-url" in usage.stderr
