"""``/v1/beacons``: beacons register (operator token) and everyone reads the list.

The list is answered from pre-encoded bytes (:mod:`..beaconlist`): the same
body for every caller until a beacon registers or a listed one expires; the
common read takes the fast lane (:mod:`..lanes`).
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import APIRouter, Depends, Response

from ..deps import BeaconListDep, MetricsDep, SettingsDep, StoreDep, require_operator
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
async def list_beacons(store: StoreDep, beacons: BeaconListDep) -> Response:
    """Live beacons (registered within the beacon TTL), by ID.

    Served by the fast lane (:mod:`..lanes`) but for what it passes on.
    """
    return Response(await beacons.body(store), media_type=_JSON)
