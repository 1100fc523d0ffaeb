"""Source prefixes: the keys rate limits and node quotas charge a source IP to.

* :func:`source_key`: the IPv4 address itself, or the IPv6 /64 (one host
  usually owns a whole /64, so per-address keys would not limit it);
* :func:`net_key`: the IPv4 /24 or the IPv6 /48, the next wider block one
  operator usually controls.

Both take a canonical IP literal (IPv4-mapped IPv6 already unwrapped) and
are memoised: the same sources come back again and again.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

__all__ = ["net_key", "source_key"]


@lru_cache(maxsize=65_536)
def source_key(ip: str) -> str:
    """The narrow key of a canonical source IP: itself, or its /64 for IPv6."""
    if ":" not in ip:
        return ip
    return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address) + "/64"


@lru_cache(maxsize=65_536)
def net_key(ip: str) -> str:
    """The wide key of a canonical source IP: its IPv4 /24 or its IPv6 /48."""
    if ":" not in ip:
        return ip.rpartition(".")[0] + ".0/24"
    return str(ipaddress.IPv6Network((ip, 48), strict=False).network_address) + "/48"
