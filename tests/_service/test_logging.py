"""The two log formats: JSON lines for machines, text lines for people, no colour in either."""

from __future__ import annotations

import io
import json
import logging

import pytest

from natroute._service.logging import configure_logging


@pytest.fixture
def restore_root() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _emit(fmt: str) -> str:
    stream = io.StringIO()
    configure_logging("debug", stream, fmt=fmt)
    log = logging.getLogger("natroute.test")
    log.info(
        "peer_path_changed",
        extra={
            "peer": 7,
            "detail": "host 10.0.0.2:4000 rtt 1.5ms",
            "color_message": "\x1b[36mcoloured\x1b[0m",
            "raw": "\x1b[31mred\x1b[0m",
        },
    )
    return stream.getvalue()


@pytest.mark.usefixtures("restore_root")
def test_json_lines_drop_colour() -> None:
    line = json.loads(_emit("json"))
    assert line["event"] == "peer_path_changed"
    assert line["peer"] == 7
    assert line["raw"] == "red"  # escape sequences stripped
    assert "color_message" not in line


@pytest.mark.usefixtures("restore_root")
def test_text_lines_are_readable() -> None:
    line = _emit("text").rstrip("\n")
    assert " info    peer_path_changed peer=7 detail='host 10.0.0.2:4000 rtt 1.5ms' raw=red" in line
    assert "\x1b" not in line
    assert "color_message" not in line
