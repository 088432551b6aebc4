"""``GET /api/whoami/``: who the credential belongs to and what it may do."""

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens_app.core import scopes
from tokens_app.jwt.access_tokens import JWTClaims
from tokens_app.models import APIToken

WHOAMI_SCHEMA = inline_serializer(
    "WhoAmI",
    {
        "username": serializers.CharField(),
        "credential": serializers.ChoiceField(["api_token", "jwt", "session"]),
        "key_id": serializers.CharField(allow_null=True),
        "scopes": serializers.ListField(child=serializers.CharField()),
    },
)


class WhoAmIView(APIView):
    """Any valid credential: the username, the credential type and its effective scopes."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=WHOAMI_SCHEMA)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(whoami(request.user, request.auth))


def whoami(user: Any, credential: Any) -> dict[str, Any]:
    """The username, the credential type and its effective scopes (every whoami view's answer)."""
    key_id: str | None
    if isinstance(credential, APIToken):
        kind, names, key_id = "api_token", credential.effective_scopes, credential.key_id
    elif isinstance(credential, JWTClaims):
        kind, names, key_id = "jwt", credential.effective_scopes, credential.key_id
    else:
        kind, key_id = "session", None
        names = frozenset(scope.name for scope in scopes.holdable_scopes(user))
    return {
        "username": user.get_username(),
        "credential": kind,
        "key_id": key_id,
        "scopes": sorted(names),
    }
