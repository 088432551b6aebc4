"""OpenAPI 3 through drf-spectacular: the bearer scheme, required scopes and error responses.

Set ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "tokens_app.api.schema.ScopedAutoSchema"``.
Importing this module registers the extensions: the bearer security schemes of
``APITokenAuthentication`` and ``JWTAuthentication`` and the request/response shapes of the
token API views.

Each operation's scopes are in its security requirement (``{"apiToken": ["tokens:read"]}``),
where tools look for them, and in ``x-required-scopes``. OpenAPI 3.1 allows scopes on any
scheme; 3.0 only on OAuth2 and OpenID Connect ones, so set ``SPECTACULAR_SETTINGS["OAS_VERSION"]
= "3.1.0"`` (the example project does).
"""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import permissions as drf_permissions
from rest_framework import serializers
from rest_framework.views import APIView

from tokens_app.api.serializers import (
    CreateTokenSerializer,
    IssuedTokenSerializer,
    PasswordExchangeSerializer,
    RevokeAllSerializer,
    RotateTokenSerializer,
    TokenSerializer,
    UpdateTokenSerializer,
)
from tokens_app.conf import token_settings
from tokens_app.models import TokenStatus
from tokens_app.parsers import MAX_JSON_DEPTH
from tokens_app.permissions import HasScope, required_scopes

SCHEME_NAME = "apiToken"
SCOPES_EXTENSION = "x-required-scopes"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class APIErrorSerializer(serializers.Serializer[Any]):
    """The body of every non-validation error under ``/api/``."""

    detail = serializers.CharField()


class ScopeErrorSerializer(APIErrorSerializer):
    """403: ``required_scopes`` is present when a token lacks a scope."""

    required_scopes = serializers.ListField(child=serializers.CharField(), required=False)


VALIDATION_ERROR = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description=(
        "Invalid input: field names (or `non_field_errors`) map to lists of messages. "
        "A body that cannot be parsed (malformed, or JSON nested more than "
        f'{MAX_JSON_DEPTH} levels deep) is `{{"detail": ...}}`.'
    ),
)
ERROR_RESPONSES = {
    "400": VALIDATION_ERROR,
    "401": OpenApiResponse(
        APIErrorSerializer,
        description=(
            "No credentials, or an invalid, expired or revoked token, or one used from "
            "outside its IP allow-list."
        ),
    ),
    "403": OpenApiResponse(
        ScopeErrorSerializer, description="The credential lacks a required scope or permission."
    ),
    "404": OpenApiResponse(
        APIErrorSerializer, description="Not found (or not yours: both answer the same)."
    ),
    "413": OpenApiResponse(
        APIErrorSerializer,
        description=(
            "The body is larger than the server accepts (`DATA_UPLOAD_MAX_MEMORY_SIZE`, "
            "2.5 MB by default, files included), or has too many fields or files."
        ),
    ),
    "415": OpenApiResponse(
        APIErrorSerializer,
        description=(
            "The body's media type is not one this endpoint reads: the one its request body "
            "lists (JSON, or the form an OAuth RFC has clients send, where JSON is read too). "
            "The body is not read."
        ),
    ),
    "429": OpenApiResponse(
        APIErrorSerializer,
        description="The token's own rate limit is spent: retry after `Retry-After` seconds.",
    ),
}


class ScopedScheme(OpenApiAuthenticationExtension):
    """A bearer scheme whose security requirement lists the operation's scopes.

    That is where generators and gateways read what an operation needs (OpenAPI 3.1 allows
    it for any scheme); ``[]`` when the operation needs none.
    """

    def get_security_requirement(self, auto_schema: AutoSchema) -> dict[str, list[str]]:
        scopes = None
        if isinstance(auto_schema, ScopedAutoSchema):
            scopes = auto_schema.operation_scopes()
        return {str(self.name): scopes or []}


class APITokenScheme(ScopedScheme):
    """``Authorization: Bearer <token>``: an HTTP bearer security scheme."""

    target_class = "tokens_app.authentication.APITokenAuthentication"
    match_subclasses = True
    name = SCHEME_NAME

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        prefix = token_settings().prefix
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": f"{prefix}_… opaque API token",
            "description": (
                f"An API token (`{prefix}_…`) issued in the admin, by `manage.py issue_token` "
                "or through `/api/tokens/`. Each operation lists the scopes it needs "
                f"in its security requirement and in `{SCOPES_EXTENSION}`."
            ),
        }


