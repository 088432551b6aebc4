"""Where a request comes from: the one helper every IP-based rule uses (audit, rate limits)."""

import functools
import ipaddress

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


def _trusted(address: Address, proxies: tuple[IPNetwork, ...]) -> bool:
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
    if peer is None or not _trusted(peer, proxies):
        return str(peer) if peer else None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return None  # a garbled chain: no address is better than a forged one
        if not _trusted(address, proxies):
            return str(address)
    return str(peer)
