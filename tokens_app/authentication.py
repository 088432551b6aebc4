"""DRF authentication by API token: a thin adapter over ``services.authenticate_token``.

Three ways to present an API token: ``Authorization: Bearer`` (``APITokenAuthentication``),
and, on the OAuth endpoints (introspection, revocation), as an OAuth client
(``ClientSecretAuthentication``: HTTP Basic or ``client_id``/``client_secret`` body fields).
JWTs have ``JWTAuthentication``.
"""

import base64
import binascii
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from tokens_app import services
from tokens_app.api import wellknown
from tokens_app.conf import token_settings
from tokens_app.core.address import client_ip, ip_allowed
from tokens_app.exceptions import api_error
from tokens_app.jwt import access_tokens, denylist
from tokens_app.models import APIToken

logger = logging.getLogger("tokens_app.authentication")

_INVALID_FLAG = "_tokens_app_invalid_token"


class APITokenAuthentication(BaseAuthentication):
    """Authenticate ``Authorization: Bearer <token>`` (and ``X-API-Key`` when enabled).

    ``request.user`` becomes the token's owner and ``request.auth`` the token.
    Every failure answers with one generic message; the reason goes to the log,
    by key id, never with the secret.
    """

    keyword = "Bearer"

    def get_credential(self, request: Request) -> str | None:
        """Return the presented credential, or ``None`` when the request carries none of ours."""
        meta = request._request.META  # the HttpRequest's, without DRF's attribute proxy
        header: str = meta.get("HTTP_AUTHORIZATION", "")
        if header:
            scheme, _space, value = header.partition(" ")
            if scheme.lower() != self.keyword.lower():
                return None
            value = value.strip()
            # A dotted value is a JWT (API tokens never hold a dot): JWTAuthentication's.
            if not access_tokens.looks_like_jwt(value):
                return value
            if not _accepts_jwts(request):
                ip = client_ip(request._request)
                raise rejected(request, "JWT", "JWT where only API tokens count", None, ip)
            return None
        if token_settings().accept_x_api_key:
            api_key = meta.get("HTTP_X_API_KEY")
            return api_key.strip() if isinstance(api_key, str) else None
        return None

    def authenticate(self, request: Request) -> tuple[Any, APIToken] | None:
        credential = self.get_credential(request)
        if credential is None:
            return None
        ip = client_ip(request._request)
        try:
            token = services.authenticate_token(credential, ip=ip)
        except services.InvalidToken as failure:
            raise rejected(request, "API token", failure.reason, failure.key_id, ip) from None
        enforce_budgets(request, services.token_budgets(token))
        return token.owner, token

    def authenticate_header(self, request: Request) -> str:
        return challenge(request)


def challenge(request: Request) -> str:
    """The ``WWW-Authenticate`` value of a 401: RFC 6750's, plus where to learn more.

    ``error="invalid_token"`` when a credential was refused (not when none was sent), and
    ``resource_metadata``, the absolute URL of the RFC 9728 document (§5.1), when the
    project routes it: that is how a client discovers the issuer, scopes and keys.
    """
    parameters = [("realm", token_settings().realm)]
    if getattr(request, _INVALID_FLAG, False):
        parameters.append(("error", "invalid_token"))
    metadata = wellknown.resource_metadata_url(request._request)
    if metadata is not None:
        parameters.append(("resource_metadata", metadata))
    return "Bearer " + ", ".join(f"{name}={quoted(value)}" for name, value in parameters)


