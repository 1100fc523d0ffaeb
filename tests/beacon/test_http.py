"""Admin HTTP app: through ASGITransport and through a real uvicorn on port 0."""

from __future__ import annotations

import httpx
import pytest

from natroute._service.cli import StartupError
from natroute.beacon.admin import create_app
from natroute.beacon.config import BeaconConfig
from natroute.beacon.core import BeaconCore
from natroute.beacon.stats import BeaconSnapshot
from natroute.beacon.testing import running_beacon
from natroute.routing.wire import Discover, encode_message

from .fakes import FakeClock
from .udpclient import UdpClient


class CoreView:
    """A view over a bare core with a settable readiness."""

    def __init__(self) -> None:
        self.core = BeaconCore(BeaconConfig(beacon_id=5), wall_clock=FakeClock())
        self.ready = False

    def snapshot(self) -> BeaconSnapshot:
        return self.core.snapshot()


@pytest.mark.asyncio
async def test_endpoints_via_asgi_transport() -> None:
    view = CoreView()
    view.core.handle_datagram(encode_message(Discover(9)), ("192.0.2.1", 1000), 0.0)
    view.core.handle_datagram(b"\x0e", ("192.0.2.1", 1000), 0.0)
    transport = httpx.ASGITransport(app=create_app(view))
    async with httpx.AsyncClient(transport=transport, base_url="http://beacon") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        response = await client.get("/readyz")
        assert response.status_code == 503
        view.ready = True
        assert (await client.get("/readyz")).status_code == 200
        status = (await client.get("/v1/status")).json()
        assert status["beacon_id"] == 5
        assert status["nodes"] == 1
        assert status["strict"] is True
        assert status["gossip_peers"] == []
        assert status["counters"]["discovers"] == 1
        assert status["counters"]["received"] == 2
        assert status["drops"]["unknown_type"] == 1
        assert status["dropped_total"] == 1
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert "natroute_beacon_nodes 1.0" in text
        assert 'natroute_beacon_dropped_total{reason="unknown_type"} 1.0' in text
        assert "natroute_beacon_gossip_peers 0.0" in text
        assert "natroute_beacon_punches_coordinated_total 0.0" in text
        # A per-app registry: nothing from the global default registry leaks in;
        # the build and this process are described (natroute_build_info, process_*).
        assert "python_gc" not in text
        assert 'natroute_build_info{version="' in text
        assert "process_resident_memory_bytes" in text


@pytest.mark.asyncio
async def test_real_uvicorn_serves_admin_api() -> None:
    async with running_beacon(http_listen="127.0.0.1:0") as beacon:
        assert beacon.http_addr is not None
        host, port = beacon.http_addr
        with UdpClient() as a:
            await a.register(3, beacon.udp_addr)
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            assert (await client.get("/readyz")).json() == {"status": "ready"}
            status = (await client.get("/v1/status")).json()
            assert status["nodes"] == 1
            assert "natroute_beacon_relayed_bytes_total 0.0" in (await client.get("/metrics")).text
    assert not beacon.ready


@pytest.mark.asyncio
async def test_http_bind_failure_stops_the_beacon() -> None:
    async with running_beacon(http_listen="127.0.0.1:0") as first:
        assert first.http_addr is not None
        taken = f"127.0.0.1:{first.http_addr[1]}"
        with pytest.raises(StartupError) as info:
            async with running_beacon(http_listen=taken):
                pass
        assert str(info.value).startswith(
            f"cannot listen on {taken} (--http-listen / NATROUTE_BEACON_HTTP_LISTEN): "
        )
        assert "in use" in str(info.value)