class JWTScheme(ScopedScheme):
    """``Authorization: Bearer <JWT>``: a short-lived access token from ``/api/auth/jwt/``."""

    target_class = "tokens_app.authentication.JWTAuthentication"
    match_subclasses = True
    name = "jwt"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "A short-lived JWT (RFC 9068) minted from an API token at `/api/auth/jwt/`; "
                "its `scope` claim is checked like an API token's scopes. Public keys: "
                "`/.well-known/jwks.json`."
            ),
        }


class ClientSecretBasicScheme(OpenApiAuthenticationExtension):
    """HTTP Basic as an OAuth client (``client_secret_basic``): the introspection and revocation
    endpoints' way in for standard RFC 7662 / RFC 7009 clients."""

    target_class = "tokens_app.authentication.ClientSecretAuthentication"
    match_subclasses = True
    name = "clientSecretBasic"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": (
                "An API token as an OAuth client (RFC 6749 section 2.3.1): user name its key "
                "id, password the whole token. The same pair may instead be sent as the "
                "`client_id` and `client_secret` body fields (`client_secret_post`)."
            ),
        }


class ScopedAutoSchema(AutoSchema):
    """drf-spectacular's ``AutoSchema`` plus required scopes and the API's error responses."""

    def operation_scopes(self) -> list[str] | None:
        """Return the scopes a token needs for this operation, or ``None`` if it is not scoped."""
        if not any(isinstance(p, HasScope) for p in self.view.get_permissions()):
            return None
        return required_scopes(self.view, self.method) or []

    def is_public(self) -> bool:
        """Return whether anonymous callers may use this operation."""
        return any(isinstance(p, drf_permissions.AllowAny) for p in self.view.get_permissions())

    def get_description(self) -> str:  # type: ignore[override]
        description = super().get_description()
        scopes = self.operation_scopes()
        if not scopes:
            return description
        sentence = "Required scopes (API token): " + ", ".join(f"`{s}`" for s in scopes) + "."
        return f"{description}\n\n{sentence}" if description else sentence

    def get_extensions(self) -> dict[str, Any]:
        extensions = dict(super().get_extensions())
        scopes = self.operation_scopes()
        if scopes is not None:
            extensions[SCOPES_EXTENSION] = scopes
        return extensions

    def map_parsers(self) -> list[Any]:
        """List one media type per request body: the first parser's.

        Client generators handle one: for two, openapi-python-client 0.29 emits code that
        does not import. The OAuth endpoints (``OAUTH_PARSERS``) list the form their RFCs
        have clients send, and read JSON too.
        """
        return list(super().map_parsers()[:1])

    def has_query_parameters(self) -> bool:
        """Return whether the operation reads query parameters (each one can be invalid)."""
        return any(parameter["in"] == "query" for parameter in self._get_parameters())

    def error_codes(self) -> list[str]:
        """Return the error statuses this operation can answer, beyond what it declares."""
        codes = [] if self.is_public() else ["401", "403", "429"]
        if self.method in BODY_METHODS or self.has_query_parameters():
            codes.append("400")
        if self.method in BODY_METHODS:
            codes += ["413", "415"]
        if "{" in self.path or (self.method == "GET" and self._is_list_view()):
            codes.append("404")  # unknown ids, and pages past the end of a list
        return codes

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = dict(super()._get_response_bodies(direction))
        for code in self.error_codes():
            if code not in responses:  # what a view declares wins
                responses[code] = self._get_response_for_code(  # type: ignore[no-untyped-call]
                    ERROR_RESPONSES[code], code, direction=direction
                )
        return responses


def _documented(extension: OpenApiViewExtension, **methods: Any) -> type[APIView]:
    """Return a subclass of the extension's view, documented per method (``get=...``).

    The views stay free of schema code: drf-spectacular swaps this subclass in for them.
    """
    view: type[APIView] = extension.target
    documented: type[APIView] = extend_schema_view(**methods)(type(view.__name__, (view,), {}))
    return documented


NOT_A_TOKEN = OpenApiResponse(
    OpenApiTypes.OBJECT, description="The request was not authenticated with an API token."
)
TOO_MANY_ATTEMPTS = OpenApiResponse(
    APIErrorSerializer,
    description="Too many attempts for this client or username: see `Retry-After`.",
)
SERVICE_UNAVAILABLE = OpenApiResponse(
    APIErrorSerializer,
    description=(
        "The rate-limit store or the database is unreachable. The attempt is refused "
        "(fail closed), not counted as a success: retry after `Retry-After`."
    ),
)


