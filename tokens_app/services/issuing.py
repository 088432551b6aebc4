"""Issuing, changing, rotating and revoking tokens: every write to a token goes through here."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from tokens_app import clock, denylist, hashing, keys, validation
from tokens_app.conf import token_settings
from tokens_app.models import APIToken, TokenEvent, token_database
from tokens_app.services.access import can_manage_all, may_issue_for

logger = logging.getLogger("tokens_app")

MAX_REASON_LENGTH = 200
_KEY_ID_ATTEMPTS = 5


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token and its plaintext, which exists only here (kept out of ``repr``)."""

    token: APIToken
    plaintext: str = field(repr=False)


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
            with transaction.atomic(using=token_database()):
                token.save(force_insert=True)
        except IntegrityError:
            # Only a key-id collision is retried; anything else is a real error.
            if not APIToken.objects.filter(key_id=key_id).exists():
                raise
            token.pk = None
            continue
        return keys.assemble(prefix, key_id, secret)
    raise IntegrityError("could not find a free key id")


def _issued_detail(token: APIToken) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "scopes": token.scopes,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }
    if token.allowed_ips:
        detail["allowed_ips"] = token.allowed_ips
    if token.rate_limit:
        detail["rate_limit"] = token.rate_limit
    return detail


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
    allowed_ips: Iterable[str] | str = (),
    rate_limit: str = "",
) -> IssuedToken:
    """Issue a token for *owner*; the one issuing path (admin, API and commands call it).

    Without an expiry the configured default lifetime applies. *parent* is the
    token the request authenticated with, if any: the new token can hold no
    scope, outlive no date, reach no network and go no faster than the parent can.
    *allowed_ips* (addresses or CIDR networks; empty: anywhere) and *rate_limit*
    (such as ``1000/h``; empty: ``DEFAULT_TOKEN_RATE``) are the token's guardrails.
    Raise ``ValidationError`` (keyed by field) and write nothing when any rule is broken.
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
    networks = validation.clean_allowed_ips(allowed_ips, parent, errors)
    rate = validation.clean_rate_limit(rate_limit, actor, parent, errors)
    expiry = validation.resolve_expiry(now, expires_at, expires_in, never_expires, parent, errors)
    if errors:
        raise ValidationError(errors)
    token = APIToken(
        owner=owner,
        name=clean_name,
        description=clean_description,
        scopes=scope_names,
        allowed_ips=networks,
        rate_limit=rate,
        created_at=now,
        created_by=actor if getattr(actor, "pk", None) else None,
        expires_at=expiry,
    )
    with transaction.atomic(using=token_database()):
        _lock_owner(owner)
        _check_owner_quota(owner, clean_name, now)
        plaintext = _insert_with_fresh_key_id(token)
        _record(
            token,
            TokenEvent.Kind.ISSUED,
            actor=actor,
            ip=ip,
            via=via,
            detail=_issued_detail(token),
        )
    logger.info("Issued API token %s for user pk=%s via %s", token.key_id, owner.pk, via or "code")
    return IssuedToken(token=token, plaintext=plaintext)


def _clean_reason(reason: Any) -> str:
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise ValidationError(
            {
                "reason": _("The reason must be text of at most %(max)d characters.")
                % {"max": MAX_REASON_LENGTH}
            }
        )
    return reason.strip()


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
    reason = _clean_reason(reason)
    now = clock.now()
    revoked_by = actor if getattr(actor, "pk", None) else None
    with transaction.atomic(using=token_database()):
        changed = APIToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=revoked_by, revoke_reason=reason
        )
        if changed:
            _record(
                token,
                TokenEvent.Kind.REVOKED,
                actor=actor,
                ip=ip,
                via=via,
                detail={"reason": reason},
            )
            # Before the commit, so its JWTs are refused from the moment the revoke is
            # visible (a rollback leaves an entry that only refuses JWTs early: safe).
            denylist.deny(token.key_id)
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


def revoke_all_tokens(
    owner: Any,
    *,
    actor: Any = None,
    reason: str = "",
    ip: str | None = None,
    via: str = "",
) -> int:
    """Revoke every token of *owner* not yet revoked (expired ones too); return how many.

    The response to a compromised account: one step, one audit event per token, and
    each token's JWTs refused (through :func:`revoke_token`). *actor* must be the owner
    or manage every token (``None``: code or a command, trusted).
    """
    if actor is not None and not may_issue_for(actor, owner):
        raise PermissionDenied(_("You may revoke only your own tokens."))
    reason = _clean_reason(reason)
    pending = APIToken.objects.for_owner(owner).filter(revoked_at__isnull=True).order_by("pk")
    revoked = revoke_tokens(pending, actor=actor, reason=reason, ip=ip, via=via)
    logger.info("Revoked all %d API tokens of user pk=%s via %s", revoked, owner.pk, via or "code")
    return revoked


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
    with transaction.atomic(using=token_database()):
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


def _unchanged_networks(token: APIToken, allowed_ips: Any) -> bool:
    scratch: validation.Errors = {}
    cleaned = validation.clean_allowed_ips(allowed_ips, None, scratch)
    return not scratch and cleaned == token.allowed_ips


class TokenChanges(TypedDict, total=False):
    """What a token update may ask for: ``None`` (or absent) leaves a field as it is.

    *parent* is the token the request authenticated with, which bounds the guardrails.
    """

    name: str | None
    description: str | None
    scopes: Iterable[str] | None
    allowed_ips: Iterable[str] | str | None
    rate_limit: str | None
    parent: APIToken | None


def plan_token_update(
    token: APIToken, *, actor: Any, **asked: Unpack[TokenChanges]
) -> dict[str, Any]:
    """Return the fields that :func:`update_token` would change, with their new values.

    Write nothing; raise ``ValidationError`` (keyed by field) when a rule is
    broken. Forms call it to show errors before anything is saved. Whoever may
    manage the token may change its guardrails, within the bounds of *parent* (the
    token the request authenticated with) and of ``validation.rate_ceiling``.
    """
    name, description, scopes = asked.get("name"), asked.get("description"), asked.get("scopes")
    allowed_ips, rate_limit = asked.get("allowed_ips"), asked.get("rate_limit")
    parent = asked.get("parent")
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
    # An unchanged guardrail is not judged again: a form re-sends every field, and a value
    # someone else was entitled to set must not block a rename.
    if allowed_ips is not None and not _unchanged_networks(token, allowed_ips):
        wanted["allowed_ips"] = validation.clean_allowed_ips(allowed_ips, parent, errors)
    if rate_limit is not None and not (
        isinstance(rate_limit, str) and rate_limit.strip() == token.rate_limit
    ):
        wanted["rate_limit"] = validation.clean_rate_limit(rate_limit, actor, parent, errors)
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
    ip: str | None = None,
    via: str = "",
    **asked: Unpack[TokenChanges],
) -> list[str]:
    """Change a token's name, description, scopes or guardrails; return the changed fields.

    Secrets, owners and dates never change here. Changing scopes needs the
    manage-all right and obeys the owner's grant policy; a revoked token is
    frozen. Raise ``ValidationError`` and write nothing when a rule is broken.
    """
    with transaction.atomic(using=token_database()):
        _lock_owner(token.owner)  # the name check below cannot be raced
        changes = plan_token_update(token, actor=actor, **asked)
        if not changes:
            return []
        APIToken.objects.filter(pk=token.pk).update(**changes)
        detail = {f: {"from": getattr(token, f), "to": value} for f, value in changes.items()}
        for f, value in changes.items():
            setattr(token, f, value)
        _record(token, TokenEvent.Kind.UPDATED, actor=actor, ip=ip, via=via, detail=detail)
    return list(changes)
