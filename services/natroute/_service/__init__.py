"""Helpers shared by the service shells: logging, run helpers, rate limits, UDP, timers.

Names are loaded on first use (PEP 562), so a service that imports one
helper does not pay for the others (uvicorn, in particular, is only loaded
by what serves HTTP).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EmbeddedHttpServer",
    "JsonFormatter",
    "RateLimit",
    "TokenBuckets",
    "bind_tcp",
    "bind_udp",
    "cancel_and_wait",
    "configure_logging",
    "every",
    "run",
    "run_until",
    "wait_for_signal",
]

_HOME = {
    "EmbeddedHttpServer": "run",
    "JsonFormatter": "logging",
    "RateLimit": "ratelimit",
    "TokenBuckets": "ratelimit",
    "bind_tcp": "run",
    "bind_udp": "udp",
    "cancel_and_wait": "tasks",
    "configure_logging": "logging",
    "every": "tasks",
    "run": "run",
    "run_until": "tasks",
    "wait_for_signal": "run",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
