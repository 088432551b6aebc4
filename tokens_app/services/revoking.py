"""Revoking tokens: the single revoke path, which takes every token derived from it along.

A token created by a token (its *parent*) is derived from it: if the parent leaked,
whoever holds it may have minted children to keep access. So a revocation always
covers the token's descendants too, each with its own audit event, and each one's
JWTs are refused through the deny list.
"""

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from tokens_app.core import clock, limits
from tokens_app.jwt import access_tokens, denylist
from tokens_app.models import APIToken, TokenEvent, token_database
from tokens_app.services import authority, jwts
from tokens_app.services.audit import record_event
from tokens_app.services.caller import OPERATOR, Caller, Via
from tokens_app.services.credentials import InvalidToken, authenticate_token

logger = logging.getLogger("tokens_app")

MAX_REASON_LENGTH = limits.REASON_LENGTH
#: The audit reason of a token revoked through ``POST /api/auth/revoke/`` by its holder.
PRESENTED_REASON = "self-revoked (RFC 7009)"


def clean_reason(reason: Any) -> str:
    """Return *reason* stripped, or raise ``ValidationError`` when it is not short text."""
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise ValidationError(
            {
                "reason": _("The reason must be text of at most %(max)d characters.")
                % {"max": MAX_REASON_LENGTH}
            }
        )
    return reason.strip()


def descendants(token: APIToken) -> list[APIToken]:
    """Every token derived from *token* (children, their children...), parents first."""
    found: list[APIToken] = []
    level = [token.pk]
    for _generation in range(authority.MAX_LINEAGE_DEPTH + 1):
        children = list(APIToken.objects.select_related("owner").filter(parent__in=level))
        if not children:
            break
        found.extend(children)
        level = [child.pk for child in children]
    return found


def _revoke_row(token: APIToken, now: datetime, *, caller: Caller, reason: str, **why: Any) -> bool:
    revoked_by = caller.user if getattr(caller.user, "pk", None) else None
    changed = (
        APIToken.objects.unrevoked()
        .filter(pk=token.pk)
        .update(revoked_at=now, revoked_by=revoked_by, revoke_reason=reason)
    )
    if changed:
        detail = {"reason": reason, **why}
        record_event(token, TokenEvent.Kind.REVOKED, caller=caller, detail=detail)
        # Before the commit, so its JWTs are refused from the moment the revoke is
        # visible (a rollback leaves an entry that only refuses JWTs early: safe).
        denylist.deny(token.key_id)
    return bool(changed)


def revoke_family(
    token: APIToken, *, caller: Caller, reason: str, now: datetime
) -> tuple[bool, int]:
    """Revoke *token* and its descendants in the caller's transaction.

    Return whether *token* itself was revoked by this call, and how many tokens were.
    """
    itself = _revoke_row(token, now, caller=caller, reason=reason)
    revoked = int(itself)
    for child in descendants(token):
        # A descendant of a token already revoked is still revoked here: a family is
        # dead when any ancestor is, whatever happened to the rows in between.
        if _revoke_row(
            child, now, caller=caller, reason=f"with ancestor {token.key_id}", ancestor=token.key_id
        ):
            revoked += 1
    return itself, revoked


def _revoke(token: APIToken, *, caller: Caller, reason: str) -> tuple[bool, int]:
    credential = authority.credential_of_caller(caller)
    authority.authorize(credential, authority.Action.REVOKE, target=token)
    with transaction.atomic(using=token_database()):
        itself, revoked = revoke_family(token, caller=caller, reason=reason, now=clock.now())
    token.refresh_from_db(fields=["revoked_at", "revoked_by", "revoke_reason"])
    if revoked:
        logger.info(
            "Revoked API token %s (%d with its descendants) via %s",
            token.key_id,
            revoked,
            caller.surface,
        )
    return itself, revoked


def revoke_token(token: APIToken, *, reason: str = "", caller: Caller = OPERATOR) -> bool:
    """Revoke *token* and every token derived from it at once; the single revoke path.

    Return whether this call revoked *token* itself: revoking an already revoked token
    changes nothing and returns ``False`` (its descendants are still made sure of).
    Every credential that may manage the owner's tokens may revoke them, whatever the
    *caller* presented (see ``services.authority``).
    """
    reason = clean_reason(reason)
    itself, _count = _revoke(token, caller=caller, reason=reason)
    return itself


def revoke_tokens(
    tokens: Iterable[APIToken], *, reason: str = "", caller: Caller = OPERATOR
) -> int:
    """Revoke each of *tokens* with its descendants; return how many tokens this call revoked."""
    reason = clean_reason(reason)
    return sum(_revoke(token, caller=caller, reason=reason)[1] for token in tokens)


def revoke_all_tokens(owner: Any, *, reason: str = "", caller: Caller = OPERATOR) -> int:
    """Revoke every token of *owner* not yet revoked (expired ones too); return how many.

    The response to a compromised account: one step, one audit event per token, and
    each token's JWTs refused. The *caller* must be the owner or manage every token
    (``OPERATOR``: code or a command, trusted).
    """
    credential = authority.credential_of_caller(caller)
    authority.authorize(credential, authority.Action.REVOKE, owner=owner)
    reason = clean_reason(reason)
    pending = APIToken.objects.for_owner(owner).unrevoked().order_by("pk")
    revoked = revoke_tokens(pending, caller=caller, reason=reason)
    logger.info("Revoked all %d API tokens of user pk=%s via %s", revoked, owner.pk, caller.surface)
    return revoked


def revoke_presented(raw: str, *, ip: str | None = None) -> bool:
    """RFC 7009: revoke what the string *raw* is, because whoever sends it holds it.

    An API token (its current secret, or the previous one during a rotation grace) is
    revoked with its family and its JWTs, as ``DELETE /api/tokens/current/`` would, by
    a caller presenting that very token (``services.authority`` lets every token revoke
    itself); from any address, since taking power away is what a leak response needs.
    A JWT is refused alone, by its ``jti``, until it expires (``jwts.revoke_jwt``).
    Anything else (unknown, malformed, a key id alone, a look-alike, already revoked,
    expired) changes nothing. Return whether something was revoked: the endpoint
    answers the same either way, so it is no oracle. Raise
    ``denylist.DenyListUnavailable`` when a JWT's revocation cannot be stored.
    """
    if access_tokens.looks_like_jwt(raw):
        return jwts.revoke_jwt(raw)
    try:
        token = authenticate_token(raw, ip=ip, touch=False, check_address=False)
    except InvalidToken as failure:
        logger.info(
            "Revocation of an unusable token ignored: %s (key id %s)",
            failure.reason,
            failure.key_id or "-",
        )
        return False
    holder = Caller(user=token.owner, presented=token, ip=ip, via=Via.API)
    return revoke_token(token, reason=PRESENTED_REASON, caller=holder)
