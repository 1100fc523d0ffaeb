"""Test helper: run a real beacon on loopback and yield its bound addresses.

Reusable by other components' tests (the sidecar's)::

    async with running_beacon() as beacon:
        sock.sendto(discover, beacon.udp_addr)

``running_beacon`` takes :class:`~natroute.beacon.settings.Settings` (used
as-is), a core :class:`~natroute.beacon.config.BeaconConfig` (UDP on
127.0.0.1:0, no HTTP, that config) or nothing (defaults below, with
``overrides`` applied as Settings fields). The yielded
:class:`~natroute.beacon.service.BeaconService` exposes ``udp_addr``,
``http_addr``, ``core``, ``snapshot()``, ``refresh_peers()`` and
``gossip_now()``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from .config import BeaconConfig
from .service import BeaconService
from .settings import Settings

__all__ = ["running_beacon", "test_settings"]


def test_settings(**overrides: Any) -> Settings:
    """Settings for a loopback test beacon: UDP 127.0.0.1:0, no HTTP, ID 1.

    Long periodic intervals keep background work out of the test's way;
    rate limits stay at their defaults. ``overrides`` are Settings fields.
    """
    fields: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "http": "off",
        "beacon_id": 1,
        "sweep_interval": 3600.0,
        "gossip_interval": 3600.0,
        "early_gossip_spacing": 0.0,
        "register_interval": 3600.0,
        "log_level": "debug",
    }
    fields.update(overrides)
    return Settings(**fields)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@asynccontextmanager
async def running_beacon(
    settings_or_config: Settings | BeaconConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    wall_clock: Callable[[], float] = time.time,
    http_client: httpx.AsyncClient | None = None,
    **overrides: Any,
) -> AsyncIterator[BeaconService]:
    """Run a beacon for the duration of the ``async with`` block.

    Args:
        settings_or_config: Settings to use as-is, a core config, or None.
        clock: monotonic clock for the core (a fake clock makes expiry
            testable without sleeping); default: the loop's clock.
        wall_clock: Unix time for signed discovers.
        http_client: client for registry calls (e.g. on an ASGI transport).
        **overrides: Settings fields, when ``settings_or_config`` is not Settings.

    Yields:
        The started service; it is stopped on exit.
    """
    config: BeaconConfig | None = None
    if isinstance(settings_or_config, Settings):
        settings = settings_or_config
    elif isinstance(settings_or_config, BeaconConfig):
        config = settings_or_config
        overrides.setdefault("beacon_id", config.beacon_id)
        overrides.setdefault("strict", config.strict)
        settings = test_settings(**overrides)
    else:
        settings = test_settings(**overrides)
    service = BeaconService(
        settings, config=config, clock=clock, wall_clock=wall_clock, http_client=http_client
    )
    async with service:
        yield service