def quoted(value: str) -> str:
    """*value* as an HTTP quoted-string (RFC 9110 §5.6.4): ``"`` and ``\\`` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _accepts_jwts(request: Request) -> bool:
    """Whether this view also authenticates JWTs; if not, a JWT is refused as invalid.

    Without this, a JWT sent where only API tokens count (managing tokens, minting
    JWTs) would be no credential at all: a bare 401 saying none was provided, instead of
    RFC 6750's ``invalid_token`` challenge that every refused credential gets. It is
    refused even next to a session cookie: the client chose to send it.
    """
    return any(isinstance(a, JWTAuthentication) for a in getattr(request, "authenticators", ()))


def enforce_budgets(request: Request, budgets: Sequence[services.Budget]) -> None:
    """Count this request against the credential's rate budgets: over one is a 429.

    The budgets are the token's own and its ancestors' (``services.token_budgets``);
    a 429 carries ``Retry-After``. A limiter that cannot count is a 503 (fail closed).
    """
    if not budgets:
        return
    try:
        services.count_token_requests(request._request, budgets)
    except (services.TooManyAttempts, services.RateLimiterUnavailable) as refused:
        raise api_error(refused) from None


def rejected(
    request: Request, credential: str, reason: str, key_id: str | None, ip: str | None
) -> exceptions.AuthenticationFailed:
    """Log why a credential was refused (by key id, never its secret); return the generic 401.

    The request is flagged so ``authenticate_header`` adds ``error="invalid_token"``
    (RFC 6750). One message for every reason: the client never learns which it was.
    """
    logger.info("%s rejected: %s (key id %s, ip %s)", credential, reason, key_id or "-", ip or "-")
    setattr(request, _INVALID_FLAG, True)
    return exceptions.AuthenticationFailed(_("Invalid token."), code="invalid_token")


class JWTAuthentication(BaseAuthentication):
    """Authenticate ``Authorization: Bearer <JWT>`` minted by ``POST /api/auth/jwt/``.

    No SQL by default: ``request.user`` is a ``JWTUser`` built from the claims (set
    ``JWT_LOAD_USER`` to load the user row instead, one query). ``request.auth`` is the
    verified ``JWTClaims``, with the same scope interface as an API token. Failures are
    the same generic 401 as for API tokens; an unreadable deny list is a 503.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, access_tokens.JWTClaims] | None:
        header = request._request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _space, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != self.keyword.lower() or not access_tokens.looks_like_jwt(value):
            return None
        try:
            claims = access_tokens.verify(value)
            self.check_address(request, claims)
            user = self.user_for(claims)
        except access_tokens.InvalidJWT as failure:
            # The client address is only needed for the log line (JWTs record no use).
            ip = client_ip(request._request)
            raise rejected(request, "JWT", failure.reason, failure.key_id, ip) from None
        except denylist.DenyListUnavailable as fault:
            raise api_error(fault) from None
        enforce_budgets(request, claims.budgets)
        return user, claims

    def check_address(self, request: Request, claims: access_tokens.JWTClaims) -> None:
        """A JWT minted from an IP-restricted token carries its networks, and obeys them."""
        if claims.allowed_ips and not ip_allowed(client_ip(request._request), claims.allowed_ips):
            raise access_tokens.InvalidJWT("address not allowed", claims.key_id)

    def user_for(self, claims: access_tokens.JWTClaims) -> Any:
        """The user of *claims*: from the claims, or loaded when ``JWT_LOAD_USER`` is set."""
        if not token_settings().jwt.load_user:
            return JWTUser(claims)
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get(pk=claims.owner_pk)
        except (user_model.DoesNotExist, ValueError, ValidationError):
            raise access_tokens.InvalidJWT("unknown subject", claims.key_id) from None
        if not getattr(user, "is_active", True):
            raise access_tokens.InvalidJWT("owner_inactive", claims.key_id)
        return user

    def authenticate_header(self, request: Request) -> str:
        return APITokenAuthentication().authenticate_header(request)


