"""Every business rule about tokens, once: issue, revoke, authenticate, look up.

The admin, the REST API and the management commands are thin adapters over
these functions; none of them decides anything that is decided here.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import authenticate as django_authenticate
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_ratelimit.core import get_usage

from tokens_app import clock, hashing, keys, validation
from tokens_app.client import client_ip
from tokens_app.conf import token_settings
from tokens_app.models import APIToken, APITokenQuerySet, TokenEvent, TokenStatus

logger = logging.getLogger("tokens_app")

MAX_REASON_LENGTH = 200
_KEY_ID_ATTEMPTS = 5


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token and its plaintext, which exists only here (kept out of ``repr``)."""

    token: APIToken
    plaintext: str = field(repr=False)


class InvalidToken(Exception):  # noqa: N818 — reads better at the raise sites
    """Authentication failed. ``reason`` is for the server log only, never for the client."""

    def __init__(self, reason: str, key_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id


def _check_name_free(owner: Any, name: str, now: datetime, exclude: APIToken | None = None) -> None:
    clashes = APIToken.objects.for_owner(owner).usable(now).filter(name=name)
    if exclude is not None:
        clashes = clashes.exclude(pk=exclude.pk)
    if clashes.exists():
        raise ValidationError(
            {"name": _("An active token named %(name)s already exists.") % {"name": name}}
        )


def _check_owner_quota(owner: Any, name: str, now: datetime) -> None:
    _check_name_free(owner, name, now)
    active = APIToken.objects.for_owner(owner).usable(now)
    limit = token_settings().max_active_tokens_per_user
    if limit is not None and active.count() >= limit:
        raise ValidationError(
            ngettext(
                "The owner already has %(limit)d active token, the most allowed.",
                "The owner already has %(limit)d active tokens, the most allowed.",
                limit,
            )
            % {"limit": limit}
        )


def _lock_owner(owner: Any) -> None:
    # Serialises issuing per owner (on databases with row locks), so the name
    # and quota checks cannot be raced by two concurrent requests.
    user_model = get_user_model()
    user_model._default_manager.select_for_update().filter(pk=owner.pk).exists()


# --- issuing and revoking ---------------------------------------------------------------


def _record(
    token: APIToken,
    kind: str,
    *,
    actor: Any,
    ip: str | None,
    via: str,
    detail: dict[str, Any] | None = None,
) -> TokenEvent:
    return TokenEvent.objects.create(
        token=token,
        key_id=token.key_id,
        kind=kind,
        actor=actor if getattr(actor, "pk", None) else None,
        created_at=clock.now(),
        ip=ip,
        via=via,
        detail=detail or {},
    )


def _insert_with_fresh_key_id(token: APIToken) -> str:
    prefix = token_settings().prefix
    for _attempt in range(_KEY_ID_ATTEMPTS):
        key_id, secret = keys.generate_key_id(), keys.generate_secret()
        token.key_id = key_id
        token.secret_hash = hashing.hash_secret(secret)
        try:
            with transaction.atomic():
                token.save(force_insert=True)
        except IntegrityError:
            # Only a key-id collision is retried; anything else is a real error.
            if not APIToken.objects.filter(key_id=key_id).exists():
                raise
            token.pk = None
            continue
        return keys.assemble(prefix, key_id, secret)
    raise IntegrityError("could not find a free key id")


def issue_token(
    owner: Any,
    *,
    name: str,
    scopes: Iterable[str],
    description: str = "",
    expires_at: datetime | None = None,
    expires_in: timedelta | None = None,
    never_expires: bool = False,
    actor: Any = None,
    ip: str | None = None,
    via: str = "",
    parent: APIToken | None = None,
) -> IssuedToken:
    """Issue a token for *owner*; the one issuing path (admin, API and commands call it).

    Without an expiry the configured default lifetime applies. *parent* is the
    token the request authenticated with, if any: the new token can hold no
    scope and outlive no date that the parent cannot. Raise ``ValidationError``
    (keyed by field) and write nothing when any rule is broken.
    """
    now = clock.now()
    errors: dict[str, list[Any]] = {}
    if owner is None or not getattr(owner, "is_active", False):
        errors["owner"] = [_("The owner must be an active user.")]
    elif actor is not None and not may_issue_for(actor, owner):
        errors["owner"] = [_("You may issue tokens only for yourself.")]
    clean_name = validation.clean_name(name, errors)
    clean_description = validation.clean_description(description, errors)
    scope_names = validation.clean_scopes(owner, scopes, parent, errors)
    expiry = validation.resolve_expiry(now, expires_at, expires_in, never_expires, parent, errors)
    if errors:
        raise ValidationError(errors)
    token = APIToken(
        owner=owner,
        name=clean_name,
        description=clean_description,
        scopes=scope_names,
        created_at=now,
        created_by=actor if getattr(actor, "pk", None) else None,
        expires_at=expiry,
    )
    with transaction.atomic():
        _lock_owner(owner)
        _check_owner_quota(owner, clean_name, now)
        plaintext = _insert_with_fresh_key_id(token)
        _record(
            token,
            TokenEvent.Kind.ISSUED,
            actor=actor,
            ip=ip,
            via=via,
            detail={"scopes": scope_names, "expires_at": expiry.isoformat() if expiry else None},
        )
    logger.info("Issued API token %s for user pk=%s via %s", token.key_id, owner.pk, via or "code")
    return IssuedToken(token=token, plaintext=plaintext)


def revoke_token(
    token: APIToken,
    *,
    actor: Any = None,
    reason: str = "",
    ip: str | None = None,
    via: str = "",
) -> bool:
    """Revoke *token* at once; the single revoke path. Return whether this call revoked it.

    Revoking an already revoked token changes nothing and returns ``False``.
    """
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise ValidationError(
            {
                "reason": _("The reason must be text of at most %(max)d characters.")
                % {"max": MAX_REASON_LENGTH}
            }
        )
    now = clock.now()
    revoked_by = actor if getattr(actor, "pk", None) else None
    with transaction.atomic():
        changed = APIToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=revoked_by, revoke_reason=reason.strip()
        )
        if changed:
            _record(
                token,
                TokenEvent.Kind.REVOKED,
                actor=actor,
                ip=ip,
                via=via,
                detail={"reason": reason.strip()},
            )
    token.refresh_from_db(fields=["revoked_at", "revoked_by", "revoke_reason"])
    if changed:
        logger.info("Revoked API token %s via %s", token.key_id, via or "code")
    return bool(changed)


