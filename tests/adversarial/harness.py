"""Real natroute processes on 127.0.0.1 for the hostile-input suite.

Every service runs as its own console script (``natroute-registry``,
``natroute-beacon``, ``natroute-sidecar``) bound to port 0; the harness reads
the bound addresses from the processes' JSON log lines, so nothing uses a fixed
port. Resource use is read from the process itself (``/proc/PID/status`` for
memory and threads, the admin API's ``/metrics`` for counters), never from
inside the test process.

A :class:`World` is a registry in dev mode, two beacons gossiping through it
and two sidecars; :class:`Stream` is the legitimate application traffic
between the sidecars that every attack test expects to keep flowing::

    with World.start(tmp_path) as world, Stream(world.sidecars[0], world.sidecars[1]) as stream:
        stream.wait_delivered(20, timeout=10)
        ...attack...
        stream.wait_delivered(20, timeout=10)   # still delivering afterwards

Every wait has a bound and raises :class:`HarnessError` with the process logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute.registry.client import RegistryClient
from natroute.routing.addr import split_host_port
from natroute.routing.types import Addr
from natroute.sidecar.appclient import decode_app, encode_app
from natroute.sidecar.crypto import PeerCipher

__all__ = [
    "ADMIN_TOKEN",
    "FAST_SIDECAR_FLAGS",
    "HarnessError",
    "Process",
    "RogueNode",
    "SidecarProcess",
    "Stream",
    "World",
    "metric_value",
    "parse_metrics",
    "spoofed_udp",
]

#: The sidecars' admin token (strong enough for every token rule).
ADMIN_TOKEN = "adversarial-admin-token-7f3a9c2e"
#: Sidecar flags that keep loopback worlds quick (seconds, like the e2e suite's).
FAST_SIDECAR_FLAGS = (
    "--refresh-jitter",
    "0",
    "--discover-timeout",
    "1",
    "--tick-interval",
    "0.1",
    "--beacon-keepalive-interval",
    "1",
    "--heartbeat-interval",
    "5",
)


class HarnessError(RuntimeError):
    """A process did not start, answer or log what was expected in time."""


def _console_script(name: str) -> str:
    """The path of a console script of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise HarnessError(f"console script {name} not found (is natroute installed?)")
    return found


