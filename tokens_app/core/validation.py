"""Input rules for token fields: each returns the cleaned value and collects errors by field.

Called only by ``services``; kept apart so ``services`` reads as the list of operations.
"""

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.utils.translation import gettext_lazy as _

from tokens_app.conf import IPNetwork, token_settings
from tokens_app.core import limits, scopes
from tokens_app.core.durations import format_duration
from tokens_app.core.rates import parse_rate

#: A token name is a label people read (admin, API, emails, command output): letters of
#: any script, digits, ``_``, spaces and ``. : @ + -``. Never a control or format
#: character (Unicode C*: line breaks, tabs, bidi overrides, zero-width marks), which
#: can rewrite what a reader sees, nor ``/``, which builds URLs and paths.
NAME_PATTERN = re.compile(r"^\w[\w .:@+-]*$")
MAX_NAME_LENGTH = limits.NAME_LENGTH
MAX_DESCRIPTION_LENGTH = limits.DESCRIPTION_LENGTH
MAX_ALLOWED_IPS = limits.ALLOWED_IPS
_ENTRY_SEPARATORS = re.compile(r"[\s,]+")

Errors = dict[str, list[Any]]


def clean_name(name: Any, errors: Errors) -> str:
    """Return the name, stripped, for a new or changed name; collect why it is refused.

    Only names being set are judged: rows named before this rule keep their names
    (``plan_token_update`` does not judge an unchanged one), and are shown quoted.
    """
    cleaned = name.strip() if isinstance(name, str) else ""
    if not cleaned:
        errors.setdefault("name", []).append(_("A token needs a name."))
    elif any(char == "/" or unicodedata.category(char).startswith("C") for char in cleaned):
        errors.setdefault("name", []).append(
            _(
                "A name cannot contain / or control characters (line breaks, tabs, "
                "invisible formatting such as text-direction marks)."
            )
        )
    elif len(cleaned) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(cleaned):
        errors.setdefault("name", []).append(
            _(
                "Use at most %(max)d letters, digits, spaces and . : @ + - "
                "characters, starting with a letter or digit."
            )
            % {"max": MAX_NAME_LENGTH}
        )
    return cleaned


def clean_description(description: Any, errors: Errors) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        errors.setdefault("description", []).append(
            _("The description must be text of at most %(max)d characters.")
            % {"max": MAX_DESCRIPTION_LENGTH}
        )
        return ""
    return description.strip()


def clean_scopes(owner: Any, requested: Iterable[str], errors: Errors) -> list[str]:
    """Return the requested scope names, sorted; declared and holdable by *owner*, or errors."""
    raw = [requested] if isinstance(requested, str) else list(requested)
    if not all(isinstance(name, str) for name in raw):
        errors.setdefault("scopes", []).append(_("Scopes must be given by name."))
        return []
    names = sorted(set(raw))
    registry = scopes.registry()
    problems: list[Any] = []
    if not names:
        problems.append(_("Choose at least one scope."))
    unknown = registry.undeclared(names)
    if unknown:
        problems.append(_("Unknown scopes: %(scopes)s.") % {"scopes": ", ".join(unknown)})
    forbidden = [n for n in names if n in registry and not scopes.may_hold(owner, n)]
    if forbidden:
        problems.append(
            _("The owner may not hold these scopes: %(scopes)s.") % {"scopes": ", ".join(forbidden)}
        )
    if problems:
        errors.setdefault("scopes", []).extend(problems)
    return names


def _lifetime_limit_message(limit: timedelta) -> str:
    return _("Tokens may live at most %(max)s.") % {"max": format_duration(limit)}


