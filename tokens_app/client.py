"""Where a request comes from: the one helper every IP-based rule uses."""

import ipaddress

from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """Return the peer address of *request*, or ``None`` when it is not a valid IP.

    Proxy headers are not trusted here: a client can put anything in
    ``X-Forwarded-For``, and an address recorded for audit must not be spoofable.
    """
    address = request.META.get("REMOTE_ADDR", "")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