def revoke_tokens(
    tokens: Iterable[APIToken],
    *,
    actor: Any = None,
    reason: str = "",
    ip: str | None = None,
    via: str = "",
) -> int:
    """Revoke each of *tokens* through :func:`revoke_token`; return how many this call revoked."""
    return sum(revoke_token(t, actor=actor, reason=reason, ip=ip, via=via) for t in tokens)


def rotate_token(
    token: APIToken,
    *,
    actor: Any = None,
    grace_seconds: int = 0,
    ip: str | None = None,
    via: str = "",
) -> IssuedToken:
    """Give *token* a new secret, returned once; same record, scopes, name and expiry.

    The old secret stops working at once, or after *grace_seconds* (at most
    ``MAX_ROTATION_GRACE``) so a deployment can switch over without downtime.
    Only a usable token can be rotated.
    """
    limit = token_settings().max_rotation_grace
    if type(grace_seconds) is not int or not 0 <= grace_seconds <= limit.total_seconds():
        raise ValidationError(
            {
                "grace_seconds": _("Give a whole number of seconds from 0 to %(max)d.")
                % {"max": int(limit.total_seconds())}
            }
        )
    now = clock.now()
    if not token.is_usable(now):
        raise ValidationError(_("Only an active token can be rotated."))
    secret = keys.generate_secret()
    keep_old = grace_seconds > 0
    changes = {
        "secret_hash": hashing.hash_secret(secret),
        "previous_secret_hash": token.secret_hash if keep_old else "",
        "previous_secret_valid_until": now + timedelta(seconds=grace_seconds) if keep_old else None,
    }
    with transaction.atomic():
        APIToken.objects.filter(pk=token.pk).update(**changes)
        for name, value in changes.items():
            setattr(token, name, value)
        _record(
            token,
            TokenEvent.Kind.ROTATED,
            actor=actor,
            ip=ip,
            via=via,
            detail={"grace_seconds": grace_seconds},
        )
    logger.info("Rotated API token %s via %s", token.key_id, via or "code")
    return IssuedToken(
        token=token, plaintext=keys.assemble(token_settings().prefix, token.key_id, secret)
    )