class JWTUser:
    """The user a JWT names, from its claims alone (no query): enough for views and scopes.

    It has the id (``sub``) and username, and is authenticated and active; it holds no
    staff status and no Django permission: scopes are the JWT's ``scope`` claim.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, claims: access_tokens.JWTClaims) -> None:
        self.pk = self.id = claims.owner_pk
        self.username = str(claims.claims.get("username", ""))

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


# --- OAuth client authentication (RFC 6749 § 2.3.1) ------------------------------------------

#: Longest ``Authorization: Basic`` value read: a key id and a whole token, URL-encoded.
MAX_BASIC_LENGTH = 1024


class ClientCredentialsRefused(Exception):  # noqa: N818 — reads better at the raise sites
    """The request presents client credentials this server cannot accept; ``reason`` is for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClientSecretAuthentication(BaseAuthentication):
    """An API token as an OAuth client: ``client_secret_basic`` and ``client_secret_post``.

    Standard RFC 7662 and RFC 7009 clients (authlib, django-oauth-toolkit's resource
    servers) authenticate this way, not with a Bearer header. The client is an API
    token: ``client_id`` is its key id, ``client_secret`` the whole token string, sent
    as HTTP Basic user name and password (form-encoded first, RFC 6749 § 2.3.1) or as
    body fields. The token is checked by ``services.authenticate_client``, exactly as a
    Bearer token is (IP allow-list, rate budgets, ``last_used``), so ``request.user`` is
    its owner and ``request.auth`` the token, for ``HasScope``.

    A request without client credentials is left to the other authenticators; a lone
    ``client_id`` is no credential (it names a token, it does not prove it). Every
    refusal (bad secret, a ``client_id`` that is not the token's key id, malformed Basic,
    two methods at once, which RFC 6749 forbids) is the same generic 401 as any invalid
    token; the challenge is ``Basic`` when the client tried Basic, or when the view
    takes no Bearer token, and the Bearer one otherwise.
    """

    def authenticate(self, request: Request) -> tuple[Any, APIToken] | None:
        ip = client_ip(request._request)
        try:
            presented = client_credentials(request)
        except ClientCredentialsRefused as refused:
            raise rejected(request, "Client", refused.reason, None, ip) from None
        if presented is None:
            return None
        client_id, client_secret = presented
        try:
            token = services.authenticate_client(client_id, client_secret, ip=ip)
        except services.InvalidToken as failure:
            raise rejected(request, "Client", failure.reason, failure.key_id, ip) from None
        enforce_budgets(request, services.token_budgets(token))
        return token.owner, token

    def authenticate_header(self, request: Request) -> str:
        if _authorization_scheme(request) == "basic" or not _accepts_bearer(request):
            return f'Basic realm="{token_settings().realm}"'
        return APITokenAuthentication().authenticate_header(request)


def _authorization_scheme(request: Request) -> str:
    header: str = request._request.META.get("HTTP_AUTHORIZATION", "")
    return header.partition(" ")[0].lower()


def _accepts_bearer(request: Request) -> bool:
    authenticators = getattr(request, "authenticators", ())
    return any(isinstance(a, APITokenAuthentication | JWTAuthentication) for a in authenticators)


def client_credentials(request: Request) -> tuple[str, str] | None:
    """Return the ``(client_id, client_secret)`` the request presents, or ``None``.

    Raise ``ClientCredentialsRefused`` for credentials that cannot be accepted whatever
    the secret: malformed Basic, a Basic user name and a body ``client_id`` that differ,
    a secret without its id, a parameter sent twice, or two methods at once (RFC 6749
    § 2.3: a client uses one). Reads the body, as the view will.
    """
    header: str = request._request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _space, value = header.partition(" ")
    body_id, body_secret = _body_field(request, "client_id"), _body_field(request, "client_secret")
    if scheme.lower() == "basic":
        if body_secret is not None:
            raise ClientCredentialsRefused("client_secret in the body and in Basic")
        client_id, client_secret = _basic_credentials(value)
        if body_id is not None and body_id != client_id:
            raise ClientCredentialsRefused("client_id differs from the Basic user name")
        return client_id, client_secret
    if body_secret is None:
        return None
    if header:
        raise ClientCredentialsRefused("client_secret in the body besides an Authorization header")
    if body_id is None:
        raise ClientCredentialsRefused("client_secret without client_id")
    return body_id, body_secret


def _basic_credentials(value: str) -> tuple[str, str]:
    """Decode ``base64(urlencode(id) ":" urlencode(secret))`` (RFC 7617, RFC 6749 § 2.3.1)."""
    value = value.strip()
    if len(value) > MAX_BASIC_LENGTH:
        raise ClientCredentialsRefused("Basic credentials too long")
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ClientCredentialsRefused("malformed Basic credentials") from None
    client_id, colon, client_secret = decoded.partition(":")
    if not colon:
        raise ClientCredentialsRefused("malformed Basic credentials")
    return unquote_plus(client_id), unquote_plus(client_secret)


def _body_field(request: Request, name: str) -> str | None:
    """The body parameter *name* (form or JSON), ``None`` when absent; refuse any non-text."""
    data = request.data
    if not isinstance(data, Mapping) or name not in data:
        return None
    getlist = getattr(data, "getlist", None)
    values = getlist(name) if getlist is not None else [data[name]]
    if len(values) != 1 or not isinstance(values[0], str):
        raise ClientCredentialsRefused(f"malformed {name}")
    return str(values[0])