class Process:
    """One natroute service process whose JSON log lines are collected.

    Args:
        name: a short name for messages.
        argv: the command (the console script first).
        env: extra environment variables.
    """

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self._env = {**os.environ, **(env or {})}
        self._lines: list[str] = []
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._popen: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The process ID."""
        assert self._popen is not None, "not started"
        return self._popen.pid

    def start(self) -> Self:
        """Start the process; its stderr (the JSON log) is read in a thread."""
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self._env,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._popen is not None
        assert self._popen.stderr is not None
        for raw in self._popen.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self._cond:
                self._lines.append(line)
                if len(self._lines) > 20_000:  # bounded: a flood of debug logs
                    del self._lines[:10_000]
                if isinstance(event, dict):
                    self._events.append(event)
                    if len(self._events) > 20_000:
                        del self._events[:10_000]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def returncode(self) -> int | None:
        """The exit status, or None while running."""
        return None if self._popen is None else self._popen.poll()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process's output."""
        with self._cond:
            return "\n".join(self._lines[-lines:])

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every logged event called ``name`` so far."""
        with self._cond:
            return [e for e in self._events if e.get("event") == name]

    def wait_event(
        self, name: str, timeout: float, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The first logged event called ``name`` (matching ``where``).

        Raises:
            HarnessError: the process exited or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events:
                    if event.get("event") == name and (where is None or where(event)):
                        return event
                if self.returncode() is not None:
                    raise HarnessError(
                        f"{self.name} exited ({self.returncode()}) before {name}:\n"
                        f"{self.log_tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"{self.name}: no {name} in {timeout} s:\n{self.log_tail()}")
                self._cond.wait(min(left, 0.2))

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself; its exit status.

        Raises:
            HarnessError: it still runs after ``timeout`` seconds.
        """
        assert self._popen is not None
        try:
            code = self._popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"{self.name} still runs after {timeout} s") from exc
        self._close_pipe()
        return code

    def output(self) -> str:
        """Everything the process wrote to stderr so far."""
        with self._cond:
            return "\n".join(self._lines)

    def rss_bytes(self) -> int:
        """Resident memory, from ``/proc/PID/status``."""
        return _proc_status(self.pid, "VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        """The highest resident memory the process ever had (``VmHWM``)."""
        return _proc_status(self.pid, "VmHWM") * 1024

    def threads(self) -> int:
        """OS threads of the process."""
        return _proc_status(self.pid, "Threads")

    def pause(self) -> None:
        """SIGSTOP: the process hangs (sockets stay open, nothing answers)."""
        assert self._popen is not None
        self._popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self._popen is not None
        self._popen.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is not None:
            self._close_pipe()
            return
        popen.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
        if self._popen is not None and self._popen.stderr is not None:
            self._popen.stderr.close()


def _proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise HarnessError(f"no {key} in /proc/{pid}/status")


def _addr(text: str) -> Addr:
    host, port = split_host_port(text)
    return host, port


def http_get(url: str, timeout: float = 5.0, token: str = "") -> tuple[int, bytes]:
    """GET ``url``; the status and body (4xx/5xx included)."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition → ``{"name{labels}": value}`` (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def metric_value(metrics: dict[str, float], name: str, **labels: str) -> float:
    """One sample of :func:`parse_metrics` output (0 when absent)."""
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        key = f"{name}{{{inner}}}"
        if key in metrics:
            return metrics[key]
        # label order as the exporter wrote it
        for sample, value in metrics.items():
            if sample.startswith(name + "{") and all(
                f'{k}="{v}"' in sample for k, v in labels.items()
            ):
                return value
        return 0.0
    return metrics.get(name, 0.0)


@dataclass
class RegistryProcess:
    """A registry in dev mode (loopback endpoints allowed) on 127.0.0.1:0."""

    process: Process
    url: str
    token: str = "dev"


@dataclass
class BeaconProcess:
    """A beacon on 127.0.0.1:0 (UDP) with its admin HTTP on 127.0.0.1:0."""

    process: Process
    udp_addr: Addr
    http_url: str

    @property
    def hostport(self) -> str:
        """``host:port`` of the UDP socket."""
        return f"{self.udp_addr[0]}:{self.udp_addr[1]}"

    def status(self) -> dict[str, Any]:
        """``GET /v1/status``."""
        code, body = http_get(self.http_url + "/v1/status")
        if code != 200:
            raise HarnessError(f"{self.process.name} /v1/status: {code} {body[:200]!r}")
        result: dict[str, Any] = json.loads(body)
        return result


@dataclass
class SidecarProcess:
    """A sidecar and the addresses it logged once ready."""

    process: Process
    node_id: int
    peer_addr: Addr
    app_addr: Addr
    admin_url: str

    def get(self, path: str) -> Any:
        """``GET`` an admin API path as JSON.

        Raises:
            HarnessError: not a 200 answer.
        """
        code, body = http_get(self.admin_url + path, token=ADMIN_TOKEN)
        if code != 200:
            raise HarnessError(f"{self.process.name} {path}: {code} {body[:300]!r}")
        return json.loads(body)

    def metrics(self) -> dict[str, float]:
        """The sidecar's ``/metrics``, parsed."""
        code, body = http_get(self.admin_url + "/metrics")
        if code != 200:
            raise HarnessError(f"{self.process.name} /metrics: {code}")
        return parse_metrics(body.decode())


@dataclass
class World:
    """A registry, beacons and sidecars as separate processes on loopback."""

    directory: Path
    registry: RegistryProcess
    beacons: list[BeaconProcess] = field(default_factory=list)
    sidecars: list[SidecarProcess] = field(default_factory=list)
    _processes: list[Process] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        directory: Path,
        *,
        beacons: int = 2,
        sidecars: int = 2,
        sidecar_flags: Sequence[str] = (),
        beacon_flags: Sequence[str] = (),
        registry_flags: Sequence[str] = (),
    ) -> Iterator[World]:
        """Start the world; every process is stopped on exit, also after a failure."""
        processes: list[Process] = []
        try:
            registry = _start_registry(directory, processes, registry_flags)
            world = cls(directory, registry, _processes=processes)
            for i in range(beacons):
                world.beacons.append(_start_beacon(world, i + 1, processes, beacon_flags))
            for i in range(sidecars):
                world.add_sidecar(f"sidecar-{chr(ord('a') + i)}", sidecar_flags)
            yield world
        finally:
            for process in reversed(processes):
                process.stop()

    def add_sidecar(self, name: str, flags: Sequence[str] = ()) -> SidecarProcess:
        """Start one more sidecar and wait until it is ready."""
        identity = self.directory / name / "identity.json"
        argv = [
            _console_script("natroute-sidecar"),
            "--listen",
            "127.0.0.1:0",
            "--app-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN_TOKEN,
            "--identity",
            str(identity),
            "--registry-url",
            self.registry.url,
            "--beacons",
            ",".join(b.hostport for b in self.beacons),
            "--log-level",
            "info",
            *FAST_SIDECAR_FLAGS,
            *flags,
        ]
        process = Process(name, argv).start()
        self._processes.append(process)
        admin = process.wait_event("admin_listening", 20)
        starting = process.wait_event("sidecar_starting", 20)
        ready = process.wait_event("sidecar_ready", 30)
        sidecar = SidecarProcess(
            process,
            node_id=int(ready["node_id"]),
            peer_addr=_addr(starting["listen"]),
            app_addr=_addr(ready["app"]),
            admin_url=f"http://{admin['addr']}",
        )
        self.sidecars.append(sidecar)
        return sidecar


