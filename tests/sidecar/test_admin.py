"""The admin API over real sidecars on loopback (registry, beacons, UDP, in-process).

Two sidecars exchange application datagrams; the admin app of one of them is
driven through httpx's ASGI transport on the same event loop, so every
handler reads the live Node exactly as the served app does.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from natroute.routing.cache import save_beacon_cache
from natroute.sidecar.admin import AuthRequiredError, PeerNotFoundError, create_app
from natroute.sidecar.model import DropReason
from natroute.sidecar.peers import PathReason
from natroute.sidecar.service import Sidecar
from natroute.sidecar.testing import Stack, running_sidecar, running_stack

from .helpers import Pump, wait_for

TOKEN = "sidecar-admin-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Pair:
    stack: Stack
    a: Sidecar
    b: Sidecar
    admin: httpx.AsyncClient

    @property
    def a_id(self) -> int:
        assert self.a.engine.node_id is not None
        return self.a.engine.node_id

    @property
    def b_id(self) -> int:
        assert self.b.engine.node_id is not None
        return self.b.engine.node_id


async def exchange(src: Sidecar, dst: Sidecar) -> None:
    """Application datagrams from ``src`` until ``dst``'s application got one (5 s bound)."""
    async with Pump(src, dst) as pump:
        await pump.delivered(1, 5.0)


def admin_client(sidecar: Sidecar) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(sidecar)), base_url="http://admin"
    )


@asynccontextmanager
async def pair(tmp_path: Path, *, beacons: int = 1, **a_overrides: Any) -> AsyncIterator[Pair]:
    a_fields: dict[str, Any] = {"admin_token": TOKEN}
    a_fields.update(a_overrides)
    async with (
        running_stack(tmp_path, beacons=beacons) as stack,
        running_sidecar(stack.sidecar_settings("a", **a_fields)) as a,
        running_sidecar(stack.sidecar_settings("b")) as b,
        admin_client(a) as admin,
    ):
        await exchange(a, b)
        yield Pair(stack, a, b, admin)


def error(resp: httpx.Response) -> dict[str, str]:
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return dict(body["error"])


