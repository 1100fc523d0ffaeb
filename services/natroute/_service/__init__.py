"""Helpers shared by the service shells: structured logging and run helpers."""

from __future__ import annotations

from .logging import JsonFormatter, configure_logging

__all__ = ["JsonFormatter", "configure_logging"]