def _start_registry(
    directory: Path, processes: list[Process], flags: Sequence[str]
) -> RegistryProcess:
    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "registry.port"
    argv = [
        _console_script("natroute-registry"),
        "--http-listen",
        "127.0.0.1:0",
        "--db",
        str(directory / "registry.db"),
        "--dev",
        "--port-file",
        str(port_file),
        "--log-level",
        "info",
        *flags,
    ]
    process = Process("registry", argv).start()
    processes.append(process)
    event = process.wait_event("registry_listening", 20)
    url = f"http://127.0.0.1:{int(event['port'])}"
    _wait_http(url + "/readyz", process, 20)
    return RegistryProcess(process, url)


def _start_beacon(
    world: World, beacon_id: int, processes: list[Process], flags: Sequence[str]
) -> BeaconProcess:
    argv = [
        _console_script("natroute-beacon"),
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--beacon-id",
        str(beacon_id),
        "--registry-url",
        world.registry.url,
        "--registry-token",
        world.registry.token,
        "--gossip-interval",
        "1",
        "--register-interval",
        "2",
        "--log-level",
        "info",
        *flags,
    ]
    process = Process(f"beacon-{beacon_id}", argv).start()
    processes.append(process)
    event = process.wait_event("beacon_started", 20)
    beacon = BeaconProcess(process, _addr(event["udp_addr"]), f"http://{event['http_addr']}")
    _wait_http(beacon.http_url + "/readyz", process, 20)
    return beacon


