"""The one expiry sweep of the refresh-ordered tables.

The beacon's node and gossip tables and the rate limiter's buckets keep
their entries in an ``OrderedDict`` in refresh order (a refresh moves the
key to the end), so the oldest entry is always first. Expiring them is then
a walk from the front that stops at the first live entry: O(removed),
however large the table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["sweep_oldest"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def sweep_oldest(
    entries: OrderedDict[K, V],
    expired: Callable[[V], bool],
    on_remove: Callable[[K, V], None] | None = None,
) -> int:
    """Remove entries from the front while ``expired(value)`` holds.

    Args:
        entries: a map in refresh order (oldest first).
        expired: True for a value that has expired.
        on_remove: called with each removed key and value (bookkeeping).

    Returns:
        How many entries were removed.
    """
    removed = 0
    while entries:
        key, value = next(iter(entries.items()))
        if not expired(value):
            break
        del entries[key]
        if on_remove is not None:
            on_remove(key, value)
        removed += 1
    return removed
