"""Parse and format short durations such as ``30d``, ``12h`` or ``90m``."""

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^(?P<amount>[1-9][0-9]{0,6})(?P<unit>[smhdw])$")


def parse_duration(text: str) -> timedelta:
    """Return the timedelta for ``<positive integer><s|m|h|d|w>``.

    Raise ``ValueError`` with a message fit for an operator on anything else: a
    duration that silently became zero would issue a token that is already expired.
    """
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a positive whole number followed by "
            "s, m, h, d or w (for example 30d, 12h, 90m)"
        )
    return timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})


def format_duration(value: timedelta) -> str:
    """Return the shortest ``<n><unit>`` form of *value* in whole seconds (for messages)."""
    seconds = int(value.total_seconds())
    for suffix, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"
