"""Changing a token (name, description, scopes, guardrails) and narrowing what it derived.

Who may change what is ``services.authority``'s to say (``authorize``,
``authorize_changes``, ``clamp_child``), what the new values may be ``services.grants``'
(``derive``, ``within_parent``). Issuing is ``services.issuing``, rotating
``services.rotation``.
"""

from collections.abc import Iterable
from typing import Any, TypedDict, Unpack

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from tokens_app import invalidation
from tokens_app.core import clock, validation
from tokens_app.jwt import denylist
from tokens_app.models import APIToken, TokenEvent, token_database
from tokens_app.services import authority, grants
from tokens_app.services.access import can_manage_all
from tokens_app.services.audit import record_event
from tokens_app.services.caller import Caller
from tokens_app.services.issuing import _check_name_free, _lock_owner
from tokens_app.services.revoking import descendants, revoke_family

__all__ = ["TokenChanges", "plan_token_update", "update_token"]

#: Changing any of these changes what a token may do: its JWTs are re-minted, its
#: descendants brought back within it.
_POWER_FIELDS = frozenset({"scopes", "allowed_ips", "rate_limit"})


def _unchanged_networks(token: APIToken, allowed_ips: Any) -> bool:
    scratch: validation.Errors = {}
    cleaned = validation.clean_allowed_ips(allowed_ips, scratch)
    return not scratch and cleaned == token.allowed_ips


class TokenChanges(TypedDict, total=False):
    """What a token update may ask for: ``None`` (or absent) leaves a field as it is."""

    name: str | None
    description: str | None
    scopes: Iterable[str] | None
    allowed_ips: Iterable[str] | str | None
    rate_limit: str | None


def _asked_grant(
    token: APIToken, actor: Any, asked: TokenChanges, errors: validation.Errors
) -> grants.Grant:
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
    return grants.Grant(scopes=names, networks=networks, rate=rate)


def plan_token_update(
    token: APIToken, *, caller: Caller, **asked: Unpack[TokenChanges]
) -> dict[str, Any]:
    """Return the fields that :func:`update_token` would change, with their new values.

    Write nothing; raise ``ValidationError`` (keyed by field) when a rule is broken,
    ``authority.NotPermitted`` when the credential may not change this token at all.
    Forms call it to show errors before anything is saved. Whoever may manage the token
    may change its guardrails, within the bounds of the credential the *caller*
    presented and of ``grants.rate_ceiling``.
    """
    credential = authority.credential_of_caller(caller)
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
    asked_grant = grants.within_parent(
        token, _asked_grant(token, caller.user, asked, errors), errors
    )
    granted = grants.derive(credential, asked_grant, errors, creating=False)
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


def _apply(token: APIToken, changes: dict[str, Any], *, caller: Caller, **why: Any) -> None:
    APIToken.objects.filter(pk=token.pk).update(**changes)
    # Any change, a widening too: processes that cache the row read it again.
    invalidation.publish(invalidation.token_tag(token.key_id))
    detail = {f: {"from": getattr(token, f), "to": value} for f, value in changes.items()}
    for f, value in changes.items():
        setattr(token, f, value)
    record_event(token, TokenEvent.Kind.UPDATED, caller=caller, detail={**detail, **why})


def _narrow_descendants(token: APIToken, *, caller: Caller) -> None:
    """Bring every token derived from *token* back within it (or revoke it), after a change."""
    now = clock.now()
    current = {token.pk: token}
    for child in descendants(token):
        parent = current.get(child.parent_id or 0)
        if parent is None or parent.revoked_at is not None or child.revoked_at is not None:
            continue
        changes = authority.clamp_child(child, parent)
        if changes is None:
            revoke_family(child, caller=caller, reason=f"narrowed with {token.key_id}", now=now)
            child.revoked_at = now
        elif changes:
            _apply(child, changes, caller=caller, ancestor=token.key_id)
            # A JWT carries its ancestors' rates too (shared_rate_limits): a new ancestry
            # (a tightened ancestor) must not leave JWTs counting the old, looser ones.
            if (_POWER_FIELDS | {"ancestry"}) & set(changes):
                denylist.refuse_minted_until(child.key_id, now)
        current[child.pk] = child


def update_token(
    token: APIToken,
    *,
    caller: Caller,
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
        changes = plan_token_update(token, caller=caller, **asked)
        if not changes:
            return []
        _apply(token, changes, caller=caller)
        if _POWER_FIELDS & set(changes):
            denylist.refuse_minted_until(token.key_id, clock.now())
            _narrow_descendants(token, caller=caller)
    return list(changes)
