"""Views of the token API: thin adapters from HTTP to ``services``.

A token's URL id is its key id. Every id that is not the caller's (another
user's, nonexistent or malformed) takes the same path: one query, one 404.
"""

from datetime import timedelta
from typing import Any, cast

from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters
from rest_framework import exceptions, generics, status
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens_app import services
from tokens_app.api.serializers import (
    CreateTokenSerializer,
    IssuedTokenSerializer,
    PasswordExchangeSerializer,
    RevokeAllSerializer,
    RotateTokenSerializer,
    TokenSerializer,
    UpdateTokenSerializer,
)
from tokens_app.authentication import APITokenAuthentication
from tokens_app.core.address import client_ip
from tokens_app.exceptions import TranslatedErrors
from tokens_app.models import APIToken, APITokenQuerySet, TokenStatus
from tokens_app.parsers import API_PARSERS
from tokens_app.permissions import HasScope
from tokens_app.services.caller import Caller, Via

READ, WRITE = ["tokens:read"], ["tokens:write"]


#: Who may manage tokens: an API token (bounded by itself as parent) or a session. Never a
#: JWT: it cannot be the parent of a new token, and a long-lived token minted from a
#: five-minute JWT would escape both its lifetime and its scopes.
#: A JWT presented here gets the RFC 6750 ``invalid_token`` answer (see authentication).
TOKEN_MANAGERS: list[type[BaseAuthentication]] = [APITokenAuthentication, SessionAuthentication]


class TokenPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


def issued_response(issued: services.IssuedToken, status_code: int) -> Response:
    """Answer with the plaintext once; ``no-store`` keeps it out of every cache."""
    # The serializer reads an IssuedToken (see its docstring); its fields are typed for APIToken.
    response = Response(IssuedTokenSerializer(cast(Any, issued)).data, status=status_code)
    response["Cache-Control"] = "no-store"
    return response


class TokenAPI(TranslatedErrors, APIView):
    """What the token API's views share: one error translation, and who is asking."""

    @cached_property
    def caller(self) -> Caller:
        """The request's user, credential (``request.auth``) and address, built once."""
        return Caller.of_request(self.request, Via.API)


class TokenAPIView(TokenAPI):
    """A token API view: its parsers, who may manage tokens, scopes by method."""

    parser_classes = API_PARSERS
    authentication_classes = TOKEN_MANAGERS
    permission_classes: list[type[BasePermission]] = [HasScope]


def caller_token(request: Request) -> APIToken | None:
    """Return the API token this request authenticated with, if it did."""
    return request.auth if isinstance(request.auth, APIToken) else None


class TokenListView(TokenAPI, generics.ListAPIView[APIToken]):
    """``GET``: the caller's tokens (``?status=``, ``?all=true`` for managers); ``POST``: create."""

    parser_classes = API_PARSERS
    authentication_classes = TOKEN_MANAGERS
    serializer_class = TokenSerializer
    pagination_class = TokenPagination
    permission_classes = [HasScope]
    required_scopes = {"GET": READ, "POST": WRITE}

    def get_queryset(self) -> APITokenQuerySet:
        request = self.request
        every = request.query_params.get("all") == "true"
        tokens = services.listed_tokens(request.user, every=every)
        wanted = request.query_params.get("status")
        if wanted is None:
            return tokens
        if wanted not in TokenStatus.values:
            raise exceptions.ValidationError(
                {
                    "status": [
                        _("Use one of: %(values)s.") % {"values": ", ".join(TokenStatus.values)}
                    ]
                }
            )
        return tokens.with_status(wanted)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = CreateTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        days = data.get("expires_in_days")
        issued = services.issue_token(
            request.user,
            name=data["name"],
            scopes=data["scopes"],
            description=data.get("description", ""),
            expires_at=data.get("expires_at"),
            expires_in=timedelta(days=days) if days else None,
            allowed_ips=data.get("allowed_ips", ()),
            rate_limit=data.get("rate_limit", ""),
            caller=self.caller,
        )
        return issued_response(issued, status.HTTP_201_CREATED)


def own_token(request: Request, key_id: str) -> APIToken:
    """Return the caller's token with *key_id*; anything else is the same 404."""
    token = services.own_token(request.user, key_id)
    if token is None:
        raise exceptions.NotFound()
    return token


class TokenDetailView(TokenAPIView):
    """``GET`` one token, ``PATCH`` its name or description, ``DELETE`` to revoke it."""

    required_scopes = {"GET": READ, "PATCH": WRITE, "DELETE": WRITE}

    def get(self, request: Request, key_id: str) -> Response:
        return Response(TokenSerializer(own_token(request, key_id)).data)

    def patch(self, request: Request, key_id: str) -> Response:
        token = own_token(request, key_id)
        serializer = UpdateTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.update_token(
            token,
            caller=self.caller,
            **serializer.validated_data,
        )
        return Response(TokenSerializer(token).data)

    def delete(self, request: Request, key_id: str) -> Response:
        services.revoke_token(
            own_token(request, key_id),
            caller=self.caller,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenRotateView(TokenAPIView):
    """``POST``: a new secret for the same token, returned once."""

    required_scopes = {"POST": WRITE}

    def post(self, request: Request, key_id: str) -> Response:
        token = own_token(request, key_id)
        serializer = RotateTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = services.rotate_token(
            token,
            caller=self.caller,
            grace_seconds=serializer.validated_data["grace_seconds"],
        )
        return issued_response(issued, status.HTTP_200_OK)


class RevokeAllView(TokenAPIView):
    """``POST``: revoke every token of the caller at once (a compromised account's first step).

    The token making the request is revoked too; the answer says how many were.
    """

    required_scopes = {"POST": WRITE}

    def post(self, request: Request) -> Response:
        serializer = RevokeAllSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        revoked = services.revoke_all_tokens(
            request.user,
            caller=self.caller,
            reason=serializer.validated_data.get("reason", ""),
        )
        return Response({"revoked": revoked})


class CurrentTokenView(TokenAPIView):
    """The token that authenticated this request: ``GET`` it, or ``DELETE`` to revoke it."""

    required_scopes = {"GET": READ}

    def get_permissions(self) -> list[BasePermission]:
        # Why: revoking the credential you hold needs no scope (a leaked token can kill itself).
        if self.request.method == "DELETE":
            return [IsAuthenticated()]
        return [HasScope()]

    def current(self, request: Request) -> APIToken:
        token = caller_token(request)
        if token is None:
            raise exceptions.ValidationError(
                {"non_field_errors": [_("This request was not authenticated with an API token.")]}
            )
        return token

    def get(self, request: Request) -> Response:
        return Response(TokenSerializer(self.current(request)).data)

    def delete(self, request: Request) -> Response:
        services.revoke_token(
            self.current(request),
            caller=self.caller,
            reason="self-revoked",
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


@method_decorator(sensitive_post_parameters("password"), name="dispatch")
class PasswordExchangeView(TokenAPIView):
    """``POST``: trade a username and password for a new token (for CLIs), rate-limited."""

    authentication_classes: list[type[BaseAuthentication]] = []  # credentials are in the body
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        serializer = PasswordExchangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        username, password = data.pop("username"), data.pop("password")
        days = data.pop("expires_in_days", None)
        issued = services.exchange_password(
            request,
            username,
            password,
            ip=client_ip(request),
            expires_in=timedelta(days=days) if days else None,
            **data,
        )
        if issued is None:
            raise exceptions.ValidationError({"detail": _("Invalid username or password.")})
        return issued_response(issued, status.HTTP_201_CREATED)
