"""The one authority rule: what a credential may do to a token, and what a token may keep.

Every path that creates, changes, rotates, revokes or derives a credential asks here
(``services.issuing``, ``services.rotation`` and ``services.updating`` for tokens,
``services.jwts`` for JWTs); adapters (API views, admin, commands) only say who is
asking. Two questions, two places:

- :func:`authorize` (here): may this credential do this action (to this token, for this owner)?
- the *result check*: whatever an action hands out (a new token, a rotated token's
  secret, a JWT) stays within the credential that asked, in scopes, expiry, networks
  and rate, and, through lineage, transitively up to the owner. :func:`covers` (here)
  judges an existing token, ``services.grants`` (``derive``, ``within_parent``) what is
  asked for, and :func:`clamp_child` (here) keeps descendants within a narrowed parent.

The credentials, strongest first:

- ``OPERATOR``: code or a management command (no actor, nothing presented). Trusted.
- ``USER``: a person who proved it with a password or a session. Manages their own
  tokens (every token, with the manage-all right); bounded only by the grant policy.
- ``TOKEN``: an API token's current secret. Creates and revokes its owner's tokens;
  rotates and changes only itself and the tokens derived from it (its family), and
  only those that can do no more than it can (:func:`covers`). Whatever it creates or
  obtains stays within it, counts against its rate, and is revoked and narrowed with
  it: a secret it obtained by rotating a sibling would outlive its revocation.
- ``GRACE``: a rotated token's previous secret, during the rotation grace. It is for
  finishing work in flight: it authenticates requests until the grace ends, may revoke,
  and may derive only what ends when the grace does; it may not rotate or change.
- ``OTHER``: a JWT, or any credential this module cannot bound. It may not act on
  tokens at all (a long-lived token minted from a five-minute JWT escapes both).

Revocation is allowed to every credential that may manage the owner's tokens, however
weak: it takes power away and hands nothing out, and it is what a leak response needs.
"""

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.utils.translation import gettext_lazy as _

from tokens_app.conf import token_settings
from tokens_app.core import clock, limits, scopes
from tokens_app.core.rates import parse_rate
from tokens_app.lookup import find_current_token
from tokens_app.models import APIToken, TokenStatus
from tokens_app.services.access import may_issue_for
from tokens_app.services.caller import Caller
from tokens_app.services.credentials import Budget, token_budgets, token_rate
from tokens_app.services.errors import NotPermitted as NotPermitted  # raised here, re-exported

MAX_LINEAGE_DEPTH = limits.MAX_LINEAGE_DEPTH


class Kind(StrEnum):
    OPERATOR = "operator"
    USER = "user"
    TOKEN = "token"  # noqa: S105 — a kind of credential
    GRACE = "grace"
    OTHER = "other"


class Action(StrEnum):
    CREATE = "create"
    CHANGE = "change"
    ROTATE = "rotate"
    REVOKE = "revoke"
    MINT_JWT = "mint_jwt"


@dataclass(frozen=True)
class Credential:
    """Who asks: the kind, the person acting, and the token presented (if any)."""

    kind: Kind
    user: Any = None
    token: APIToken | None = None
    #: For ``GRACE``: when the presented (previous) secret stops.
    grace_until: datetime | None = None


def credential_of_caller(caller: Caller) -> Credential:
    """The credential *caller* acts with: :func:`credential_of` its user and what it presented."""
    return credential_of(caller.user, caller.presented)


def credential_of(actor: Any, presented: Any = None) -> Credential:
    """Name the credential of a request: *actor* acts, presenting *presented* (``request.auth``).

    An ``APIToken`` is a ``TOKEN``, or ``GRACE`` when authentication matched its previous
    secret; nothing presented is a ``USER`` (a session, a password), or the ``OPERATOR``
    when there is no actor either; anything else (a JWT) is ``OTHER``.
    """
    if isinstance(presented, APIToken):
        grace_until = presented.presented_grace_until
        kind = Kind.TOKEN if grace_until is None else Kind.GRACE
        token = _current(presented) if presented.from_token_cache else presented
        return Credential(kind, token.owner, token, grace_until)
    if presented is not None:
        return Credential(Kind.OTHER, actor)
    return Credential(Kind.USER, actor) if actor is not None else Credential(Kind.OPERATOR)


