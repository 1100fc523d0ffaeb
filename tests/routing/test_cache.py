"""The on-disk beacon cache (docs/protocol.md, "Beacon cache"; docs/decisions.md D2, D23).

``test_s8_N``: the seed's upstream test scenario N; ``test_s9_N``: an edge case
the upstream tests left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from natroute.routing import (
    BEACON_CACHE_FILENAME,
    BeaconCacheEntry,
    CacheError,
    beacon_cache_path,
    load_beacon_cache,
    load_beacon_cache_entry,
    save_beacon_cache,
)


@pytest.fixture
def identity(tmp_path: Path) -> str:
    return str(tmp_path / "identity.json")


def _cache_file(identity: str) -> Path:
    return Path(beacon_cache_path(identity))


@pytest.mark.parametrize(
    ("identity_path", "expected"),
    [
        ("", ""),
        ("id.json", "beacons.json"),
        ("/a/b/id.json", "/a/b/beacons.json"),
        ("/a/./b/../b/id.json", "/a/b/beacons.json"),
        ("./x/id.json", "x/beacons.json"),
    ],
)
def test_beacon_cache_path(identity_path: str, expected: str) -> None:
    assert beacon_cache_path(identity_path) == expected
    assert BEACON_CACHE_FILENAME == "beacons.json"


def test_s8_10_save_then_load(identity: str) -> None:
    save_beacon_cache(identity, ["beacon-b.example.com:9001", "beacon-a.example.com:9001"])
    assert load_beacon_cache(identity) == [
        "beacon-b.example.com:9001",
        "beacon-a.example.com:9001",
    ]


def test_s8_11_missing_cache(identity: str) -> None:
    assert load_beacon_cache(identity) is None
    assert load_beacon_cache_entry(identity) is None


def test_s8_12_empty_identity_path_is_a_no_op(tmp_path: Path) -> None:
    save_beacon_cache("", ["a:1"])
    assert load_beacon_cache("") is None
    assert load_beacon_cache_entry("") is None
    assert list(tmp_path.iterdir()) == []


def test_s8_13_private_entries_filtered_on_load(identity: str) -> None:
    save_beacon_cache(identity, ["203.0.113.1:9001", "10.0.0.5:9001", "127.0.0.1:9001"])
    assert load_beacon_cache(identity) == ["203.0.113.1:9001"]
    raw = load_beacon_cache_entry(identity)
    assert raw is not None
    assert raw.addrs == ["203.0.113.1:9001", "10.0.0.5:9001", "127.0.0.1:9001"]


def test_s8_14_file_exists_after_save(identity: str) -> None:
    save_beacon_cache(identity, ["a:1"])
    assert _cache_file(identity).is_file()


def test_s8_54_corrupt_cache_and_no_tmp_left(identity: str, tmp_path: Path) -> None:
    save_beacon_cache(identity, ["a:1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beacons.json"]
    _cache_file(identity).write_text("not json")
    with pytest.raises(CacheError, match="parse beacon cache"):
        load_beacon_cache(identity)


def test_file_format(identity: str) -> None:
    when = datetime(2026, 3, 7, 0, 2, 35, 123456, tzinfo=timezone(timedelta(hours=2)))
    save_beacon_cache(identity, ["a:9001", "b:9001"], now=when)
    raw = _cache_file(identity).read_bytes()
    assert raw == b'{"saved_at":"2026-03-07T00:02:35.123456+02:00","addrs":["a:9001","b:9001"]}'
    entry = load_beacon_cache_entry(identity)
    assert entry == BeaconCacheEntry(when, ["a:9001", "b:9001"])


def test_save_defaults_to_now_utc(identity: str) -> None:
    before = datetime.now(UTC)
    save_beacon_cache(identity, iter(["a:1"]))
    entry = load_beacon_cache_entry(identity)
    assert entry is not None
    assert before - timedelta(seconds=1) <= entry.saved_at <= datetime.now(UTC)


# -- read, parse and write failures ------------------------------------------------


def test_s9_18_unreadable_cache_is_a_read_error(identity: str) -> None:
    # We run as root, so chmod 000 would not stop us: a directory stands in.
    _cache_file(identity).mkdir()
    with pytest.raises(CacheError, match="read beacon cache"):
        load_beacon_cache(identity)


def test_s9_18_null_addrs(identity: str) -> None:
    _cache_file(identity).write_text('{"saved_at":"2026-03-07T00:02:35Z","addrs":null}')
    assert load_beacon_cache(identity) == []


def test_s9_18_missing_fields(identity: str) -> None:
    _cache_file(identity).write_text("{}")
    assert load_beacon_cache(identity) == []
    entry = load_beacon_cache_entry(identity)
    assert entry is not None
    assert entry.saved_at == datetime.min.replace(tzinfo=UTC)


def test_s9_18_unknown_fields_ignored(identity: str) -> None:
    doc = {"version": 3, "saved_at": "2026-03-07T00:02:35Z", "addrs": ["a:1"], "x": {}}
    _cache_file(identity).write_text(json.dumps(doc))
    assert load_beacon_cache(identity) == ["a:1"]


@pytest.mark.parametrize(
    "saved_at",
    [
        '"yesterday"',
        '"2026-03-07 00:02:35Z"',
        '"2026-03-07T00:02:35"',
        '"2026-03-07T00:02:35.1234567890Z"',
        '"2026-13-07T00:02:35Z"',
        "12345",
    ],
)
def test_s9_18_bad_saved_at_is_a_parse_error(identity: str, saved_at: str) -> None:
    _cache_file(identity).write_text('{"saved_at":' + saved_at + ',"addrs":[]}')
    with pytest.raises(CacheError, match="parse beacon cache"):
        load_beacon_cache(identity)


@pytest.mark.parametrize(
    "doc",
    ["[]", '"x"', '{"addrs":"a:1"}', '{"addrs":[1]}', '{"addrs":{"a":1}}', "{", ""],
)
def test_wrong_types_are_parse_errors(identity: str, doc: str) -> None:
    _cache_file(identity).write_text(doc)
    with pytest.raises(CacheError, match="parse beacon cache"):
        load_beacon_cache(identity)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-07T00:02:35.123456789+02:00", (123456, 2 * 60)),
        ("2026-03-07T00:02:35.123456789Z", (123456, 0)),
        ("2026-03-07t00:02:35.1z", (100000, 0)),
        ("2026-03-07T00:02:35-05:30", (0, -(5 * 60 + 30))),
        ("2026-03-07T00:02:35Z", (0, 0)),
    ],
)
def test_rfc3339_fractions_and_zones(identity: str, text: str, expected: tuple[int, int]) -> None:
    _cache_file(identity).write_text(json.dumps({"saved_at": text, "addrs": ["a:1"]}))
    entry = load_beacon_cache_entry(identity)
    assert entry is not None
    micro, offset_minutes = expected
    assert entry.saved_at.microsecond == micro
    assert entry.saved_at.utcoffset() == timedelta(minutes=offset_minutes)
    assert (entry.saved_at.year, entry.saved_at.second) == (2026, 35)


def test_s9_18_missing_directory_is_a_write_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="write beacon cache"):
        save_beacon_cache(str(tmp_path / "missing" / "identity.json"), ["a:1"])


def test_s9_18_existing_file_replaced_atomically(identity: str, tmp_path: Path) -> None:
    save_beacon_cache(identity, ["old:1"])
    path = _cache_file(identity)
    old_inode = path.stat().st_ino
    save_beacon_cache(identity, ["new:1", "new:2"])
    assert load_beacon_cache(identity) == ["new:1", "new:2"]
    assert path.stat().st_ino != old_inode  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beacons.json"]


def test_rename_failure_leaves_no_temp_file(identity: str, tmp_path: Path) -> None:
    # A non-empty directory in the file's place makes the rename fail.
    target = _cache_file(identity)
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(CacheError, match="rename beacon cache"):
        save_beacon_cache(identity, ["a:1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beacons.json"]


def test_cache_file_mode_is_private(identity: str) -> None:
    save_beacon_cache(identity, ["a:1"])
    assert os.stat(beacon_cache_path(identity)).st_mode & 0o077 == 0


@contextlib.contextmanager
def tiny_file_size_limit() -> Iterator[None]:
    """Lower this process's soft RLIMIT_FSIZE to 8 bytes inside the block only.

    Python ignores SIGXFSZ, so an oversized write fails with EFBIG instead of
    killing the process; the previous limit is restored on the way out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_temp_file_write_failure_is_a_write_error(identity: str, tmp_path: Path) -> None:
    """A failed write of the temporary file is "write beacon cache"."""
    assert signal.getsignal(signal.SIGXFSZ) is signal.SIG_IGN
    with tiny_file_size_limit(), pytest.raises(CacheError) as info:
        save_beacon_cache(identity, ["203.0.113.1:9001"])
    assert str(info.value).startswith("write beacon cache: ")
    assert "File too large" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # the temporary file was removed
