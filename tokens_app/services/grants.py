"""What a credential may obtain: the limits a new or changed token gets, held within it.

``services.authority`` says whether a credential may act at all (``authorize``) and whether
an existing token lies within it (``covers``); this module is the result check of what is
*asked for*: :func:`derive` holds a grant within the credential that asks (inheriting
what is left out, refusing what goes beyond), :func:`within_parent` holds a change within
the token's parent whoever asks, and :func:`lineage_of` says where a created token comes
from. Keeping descendants within a narrowed parent is ``authority.clamp_child``.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.translation import gettext_lazy as _

from tokens_app.conf import token_settings
from tokens_app.models import APIToken
from tokens_app.services.access import can_manage_all
from tokens_app.services.authority import (
    MAX_LINEAGE_DEPTH,
    Bounds,
    Credential,
    Kind,
    _networks_within,
    _per_second,
    bounds_of,
    presented_secret_version,
)

Errors = dict[str, list[Any]]


@dataclass(frozen=True)
class Grant:
    """The limits asked for a new token (or asked to change), after syntax checks."""

    scopes: list[str] | None = None
    networks: list[str] | None = None
    rate: str | None = None
    expires_at: datetime | None = None
    #: Whether *expires_at* was asked for (else it is the configured default).
    explicit_expiry: bool = True


def rate_ceiling(credential: Credential, bounds: Bounds) -> str | None:
    """The loosest rate *credential* may give a token (``None``: any).

    A token made or changed by a token is never looser than that token's rate. Apart
    from that, whoever manages every token (and code or a command) may set any rate;
    owners may only tighten ``DEFAULT_TOKEN_RATE``.
    """
    if bounds.rate:
        return bounds.rate
    if credential.kind is Kind.OPERATOR or can_manage_all(credential.user):
        return None
    return token_settings().default_token_rate


_BEYOND_CALLER = _("A token cannot grant scopes it does not hold: %(scopes)s.")
_BEYOND_PARENT = _("A token cannot hold scopes its parent token does not: %(scopes)s.")


def _bound_scopes(
    names: list[str], bounds: Bounds, errors: Errors, message: Any = _BEYOND_CALLER
) -> list[str]:
    beyond = [n for n in names if bounds.scopes is not None and n not in bounds.scopes]
    if beyond:
        errors.setdefault("scopes", []).append(message % {"scopes": ", ".join(beyond)})
    return names


_OUTSIDE_PARENT = _("A token cannot allow networks its parent token does not: %(networks)s.")
_OUTSIDE_CALLER = _(
    "The token making this change cannot allow networks it is not allowed itself: %(networks)s."
)


def _bound_networks(
    networks: list[str], bounds: Bounds, errors: Errors, message: Any = _OUTSIDE_PARENT
) -> list[str]:
    if not bounds.networks:
        return networks
    if not networks:
        return list(bounds.networks)  # inherited: a restricted token cannot mint an open one
    outside = [net for net in networks if not _networks_within([net], bounds.networks)]
    if outside:
        errors.setdefault("allowed_ips", []).append(
            message % {"networks": ", ".join(sorted(outside))}
        )
        return []
    return networks


def _bound_rate(rate: str, credential: Credential, bounds: Bounds, errors: Errors) -> str:
    ceiling = rate_ceiling(credential, bounds)
    if ceiling is None:
        return rate
    if rate == "" and bounds.rate:
        return ceiling  # inherited from the parent token, like its networks
    effective = rate or token_settings().default_token_rate or ceiling
    if _per_second(effective) > _per_second(ceiling):
        errors.setdefault("rate_limit", []).append(
            _("The rate may be at most %(max)s.") % {"max": ceiling}
        )
        return ""
    return rate


def _bound_expiry(grant: Grant, bounds: Bounds, errors: Errors) -> datetime | None:
    limit = bounds.expires_at
    if limit is None or (grant.expires_at is not None and grant.expires_at <= limit):
        return grant.expires_at
    if grant.explicit_expiry:
        errors.setdefault("expires_at", []).append(
            _("A token cannot outlive the token that creates it.")
        )
        return None
    return limit  # by default a derived token ends with the credential that made it


def derive(credential: Credential, grant: Grant, errors: Errors, *, creating: bool) -> Grant:
    """Return *grant* held within *credential*: inherited limits filled in, excess refused.

    The result check of creating (*creating*) and changing a token: a limit the
    credential has (its scopes, expiry, networks, rate) is inherited when not asked for
    and refused when exceeded; errors are collected by field, as validation's are.
    Fields left ``None`` in *grant* (not being changed) are left alone; a change never
    touches the expiry.
    """
    bounds = bounds_of(credential)
    if creating and len(bounds.ancestry) > MAX_LINEAGE_DEPTH:
        errors.setdefault("__all__", []).append(
            _("Tokens can create tokens at most %(max)d generations deep.")
            % {"max": MAX_LINEAGE_DEPTH}
        )
    return Grant(
        scopes=None if grant.scopes is None else _bound_scopes(grant.scopes, bounds, errors),
        networks=None
        if grant.networks is None
        else _bound_networks(
            grant.networks, bounds, errors, _OUTSIDE_PARENT if creating else _OUTSIDE_CALLER
        ),
        rate=None if grant.rate is None else _bound_rate(grant.rate, credential, bounds, errors),
        expires_at=_bound_expiry(grant, bounds, errors) if creating else None,
        explicit_expiry=grant.explicit_expiry,
    )


def within_parent(target: APIToken, grant: Grant, errors: Errors) -> Grant:
    """Return the change *grant* held within *target*'s parent, whoever asks for it.

    The result check of a change, next to :func:`derive`'s bound by the caller: a token
    derived from another never does more than it, so a session, a manager in the admin
    or a command may narrow a child but not take it beyond its parent (its holder, the
    parent's, would then reach what the parent cannot). Networks left empty inherit the
    parent's, as at creation.
    """
    parent = target.parent
    if parent is None:
        return grant
    as_parent = Credential(Kind.TOKEN, parent.owner, parent)
    bounds = bounds_of(as_parent)
    rate = grant.rate
    if rate is not None and bounds.rate:  # no rate of its own: nothing to stay within
        rate = _bound_rate(rate, as_parent, bounds, errors)
    return Grant(
        scopes=None
        if grant.scopes is None
        else _bound_scopes(grant.scopes, bounds, errors, _BEYOND_PARENT),
        networks=None
        if grant.networks is None
        else _bound_networks(grant.networks, bounds, errors),
        rate=rate,
        expires_at=grant.expires_at,
        explicit_expiry=grant.explicit_expiry,
    )


# --- where what it creates comes from -----------------------------------------------------


@dataclass(frozen=True)
class Lineage:
    """Where a token *credential* creates comes from: its parent, ``ancestry`` and grace."""

    parent: APIToken | None = None
    ancestry: list[list[str]] = field(default_factory=list)
    #: For a token made by a ``GRACE`` secret: that secret's version (it ends with it).
    grace_of_version: int | None = None


def lineage_of(credential: Credential) -> Lineage:
    """The lineage of a token *credential* creates (none for people)."""
    if credential.token is None:
        return Lineage()
    return Lineage(
        parent=credential.token,
        ancestry=[list(entry) for entry in bounds_of(credential).ancestry],
        grace_of_version=presented_secret_version(credential)
        if credential.kind is Kind.GRACE
        else None,
    )
