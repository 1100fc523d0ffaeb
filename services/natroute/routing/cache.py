"""The on-disk beacon cache (docs/protocol.md, "Beacon cache"): the cold-start fallback list.

The file ``beacons.json`` lives next to the identity file and holds
``{"saved_at": RFC 3339, "addrs": [...]}``. Writes are atomic and durable
(docs/decisions.md D23): a unique temporary file in the same directory, fsync, rename,
fsync of the directory; two daemons sharing a directory never collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from .constants import BEACON_CACHE_FILENAME
from .errors import CacheError
from .selection import filter_unreachable

__all__ = [
    "BeaconCacheEntry",
    "beacon_cache_path",
    "load_beacon_cache",
    "load_beacon_cache_entry",
    "save_beacon_cache",
]

# RFC 3339 with optional fraction (Go writes up to 9 digits) and Z or offset.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


@dataclass(frozen=True, slots=True)
class BeaconCacheEntry:
    """The cache file's content: when it was saved and the addresses."""

    saved_at: datetime
    addrs: list[str]

    def encode(self) -> bytes:
        """Compact JSON, ``saved_at`` first, no trailing newline."""
        return json.dumps(
            {"saved_at": self.saved_at.isoformat(), "addrs": self.addrs}, separators=(",", ":")
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> BeaconCacheEntry:
        """Parse a cache file; unknown fields ignored, missing or null ones empty.

        Raises:
            ValueError: not JSON, wrong types, or ``saved_at`` not RFC 3339.
        """
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("cache is not a JSON object")
        addrs = obj.get("addrs")
        if addrs is None:
            addrs = []
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise ValueError("addrs is not a list of strings")
        saved_at = obj.get("saved_at")
        if saved_at is None:
            when = datetime.min.replace(tzinfo=UTC)
        elif isinstance(saved_at, str):
            when = _parse_rfc3339(saved_at)
        else:
            raise ValueError("saved_at is not a string")
        return cls(when, addrs)


def _parse_rfc3339(text: str) -> datetime:
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"saved_at is not RFC 3339: {text!r}")
    base, frac, zone = match.groups()
    micro = (frac or "").ljust(6, "0")[:6]
    zone = "+00:00" if zone in ("Z", "z") else zone
    return datetime.fromisoformat(f"{base.upper()}.{micro}{zone}")


def beacon_cache_path(identity_path: str) -> str:
    """``beacons.json`` in the identity file's directory; ``""`` for ``""``."""
    if not identity_path:
        return ""
    return os.path.normpath(os.path.join(os.path.dirname(identity_path), BEACON_CACHE_FILENAME))


def save_beacon_cache(
    identity_path: str, addrs: Iterable[str], *, now: datetime | None = None
) -> None:
    """Write ``addrs`` verbatim to the cache, atomically; no-op for ``""``.

    Args:
        identity_path: the identity file; the cache goes beside it.
        addrs: the list to save (the caller saves only discovered lists).
        now: the wall-clock time to record (default: now, UTC).

    Raises:
        CacheError: the directory is missing or not writable, writing the
            temporary file failed (``write beacon cache``), or the rename
            failed (``rename beacon cache``).
    """
    path = beacon_cache_path(identity_path)
    if not path:
        return
    entry = BeaconCacheEntry(now or datetime.now(UTC), list(addrs))
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".beacons.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CacheError(f"write beacon cache: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(entry.encode())
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CacheError(f"write beacon cache: {exc}") from exc
    try:
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CacheError(f"rename beacon cache: {exc}") from exc
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Make the rename durable; best effort (not every filesystem allows it)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - directory vanished after the rename
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover - filesystem without directory fsync
        pass
    finally:
        os.close(dfd)


def load_beacon_cache_entry(identity_path: str) -> BeaconCacheEntry | None:
    """The raw cache entry (unfiltered), or None when there is no cache.

    Raises:
        CacheError: unreadable (permission, a directory, ...) or unparsable.
    """
    path = beacon_cache_path(identity_path)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError(f"read beacon cache: {exc}") from exc
    try:
        return BeaconCacheEntry.decode(data)
    except ValueError as exc:
        raise CacheError(f"parse beacon cache: {exc}") from exc


def load_beacon_cache(identity_path: str) -> list[str] | None:
    """The cached list with unreachable addresses removed; None without a cache.

    Raises:
        CacheError: unreadable or unparsable cache file (D2).
    """
    entry = load_beacon_cache_entry(identity_path)
    if entry is None:
        return None
    return filter_unreachable(entry.addrs)