class TokenListSchema(OpenApiViewExtension):
    """``/api/tokens/``: the list filters, and the create request and its one-time plaintext."""

    target_class = "tokens_app.api.views.TokenListView"

    def view_replacement(self) -> type[APIView]:
        filters = [
            OpenApiParameter("status", str, enum=list(TokenStatus.values)),
            OpenApiParameter("all", str, enum=["true"], description="Every token (managers only)."),
        ]
        return _documented(
            self,
            get=extend_schema(parameters=filters),
            post=extend_schema(
                request=CreateTokenSerializer, responses={201: IssuedTokenSerializer}
            ),
        )


class TokenDetailSchema(OpenApiViewExtension):
    """``/api/tokens/{key_id}/``: read, rename or describe, revoke."""

    target_class = "tokens_app.api.views.TokenDetailView"

    def view_replacement(self) -> type[APIView]:
        return _documented(
            self,
            get=extend_schema(responses=TokenSerializer),
            patch=extend_schema(request=UpdateTokenSerializer, responses=TokenSerializer),
            delete=extend_schema(responses={204: None}),
        )


class TokenRotateSchema(OpenApiViewExtension):
    """``/api/tokens/{key_id}/rotate/``: the new plaintext, once."""

    target_class = "tokens_app.api.views.TokenRotateView"

    def view_replacement(self) -> type[APIView]:
        return _documented(
            self,
            post=extend_schema(
                request=RotateTokenSerializer, responses={200: IssuedTokenSerializer}
            ),
        )


class CurrentTokenSchema(OpenApiViewExtension):
    """``/api/tokens/current/``: 400 when the request did not use a token."""

    target_class = "tokens_app.api.views.CurrentTokenView"

    def view_replacement(self) -> type[APIView]:
        return _documented(
            self,
            get=extend_schema(responses={200: TokenSerializer, 400: NOT_A_TOKEN}),
            delete=extend_schema(responses={204: None, 400: NOT_A_TOKEN}),
        )


class RevokeAllSchema(OpenApiViewExtension):
    """``/api/tokens/revoke-all/``: every token of the caller, and how many were revoked."""

    target_class = "tokens_app.api.views.RevokeAllView"

    def view_replacement(self) -> type[APIView]:
        return _documented(
            self,
            post=extend_schema(
                request=RevokeAllSerializer,
                responses={
                    200: inline_serializer("RevokedCount", {"revoked": serializers.IntegerField()})
                },
            ),
        )


class PasswordExchangeSchema(OpenApiViewExtension):
    """``/api/auth/token/``: public, rate-limited (429, or 503 if it cannot count)."""

    target_class = "tokens_app.api.views.PasswordExchangeView"

    def view_replacement(self) -> type[APIView]:
        retry_after = OpenApiParameter(
            "Retry-After", int, OpenApiParameter.HEADER, response=[429, 503], required=True
        )
        return _documented(
            self,
            post=extend_schema(
                request=PasswordExchangeSerializer,
                parameters=[retry_after],
                responses={
                    201: IssuedTokenSerializer,
                    429: TOO_MANY_ATTEMPTS,
                    503: SERVICE_UNAVAILABLE,
                },
            ),
        )


class MintJWTSchema(OpenApiViewExtension):
    """``/api/auth/jwt/``: an API token (only) trades for a short-lived JWT."""

    target_class = "tokens_app.api.jwt_views.MintJWTView"

    def view_replacement(self) -> type[APIView]:
        from tokens_app.api.jwt_views import MintJWTSerializer

        minted = inline_serializer(
            "MintedJWT",
            {
                "access_token": serializers.CharField(),
                "token_type": serializers.ChoiceField(["Bearer"]),
                "expires_in": serializers.IntegerField(),
                "scope": serializers.CharField(),
            },
        )
        return _documented(
            self, post=extend_schema(request=MintJWTSerializer, responses={200: minted})
        )


class ClientCredentialFields(serializers.Serializer[Any]):
    """``client_secret_post``: the body fields of client authentication (documentation only)."""

    client_id = serializers.CharField(
        required=False, help_text="`client_secret_post`: the calling API token's key id."
    )
    client_secret = serializers.CharField(
        required=False, help_text="`client_secret_post`: the calling API token, whole."
    )


OAUTH_BODIES = "`application/x-www-form-urlencoded` (as the RFC defines) or JSON"


def oauth_request(name: str, parameters: type[serializers.Serializer[Any]]) -> Any:
    """The documented request of an OAuth endpoint: its parameters plus the client fields."""
    fields = {**parameters().get_fields(), **ClientCredentialFields().get_fields()}
    return inline_serializer(name, fields)


