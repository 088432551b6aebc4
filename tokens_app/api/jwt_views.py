"""JWTs: minting (``POST /api/auth/jwt/``), introspection (RFC 7662) and the JWKS document."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens_app import services
from tokens_app.api.serializers import StrictSerializer
from tokens_app.api.views import caller_token
from tokens_app.authentication import APITokenAuthentication
from tokens_app.exceptions import TranslatedErrors
from tokens_app.jwt import access_tokens, signing_keys
from tokens_app.parsers import API_PARSERS, OAUTH_PARSERS
from tokens_app.permissions import HasScope


class MintJWTSerializer(StrictSerializer):
    scope = serializers.CharField(max_length=2000, required=False, trim_whitespace=False)
    audience = serializers.CharField(max_length=200, required=False)


class IntrospectSerializer(StrictSerializer):
    token = serializers.CharField(max_length=access_tokens.MAX_LENGTH, trim_whitespace=False)
    token_type_hint = serializers.CharField(max_length=50, required=False)


class MintJWTView(TranslatedErrors, APIView):
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
        minted = services.mint_jwt(token, **serializer.validated_data)
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


class IntrospectView(TranslatedErrors, APIView):
    """``POST``: RFC 7662 introspection of an API token or a JWT, for ``tokens:introspect``.

    Anything not usable right now is ``{"active": false}``, without saying why.
    """

    parser_classes = OAUTH_PARSERS
    permission_classes = [HasScope]
    required_scopes = ["tokens:introspect"]

    def post(self, request: Request) -> Response:
        serializer = IntrospectSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw = serializer.validated_data["token"]
        response = Response(services.introspect(raw))
        response["Cache-Control"] = "no-store"
        return response


@require_safe
def jwks(request: HttpRequest) -> JsonResponse:
    """``GET /.well-known/jwks.json``: the public keys JWTs are signed with (none for HS256)."""
    response = JsonResponse({"keys": signing_keys.keyring().public_jwks()})
    response["Cache-Control"] = "public, max-age=300"
    return response
