"""Issuing, changing and rotating tokens; what may be done is ``services.authority``'s to say."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from tokens_app.conf import token_settings
from tokens_app.core import clock, hashing, tokenstring, validation
from tokens_app.jwt import denylist
from tokens_app.models import APIToken, TokenEvent, token_database
from tokens_app.services import authority
from tokens_app.services.access import can_manage_all
from tokens_app.services.audit import record_event
from tokens_app.services.revoking import MAX_REASON_LENGTH, descendants, revoke_family

logger = logging.getLogger("tokens_app")

__all__ = ["MAX_REASON_LENGTH", "IssuedToken", "issue_token", "rotate_token", "update_token"]

_KEY_ID_ATTEMPTS = 5
#: Changing any of these changes what a token may do: its JWTs are re-minted, its
#: descendants brought back within it.
_POWER_FIELDS = frozenset({"scopes", "allowed_ips", "rate_limit"})


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


# --- issuing ------------------------------------------------------------------------------


def _insert_with_fresh_key_id(token: APIToken) -> str:
    prefix = token_settings().prefix
    for _attempt in range(_KEY_ID_ATTEMPTS):
        key_id, secret = tokenstring.generate_key_id(), tokenstring.generate_secret()
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
        return tokenstring.assemble(prefix, key_id, secret)
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
    if token.parent is not None:
        detail["parent"] = token.parent.key_id
    return detail


def _check_owner(credential: authority.Credential, owner: Any, errors: validation.Errors) -> None:
    if owner is None or not getattr(owner, "is_active", False):
        errors["owner"] = [_("The owner must be an active user.")]
    else:
        try:
            authority.authorize(credential, authority.Action.CREATE, owner=owner)
        except authority.NotPermitted as refused:
            errors["owner"] = [refused.message]  # shown next to the owner a form asked for


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
    parent: Any = None,
    allowed_ips: Iterable[str] | str = (),
    rate_limit: str = "",
) -> IssuedToken:
    """Issue a token for *owner*; the one issuing path (admin, API and commands call it).

    Without an expiry the configured default lifetime applies. *parent* is the
    credential the request presented (``request.auth``), if any: a token it creates
    can hold no scope, outlive no date, reach no network and go no faster than it can
    (``services.authority.derive``), shares its rate budget and is revoked with it.
    *allowed_ips* (addresses or CIDR networks; empty: anywhere) and *rate_limit*
    (such as ``1000/h``; empty: ``DEFAULT_TOKEN_RATE``) are the token's guardrails.
    Raise ``ValidationError`` (keyed by field) and write nothing when any rule is broken,
    ``authority.NotPermitted`` when the credential may not issue for *owner* at all.
    """
    now = clock.now()
    credential = authority.credential_of(actor, parent)
    errors: validation.Errors = {}
    _check_owner(credential, owner, errors)
    clean_name = validation.clean_name(name, errors)
    clean_description = validation.clean_description(description, errors)
    expiry, explicit = validation.resolve_expiry(now, expires_at, expires_in, never_expires, errors)
    asked = authority.Grant(
        scopes=validation.clean_scopes(owner, scopes, errors),
        networks=validation.clean_allowed_ips(allowed_ips, errors),
        rate=validation.clean_rate_limit(rate_limit, errors),
        expires_at=expiry,
        explicit_expiry=explicit and "expires_at" not in errors,
    )
    granted = authority.derive(credential, asked, errors, creating=True)
    if errors:
        raise ValidationError(errors)
    lineage = authority.lineage_of(credential)
    token = APIToken(
        owner=owner,
        name=clean_name,
        description=clean_description,
        scopes=granted.scopes or [],
        allowed_ips=granted.networks or [],
        rate_limit=granted.rate or "",
        created_at=now,
        created_by=actor if getattr(actor, "pk", None) else None,
        expires_at=granted.expires_at,
        parent=lineage.parent,
        ancestry=lineage.ancestry,
        grace_of_version=lineage.grace_of_version,
    )
    with transaction.atomic(using=token_database()):
        _lock_owner(owner)
        _check_owner_quota(owner, clean_name, now)
        if not _still_usable(lineage, now):
            # Revoked (or its secret rotated away) while this request was in flight:
            # nothing derived from it may appear.
            raise ValidationError(_("The token making this request is no longer active."))
        plaintext = _insert_with_fresh_key_id(token)
        record_event(
            token, TokenEvent.Kind.ISSUED, actor=actor, ip=ip, via=via, detail=_issued_detail(token)
        )
    logger.info("Issued API token %s for user pk=%s via %s", token.key_id, owner.pk, via or "code")
    return IssuedToken(token=token, plaintext=plaintext)


def _still_usable(lineage: authority.Lineage, now: datetime) -> bool:
    """Whether the credential creating a token with *lineage* still works (people: yes)."""
    # Locked: a revocation or rotation of the parent either commits first (and is seen
    # here) or waits for this insert (and then finds the new child among its children).
    if lineage.parent is None:
        return True
    stored = (
        APIToken.objects.select_for_update(of=("self",))
        .select_related("owner")
        .filter(pk=lineage.parent.pk)
        .first()
    )
    if stored is None or not stored.is_usable(now):
        return False
    if lineage.grace_of_version is None:
        return True
    valid_until = stored.previous_secret_valid_until
    return (
        stored.secret_version == lineage.grace_of_version + 1
        and valid_until is not None
        and valid_until > now
    )


# --- rotating -----------------------------------------------------------------------------


def _clean_grace(grace_seconds: Any) -> int:
    limit = token_settings().max_rotation_grace
    if type(grace_seconds) is not int or not 0 <= grace_seconds <= limit.total_seconds():
        raise ValidationError(
            {
                "grace_seconds": _("Give a whole number of seconds from 0 to %(max)d.")
                % {"max": int(limit.total_seconds())}
            }
        )
    return grace_seconds


def _retire_old_secrets(token: APIToken, now: datetime, grace_end: datetime | None) -> None:
    # JWTs carry the version of the secret that minted them: they stop when it does. A
    # secret two rotations old stops now even during a grace (only one previous is kept).
    version = token.secret_version
    if grace_end is None:
        denylist.retire_versions(token.key_id, [(version, now)])
    else:
        denylist.retire_versions(token.key_id, [(version - 1, now), (version, grace_end)])


def rotate_token(
    token: APIToken,
    *,
    actor: Any = None,
    grace_seconds: int = 0,
    ip: str | None = None,
    via: str = "",
    parent: Any = None,
) -> IssuedToken:
    """Give *token* a new secret, returned once; same record, scopes, name and expiry.

    The old secret stops working at once, or after *grace_seconds* (at most
    ``MAX_ROTATION_GRACE``) so a deployment can switch over without downtime; JWTs
    minted from it stop with it. Only a usable token can be rotated, and only by a
    credential that may (``services.authority``: a person, or the token itself or one of
    its ancestors, covering it): *parent* is the credential the request presented, if
    any. Raise ``ValidationError`` or ``authority.NotPermitted``.
    """
    grace_seconds = _clean_grace(grace_seconds)
    credential = authority.credential_of(actor, parent)
    secret = tokenstring.generate_secret()
    with transaction.atomic(using=token_database()):
        # Locked and read again: concurrent rotations and revocations of one token run
        # one after the other, and the decision is taken on the row as it is now.
        current = (
            APIToken.objects.select_for_update(of=("self",))
            .select_related("owner")
            .get(pk=token.pk)
        )
        now = clock.now()
        if not current.is_usable(now):
            raise ValidationError(_("Only an active token can be rotated."))
        authority.authorize(credential, authority.Action.ROTATE, target=current)
        grace_end = now + timedelta(seconds=grace_seconds) if grace_seconds else None
        changes = {
            "secret_hash": hashing.hash_secret(secret),
            "previous_secret_hash": current.secret_hash if grace_end else "",
            "previous_secret_valid_until": grace_end,
            "secret_version": current.secret_version + 1,
        }
        APIToken.objects.filter(pk=token.pk).update(**changes)
        for name, value in changes.items():
            setattr(token, name, value)
        record_event(
            token,
            TokenEvent.Kind.ROTATED,
            actor=actor,
            ip=ip,
            via=via,
            detail={"grace_seconds": grace_seconds},
        )
        _retire_old_secrets(token, now, grace_end)
        _end_grace_born_children(token, actor=actor, ip=ip, via=via, now=now)
    logger.info("Rotated API token %s via %s", token.key_id, via or "code")
    return IssuedToken(
        token=token, plaintext=tokenstring.assemble(token_settings().prefix, token.key_id, secret)
    )


def _end_grace_born_children(
    token: APIToken, *, actor: Any, ip: str | None, via: str, now: datetime
) -> None:
    """Revoke the tokens a previous secret of *token* created during its grace.

    They were made to end with that secret, and every rotation stops any previous secret
    at once (one previous is kept, the one this rotation replaces, which never made any):
    when a second rotation cuts a grace short, what the grace secret created stops too.
    """
    grace_born = APIToken.objects.unrevoked().filter(
        parent=token, grace_of_version__isnull=False, expires_at__gt=now
    )
    for child in grace_born:
        revoke_family(
            child,
            actor=actor,
            reason="the previous secret that created it stopped",
            ip=ip,
            via=via,
            now=now,
        )


# --- changing -----------------------------------------------------------------------------


def _unchanged_networks(token: APIToken, allowed_ips: Any) -> bool:
    scratch: validation.Errors = {}
    cleaned = validation.clean_allowed_ips(allowed_ips, scratch)
    return not scratch and cleaned == token.allowed_ips


class TokenChanges(TypedDict, total=False):
    """What a token update may ask for: ``None`` (or absent) leaves a field as it is.

    *parent* is the credential the request presented, which bounds the guardrails.
    """

    name: str | None
    description: str | None
    scopes: Iterable[str] | None
    allowed_ips: Iterable[str] | str | None
    rate_limit: str | None
    parent: Any


def _asked_grant(
    token: APIToken, actor: Any, asked: TokenChanges, errors: validation.Errors
) -> authority.Grant:
    """The scopes and guardrails *asked* to change, syntax-checked; ``None``: unchanged."""
    scopes, allowed_ips, rate_limit = (
        asked.get("scopes"),
        asked.get("allowed_ips"),
        asked.get("rate_limit"),
    )
    names = None
    if scopes is not None:
        if not can_manage_all(actor):
            errors.setdefault("scopes", []).append(_("You may not change a token's scopes."))
        names = validation.clean_scopes(token.owner, scopes, errors)
    # An unchanged guardrail is not judged again: a form re-sends every field, and a value
    # someone else was entitled to set must not block a rename.
    networks = None
    if allowed_ips is not None and not _unchanged_networks(token, allowed_ips):
        networks = validation.clean_allowed_ips(allowed_ips, errors)
    rate = None
    if rate_limit is not None and not (
        isinstance(rate_limit, str) and rate_limit.strip() == token.rate_limit
    ):
        rate = validation.clean_rate_limit(rate_limit, errors)
    return authority.Grant(scopes=names, networks=networks, rate=rate)


def plan_token_update(
    token: APIToken, *, actor: Any, **asked: Unpack[TokenChanges]
) -> dict[str, Any]:
    """Return the fields that :func:`update_token` would change, with their new values.

    Write nothing; raise ``ValidationError`` (keyed by field) when a rule is broken,
    ``authority.NotPermitted`` when the credential may not change this token at all.
    Forms call it to show errors before anything is saved. Whoever may manage the token
    may change its guardrails, within the bounds of the credential that asks (the
    *parent* the request presented) and of ``authority.rate_ceiling``.
    """
    credential = authority.credential_of(actor, asked.get("parent"))
    authority.authorize(credential, authority.Action.CHANGE, target=token)
    errors: validation.Errors = {}
    wanted: dict[str, Any] = {}
    name = asked.get("name")
    # An unchanged name is not judged again: a row named before today's rule (with a "/",
    # say) keeps its name, and a form or a PATCH re-sending it must not be refused.
    if name is not None and not (isinstance(name, str) and name.strip() == token.name):
        wanted["name"] = validation.clean_name(name, errors)
    if asked.get("description") is not None:
        wanted["description"] = validation.clean_description(asked.get("description"), errors)
    # Within the token's parent first (what a child left empty inherits), then within
    # the caller, which is the parent, one of its ancestors, or a person.
    asked_grant = authority.within_parent(token, _asked_grant(token, actor, asked, errors), errors)
    granted = authority.derive(credential, asked_grant, errors, creating=False)
    for name, value in (
        ("scopes", granted.scopes),
        ("allowed_ips", granted.networks),
        ("rate_limit", granted.rate),
    ):
        if value is not None:
            wanted[name] = value
    if errors:
        raise ValidationError(errors)
    changes = {f: value for f, value in wanted.items() if getattr(token, f) != value}
    authority.authorize_changes(credential, token, set(changes))
    if changes and token.revoked_at is not None:
        raise ValidationError(_("A revoked token cannot be changed."))
    if "name" in changes:
        _check_name_free(token.owner, changes["name"], clock.now(), exclude=token)
    return changes


def _apply(
    token: APIToken, changes: dict[str, Any], *, actor: Any, ip: str | None, via: str, **why: Any
) -> None:
    APIToken.objects.filter(pk=token.pk).update(**changes)
    detail = {f: {"from": getattr(token, f), "to": value} for f, value in changes.items()}
    for f, value in changes.items():
        setattr(token, f, value)
    record_event(
        token, TokenEvent.Kind.UPDATED, actor=actor, ip=ip, via=via, detail={**detail, **why}
    )


def _narrow_descendants(token: APIToken, *, actor: Any, ip: str | None, via: str) -> None:
    """Bring every token derived from *token* back within it (or revoke it), after a change."""
    now = clock.now()
    current = {token.pk: token}
    for child in descendants(token):
        parent = current.get(child.parent_id or 0)
        if parent is None or parent.revoked_at is not None or child.revoked_at is not None:
            continue
        changes = authority.clamp_child(child, parent)
        if changes is None:
            revoke_family(
                child, actor=actor, reason=f"narrowed with {token.key_id}", ip=ip, via=via, now=now
            )
            child.revoked_at = now
        elif changes:
            _apply(child, changes, actor=actor, ip=ip, via=via, ancestor=token.key_id)
            # A JWT carries its ancestors' rates too (shared_rate_limits): a new ancestry
            # (a tightened ancestor) must not leave JWTs counting the old, looser ones.
            if (_POWER_FIELDS | {"ancestry"}) & set(changes):
                denylist.refuse_minted_until(child.key_id, now)
        current[child.pk] = child


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
    frozen. A change to what the token may do also reaches what was derived from
    it: its JWTs are refused (clients mint new ones) and its descendant tokens are
    narrowed to fit. Raise ``ValidationError`` and write nothing when a rule is broken.
    """
    with transaction.atomic(using=token_database()):
        _lock_owner(token.owner)  # the name check below cannot be raced
        changes = plan_token_update(token, actor=actor, **asked)
        if not changes:
            return []
        _apply(token, changes, actor=actor, ip=ip, via=via)
        if _POWER_FIELDS & set(changes):
            denylist.refuse_minted_until(token.key_id, clock.now())
            _narrow_descendants(token, actor=actor, ip=ip, via=via)
    return list(changes)
