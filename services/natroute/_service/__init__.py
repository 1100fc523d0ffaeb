"""Helpers shared by the service shells: logging, run helpers, rate limits, UDP, timers.

Import each helper from its submodule (``natroute._service.udp``,
``natroute._service.tasks``, ...): the package itself loads nothing, so a
service pays only for what it uses (uvicorn, in particular, is only loaded by
what serves HTTP).
"""

from __future__ import annotations

__all__: list[str] = []
