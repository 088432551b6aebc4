"""Error pages: JSON under ``/api/`` (no HTML, no stack trace), Django's pages elsewhere."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


@csrf_exempt  # why: it changes nothing, and a CSRF 403 page would be HTML, not this 404
def api_not_found(request: HttpRequest) -> HttpResponse:
    """Unknown ``/api/`` path: the same JSON 404 whatever ``DEBUG`` says."""
    return JsonResponse({"detail": "Not found."}, status=404)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404: ``{"detail": "Not found."}`` for API paths, as DRF answers inside its views."""
    if _is_api(request):
        return api_not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """500: a generic JSON body for API paths; the traceback stays in the server log."""
    if _is_api(request):
        return JsonResponse({"detail": "A server error occurred."}, status=500)
    return defaults.server_error(request)
