"""A URLconf whose views get their scopes wrong in every way the system checks look for."""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.generic import View
from rest_framework import viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens_app.permissions import HasAnyScope, HasScope


class ScopedView(APIView):
    """Sound: HasScope and declared scopes."""

    permission_classes = [HasScope]
    required_scopes: Any = ["notes:read"]

    def get(self, request: Request) -> Response:
        return Response({})


class TypoView(ScopedView):
    required_scopes = ["notes:wirte"]


class MethodTypoView(ScopedView):
    required_scopes = {"GET": ["notes:read"], "POST": ["notes:raed"]}


class ActionTypoViewSet(viewsets.ViewSet):
    permission_classes = [HasScope]
    required_scopes = {"list": ["notes:read"], "create": ["notes:wirte"]}

    def list(self, request: Request) -> Response:
        return Response([])

    def create(self, request: Request) -> Response:
        return Response({})


class InitkwargsTypoView(ScopedView):
    """Sound on the class; the route's initkwargs bring the typo."""


class FixedByInitkwargsView(ScopedView):
    """A typo on the class; the route's initkwargs replace it with a sound scope."""

    required_scopes = ["notes:wirte"]


class NestedTypoView(ScopedView):
    required_scopes = ["tokens:wrte"]


class NonStringScopeView(ScopedView):
    required_scopes = ["notes:read", 7]


class NoScopesView(APIView):
    permission_classes = [HasScope]


class AndComposedView(APIView):
    permission_classes = [HasScope & IsAuthenticated]


class OrComposedView(APIView):
    permission_classes = [IsAuthenticated | HasAnyScope]


class NotComposedView(APIView):
    permission_classes = [~HasScope]


class InitkwargsPermissionView(APIView):
    permission_classes = [IsAuthenticated]


class EmptyScopesView(APIView):
    permission_classes = [HasScope]
    required_scopes: Any = []


class StringScopesView(APIView):
    permission_classes = [HasScope]
    required_scopes = "notes:read"


class PlainView(APIView):
    """No HasScope and no scopes: none of the checks' business."""

    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({})


class DjangoView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")


def function_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("scoped/", ScopedView.as_view()),
    path("typo/", TypoView.as_view()),
    path("typo-again/", TypoView.as_view()),
    path("method-typo/", MethodTypoView.as_view()),
    path("action-typo/", ActionTypoViewSet.as_view({"get": "list", "post": "create"})),
    path("initkwargs-typo/", InitkwargsTypoView.as_view(required_scopes=["tokens:raed"])),
    path("fixed/", FixedByInitkwargsView.as_view(required_scopes=["notes:read"])),
    path("outer/", include([path("inner/", include([path("deep/", NestedTypoView.as_view())]))])),
    path("non-string/", NonStringScopeView.as_view()),
    path("no-scopes/", NoScopesView.as_view()),
    path("and-composed/", AndComposedView.as_view()),
    path("or-composed/", OrComposedView.as_view()),
    path("not-composed/", NotComposedView.as_view()),
    path("initkwargs-perm/", InitkwargsPermissionView.as_view(permission_classes=[HasScope])),
    path("empty-scopes/", EmptyScopesView.as_view()),
    path("string-scopes/", StringScopesView.as_view()),
    path("plain/", PlainView.as_view()),
    path("django/", DjangoView.as_view()),
    path("function/", function_view),
]
