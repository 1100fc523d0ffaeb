"""The service's periodic tasks run on their own (short intervals, real time)."""

from __future__ import annotations

import pytest

from natroute.beacon.testing import running_beacon, test_settings
from natroute.routing.addr import format_addr

from .test_registry import FakeRegistry
from .udpclient import UdpClient, wait_until


@pytest.mark.asyncio
async def test_periodic_gossip_sweep_and_registration() -> None:
    fake = FakeRegistry()
    async with running_beacon(beacon_id=2) as other:
        fake.beacons = [{"id": 2, "addr": format_addr(other.udp_addr)}]
        settings = test_settings(
            beacon_id=1,
            registry_url="http://registry",
            registry_token="t0k3n",
            gossip_interval=0.02,
            sweep_interval=0.02,
            register_interval=0.02,
            node_ttl=0.05,
        )
        async with fake.client() as http, running_beacon(settings, http_client=http) as beacon:
            with UdpClient() as a:
                await a.register(5, beacon.udp_addr)
            await wait_until(lambda: len(fake.registered) >= 2)
            await wait_until(lambda: beacon.snapshot().peers == (format_addr(other.udp_addr),))
            await wait_until(lambda: beacon.snapshot().syncs_sent >= 1)
            await wait_until(lambda: beacon.snapshot().expired_nodes == 1)
            assert beacon.snapshot().nodes == 0
    assert fake.registered[0] == {"beacon_id": 1, "addr": format_addr(beacon.udp_addr)}