def plan_token_update(
    token: APIToken,
    *,
    actor: Any,
    name: str | None = None,
    description: str | None = None,
    scopes: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Return the fields that :func:`update_token` would change, with their new values.

    Write nothing; raise ``ValidationError`` (keyed by field) when a rule is
    broken. Forms call it to show errors before anything is saved.
    """
    errors: validation.Errors = {}
    wanted: dict[str, Any] = {}
    if name is not None:
        wanted["name"] = validation.clean_name(name, errors)
    if description is not None:
        wanted["description"] = validation.clean_description(description, errors)
    if scopes is not None:
        if not can_manage_all(actor):
            errors.setdefault("scopes", []).append(_("You may not change a token's scopes."))
        wanted["scopes"] = validation.clean_scopes(token.owner, scopes, None, errors)
    if errors:
        raise ValidationError(errors)
    changes = {f: value for f, value in wanted.items() if getattr(token, f) != value}
    if changes and token.revoked_at is not None:
        raise ValidationError(_("A revoked token cannot be changed."))
    if "name" in changes:
        _check_name_free(token.owner, changes["name"], clock.now(), exclude=token)
    return changes


def update_token(
    token: APIToken,
    *,
    actor: Any,
    name: str | None = None,
    description: str | None = None,
    scopes: Iterable[str] | None = None,
    ip: str | None = None,
    via: str = "",
) -> list[str]:
    """Change a token's name, description or scopes; return the names of the changed fields.

    Secrets, owners and dates never change here. Changing scopes needs the
    manage-all right and obeys the owner's grant policy; a revoked token is
    frozen. Raise ``ValidationError`` and write nothing when a rule is broken.
    """
    with transaction.atomic():
        _lock_owner(token.owner)  # the name check below cannot be raced
        changes = plan_token_update(
            token, actor=actor, name=name, description=description, scopes=scopes
        )
        if not changes:
            return []
        APIToken.objects.filter(pk=token.pk).update(**changes)
        detail = {f: {"from": getattr(token, f), "to": value} for f, value in changes.items()}
        for f, value in changes.items():
            setattr(token, f, value)
        _record(token, TokenEvent.Kind.UPDATED, actor=actor, ip=ip, via=via, detail=detail)
    return list(changes)


# --- who may see what -------------------------------------------------------------------

MANAGE_ALL_PERMISSION = "tokens_app.manage_all_tokens"


def can_manage_all(user: Any) -> bool:
    """Return whether *user* may see and manage every user's tokens (not just their own)."""
    if user is None or not getattr(user, "is_active", False):
        return False
    return bool(getattr(user, "is_superuser", False) or user.has_perm(MANAGE_ALL_PERMISSION))


def visible_tokens(user: Any) -> APITokenQuerySet:
    """Return the tokens *user* may see and manage: all of them, or only their own."""
    queryset = APIToken.objects.select_related("owner", "created_by", "revoked_by")
    return queryset if can_manage_all(user) else queryset.filter(owner=user.pk)


def may_issue_for(actor: Any, owner: Any) -> bool:
    """Return whether *actor* may issue a token owned by *owner*."""
    return can_manage_all(actor) or getattr(owner, "pk", None) == getattr(actor, "pk", None)


# --- look-ups ---------------------------------------------------------------------------


def find_token(reference: str) -> APIToken | None:
    """Return the token named by a key id or by a full token string, or ``None``.

    A full token is recognised by its checksum; its secret is not needed to name it.
    """
    parsed = keys.parse(reference.strip(), token_settings().prefix) if reference else None
    key_id = parsed.key_id if parsed else reference.strip()
    if not keys.is_valid_key_id(key_id):
        return None
    return APIToken.objects.select_related("owner").filter(key_id=key_id).first()


def tokens_for(owner: Any = None) -> APITokenQuerySet:
    """Return tokens (of *owner*, or all), newest first, with owners joined."""
    queryset = APIToken.objects.select_related("owner")
    return queryset.for_owner(owner) if owner is not None else queryset


# --- authentication ---------------------------------------------------------------------


def _touch_last_used(token: APIToken, now: datetime, ip: str | None) -> None:
    interval = token_settings().last_used_interval
    if token.last_used_at is not None and now - token.last_used_at < interval:
        return
    # Conditional, so concurrent requests write at most once per interval.
    APIToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - interval)
    ).update(last_used_at=now, last_used_ip=ip)
    token.last_used_at, token.last_used_ip = now, ip


