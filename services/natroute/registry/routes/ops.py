"""``/healthz``, ``/readyz`` and ``/metrics``: what orchestrators and Prometheus read."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from natroute._service.http import ApiError, ErrorBody

from ..deps import MetricsDep, StoreDep
from ..store import StoreUnavailableError

__all__ = ["router"]

_PROMETHEUS: Final = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody}})
async def readyz(store: StoreDep) -> JSONResponse:
    """Readiness: the database answers a query."""
    try:
        await store.ping()
    except StoreUnavailableError as exc:
        raise ApiError(503, "not_ready", f"database unavailable: {exc}") from exc
    return JSONResponse({"status": "ready"})


@router.get("/metrics", include_in_schema=False)
async def prometheus(store: StoreDep, metrics: MetricsDep) -> Response:
    """Prometheus text exposition; the live gauges are counted now."""
    try:
        nodes, beacons = await store.live_counts()
    except StoreUnavailableError:
        metrics.count_error("store_unavailable")  # keep the last values; serve the rest
    else:
        metrics.live_nodes.set(nodes)
        metrics.live_beacons.set(beacons)
    return Response(metrics.render(), media_type=_PROMETHEUS)