def resolve_expiry(
    now: datetime,
    expires_at: datetime | None,
    expires_in: timedelta | None,
    never_expires: bool,
    errors: Errors,
) -> tuple[datetime | None, bool]:
    """Return the expiry asked for (or the configured default) and whether it was asked for.

    The lifetime policy of the settings; how long a token made by a token may live is
    ``services.authority``'s to say (it ends, by default, with its parent).
    """
    conf = token_settings()
    explicit = expires_at is not None or expires_in is not None or never_expires
    if sum((expires_at is not None, expires_in is not None, never_expires)) > 1:
        errors.setdefault("expires_at", []).append(
            _("Give one of an expiry time, a lifetime, or no expiry.")
        )
        return None, explicit
    if expires_in is not None:
        if conf.max_lifetime is not None and expires_in > conf.max_lifetime:
            errors.setdefault("expires_at", []).append(_lifetime_limit_message(conf.max_lifetime))
            return None, explicit
        try:
            expires_at = now + expires_in
        except OverflowError:
            errors.setdefault("expires_at", []).append(_("That lifetime is too long."))
            return None, explicit
    elif expires_at is None and not never_expires:
        lifetime = conf.default_lifetime
        expires_at = now + lifetime if lifetime is not None else None
    if expires_at is None:  # never expires: asked for, or the configured default
        if not conf.allow_non_expiring:
            errors.setdefault("expires_at", []).append(
                _("Tokens that never expire are not allowed.")
            )
        return None, explicit
    if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
        errors.setdefault("expires_at", []).append(_("The expiry must be a time with a time zone."))
    elif expires_at <= now:
        errors.setdefault("expires_at", []).append(_("The expiry time must be in the future."))
    elif conf.max_lifetime is not None and expires_at > now + conf.max_lifetime:
        errors.setdefault("expires_at", []).append(_lifetime_limit_message(conf.max_lifetime))
    return expires_at, explicit


# --- guardrails: IP allow-list and rate limit -------------------------------------------


def _network(entry: str) -> IPNetwork | str:
    """Return the network *entry* names, or the message saying why it names none."""
    try:
        return ipaddress.ip_network(entry)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return _("%(entry)s is not an IP address or CIDR network.") % {"entry": entry[:60]}
    # A typo such as 10.0.0.5/8 would open a whole network: say so, do not guess.
    return _("%(entry)s has host bits set: did you mean %(network)s?") % {
        "entry": entry,
        "network": loose,
    }


def _entries(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [part for part in _ENTRY_SEPARATORS.split(value) if part]
    if isinstance(value, list | tuple) and all(
        isinstance(entry, str) and entry.strip() for entry in value
    ):
        # A blank entry is a mistake, not "anywhere": only an empty list means that.
        return [entry.strip() for entry in value]
    return None


def clean_allowed_ips(value: Any, errors: Errors) -> list[str]:
    """Return the normalised allow-list (``[]``: anywhere) for *value*, a list or a text.

    Syntax only: how a restricted token bounds the networks of what it creates is
    ``services.authority``'s rule.
    """
    entries = _entries(value)
    if entries is None:
        errors.setdefault("allowed_ips", []).append(
            _("Give a list of addresses or networks, none of them blank.")
        )
        return []
    if len(entries) > MAX_ALLOWED_IPS:  # before parsing: a pasted blob gets one message
        errors.setdefault("allowed_ips", []).append(
            _("Give at most %(max)d networks.") % {"max": MAX_ALLOWED_IPS}
        )
        return []
    problems: list[Any] = []
    networks: set[IPNetwork] = set()
    for entry in entries:
        found = _network(entry)
        if isinstance(found, str):
            problems.append(found)
        else:
            networks.add(found)
    if problems:
        errors.setdefault("allowed_ips", []).extend(problems)
        return []
    return [str(net) for net in sorted(networks, key=lambda net: (net.version, net))]


def clean_rate_limit(value: Any, errors: Errors) -> str:
    """Return the token's own rate (``""``: the default applies) for *value*; syntax only.

    Who may set how loose a rate is ``services.grants.rate_ceiling``.
    """
    text = value.strip() if isinstance(value, str) else value
    if text in ("", None):
        text = ""
    elif parse_rate(text) is None:
        errors.setdefault("rate_limit", []).append(
            _(
                "Give a rate such as 1000/h: a count, a slash and a period "
                "(s, m, h or d, optionally with a number, as in 15m)."
            )
        )
        return ""
    return str(text)