def _in_rotation_grace(token: APIToken, now: datetime) -> bool:
    until = token.previous_secret_valid_until
    return bool(token.previous_secret_hash) and until is not None and now < until


def authenticate(raw: str, *, ip: str | None = None) -> APIToken:
    """Return the usable token named by the credential *raw*, or raise ``InvalidToken``.

    Malformed input fails before any query; a well-formed one costs one query
    (token joined with owner). Unknown ids run a dummy verification so they
    cost what a wrong secret costs. Besides the rare hash upgrade, the only
    write is the ``last_used`` stamp, at most once per configured interval.
    """
    parsed = keys.parse(raw, token_settings().prefix)
    if parsed is None:
        raise InvalidToken("malformed")
    token = APIToken.objects.select_related("owner").filter(key_id=parsed.key_id).first()
    if token is None:
        hashing.burn_verification_time(parsed.secret)
        raise InvalidToken("unknown key id", parsed.key_id)
    now = clock.now()
    matches, upgraded = hashing.verify_secret(parsed.secret, token.secret_hash)
    if not matches and _in_rotation_grace(token, now):
        matches, upgraded = hashing.verify_secret(parsed.secret, token.previous_secret_hash)
        upgraded = None  # the previous hash is retired, never upgraded
    if not matches:
        raise InvalidToken("wrong secret", token.key_id)
    status = token.status(now)
    if status is not TokenStatus.ACTIVE:
        raise InvalidToken(status.value, token.key_id)
    if upgraded:
        APIToken.objects.filter(pk=token.pk, secret_hash=token.secret_hash).update(
            secret_hash=upgraded
        )
        token.secret_hash = upgraded
    _touch_last_used(token, now, ip)
    return token


# --- password exchange ------------------------------------------------------------------

PASSWORD_RATE_GROUP = "tokens_app.password-exchange"  # noqa: S105 — a cache key prefix


class TooManyAttempts(Exception):  # noqa: N818 — reads better at the raise sites
    """Password attempts over the configured rate; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


def _normalised_username(username: str) -> str:
    return username.strip().casefold()


def count_password_attempt(request: HttpRequest, username: str) -> None:
    """Count one password attempt per client IP and per username; raise when over the rate.

    Every attempt counts, right password or not, so guessing cannot be told
    apart from use. A cache that cannot count fails closed (django-ratelimit
    reports it as limited).
    """
    rate = token_settings().password_exchange_rate
    keys_by_name = {
        "ip": lambda group, req: client_ip(req) or "unknown",
        "user": lambda group, req: _normalised_username(username),
    }
    waits = []
    for name, key in keys_by_name.items():
        usage = get_usage(
            request, group=f"{PASSWORD_RATE_GROUP}.{name}", key=key, rate=rate, increment=True
        )
        if usage is not None and usage["should_limit"]:
            waits.append(max(int(usage["time_left"]), 1))
    if waits:
        logger.warning("Password exchange rate exceeded (ip %s)", client_ip(request) or "-")
        raise TooManyAttempts(max(waits))


def check_password(request: HttpRequest, username: str, password: str) -> Any:
    """Return the active user with these credentials, or ``None``.

    Django's backends run the password hasher for unknown and inactive users
    too, so the answer time does not tell who exists.
    """
    user = django_authenticate(request, username=username, password=password)
    return user if user is not None and getattr(user, "is_active", False) else None
