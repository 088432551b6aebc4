"""Parse request rates such as ``1000/h`` or ``5/15m`` (django-ratelimit's syntax)."""

import re
from typing import Any

#: django-ratelimit's rate syntax: a count, then a period such as ``15m`` or ``h``.
RATE_PATTERN = re.compile(r"([1-9][0-9]{0,8})/([1-9][0-9]{0,5})?([smhd])")
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: Any) -> tuple[int, int] | None:
    """Return ``(count, seconds)`` for a django-ratelimit rate such as ``1000/h``, else ``None``.

    The one reading of the rate syntax: settings, token fields and the limiter agree on it.
    A zero count or period is refused (django-ratelimit would divide by it).
    """
    match = RATE_PATTERN.fullmatch(rate) if isinstance(rate, str) else None
    if match is None:
        return None
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _PERIOD_SECONDS[unit]
