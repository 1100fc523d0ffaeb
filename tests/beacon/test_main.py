"""The console script in a child process: starts, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import httpx
import pytest

from natroute.routing.addr import split_host_port

from .udpclient import UdpClient


@pytest.mark.asyncio
async def test_main_serves_and_stops_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "natroute.beacon.main",
        "--listen",
        "127.0.0.1:0",
        "--http",
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