class IntrospectSchema(OpenApiViewExtension):
    """``/api/auth/introspect/``: RFC 7662, for callers holding ``tokens:introspect``."""

    target_class = "tokens_app.api.jwt_views.IntrospectView"

    def view_replacement(self) -> type[APIView]:
        from tokens_app.api.jwt_views import IntrospectSerializer
        from tokens_app.services.jwts import API_TOKEN_KIND, JWT_KIND, KIND_MEMBER

        answer = inline_serializer(
            "Introspection",
            {
                "active": serializers.BooleanField(),
                "scope": serializers.CharField(required=False),
                "client_id": serializers.CharField(
                    required=False, help_text="The API token's key id (a JWT's: its parent's)."
                ),
                "username": serializers.CharField(required=False),
                "token_type": serializers.ChoiceField(["Bearer"], required=False),
                KIND_MEMBER: serializers.ChoiceField(
                    [API_TOKEN_KIND, JWT_KIND],
                    required=False,
                    help_text="Extension member: which kind of token this is.",
                ),
                "exp": serializers.IntegerField(required=False),
                "iat": serializers.IntegerField(required=False),
                "nbf": serializers.IntegerField(required=False, help_text="JWTs only."),
                "sub": serializers.CharField(required=False),
                "aud": serializers.CharField(required=False, help_text="JWTs only."),
                "iss": serializers.CharField(required=False),
                "jti": serializers.CharField(required=False, help_text="JWTs only."),
                "allowed_ips": serializers.ListField(
                    child=serializers.CharField(),
                    required=False,
                    help_text="The token's IP allow-list, when it has one: apply it yourself.",
                ),
                "rate_limit": serializers.CharField(
                    required=False, help_text="The token's rate limit, when it has one."
                ),
            },
        )
        unsupported = OpenApiResponse(
            APIErrorSerializer, description=f"The body is not {OAUTH_BODIES}."
        )
        return _documented(
            self,
            post=extend_schema(
                request=oauth_request("TokenIntrospection", IntrospectSerializer),
                responses={200: answer, 415: unsupported, 503: SERVICE_UNAVAILABLE},
                description=(
                    "RFC 7662 introspection of an API token or a JWT. The caller authenticates "
                    "with a Bearer API token or JWT, or as an OAuth client: HTTP Basic "
                    "(`client_secret_basic`) or the `client_id` / `client_secret` fields "
                    "(`client_secret_post`), where the client id is the calling API token's "
                    "key id and the secret the whole token. Other parameters are ignored. "
                    'Anything not usable now is exactly `{"active": false}`.'
                ),
            ),
        )


class OAuthErrorSerializer(serializers.Serializer[Any]):
    """RFC 6749 section 5.2: the error body of the revocation endpoint."""

    error = serializers.CharField()
    error_description = serializers.CharField(required=False)


def _oauth_error(description: str) -> OpenApiResponse:
    return OpenApiResponse(OAuthErrorSerializer, description=description)


class RevokeSchema(OpenApiViewExtension):
    """``/api/auth/revoke/``: RFC 7009, public, rate-limited per client IP, no oracle."""

    target_class = "tokens_app.api.jwt_views.RevokeView"

    def view_replacement(self) -> type[APIView]:
        from tokens_app.api.jwt_views import RevokeSerializer

        retry_after = OpenApiParameter(
            "Retry-After", int, OpenApiParameter.HEADER, response=[429, 503], required=True
        )
        done = OpenApiResponse(
            {"type": "object", "additionalProperties": False, "maxProperties": 0},
            description="`{}`, whether or not the string was a token (no oracle).",
        )
        return _documented(
            self,
            post=extend_schema(
                request=oauth_request("TokenRevocation", RevokeSerializer),
                parameters=[retry_after],
                responses={
                    200: done,
                    400: _oauth_error("`invalid_request`: no `token`, or a parameter twice."),
                    401: _oauth_error("`invalid_client`: client credentials were sent, wrong."),
                    413: _oauth_error("`invalid_request`: the body is too large."),
                    415: _oauth_error(f"`invalid_request`: the body is not {OAUTH_BODIES}."),
                    429: _oauth_error(
                        "`slow_down`: too many requests from this address (`REVOCATION_RATE`)."
                    ),
                    503: _oauth_error(
                        "`temporarily_unavailable`: the rate-limit store or the JWT deny list "
                        "is unreachable; nothing was revoked."
                    ),
                },
                description=(
                    "RFC 7009 revocation. Holding a token is the right to revoke it: an API "
                    "token is revoked with every token derived from it and their JWTs; a JWT "
                    "alone is refused until it expires. No client authentication is needed; "
                    "a client may authenticate (`client_secret_basic`, `client_secret_post`). "
                    "`token_type_hint` is ignored: both kinds are looked for. Other "
                    "parameters are ignored."
                ),
            ),
        )