@pytest.mark.asyncio
async def test_status_and_peers_after_an_exchange(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        resp = await p.admin.get("/v1/status")
        assert resp.status_code == 200
        s = resp.json()
        assert s["node_id"] == p.a_id
        assert s["ready"] is True
        assert s["registered"] is True
        assert s["relay_only"] is False
        assert s["nat"]["type"] == "none"
        assert list(s["nat"]["observations"]) == p.stack.beacon_addrs
        assert s["public_endpoint"] == s["local_addr"]
        assert s["uptime"] > 0
        beacon = s["beacon"]
        assert beacon["pick"] == p.stack.beacon_addrs[0]
        assert beacon["reason"] == "hash"
        assert beacon["source"] == "registry"
        assert beacon["beacons"] == p.stack.beacon_addrs
        assert beacon["cache_age"] is None  # loopback lists are never cached ("Beacon lists")
        assert beacon["cache_addrs"] == 0
        assert beacon["last_refresh_age"] >= 0
        assert beacon["last_refresh_errors"] == []
        counters = s["counters"]
        assert set(counters["drops"]) == {r.value for r in DropReason}
        assert counters["app_received"] >= 1
        assert counters["direct_in"] >= 1
        assert counters["pkts_sent"] >= 1
        assert s["peers_total"] == 1
        assert s["peers_direct"] == 1
        assert s["peers"] == []  # only with ?peers=true
        with_peers = (await p.admin.get("/v1/status", params={"peers": "true"})).json()
        assert [peer["node_id"] for peer in with_peers["peers"]] == [p.b_id]

        peers = (await p.admin.get("/v1/peers")).json()
        assert len(peers) == 1
        peer = peers[0]
        assert peer["node_id"] == p.b_id
        assert peer["path"] == "direct"
        assert peer["reason"] == "checked"
        assert peer["state"] == "online"
        assert peer["rtt_ms"] is not None
        assert [c["chosen"] for c in peer["candidates"]].count(True) == 1
        assert peer["relay"] is False
        assert peer["pinned"] is False
        assert peer["addr"] is not None
        assert peer["pkts_sent"] >= 1
        assert peer["pkts_recv"] >= 1
        assert peer["direct_recv"] >= 1
        assert peer["last_direct_recv_age"] is not None
        assert peer["last_send_age"] is not None
        assert [e["reason"] for e in peer["events"]][:2] == ["checking", "checked"]
        assert peer["events"][0]["age"] >= 0

        detail = await p.admin.get(f"/v1/peers/{p.b_id}")
        assert detail.status_code == 200
        assert detail.json()["node_id"] == p.b_id
        hex_detail = await p.admin.get(f"/v1/peers/{p.b_id:#x}")
        assert hex_detail.json()["node_id"] == p.b_id

        saved = datetime.now(UTC) - timedelta(seconds=30)
        save_beacon_cache(
            p.a.settings.identity, ["beacon.example:7000", "b2.example:7000"], now=saved
        )
        cached = (await p.admin.get("/v1/beacons")).json()
        assert 30 <= cached["cache_age"] < 90
        assert cached["cache_addrs"] == 2
        assert cached["cache_error"] == ""
        Path(p.a.settings.identity).with_name("beacons.json").write_text("{not json")
        broken = (await p.admin.get("/v1/beacons")).json()
        assert broken["cache_age"] is None
        assert "parse beacon cache" in broken["cache_error"]


@pytest.mark.asyncio
async def test_unknown_and_bad_peer_ids(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        missing = await p.admin.get("/v1/peers/99999")
        assert missing.status_code == 404
        assert error(missing)["code"] == "peer_not_found"
        for bad in ("ABC!", "0", "4294967296", "-3", "0xZZ", "-name", "x" * 64):
            resp = await p.admin.get(f"/v1/peers/{bad}")
            assert resp.status_code == 400, bad
            assert error(resp)["code"] == "invalid_peer_id"
        # a name: a known peer's, or the registry's answer
        by_name = await p.admin.get("/v1/peers/b")
        assert by_name.status_code == 200
        assert by_name.json()["node_id"] == p.b_id
        assert by_name.json()["name"] == "b"
        nobody = await p.admin.get("/v1/peers/nobody")
        assert nobody.status_code == 404
        assert "no node named 'nobody'" in error(nobody)["message"]
        put = await p.admin.put("/v1/peers/99999/relay", json={"relay": True}, headers=AUTH)
        assert put.status_code == 404
        assert error(put)["code"] == "peer_not_found"
        wrong_body = await p.admin.put(
            f"/v1/peers/{p.b_id}/relay", json={"relay": "yes"}, headers=AUTH
        )
        assert wrong_body.status_code == 422
        err = error(wrong_body)
        assert err["code"] == "invalid_request"
        assert "relay" in err["message"]
        not_json = await p.admin.put(
            f"/v1/peers/{p.b_id}/relay",
            content=b"{",
            headers=AUTH | {"Content-Type": "application/json"},
        )
        assert not_json.status_code == 400
        assert "JSON" in error(not_json)["message"]
        no_route = await p.admin.get("/v2/nothing")
        assert no_route.status_code == 404
        assert error(no_route)["code"] == "not_found"


@pytest.mark.asyncio
async def test_operator_forced_relay_and_back(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        resp = await p.admin.put(
            f"/v1/peers/{p.b_id}/relay", json={"relay": True, "pinned": True}, headers=AUTH
        )
        assert resp.status_code == 200
        peer = resp.json()
        assert (peer["path"], peer["reason"]) == ("relay", "operator")
        assert peer["relay"] is True
        assert peer["pinned"] is True
        assert peer["events"][-1]["detail"] == "pinned"
        assert p.a.manager.is_relay_pinned(p.b_id)
        relayed_before = p.stack.beacons[0].snapshot().relayed_packets
        await exchange(p.a, p.b)
        assert p.stack.beacons[0].snapshot().relayed_packets > relayed_before
        status = (await p.admin.get("/v1/status")).json()
        assert (status["peers_relay"], status["peers_offline"]) == (1, 0)

        back = await p.admin.put(
            f"/v1/peers/{p.b_id}/relay", json={"relay": False, "pinned": False}, headers=AUTH
        )
        assert back.status_code == 200
        peer = back.json()
        # the checks run again at once; an answer makes the path direct
        await wait_for(lambda: p.a.manager.is_relay_peer(p.b_id) is False, "direct again", 5)
        await exchange(p.a, p.b)
        final = (await p.admin.get(f"/v1/peers/{p.b_id}")).json()
        assert final["path"] == "direct"
        changes = [(e["path"], e["reason"]) for e in final["events"]]
        assert changes == [
            ("relay", "checking"),
            ("direct", "checked"),
            ("relay", "operator"),
            ("relay", "checking"),
            ("direct", "direct_restored"),
        ]
        metrics = (await p.admin.get("/metrics")).text
        assert 'natroute_sidecar_path_changes_total{reason="operator"} 1.0' in metrics


@pytest.mark.asyncio
async def test_punch_delete_beacons_and_refresh(tmp_path: Path) -> None:
    async with pair(tmp_path, beacons=2, beacon_rtt_probe=True) as p:
        punched = await p.admin.post(f"/v1/peers/{p.b_id}/punch", headers=AUTH)
        assert punched.status_code == 202
        assert punched.json()["probes_sent"] >= 2

        beacons = (await p.admin.get("/v1/beacons")).json()
        assert beacons["beacons"] == p.stack.beacon_addrs  # bootstrap order ("Beacon lists")
        assert beacons["pick"] in p.stack.beacon_addrs
        assert beacons["reason"] in ("hash", "rtt_override")
        assert set(beacons["rtt_ms"]) == set(p.stack.beacon_addrs)
        assert all(ms > 0 for ms in beacons["rtt_ms"].values())
        assert beacons["source"] == "registry"

        refreshed = await p.admin.post("/v1/beacons/refresh", headers=AUTH)
        assert refreshed.status_code == 200
        r = refreshed.json()
        assert r["source"] == "registry"
        assert r["pick"] in p.stack.beacon_addrs
        # loopback RTTs are noise: the override may move the pick between ticks
        assert r["swapped"] is (r["pick"] != beacons["pick"])
        assert r["reason"] in ("hash", "rtt_override")
        assert r["errors"] == []
        assert set(r["rtt_ms"]) == set(p.stack.beacon_addrs)

        gone = await p.admin.delete(f"/v1/peers/{p.b_id}", headers=AUTH)
        assert gone.status_code == 204
        assert (await p.admin.get(f"/v1/peers/{p.b_id}")).status_code == 404
        again = await p.admin.delete(f"/v1/peers/{p.b_id}", headers=AUTH)
        assert again.status_code == 404
        punch_gone = await p.admin.post(f"/v1/peers/{p.b_id}/punch", headers=AUTH)
        assert punch_gone.status_code == 404
        await exchange(p.a, p.b)  # the peer comes back on demand
        assert (await p.admin.get(f"/v1/peers/{p.b_id}")).status_code == 200


@pytest.mark.asyncio
async def test_mutations_need_the_token(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        url = f"/v1/peers/{p.b_id}/relay"
        body = {"relay": True, "pinned": False}
        missing = await p.admin.put(url, json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert error(missing)["code"] == "auth_required"
        wrong = await p.admin.put(url, json=body, headers={"Authorization": "Bearer " + "x" * 20})
        assert wrong.status_code == 401
        assert error(wrong)["code"] == "auth_invalid"
        basic = await p.admin.post("/v1/beacons/refresh", headers={"Authorization": "Basic eA=="})
        assert basic.status_code == 401
        assert (await p.admin.delete(f"/v1/peers/{p.b_id}")).status_code == 401
        assert not p.a.manager.is_relay_peer(p.b_id)  # nothing changed

        async with admin_client(p.b) as admin_b:  # b has no token configured
            off = await admin_b.put(f"/v1/peers/{p.a_id}/relay", json=body, headers=AUTH)
            assert off.status_code == 403
            err = error(off)
            assert err["code"] == "mutations_disabled"
            assert "NATROUTE_SIDECAR_ADMIN_TOKEN" in err["message"]
            assert (await admin_b.get("/v1/peers")).status_code == 200  # reads stay open
        assert not p.b.manager.is_relay_peer(p.a_id)


@pytest.mark.asyncio
async def test_metrics_families_without_per_peer_labels(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        resp = await p.admin.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(resp.text)}
        for name in (
            "natroute_sidecar_ready",
            "natroute_sidecar_peers",
            "natroute_sidecar_drops",
            "natroute_sidecar_path_changes",
            "natroute_sidecar_peer_packets",
            "natroute_sidecar_peer_bytes",
            "natroute_sidecar_receipts",
            "natroute_sidecar_app_datagrams",
            "natroute_sidecar_nat_type",
            "natroute_sidecar_beacon_pick_reason",
            "natroute_sidecar_beacon_refresh_age_seconds",
            "natroute_sidecar_predict_sprays",
            "natroute_sidecar_spray_sockets_open",
        ):
            assert name in families, name
        allowed = {
            "reason",
            "path",
            "direction",
            "type",
            "source",
            "transport",
            "version",
            "outcome",
        }
        for family in families.values():
            for sample in family.samples:
                assert set(sample.labels) <= allowed, (family.name, sample.labels)
                assert str(p.b_id) not in sample.labels.values()

        def value(name: str, **labels: str) -> float:
            for sample in families[name].samples:
                if sample.labels == labels and not sample.name.endswith("_created"):
                    return float(sample.value)
            raise AssertionError(f"{name}{labels} missing")

        assert value("natroute_sidecar_peers", path="direct") == 1
        assert value("natroute_sidecar_peers", path="relay") == 0
        assert value("natroute_sidecar_ready") == 1
        assert value("natroute_sidecar_nat_type", type="none") == 1
        assert value("natroute_sidecar_path_changes", reason="checked") == 1
        reasons = {s.labels["reason"] for s in families["natroute_sidecar_drops"].samples}
        assert reasons == {r.value for r in DropReason}
        changes = {s.labels["reason"] for s in families["natroute_sidecar_path_changes"].samples}
        assert changes == {r.value for r in PathReason}
        sent = value("natroute_sidecar_peer_packets", direction="sent")
        assert sent >= 1
        # a removed peer's traffic stays counted: counters never go down
        assert (await p.admin.delete(f"/v1/peers/{p.b_id}", headers=AUTH)).status_code == 204
        after = {
            f.name: f for f in text_string_to_metric_families((await p.admin.get("/metrics")).text)
        }
        families = after
        assert value("natroute_sidecar_peer_packets", direction="sent") == sent
        assert value("natroute_sidecar_peers", path="direct") == 0
        assert value("natroute_sidecar_path_changes", reason="checked") == 1


@pytest.mark.asyncio
async def test_health_readiness_and_html_page(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        assert (await p.admin.get("/healthz")).json() == {"status": "ok"}
        assert (await p.admin.get("/readyz")).status_code == 200
        page = await p.admin.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        text = page.text
        assert f'"node_id":{p.b_id},' in text  # the peer, in the first data
        assert f"natroute sidecar {p.a_id}" in text
        assert '"reason":"checked"' in text  # the first data, as a JSON island
        assert not re.search(r"""(src|href)\s*=\s*["']?https?:|@import|url\(""", text)
        schema = (await p.admin.get("/openapi.json")).json()
        assert "/v1/peers/{peer_id}/relay" in schema["paths"]
        assert "/v1/peers/{peer_id}/ping" in schema["paths"]
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
        docs = await p.admin.get("/docs")
        assert docs.status_code == 200
        assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", docs.text)  # no CDN


@pytest.mark.asyncio
async def test_not_ready_before_start(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        sidecar = Sidecar(stack.sidecar_settings("cold", admin_token=TOKEN))
        try:
            async with admin_client(sidecar) as admin:
                ready = await admin.get("/readyz")
                assert ready.status_code == 503
                assert error(ready)["code"] == "not_ready"
                status = (await admin.get("/v1/status")).json()
                assert status["node_id"] is None
                assert status["ready"] is False
                assert status["beacon"]["source"] == "none"
                assert status["beacon"]["cache_age"] is None
                assert (await admin.get("/v1/peers")).json() == []
                put = await admin.put("/v1/peers/7/relay", json={"relay": True}, headers=AUTH)
                assert put.status_code == 503
                assert "<title>natroute sidecar</title>" in (await admin.get("/")).text
                assert (await admin.get("/metrics")).status_code == 200
        finally:
            await sidecar.stop()


def test_admin_refusals_carry_their_status_and_code() -> None:
    missing = PeerNotFoundError("no peer")
    assert (missing.status, missing.code, missing.message) == (404, "peer_not_found", "no peer")
    auth = AuthRequiredError("token please")
    assert (auth.status, auth.headers) == (401, {"WWW-Authenticate": "Bearer"})
