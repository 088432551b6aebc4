"""Where a request comes from: the one helper every IP-based rule uses.

Audit events, ``last_used_ip``, the password-exchange limiter and the per-token IP
allow-list all read the client's address through :func:`client_ip`, so a forged
``X-Forwarded-For`` is ignored by every one of them alike.
"""

import functools
import ipaddress
from collections.abc import Sequence
from typing import Any

from django.http import HttpRequest

from tokens_app.conf import IPNetwork, token_settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> Address | None:
    # Memoised: every request parses its peer address, and peers repeat (ipaddress is slow).
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _within(address: Address, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_ip(request: HttpRequest) -> str | None:
    """Return the client's address, or ``None`` when it cannot be told.

    The peer (``REMOTE_ADDR``) is the client unless it is one of
    ``TRUSTED_PROXIES``; then ``X-Forwarded-For`` is read from the right, and
    the first address not itself a trusted proxy is the client. Entries left of
    it were written by the client and are never believed.
    """
    peer = _address(request.META.get("REMOTE_ADDR", ""))
    proxies = token_settings().trusted_proxies
    if peer is None or not _within(peer, proxies):
        return str(peer) if peer else None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return None  # a garbled chain: no address is better than a forged one
        if not _within(address, proxies):
            return str(address)
    return str(peer)


#: How much of an IPv6 address one client holds: a /64 is what one subscriber or host is
#: routinely given (RFC 6177), so per-address counters key on it, as django-ratelimit's own
#: ``ip`` key does by default. IPv4 addresses count one by one.
IPV6_CLIENT_PREFIX = 64


def client_network(request: HttpRequest) -> str:
    """Return what a per-client rate limit counts: the address, or its /64 for IPv6.

    Without the mask, anyone holding an ordinary /64 would have 2**64 fresh budgets.
    ``"unknown"`` when the address cannot be told (all such requests share one budget).
    """
    text = client_ip(request)
    address = _address(text) if text else None
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # a dual-stack socket's IPv4 client: one address
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(address)


@functools.lru_cache(maxsize=1024)
def _allowed_networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    # Memoised: a restricted token presents the same list on every request.
    return tuple(ipaddress.ip_network(entry) for entry in entries)


def readable_networks(entries: Any) -> bool:
    """Return whether *entries* is a list of at most 100 networks ``ip_allowed`` can read."""
    if not isinstance(entries, list) or len(entries) > 100:
        return False
    if not all(isinstance(entry, str) for entry in entries):
        return False
    try:
        _allowed_networks(tuple(entries))
    except ValueError:
        return False
    return True


def ip_allowed(ip: str | None, allowed: Sequence[str]) -> bool:
    """Return whether a request from *ip* may use a token restricted to *allowed*.

    An empty list allows every address. Otherwise an unknown address, or a stored
    list that cannot be read, allows nothing (fail closed). An IPv4-mapped IPv6
    peer (``::ffff:10.0.0.1``) counts as its IPv4 address.
    """
    if not allowed:
        return True
    address = _address(ip) if ip else None
    if address is None:
        return False
    try:
        networks = _allowed_networks(tuple(allowed))
    except (TypeError, ValueError):
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return _within(address, networks) or (mapped is not None and _within(mapped, networks))
