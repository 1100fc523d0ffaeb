"""natroute-probe: its core on fed times, and two probes against live sidecars on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natroute._service.run import EmbeddedHttpServer
from natroute.registry.settings import DEV_TOKEN
from natroute.routing.addr import format_addr
from natroute.sidecar.admin import create_app
from natroute.sidecar.probe import (
    PROBE_LEN,
    Probe,
    ProbeCore,
    ProbeSettings,
    decode_probe,
    encode_probe,
    main,
)
from natroute.sidecar.service import Sidecar
from natroute.sidecar.testing import Stack, running_sidecar, running_stack

from .helpers import node, wait_for


def test_payload_round_trips_and_rejects_other_bytes() -> None:
    payload = encode_probe(7, 12.345678901)

    assert len(payload) == PROBE_LEN
    seq, sent_at = decode_probe(payload)
    assert seq == 7
    assert sent_at == pytest.approx(12.345678901, abs=1e-9)
    for bad in (b"", payload[:-1], payload + b"x", b"X" + payload[1:]):
        with pytest.raises(ValueError, match="not a probe"):
            decode_probe(bad)


@given(st.binary(max_size=40))
def test_any_bytes_decode_or_raise_value_error(data: bytes) -> None:
    try:
        seq, sent_at = decode_probe(data)
    except ValueError:
        return
    assert encode_probe(seq, sent_at) == data


def test_a_new_peer_is_probed_fast_then_slowly() -> None:
    core = ProbeCore(interval=0.1, burst=1.0, slow_interval=1.0)
    core.set_peers([5], now=100.0)

    sends = [t for t in (100.0 + i / 100 for i in range(300)) if core.due(t)]

    fast = [t for t in sends if t < 101.0]
    slow = [t for t in sends if t >= 101.0]
    assert len(fast) == 10
    assert len(slow) == 2  # at about 101.0 and 102.0
    assert core.sent == 12


def test_peers_come_and_go_and_keep_their_sequence() -> None:
    core = ProbeCore(interval=0.5, burst=10.0)
    core.set_peers([1, 2, 2], now=0.0)
    assert [p for p, _ in core.due(0.0)] == [1, 2]
    core.set_peers([2, 3], now=0.2)

    due = dict(core.due(0.5))

    assert set(due) == {2, 3}
    assert decode_probe(due[2])[0] == 1  # its second datagram
    assert decode_probe(due[3])[0] == 0
    assert core.next_due() == pytest.approx(1.0)
    core.set_peers([], now=1.0)
    assert core.next_due() is None


def test_peer_list_is_capped() -> None:
    core = ProbeCore(max_peers=3)
    core.set_peers(range(10), now=0.0)

    assert core.peers == [0, 1, 2]


def test_first_delivery_is_reported_once_and_strangers_are_dropped() -> None:
    core = ProbeCore(max_peers=1)

    first = core.received(9, encode_probe(3, 10.0), now=10.25)
    again = core.received(9, encode_probe(4, 10.5), now=10.55)
    other = core.received(8, encode_probe(0, 10.0), now=10.3)
    garbage = core.received(9, b"hello", now=11.0)

    assert first is not None
    assert (first.src, first.seq) == (9, 3)
    assert first.delay_ms == pytest.approx(250.0)
    assert again is None
    assert other is None
    assert garbage is None
    report = core.report()
    assert report["received"] == {"9": 2}
    assert report["min_delay_ms"] == {"9": pytest.approx(50.0)}
    assert report["dropped"] == 2


@contextlib.asynccontextmanager
async def probe_beside(stack: Stack, name: str) -> AsyncIterator[tuple[Sidecar, Probe]]:
    """A sidecar with its admin API and a probe delivering to a fixed port."""
    settings = ProbeSettings(
        registry_url=stack.registry_url,
        registry_token=DEV_TOKEN,
        listen="127.0.0.1:0",
        interval=0.05,
        peer_refresh_interval=0.1,
        report_interval=0.2,
    )
    probe = Probe(settings)
    bound = probe.app.sock.getsockname()
    sidecar_settings = stack.sidecar_settings(name, app_deliver=format_addr((bound[0], bound[1])))
    async with running_sidecar(sidecar_settings) as sidecar:
        http = EmbeddedHttpServer(create_app(sidecar))
        host, port = await http.start("127.0.0.1:0")
        assert sidecar.app_addr is not None
        probe.settings = settings.model_copy(update={"admin_url": f"http://{host}:{port}"})
        probe.app.sidecar = sidecar.app_addr
        try:
            yield sidecar, probe
        finally:
            await http.stop()


@pytest.mark.asyncio
async def test_two_probes_measure_their_first_deliveries_through_sidecars(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path) as stack,
        probe_beside(stack, "a") as (sidecar_a, a),
        probe_beside(stack, "b") as (sidecar_b, b),
    ):
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop.wait())) for p in (a, b)]
        try:
            await wait_for(
                lambda: all(p.core.report()["heard_from"] == 1 for p in (a, b)),
                "each probe to hear the other",
                15,
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    assert a.node_id == node(sidecar_a).node_id
    assert a.core.peers == [node(sidecar_b).node_id]
    assert b.core.peers == [a.node_id]
    received = b.core.report()["received"]
    assert isinstance(received, dict)
    assert received[str(a.node_id)] >= 1
    assert a.core.sent >= 1


def test_probe_main_refuses_bad_settings() -> None:
    assert main(["--interval", "0"]) == 2
