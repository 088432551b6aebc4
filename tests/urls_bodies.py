"""The example project's URLs plus views that read bodies outside the bounded parsers.

``tests/api/test_bodies.py`` uses them (``pytest.mark.urls``) for the paths the example project
does not have: a plain Django view under ``/api/`` that reads ``request.POST`` (and one
the CSRF middleware reads for), a DRF view that kept DRF's own ``JSONParser``, a DRF
view with a genuine recursion bug, and a project's DRF view that reads JSON, forms and
multipart through the bounded parsers (the token API reads JSON only).
"""

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from rest_framework import parsers
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project.urls import handler400, handler404, handler500
from project.urls import urlpatterns as project_urlpatterns
from tokens_app.parsers import FormParser, JSONParser, MultiPartParser


def plain_form(request: HttpRequest) -> HttpResponse:
    """A plain Django view that reads the form body itself."""
    return JsonResponse({"fields": len(request.POST)})


class StockJSONView(APIView):
    """A project's DRF view that kept DRF's ``JSONParser`` (not the bounded one)."""

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    parser_classes = [parsers.JSONParser]

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"keys": len(request.data)})


class AllParsersView(APIView):
    """A project's DRF view that takes JSON, forms and multipart, all through bounded parsers.

    Anyone may post (sessions included, so the CSRF check reads the body too).
    """

    permission_classes = [AllowAny]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"keys": len(request.data)})


def _recurse(depth: int) -> int:
    return _recurse(depth + 1)


class RecursionBugView(APIView):
    """A DRF view with a genuine bug: endless recursion after the body parsed fine."""

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    parser_classes = [parsers.JSONParser]

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"depth": _recurse(len(request.data))})


urlpatterns = [
    path("api/test/plain-form/", csrf_exempt(plain_form)),
    path("api/test/csrf-form/", plain_form),  # the CSRF middleware reads request.POST first
    path("test/plain-form/", csrf_exempt(plain_form)),
    path("api/test/stock-json/", StockJSONView.as_view()),
    path("api/test/recursion-bug/", RecursionBugView.as_view()),
    path("api/test/all-parsers/", AllParsersView.as_view()),
    *project_urlpatterns,
]

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]
