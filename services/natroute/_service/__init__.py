"""Helpers shared by the service shells: structured logging and run helpers."""

from __future__ import annotations

from .logging import JsonFormatter, configure_logging
from .run import EmbeddedHttpServer, bind_tcp, run, wait_for_signal

__all__ = [
    "EmbeddedHttpServer",
    "JsonFormatter",
    "bind_tcp",
    "configure_logging",
    "run",
    "wait_for_signal",
]
