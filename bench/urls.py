"""One tiny JSON view per row, identical but for authentication and permission."""

import os
import time
from typing import Any

from django.core.cache import caches
from django.db import connections, router
from django.http import HttpResponseBase
from django.urls import path
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens_app import lookup
from tokens_app.authentication import APITokenAuthentication, JWTAuthentication
from tokens_app.conf import token_settings
from tokens_app.core import tokenstring
from tokens_app.models import APIToken
from tokens_app.permissions import HasScope


class FloorView(APIView):
    """No authentication at all: what every other row is compared with."""

    authentication_classes = []  # type: ignore[var-annotated]
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class AuthTokenView(FloorView):
    """DRF's ``rest_framework.authtoken``: the yardstick."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]


class APITokenView(FloorView):
    """tokens_app: an API token with the scope the view requires."""

    authentication_classes = [APITokenAuthentication]
    permission_classes = [HasScope]
    required_scopes = ["notes:read"]


class RoundTripView(FloorView):
    """No authentication, one ``SELECT 1``: the least any one-query credential check costs."""

    def get(self, request: Request) -> Response:
        with connections[router.db_for_read(APIToken)].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return Response({"ok": True})


class LookupOnlyView(FloorView):
    """No authentication, only tokens_app's one query and the two instances it builds.

    The least an opaque token check can cost before anything is verified: this row shows
    how much of the uncached budget the lookup alone takes.
    """

    def get(self, request: Request) -> Response:
        value = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        parsed = tokenstring.parse(value, token_settings().prefix)
        lookup.find_token_with_owner(parsed.key_id if parsed else "")
        return Response({"ok": True})


class CacheGetView(FloorView):
    """No authentication, one cache ``GET`` on the Redis alias: what a deny-list read costs.

    The production profile keeps its shared state (the JWT deny list, rate limits) in Redis:
    this row is the least any credential check that asks Redis once per request can cost.
    """

    def get(self, request: Request) -> Response:
        caches["redis"].get("bench:reference")
        return Response({"ok": True})


class WorkerView(APITokenView):
    """An API token row that names the process that answered and the SQL it ran.

    gunicorn's sync workers close every connection, so a poller cannot pin one; the
    propagation run tells the workers apart by ``X-Worker-Pid``, and knows from
    ``X-Queries`` whether a token was answered from the cache (0) or the database.
    Observing queries sends the lookup through Django's cursor: same SQL, same answer.
    """

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        started = time.monotonic()
        queries = []

        def record(execute: Any, sql: str, *rest: Any) -> Any:
            queries.append(sql)
            return execute(sql, *rest)

        with connections[router.db_for_read(APIToken)].execute_wrapper(record):
            response = super().dispatch(request, *args, **kwargs)
        response["X-Worker-Pid"] = str(os.getpid())
        response["X-Queries"] = str(len(queries))
        # CLOCK_MONOTONIC is one clock for every process of the host: the poller compares.
        response["X-Handled"] = f"{started:.6f} {time.monotonic():.6f}"
        return response


class JWTView(FloorView):
    """tokens_app: a JWT minted from an API token, with the scope the view requires."""

    authentication_classes = [JWTAuthentication]
    permission_classes = [HasScope]
    required_scopes = ["notes:read"]


urlpatterns = [
    path("floor/", FloorView.as_view()),
    path("roundtrip/", RoundTripView.as_view()),
    path("authtoken/", AuthTokenView.as_view()),
    path("apitoken/", APITokenView.as_view()),
    path("jwt/", JWTView.as_view()),
    path("cacheget/", CacheGetView.as_view()),
    path("lookup/", LookupOnlyView.as_view()),
    path("worker/", WorkerView.as_view()),
]
