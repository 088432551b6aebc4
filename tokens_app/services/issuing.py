"""Issuing tokens: the one path that creates a token, and the checks its siblings share.

What may be issued is ``services.authority``'s and ``services.grants``' to say. Rotating is
``services.rotation``, changing ``services.updating``; both use the owner lock and the
name check kept here.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from tokens_app.conf import token_settings
from tokens_app.core import clock, hashing, tokenstring, validation
from tokens_app.models import APIToken, TokenEvent, token_database
from tokens_app.services import authority, grants
from tokens_app.services.audit import record_event
from tokens_app.services.caller import OPERATOR, Caller
from tokens_app.services.revoking import MAX_REASON_LENGTH

logger = logging.getLogger("tokens_app")

__all__ = ["MAX_REASON_LENGTH", "IssuedToken", "issue_token"]

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
    caller: Caller = OPERATOR,
    allowed_ips: Iterable[str] | str = (),
    rate_limit: str = "",
) -> IssuedToken:
    """Issue a token for *owner*; the one issuing path (admin, API and commands call it).

    Without an expiry the configured default lifetime applies. The credential the
    *caller* presented (``request.auth``), if any, bounds the result: a token it creates
    can hold no scope, outlive no date, reach no network and go no faster than it can
    (``services.grants.derive``), shares its rate budget and is revoked with it.
    *allowed_ips* (addresses or CIDR networks; empty: anywhere) and *rate_limit*
    (such as ``1000/h``; empty: ``DEFAULT_TOKEN_RATE``) are the token's guardrails.
    Raise ``ValidationError`` (keyed by field) and write nothing when any rule is broken,
    ``authority.NotPermitted`` when the credential may not issue for *owner* at all.
    """
    now = clock.now()
    credential = authority.credential_of_caller(caller)
    errors: validation.Errors = {}
    _check_owner(credential, owner, errors)
    clean_name = validation.clean_name(name, errors)
    clean_description = validation.clean_description(description, errors)
    expiry, explicit = validation.resolve_expiry(now, expires_at, expires_in, never_expires, errors)
    asked = grants.Grant(
        scopes=validation.clean_scopes(owner, scopes, errors),
        networks=validation.clean_allowed_ips(allowed_ips, errors),
        rate=validation.clean_rate_limit(rate_limit, errors),
        expires_at=expiry,
        explicit_expiry=explicit and "expires_at" not in errors,
    )
    granted = grants.derive(credential, asked, errors, creating=True)
    if errors:
        raise ValidationError(errors)
    lineage = grants.lineage_of(credential)
    token = APIToken(
        owner=owner,
        name=clean_name,
        description=clean_description,
        scopes=granted.scopes or [],
        allowed_ips=granted.networks or [],
        rate_limit=granted.rate or "",
        created_at=now,
        created_by=caller.user if getattr(caller.user, "pk", None) else None,
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
        record_event(token, TokenEvent.Kind.ISSUED, caller=caller, detail=_issued_detail(token))
    logger.info("Issued API token %s for user pk=%s via %s", token.key_id, owner.pk, caller.surface)
    return IssuedToken(token=token, plaintext=plaintext)


def _still_usable(lineage: grants.Lineage, now: datetime) -> bool:
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
