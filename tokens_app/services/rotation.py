"""Rotating a token: a new secret, returned once; the old one stops at once or after a grace.

Who may rotate which token is ``services.authority``'s to say (``authorize``, ``covers``).
Issuing is ``services.issuing``, changing ``services.updating``.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from tokens_app.conf import token_settings
from tokens_app.core import clock, hashing, tokenstring
from tokens_app.jwt import denylist
from tokens_app.models import APIToken, TokenEvent, token_database
from tokens_app.services import authority
from tokens_app.services.audit import record_event
from tokens_app.services.caller import OPERATOR, Caller
from tokens_app.services.issuing import IssuedToken
from tokens_app.services.revoking import revoke_family

logger = logging.getLogger("tokens_app")

__all__ = ["rotate_token"]


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
    grace_seconds: int = 0,
    caller: Caller = OPERATOR,
) -> IssuedToken:
    """Give *token* a new secret, returned once; same record, scopes, name and expiry.

    The old secret stops working at once, or after *grace_seconds* (at most
    ``MAX_ROTATION_GRACE``) so a deployment can switch over without downtime; JWTs
    minted from it stop with it. Only a usable token can be rotated, and only by a
    credential that may (``services.authority``: a person, or the token itself or one of
    its ancestors, covering it), judged on the credential the *caller* presented.
    Raise ``ValidationError`` or ``authority.NotPermitted``.
    """
    grace_seconds = _clean_grace(grace_seconds)
    credential = authority.credential_of_caller(caller)
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
            caller=caller,
            detail={"grace_seconds": grace_seconds},
        )
        _retire_old_secrets(token, now, grace_end)
        _end_grace_born_children(token, caller=caller, now=now)
    logger.info("Rotated API token %s via %s", token.key_id, caller.surface)
    return IssuedToken(
        token=token, plaintext=tokenstring.assemble(token_settings().prefix, token.key_id, secret)
    )


def _end_grace_born_children(token: APIToken, *, caller: Caller, now: datetime) -> None:
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
            caller=caller,
            reason="the previous secret that created it stopped",
            now=now,
        )
