"""Structured logging, installed once by each service's ``main()``.

Libraries only call ``logging.getLogger(__name__)`` and log stable snake_case
event names with fields in ``extra``. Two formats (the services' ``log_format``
setting): ``json``, one object per line ``{"ts", "level", "logger", "event",
...fields}`` for machines, and ``text``, one readable line
``ts level event key=value ...`` for people. Neither carries terminal colour:
uvicorn's ``color_message`` duplicate is dropped and escape sequences are
stripped from every value.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else came from ``extra``.
_RESERVED: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


#: Fields that only repeat the message for a terminal (uvicorn's coloured copy).
_DROPPED: Final = frozenset({"color_message"})
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _RESERVED or key in _DROPPED or key.startswith("_"):
            continue
        out[key] = _ANSI.sub("", value) if isinstance(value, str) else value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _ANSI.sub("", record.getMessage()),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm level event key=value ...`` on one line, for people."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        parts = [ts, f"{record.levelname.lower():7}", _ANSI.sub("", record.getMessage())]
        for key, value in _fields(record).items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            parts.append(f"{key}={text}" if " " not in str(text) else f"{key}={text!r}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", stream: TextIO | None = None, fmt: str = "json") -> None:
    """Install the ``json`` or ``text`` formatter on the root logger (replacing its handlers)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log is per request; keep it out of info-level output.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
