"""The example project's routes plus plain views behind ``@token_required`` with scopes."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from project.urls import urlpatterns as project_urlpatterns
from tokens_app.decorators import token_required


@token_required(scopes=["notes:write"])
def write_notes(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"written": True, "method": request.method})


@token_required(scopes=["notes:read", "tokens:read"])
async def read_both(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"read": True})


urlpatterns = [
    *project_urlpatterns,
    path("plain/notes/", write_notes),
    path("plain/async/both/", read_both),
]
