"""The console script in a child process: starts, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from natroute.routing.addr import split_host_port
from natroute.routing.wire import Discover, encode_message

from .udpclient import UdpClient


@pytest.mark.asyncio
async def test_main_serves_and_stops_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "natroute.beacon.main",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--beacon-id",
        "31",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stderr.readline()
                assert line, "beacon exited before starting"
                record = json.loads(line)
                if record["event"] == "beacon_started":
                    break
        assert record["beacon_id"] == 31
        udp = split_host_port(record["udp_addr"])
        with UdpClient() as client:
            assert await client.register(5, udp) == client.addr
        async with httpx.AsyncClient(base_url=f"http://{record['http_addr']}") as http:
            status = (await http.get("/v1/status")).json()
            assert status["nodes"] == 1
            assert (await http.get("/readyz")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = await proc.stderr.read()
            assert await proc.wait() == 0
        events = [json.loads(line)["event"] for line in rest.splitlines()]
        assert "beacon_stopped" in events
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_main_rejects_invalid_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "natroute.beacon.main", "--listen", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr


@pytest.mark.asyncio
async def test_discovers_during_start_up_get_exactly_one_reply_each() -> None:
    """The early responder answers before the settings load; nothing is answered twice."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "natroute.beacon.main",
        "--listen",
        f"127.0.0.1:{port}",
        "--http-listen",
        "127.0.0.1:0",
        "--discover-rate",
        "0",  # every discover of this test is answered, none rate-limited
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        beacon = ("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        with UdpClient() as first, UdpClient() as client:
            async with asyncio.timeout(30):
                while True:  # until the first reply: the beacon answers
                    first.send(encode_message(Discover(8)), beacon)
                    with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                        async with asyncio.timeout(0.01):
                            await loop.sock_recv(first.sock, 100)
                            break
                # From now on every discover gets exactly one reply, whoever answers it.
                sent = 0
                started = asyncio.ensure_future(proc.stderr.readline())
                while True:
                    client.send(encode_message(Discover(9)), beacon)
                    sent += 1
                    await asyncio.sleep(0.01)
                    if started.done():
                        if json.loads(started.result())["event"] == "beacon_started":
                            record = json.loads(started.result())
                            break
                        started = asyncio.ensure_future(proc.stderr.readline())
            # Replies all look alike: prove none is in flight with another socket's
            # round trip (the beacon answers in arrival order), after dropping the
            # replies to the probes of the first phase.
            with contextlib.suppress(BlockingIOError):
                while True:
                    first.sock.recv(100)
            await first.barrier(beacon)
            replies = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    client.sock.recv(100)
                    replies += 1
            assert replies == sent
            async with httpx.AsyncClient(base_url=f"http://{record['http_addr']}") as http:
                assert (await http.get("/v1/status")).json()["nodes"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