def _current(presented: APIToken) -> APIToken:
    """The database's row for *presented*, which came from the token cache.

    A cached row trails the database by up to ``TOKEN_CACHE_MAX_LAG_MS``: enough to serve a
    request, never enough to derive from (a JWT minted from a row narrowed a moment ago
    would carry the old scopes for its whole life) or to judge an action by. So every
    action reads the row again and is judged by what it says now: its scopes, limits,
    lineage and owner. The presented secret was verified against the cached row; it still
    stands if the hash it matched is unchanged (and a grace it relied on still runs), else
    the credential is refused and the client authenticates anew.
    """
    current = find_current_token(presented.key_id)
    now = clock.now()
    if current is None or current.status(now) is not TokenStatus.ACTIVE:
        raise NotPermitted(_("This token is no longer valid."))
    if presented.presented_grace_until is None:
        stands = current.secret_hash == presented.secret_hash
    else:
        until = current.previous_secret_valid_until
        stands = (
            current.previous_secret_hash == presented.previous_secret_hash
            and until is not None
            and now < until
        )
        current.presented_grace_until = until
    if not stands:
        raise NotPermitted(_("This token changed a moment ago; authenticate again."))
    return current


@dataclass(frozen=True)
class Bounds:
    """The most a credential can hand on; ``None`` (or empty) means no limit of that kind."""

    scopes: frozenset[str] | None = None
    expires_at: datetime | None = None
    networks: tuple[str, ...] = ()
    #: The loosest rate a derived token may have (``None``: any, as far as the credential goes).
    rate: str | None = None
    #: The rate budgets every request of a derived credential also counts against.
    budgets: tuple[Budget, ...] = ()
    #: The ``ancestry`` a token created by this credential gets (``[[key id, rate], ...]``).
    ancestry: tuple[tuple[str, str], ...] = field(default=())


UNBOUNDED = Bounds()


def bounds_of(credential: Credential) -> Bounds:
    """Return what *credential* can hand on: a token's own limits, the grace end for ``GRACE``."""
    token = credential.token
    if token is None:
        return UNBOUNDED
    expires_at = token.expires_at
    if credential.grace_until is not None:
        expires_at = min(filter(None, (expires_at, credential.grace_until)))
    lineage = tuple((str(k), str(r)) for k, r in token.ancestry)
    return Bounds(
        scopes=token.effective_scopes,
        expires_at=expires_at,
        networks=tuple(token.allowed_ips),
        rate=token_rate(token),
        budgets=tuple(token_budgets(token)),
        ancestry=(*lineage, (token.key_id, token.rate_limit)),
    )


def presented_secret_version(credential: Credential) -> int:
    """The version of the secret *credential* presented (a JWT carries it; see ``denylist``)."""
    token = credential.token
    if token is None:
        return 0
    return token.secret_version - 1 if credential.kind is Kind.GRACE else token.secret_version


# --- may it act? ---------------------------------------------------------------------------


def _manages_owner(credential: Credential, owner: Any) -> bool:
    if credential.kind is Kind.OPERATOR:
        return True
    if credential.token is not None:
        # A token acts for its own owner only, even a manager's: least privilege.
        return getattr(owner, "pk", None) == credential.token.owner_id
    return may_issue_for(credential.user, owner)


def authorize(
    credential: Credential, action: Action, *, owner: Any = None, target: APIToken | None = None
) -> None:
    """Raise ``NotPermitted`` unless *credential* may do *action* to *target* (or for *owner*).

    The single answer to "may this credential do this": the services call it before any
    write, so no adapter can forget it.
    """
    if credential.kind is Kind.OTHER:
        raise NotPermitted(_("This credential cannot manage API tokens."))
    subject_owner = target.owner if target is not None else owner
    if not _manages_owner(credential, subject_owner):
        raise NotPermitted(_("You may manage only your own tokens."))
    if action is Action.MINT_JWT and credential.token is None:
        raise NotPermitted(_("Only an API token can mint a JWT."))
    if action not in (Action.CHANGE, Action.ROTATE):
        return
    if credential.kind is Kind.GRACE:
        raise NotPermitted(
            _(
                "The previous secret of a rotated token only finishes work in progress: "
                "it cannot rotate or change tokens. Use the new secret."
            )
        )
    if target is not None and not (in_family(credential, target) and covers(credential, target)):
        raise NotPermitted(
            _(
                "A token can rotate or change only itself and the tokens it created, "
                "and only those that can do no more than it can."
            )
        )


def in_family(credential: Credential, target: APIToken) -> bool:
    """Whether *target* is the presented token or was derived from it (people: always).

    What a token obtains by rotating or changing must go when the token goes: revoking a
    token revokes its descendants and narrowing it narrows them, so only they (and the
    token itself) are within its reach. A sibling, however weak, is not.
    """
    token = credential.token
    if token is None:
        return True
    return target.pk == token.pk or any(key_id == token.key_id for key_id, _rate in target.ancestry)


