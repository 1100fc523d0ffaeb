"""The registry's HTTP routes, one router per resource: nodes, beacons, ops."""

from __future__ import annotations

from .beacons import router as beacons_router
from .nodes import router as nodes_router
from .ops import router as ops_router

__all__ = ["beacons_router", "nodes_router", "ops_router"]
