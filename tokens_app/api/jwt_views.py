"""JWTs: minting (``POST /api/auth/jwt/``), introspection (RFC 7662) and the JWKS document."""

from typing import Any

from django.core.exceptions import ValidationError as ServiceError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens_app import denylist, jwt_tokens, services
from tokens_app.api.serializers import StrictSerializer
from tokens_app.api.views import caller_token, service_error
from tokens_app.authentication import APITokenAuthentication
from tokens_app.exceptions import ServiceUnavailable
from tokens_app.models import APIToken
from tokens_app.parsers import API_PARSERS
from tokens_app.permissions import HasScope
from tokens_app.services import authority

INACTIVE = {"active": False}


class MintJWTSerializer(StrictSerializer):
    scope = serializers.CharField(max_length=2000, required=False, trim_whitespace=False)
    audience = serializers.CharField(max_length=200, required=False)


class IntrospectSerializer(StrictSerializer):
    token = serializers.CharField(max_length=jwt_tokens.MAX_LENGTH, trim_whitespace=False)
    token_type_hint = serializers.CharField(max_length=50, required=False)


class MintJWTView(APIView):
    """``POST``: a short-lived JWT for the API token this request carries (and only for one).

    Only API tokens authenticate here, so a session or a JWT cannot mint JWTs.
    """

    parser_classes = API_PARSERS
    authentication_classes: list[type[BaseAuthentication]] = [APITokenAuthentication]
    permission_classes: list[type[BasePermission]] = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        token = caller_token(request)
        if token is None:  # pragma: no cover — only API tokens authenticate here
            raise services.InvalidToken("not an API token")
        serializer = MintJWTSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            minted = jwt_tokens.mint(token, **serializer.validated_data)
        except ServiceError as error:
            raise service_error(error) from None
        response = Response(
            {
                "access_token": minted.access_token,
                "token_type": "Bearer",
                "expires_in": minted.expires_in,
                "scope": minted.scope,
            },
            status=status.HTTP_200_OK,
        )
        response["Cache-Control"] = "no-store"
        return response


def _epoch(value: Any) -> int:
    return int(value.timestamp())


def _describe_api_token(raw: str) -> dict[str, Any]:
    try:
        # The client's address is unknown here: the list is reported for the caller to apply.
        token: APIToken = services.authenticate(raw, touch=False, check_address=False)
    except services.InvalidToken:
        return INACTIVE
    answer = {
        "active": True,
        "scope": " ".join(sorted(token.effective_scopes)),
        "iat": _epoch(token.created_at),
        "sub": str(token.owner.pk),
        "username": token.owner.get_username(),
        "token_type": "api_token",
        "client_id": token.key_id,
    }
    # A rotated token's previous secret ends with its grace: that is when *this* one expires.
    expires_at = authority.bounds_of(authority.credential_of(token.owner, token)).expires_at
    if expires_at is not None:
        answer["exp"] = _epoch(expires_at)
    return {**answer, **_guardrails(token.allowed_ips, services.token_rate(token))}


def _guardrails(allowed_ips: list[str], rate_limit: str | None) -> dict[str, Any]:
    """The token's guardrails, for a resource server to apply: only those that are set."""
    found: dict[str, Any] = {"allowed_ips": list(allowed_ips)} if allowed_ips else {}
    return {**found, "rate_limit": rate_limit} if rate_limit else found


def _describe_jwt(raw: str) -> dict[str, Any]:
    try:
        verified = jwt_tokens.verify(raw, any_audience=True)
    except jwt_tokens.InvalidJWT:
        return INACTIVE
    claims = verified.claims
    return {
        "active": True,
        "scope": " ".join(verified.scopes),
        "exp": int(claims["exp"]),
        "iat": int(claims["iat"]),
        "sub": verified.subject,
        "username": str(claims.get("username", "")),
        "token_type": "jwt",
        "client_id": verified.key_id,
        **_guardrails(verified.allowed_ips, verified.rate_limit),
    }


class IntrospectView(APIView):
    """``POST``: RFC 7662 introspection of an API token or a JWT, for ``tokens:introspect``.

    Anything not usable right now is ``{"active": false}``, without saying why.
    """

    parser_classes = API_PARSERS
    permission_classes = [HasScope]
    required_scopes = ["tokens:introspect"]

    def post(self, request: Request) -> Response:
        serializer = IntrospectSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw = serializer.validated_data["token"]
        try:
            body = (
                _describe_jwt(raw) if jwt_tokens.looks_like_jwt(raw) else _describe_api_token(raw)
            )
        except denylist.DenyListUnavailable:
            raise ServiceUnavailable from None
        response = Response(body)
        response["Cache-Control"] = "no-store"
        return response


@require_safe
def jwks(request: HttpRequest) -> JsonResponse:
    """``GET /.well-known/jwks.json``: the public keys JWTs are signed with (none for HS256)."""
    response = JsonResponse({"keys": jwt_tokens.keyring().public_jwks()})
    response["Cache-Control"] = "public, max-age=300"
    return response
