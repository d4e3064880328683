"""Parsed addresses, cached: a busy scenario parses the same few loopback addresses millions of times."""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=4096)
def ip_addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)