def authorize_changes(credential: Credential, target: APIToken, fields: set[str]) -> None:
    """Raise ``NotPermitted`` when a change of *fields* would let *credential* escape a limit.

    A rate-limit counter is kept per key id *and rate*: a token that changed its own
    rate (even to an equal or tighter one, ``3/d`` to ``6/2d``) would start a fresh
    budget, again and again. So a token never changes its own rate; a session, a
    manager or the token that created it may (the creator's budget still counts).
    """
    if "rate_limit" in fields and credential.token is not None and credential.token.pk == target.pk:
        raise NotPermitted(
            _(
                "A token cannot change its own rate limit (that would restart its budget); "
                "change it from a session, or with the token that created it."
            )
        )


def _networks_within(inner: Iterable[str], outer: Sequence[str]) -> bool:
    """Whether every network of *inner* lies in one of *outer* (empty *inner*: anywhere)."""
    try:
        bounds = [ipaddress.ip_network(entry) for entry in outer]
        nets = [ipaddress.ip_network(entry) for entry in inner]
    except (TypeError, ValueError):
        return False  # an unreadable stored list covers nothing
    if not nets:
        return not bounds
    return all(
        any(net.version == b.version and net.subnet_of(b) for b in bounds)  # type: ignore[arg-type]
        for net in nets
    )


def _per_second(rate: str) -> float:
    count, seconds = parse_rate(rate) or (0, 1)
    return count / seconds


def covers(credential: Credential, target: APIToken) -> bool:
    """Whether *target* can do no more than *credential*: the result check of a rotation.

    Rotating hands out the target's secret, so the target's grants, expiry, networks and
    rate budgets must all lie within the credential's: its granted scopes (with their
    implications) a subset, an expiry no later, networks inside, and every budget the
    credential counts against counted by the target too (itself, or a token it created).
    A change (guardrails, name) is judged the same way: a weaker token may neither take
    over a stronger one nor lock its holder out. A token's ancestors are never covered,
    even when no limit tells them apart.
    """
    token = credential.token
    if token is None:
        return credential.kind in (Kind.OPERATOR, Kind.USER)
    if any(key_id == target.key_id for key_id, _rate in token.ancestry):
        return False  # a token never takes over (or locks out) the token it came from
    bounds = bounds_of(credential)
    registry = scopes.registry()
    if not registry.expand(target.scopes) <= registry.expand(token.scopes):
        return False
    if bounds.expires_at is not None and (
        target.expires_at is None or target.expires_at > bounds.expires_at
    ):
        return False
    if bounds.networks and not _networks_within(target.allowed_ips, bounds.networks):
        return False
    return set(bounds.budgets) <= set(token_budgets(target))


# --- keeping descendants within their parents ---------------------------------------------


def clamp_child(child: APIToken, parent: APIToken) -> dict[str, Any] | None:
    """Return the changes that bring *child* back within *parent*; ``None``: revoke it.

    Called for every descendant after a token is narrowed (scopes, networks, rate): a
    token derived from another never keeps more than its parent has now. A child left
    with no scope, or no network its parent allows, can do nothing and is revoked.
    """
    registry = scopes.registry()
    held = registry.expand(parent.scopes)
    changes: dict[str, Any] = {}
    kept = [name for name in child.scopes if name in held]
    if not kept:
        return None
    if kept != list(child.scopes):
        changes["scopes"] = kept
    if parent.allowed_ips and not _networks_within(child.allowed_ips, parent.allowed_ips):
        networks = _intersect(child.allowed_ips, parent.allowed_ips)
        if not networks:
            return None
        changes["allowed_ips"] = networks
    parent_rate = token_rate(parent)
    own = child.rate_limit or token_settings().default_token_rate
    if parent_rate and (not own or _per_second(own) > _per_second(parent_rate)):
        changes["rate_limit"] = parent_rate
    ancestry = [*[list(entry) for entry in parent.ancestry], [parent.key_id, parent.rate_limit]]
    if ancestry != child.ancestry:
        changes["ancestry"] = ancestry
    return changes


def _intersect(inner: Sequence[str], outer: Sequence[str]) -> list[str]:
    """The networks both lists allow (``inner`` empty: anywhere), normalised and sorted."""
    outer_nets = [ipaddress.ip_network(entry) for entry in outer]
    inner_nets = [ipaddress.ip_network(entry) for entry in inner] or outer_nets
    found: set[Any] = set()
    for a in inner_nets:
        for b in outer_nets:
            if a.version != b.version:
                continue
            if a.subnet_of(b):  # type: ignore[arg-type]
                found.add(a)
            elif b.subnet_of(a):  # type: ignore[arg-type]
                found.add(b)
    return [str(net) for net in sorted(found, key=lambda net: (net.version, net))]
