"""What a JWT may carry, what introspection answers, what revoking a JWT does: the policy.

``tokens_app.jwt.access_tokens`` keeps the mechanics (keys, signing, verification); the rules
live here: a JWT is minted only by an API token, within what ``services.authority``
says the presented credential may hand on; an introspection answer says only what
a resource server needs to apply the token's limits; and a revoked JWT is refused alone,
by its ``jti``, until it expires.
"""

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from tokens_app.conf import token_settings
from tokens_app.core import clock
from tokens_app.jwt import access_tokens, denylist
from tokens_app.models import APIToken
from tokens_app.services import authority
from tokens_app.services.credentials import InvalidToken, authenticate_token, token_rate

logger = logging.getLogger("tokens_app")

#: The answer for anything not usable right now, without saying why (RFC 7662 § 2.2).
INACTIVE: dict[str, Any] = {"active": False}


@dataclass(frozen=True)
class MintedJWT:
    access_token: str = ""
    expires_in: int = 0
    scope: str = ""


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _granted_scopes(held: frozenset[str], scope: Any, errors: dict[str, Any]) -> list[str]:
    if scope is None:
        granted = sorted(held)
    elif not isinstance(scope, str) or not scope.split():
        errors["scope"] = _("Give one or more scopes separated by spaces.")
        return []
    else:
        granted = sorted(set(scope.split()))
        if not set(granted) <= held:
            errors["scope"] = _("A JWT can carry only scopes its API token holds.")
    if not granted and "scope" not in errors:
        errors["scope"] = _("This API token holds no scope to put in a JWT.")
    return granted


def mint_jwt(
    token: APIToken, *, scope: str | None = None, audience: str | None = None
) -> MintedJWT:
    """Mint a JWT for the usable API token *token*; raise ``ValidationError`` on bad input.

    *token* is the credential the request presented (``request.auth``): what it may do
    and how long it lasts come from ``services.authority``, so a rotated token's previous
    secret mints only JWTs that end with its grace. *scope* (space-separated) must be a
    subset of what the token may do now; without it the JWT gets all of that. *audience*
    must be one of ``JWT_AUDIENCES`` (default: the first). The JWT expires after
    ``JWT_LIFETIME``, never after the credential does; it carries the token's networks,
    every rate budget the token counts against, and the version of the presented secret.
    """
    conf = token_settings().jwt
    now = clock.now()
    credential = authority.credential_of(token.owner, token)
    authority.authorize(credential, authority.Action.MINT_JWT, owner=token.owner)
    bounds = authority.bounds_of(credential)
    errors: dict[str, Any] = {}
    granted = _granted_scopes(bounds.scopes or frozenset(), scope, errors)
    if audience is None:
        audience = conf.audiences[0]
    elif audience not in conf.audiences:
        errors["audience"] = _("Unknown audience.")
    expires = now + conf.lifetime
    if bounds.expires_at is not None:
        expires = min(expires, bounds.expires_at)
    if _epoch(expires) <= _epoch(now) and "scope" not in errors:
        errors["expires_in"] = _("The API token expires too soon to mint a JWT.")
    if errors:
        raise ValidationError(errors)
    scope_claim = " ".join(granted)
    claims: dict[str, Any] = {
        "iss": conf.issuer,
        "sub": str(token.owner.pk),
        "aud": audience,
        "exp": _epoch(expires),
        "iat": _epoch(now),
        "nbf": _epoch(now),
        "jti": secrets.token_urlsafe(16),
        "scope": scope_claim,
        "client_id": token.key_id,
        "username": token.owner.get_username(),
        access_tokens.SECRET_VERSION_CLAIM: authority.presented_secret_version(credential),
    }
    # The token's guardrails travel with the JWT, which is verified without its row.
    if bounds.networks:
        claims["allowed_ips"] = list(bounds.networks)
    if bounds.rate:
        claims["rate_limit"] = bounds.rate
    shared = [[key_id, rate] for key_id, rate in bounds.budgets if key_id != token.key_id]
    if shared:
        claims[access_tokens.SHARED_BUDGETS_CLAIM] = shared
    return MintedJWT(access_tokens.sign(claims), _epoch(expires) - _epoch(now), scope_claim)


# --- introspection (RFC 7662) ----------------------------------------------------------------

