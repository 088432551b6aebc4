"""JWTs and the OAuth endpoints: minting (``POST /api/auth/jwt/``), introspection (RFC 7662)
and revocation (RFC 7009) of API tokens and JWTs.

The JWKS document is ``tokens_app.api.wellknown.jwks``; it is importable from here too,
where earlier releases defined it.
"""

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens_app import services
from tokens_app.api.serializers import StrictSerializer, StringField
from tokens_app.api.views import caller_token
from tokens_app.api.wellknown import jwks  # noqa: F401 -- where projects routed it from
from tokens_app.authentication import APITokenAuthentication, ClientSecretAuthentication
from tokens_app.core.address import client_ip
from tokens_app.exceptions import OAuthErrors, TranslatedErrors
from tokens_app.jwt import access_tokens
from tokens_app.parsers import API_PARSERS, OAUTH_PARSERS
from tokens_app.permissions import HasScope


class MintJWTSerializer(StrictSerializer):
    scope = serializers.CharField(max_length=2000, required=False, trim_whitespace=False)
    audience = serializers.CharField(max_length=200, required=False)


class TokenParametersSerializer(serializers.Serializer[Any]):
    """``token`` and ``token_type_hint``, as RFC 7662 § 2.1 and RFC 7009 § 2.1 send them.

    Other parameters are ignored, as both RFCs require (clients add ``client_id`` and
    their own); a parameter sent twice is refused (RFC 6749 § 3.2).
    """

    token = StringField(
        max_length=access_tokens.MAX_LENGTH,
        trim_whitespace=False,
        help_text="The API token or JWT.",
    )
    token_type_hint = StringField(
        max_length=50,
        required=False,
        help_text="Ignored: both kinds are looked for, whatever it says (RFC 7009 section 2.1).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        getlist = getattr(self.initial_data, "getlist", None)
        if getlist is not None:
            repeated = [str(name) for name in self.fields if len(getlist(name)) > 1]
            if repeated:
                message = _("Send this parameter once.")
                raise serializers.ValidationError({name: [message] for name in repeated})
        return attrs


class IntrospectSerializer(TokenParametersSerializer):
    """The introspection request (RFC 7662 § 2.1)."""


class RevokeSerializer(TokenParametersSerializer):
    """The revocation request (RFC 7009 § 2.1)."""


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

    The caller authenticates as an OAuth client (HTTP Basic or ``client_id`` and
    ``client_secret`` fields: an API token, see ``ClientSecretAuthentication``) or as
    anywhere else in the API (Bearer API token or JWT, session). Anything not usable
    right now is ``{"active": false}``, without saying why.
    """

    parser_classes = OAUTH_PARSERS
    permission_classes = [HasScope]
    required_scopes = ["tokens:introspect"]

    def get_authenticators(self) -> list[BaseAuthentication]:
        # First, so that a refused Basic attempt gets the Basic challenge.
        return [ClientSecretAuthentication(), *super().get_authenticators()]

    def post(self, request: Request) -> Response:
        serializer = IntrospectSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw = serializer.validated_data["token"]
        response = Response(services.introspect(raw))
        response["Cache-Control"] = "no-store"
        return response


class RevokeView(OAuthErrors, APIView):
    """``POST``: RFC 7009 revocation of an API token or a JWT by whoever holds it.

    Holding the token is the right to revoke it (``services.revoke_presented``), so no
    client authentication is needed; a client that authenticates (HTTP Basic or body
    fields) must do it right. The answer is ``200 {}`` whether or not anything was
    revoked (no oracle). Every request counts against ``REVOCATION_RATE`` per client IP,
    first. Errors are RFC 6749 § 5.2 JSON (``{"error": "invalid_request", ...}``).
    """

    parser_classes = OAUTH_PARSERS
    authentication_classes: list[type[BaseAuthentication]] = [ClientSecretAuthentication]
    permission_classes: list[type[BasePermission]] = [AllowAny]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if request.method == "POST":  # before the body is read or a client authenticated
            services.count_revocation_attempt(request._request)
        super().initial(request, *args, **kwargs)

    def post(self, request: Request) -> Response:
        serializer = RevokeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.revoke_presented(serializer.validated_data["token"], ip=client_ip(request))
        response = Response({}, status=status.HTTP_200_OK)
        response["Cache-Control"] = "no-store"
        return response
