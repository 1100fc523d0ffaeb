"""``/v1/beacons``: beacons register (operator token) and everyone reads the list.

The list is answered from pre-encoded bytes (:mod:`..beaconlist`): the same
body for every caller until a beacon registers or a listed one expires.
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import APIRouter, Depends, Request, Response

from ..deps import MetricsDep, Services, SettingsDep, StoreDep, get_store, require_operator
from ..models import BeaconListResponse, BeaconRegisterRequest, BeaconRegisterResponse

__all__ = ["router"]

_log = logging.getLogger(__name__)
_JSON: Final = "application/json"

router = APIRouter(tags=["beacons"])


@router.post(
    "/v1/beacons",
    response_model=BeaconRegisterResponse,
    response_model_exclude_none=True,
    dependencies=[Depends(require_operator)],
)
async def register_beacon(
    body: BeaconRegisterRequest, store: StoreDep, settings: SettingsDep, metrics: MetricsDep
) -> BeaconRegisterResponse:
    """A beacon (re-)registers; it is listed for ``ttl`` seconds."""
    await store.register_beacon(body.beacon_id, body.addr, body.stream_url)
    metrics.beacon_registrations.inc()
    _log.debug("beacon_registered", extra={"beacon_id": body.beacon_id, "addr": body.addr})
    return BeaconRegisterResponse(
        beacon_id=body.beacon_id,
        addr=body.addr,
        stream_url=body.stream_url,
        ttl=max(1, round(settings.beacon_ttl)),
    )


@router.get(
    "/v1/beacons",
    response_class=Response,
    responses={200: {"model": BeaconListResponse, "content": {_JSON: {}}}},
)
async def list_beacons(request: Request) -> Response:
    """Live beacons (registered within the beacon TTL), by ID."""
    # The hottest route takes its collaborators from app.state itself: a
    # FastAPI dependency costs about 20 µs per request, 15% of this answer
    # (measured by benchmarks/bench_registry.py --beacons).
    services: Services = request.app.state.services
    store = await get_store(services)
    return Response(await services.beacon_list.body(store), media_type=_JSON)
