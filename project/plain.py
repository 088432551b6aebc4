"""Plain Django views behind ``@token_required`` (no DRF view): the decorator's example."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from project.api import whoami as whoami_of
from tokens_app.decorators import token_required


@require_GET
@token_required
def whoami(request: HttpRequest) -> JsonResponse:
    """``GET /plain/whoami/``: any valid API token or JWT; the same answer as ``/api/whoami/``."""
    return JsonResponse(whoami_of(request.user, request.auth))  # type: ignore[attr-defined]


@require_GET
@token_required
async def async_whoami(request: HttpRequest) -> JsonResponse:
    """``GET /plain/async/whoami/``: the same, as an ``async def`` view (under ASGI: no thread)."""
    return JsonResponse(whoami_of(request.user, request.auth))  # type: ignore[attr-defined]
