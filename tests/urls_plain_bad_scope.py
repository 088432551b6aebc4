"""A plain view requiring an undeclared scope: ``manage.py check`` must name it (E003)."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from tokens_app.decorators import token_required


@token_required(scopes=["notes:raed"])
def misspelt(request: HttpRequest) -> JsonResponse:
    return JsonResponse({})


urlpatterns = [path("plain/misspelt/", misspelt)]