def _wait_http(url: str, process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            code, _ = http_get(url, timeout=2)
        except OSError:
            code = 0
        if code == 200:
            return
        if process.returncode() is not None or time.monotonic() > deadline:
            raise HarnessError(f"{url} not ready ({code}):\n{process.log_tail()}")
        time.sleep(0.05)


class Stream:
    """Application traffic a → b through the sidecars' data planes, counted at b.

    A sender thread sends ``rate`` datagrams per second (sequence numbers) and
    a receiver thread counts those that arrive from a's node ID.
    """

    def __init__(self, a: SidecarProcess, b: SidecarProcess, rate: float = 50.0) -> None:
        self.a, self.b = a, b
        self.rate = rate
        self.sent = 0
        self.delivered = 0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._tx.bind(("127.0.0.1", 0))
        self._rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._rx.bind(("127.0.0.1", 0))
        self._rx.settimeout(0.2)
        self._threads = [
            threading.Thread(target=self._send, name="stream-send", daemon=True),
            threading.Thread(target=self._recv, name="stream-recv", daemon=True),
        ]

    def __enter__(self) -> Stream:
        # b delivers to the address its application last sent from: announce ours.
        self._rx.sendto(encode_app(self.a.node_id, b"hello"), self.b.app_addr)
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._tx.close()
        self._rx.close()

    def _send(self) -> None:
        interval = 1.0 / self.rate
        while not self._stop.is_set():
            self._tx.sendto(encode_app(self.b.node_id, b"seq-%d" % self.sent), self.a.app_addr)
            self.sent += 1
            self._stop.wait(interval)

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._rx.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            src, payload = decode_app(data)
            if src == self.a.node_id and payload.startswith(b"seq-"):
                with self._cond:
                    self.delivered += 1
                    self._cond.notify_all()

    def wait_delivered(self, count: int, timeout: float) -> None:
        """Wait until ``count`` more datagrams have arrived at b.

        Raises:
            HarnessError: they did not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self.delivered + count
            while self.delivered < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(
                        f"stream {self.a.process.name}->{self.b.process.name}: "
                        f"{self.delivered - (target - count)}/{count} delivered in {timeout} s "
                        f"(sent {self.sent})\n{self.a.process.log_tail(15)}\n"
                        f"{self.b.process.log_tail(15)}"
                    )
                self._cond.wait(min(left, 0.2))


class RogueNode:
    """A node the test controls: real keys, registered at the registry, its own socket.

    It can register any endpoint and candidates it likes and seal authenticated
    frames to a sidecar with any send counter, which is exactly what a hostile
    but registered peer can do.

    Args:
        registry_url: the world's registry.
    """

    def __init__(self, registry_url: str) -> None:
        self.ed25519 = Ed25519PrivateKey.generate()
        self.x25519 = X25519PrivateKey.generate()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        name = self.sock.getsockname()
        self.addr: Addr = (str(name[0]), int(name[1]))
        self._registry = RegistryClient(registry_url)
        self.node_id = 0

    def __enter__(self) -> RogueNode:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.sock.close()
        self._registry.close()

    def register(self, endpoint: str | None = None, lan_addrs: Sequence[str] = ()) -> int:
        """Register with ``endpoint`` (default: our own socket) and LAN addresses."""
        reg = self._registry.register(
            self.ed25519,
            x25519_public_key=self.x25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            endpoint=endpoint if endpoint is not None else f"{self.addr[0]}:{self.addr[1]}",
            lan_addrs=list(lan_addrs),
        )
        self.node_id = reg.node_id
        return self.node_id

    def cipher_to(self, sidecar: SidecarProcess, first_counter: int = 0) -> PeerCipher:
        """A frame cipher to ``sidecar`` (its key from the registry), epoch 1."""
        peer = self._registry.resolve(sidecar.node_id)
        assert peer.x25519_public_key is not None
        return PeerCipher(
            self.node_id, self.x25519, sidecar.node_id, peer.x25519_public_key, 1, first_counter
        )

    def send(self, data: bytes, addr: Addr) -> None:
        """One datagram from our socket."""
        self.sock.sendto(data, addr)


def spoofed_udp(src: Addr, dst: Addr, payload: bytes) -> None:
    """Send one IPv4 UDP datagram with a forged source address (needs root: a raw socket).

    Raises:
        PermissionError: not allowed to open a raw socket.
    """
    length = 8 + len(payload)
    udp = struct.pack("!HHHH", src[1], dst[1], length, 0) + payload  # checksum 0: none (IPv4)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + length,
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src[0]),
        socket.inet_aton(dst[0]),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(header + udp, (dst[0], 0))
