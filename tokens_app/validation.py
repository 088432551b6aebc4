"""Input rules for token fields: each returns the cleaned value and collects errors by field.

Called only by ``services``; kept apart so ``services`` reads as the list of operations.
"""

import ipaddress
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.utils.translation import gettext_lazy as _

from tokens_app import scopes
from tokens_app.conf import IPNetwork, parse_rate, token_settings
from tokens_app.durations import format_duration
from tokens_app.models import APIToken

NAME_PATTERN = re.compile(r"^\w[\w .:@+/-]*$")
MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 1000
MAX_ALLOWED_IPS = 100
_ENTRY_SEPARATORS = re.compile(r"[\s,]+")

Errors = dict[str, list[Any]]


def clean_name(name: Any, errors: Errors) -> str:
    cleaned = name.strip() if isinstance(name, str) else ""
    if not cleaned:
        errors.setdefault("name", []).append(_("A token needs a name."))
    elif len(cleaned) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(cleaned):
        errors.setdefault("name", []).append(
            _(
                "Use at most %(max)d letters, digits, spaces and . : @ + / - "
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


def clean_scopes(
    owner: Any, requested: Iterable[str], parent: APIToken | None, errors: Errors
) -> list[str]:
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
    beyond_parent = [n for n in names if parent is not None and not parent.has_scope(n)]
    if beyond_parent:
        problems.append(
            _("A token cannot grant scopes it does not hold: %(scopes)s.")
            % {"scopes": ", ".join(beyond_parent)}
        )
    if problems:
        errors.setdefault("scopes", []).extend(problems)
    return names


def _lifetime_limit_message(limit: timedelta) -> str:
    return _("Tokens may live at most %(max)s.") % {"max": format_duration(limit)}


def _default_expiry(now: datetime, parent: APIToken | None) -> datetime | None:
    # A token minted by a token ends, by default, no later than its parent.
    lifetime = token_settings().default_lifetime
    default = now + lifetime if lifetime is not None else None
    if parent is None or parent.expires_at is None:
        return default
    return parent.expires_at if default is None else min(default, parent.expires_at)


def resolve_expiry(
    now: datetime,
    expires_at: datetime | None,
    expires_in: timedelta | None,
    never_expires: bool,
    parent: APIToken | None,
    errors: Errors,
) -> datetime | None:
    conf = token_settings()
    if sum((expires_at is not None, expires_in is not None, never_expires)) > 1:
        errors.setdefault("expires_at", []).append(
            _("Give one of an expiry time, a lifetime, or no expiry.")
        )
        return None
    if expires_in is not None:
        if conf.max_lifetime is not None and expires_in > conf.max_lifetime:
            errors.setdefault("expires_at", []).append(_lifetime_limit_message(conf.max_lifetime))
            return None
        try:
            expires_at = now + expires_in
        except OverflowError:
            errors.setdefault("expires_at", []).append(_("That lifetime is too long."))
            return None
    elif expires_at is None and not never_expires:
        expires_at = _default_expiry(now, parent)
    if expires_at is None:  # never expires: asked for, or the configured default
        if not conf.allow_non_expiring:
            errors.setdefault("expires_at", []).append(
                _("Tokens that never expire are not allowed.")
            )
        elif parent is not None and parent.expires_at is not None:
            errors.setdefault("expires_at", []).append(
                _("A token cannot outlive the token that creates it.")
            )
        return None
    if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
        errors.setdefault("expires_at", []).append(_("The expiry must be a time with a time zone."))
    elif expires_at <= now:
        errors.setdefault("expires_at", []).append(_("The expiry time must be in the future."))
    elif conf.max_lifetime is not None and expires_at > now + conf.max_lifetime:
        errors.setdefault("expires_at", []).append(_lifetime_limit_message(conf.max_lifetime))
    elif parent is not None and parent.expires_at is not None and expires_at > parent.expires_at:
        errors.setdefault("expires_at", []).append(
            _("A token cannot outlive the token that creates it.")
        )
    return expires_at


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


def _parent_networks(parent: APIToken | None) -> list[IPNetwork]:
    return [ipaddress.ip_network(entry) for entry in (parent.allowed_ips if parent else [])]


def clean_allowed_ips(value: Any, parent: APIToken | None, errors: Errors) -> list[str]:
    """Return the normalised allow-list (``[]``: anywhere) for *value*, a list or a text.

    A token created or changed by a restricted token stays within that token's
    networks: by default it inherits them, and it can only narrow them.
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
    bounds = _parent_networks(parent)
    if bounds and not problems:
        if not networks:
            networks = set(bounds)  # inherited: a restricted token cannot mint an open one
        outside = [
            str(net)
            for net in networks
            if not any(net.version == b.version and net.subnet_of(b) for b in bounds)  # type: ignore[arg-type]
        ]
        if outside:
            problems.append(
                _("A token cannot allow networks its parent token does not: %(networks)s.")
                % {"networks": ", ".join(sorted(outside))}
            )
    if problems:
        errors.setdefault("allowed_ips", []).extend(problems)
        return []
    return [str(net) for net in sorted(networks, key=lambda net: (net.version, net))]


def _per_second(rate: str) -> float:
    count, seconds = parse_rate(rate) or (0, 1)
    return count / seconds


def rate_ceiling(actor: Any, parent: APIToken | None) -> str | None:
    """The loosest rate *actor* may give a token (``None``: any), and the one rule for it.

    A token made or changed by a token is never looser than that token's rate. Apart
    from that, whoever manages every token (and code or a command, *actor* ``None``)
    may set any rate; owners may only tighten ``DEFAULT_TOKEN_RATE``.
    """
    from tokens_app.services.access import can_manage_all  # validation sits under services

    default = token_settings().default_token_rate
    if parent is not None and (parent.rate_limit or default):
        return parent.rate_limit or default
    if actor is None or can_manage_all(actor):
        return None
    return default


def clean_rate_limit(value: Any, actor: Any, parent: APIToken | None, errors: Errors) -> str:
    """Return the token's own rate (``""``: the default applies) for *value*."""
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
    ceiling = rate_ceiling(actor, parent)
    if ceiling is None:
        return str(text)
    if text == "" and parent is not None:
        return ceiling  # inherited from the parent token, like its networks
    effective = text or token_settings().default_token_rate or ceiling
    if _per_second(effective) > _per_second(ceiling):
        errors.setdefault("rate_limit", []).append(
            _("The rate may be at most %(max)s.") % {"max": ceiling}
        )
        return ""
    return str(text)