#: The extension member of an active answer that names the kind of token (RFC 7662 § 2.2
#: lets a server add its own): ``"api_token"`` or ``"jwt"``. Namespaced, so that it never
#: collides with a member registered later.
KIND_MEMBER = "tokens_app_kind"
API_TOKEN_KIND, JWT_KIND = "api_token", "jwt"


def introspect(raw: str) -> dict[str, Any]:
    """The RFC 7662 answer for *raw*, an API token string or a JWT.

    ``{"active": false}`` for anything not usable right now. Otherwise the members a
    resource server needs, each only where it is known: ``iss``, ``aud``, ``jti``,
    ``nbf``, ``exp``, ``iat``, ``sub``, ``client_id`` (the API token's key id),
    ``username``, ``scope``; ``token_type`` is ``"Bearer"`` (RFC 6749 § 7.1: how both
    kinds are presented); :data:`KIND_MEMBER` says which kind it is; and the guardrails
    the resource server must apply itself (only those set). An API token has no
    audience, no ``jti`` (its key id is its ``client_id``) and no ``nbf`` (a rotated
    secret did not exist before it was issued). Raise ``denylist.DenyListUnavailable``
    when a JWT cannot be checked (never "active").
    """
    return _describe_jwt(raw) if access_tokens.looks_like_jwt(raw) else _describe_api_token(raw)


def _active(kind: str) -> dict[str, Any]:
    return {"active": True, "token_type": "Bearer", KIND_MEMBER: kind}


def _describe_api_token(raw: str) -> dict[str, Any]:
    try:
        # The client's address is unknown here: the list is reported for the caller to apply.
        token: APIToken = authenticate_token(raw, touch=False, check_address=False)
        # Another server acts on the answer: from the database's row, never a cached one.
        credential = authority.credential_of(token.owner, token)
    except (InvalidToken, authority.NotPermitted):
        return INACTIVE
    token = credential.token or token
    answer: dict[str, Any] = {
        **_active(API_TOKEN_KIND),
        "scope": " ".join(sorted(token.effective_scopes)),
        "client_id": token.key_id,
        "sub": str(token.owner.pk),
        "username": token.owner.get_username(),
        "iss": token_settings().jwt.issuer,
        "iat": _epoch(token.created_at),
    }
    # A rotated token's previous secret ends with its grace: that is when *this* one expires.
    expires_at = authority.bounds_of(credential).expires_at
    if expires_at is not None:
        answer["exp"] = _epoch(expires_at)
    return {**answer, **_guardrails(token.allowed_ips, token_rate(token))}


def _guardrails(allowed_ips: list[str], rate_limit: str | None) -> dict[str, Any]:
    """The token's guardrails, for a resource server to apply: only those that are set."""
    found: dict[str, Any] = {"allowed_ips": list(allowed_ips)} if allowed_ips else {}
    return {**found, "rate_limit": rate_limit} if rate_limit else found


def _describe_jwt(raw: str) -> dict[str, Any]:
    try:
        verified = access_tokens.verify(raw, any_audience=True)
    except access_tokens.InvalidJWT:
        return INACTIVE
    claims = verified.claims
    return {
        **_active(JWT_KIND),
        "scope": " ".join(verified.scopes),
        "client_id": verified.key_id,
        "sub": verified.subject,
        "username": str(claims.get("username", "")),
        "iss": claims["iss"],
        "aud": claims["aud"],
        "jti": claims["jti"],
        "iat": int(claims["iat"]),
        "nbf": int(claims["nbf"]),
        "exp": int(claims["exp"]),
        **_guardrails(verified.allowed_ips, verified.rate_limit),
    }


# --- revocation (RFC 7009) -------------------------------------------------------------------


def revoke_jwt(raw: str) -> bool:
    """Refuse the JWT *raw* from now until it expires; return whether it was one to refuse.

    Only that JWT (by its ``jti``): its API token and the token's other JWTs live on. A
    string that is no acceptable JWT (forged, expired, already refused) changes nothing.
    Raise ``denylist.DenyListUnavailable`` when the deny list cannot be read or written:
    a revocation that was not stored must not be reported as done.
    """
    try:
        verified = access_tokens.verify(raw, any_audience=True)
    except access_tokens.InvalidJWT:
        return False
    if not denylist.deny_jwt(str(verified.claims["jti"]), int(verified.claims["exp"])):
        raise denylist.DenyListUnavailable
    logger.info("Revoked a JWT of key id %s until it expires", verified.key_id)
    return True
