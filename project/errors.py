"""Error pages: JSON under ``/api/`` (no HTML, no stack trace), Django's pages elsewhere."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from tokens_app.parsers import request_body_error


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


def request_body_refused(request: HttpRequest, exception: Exception) -> HttpResponse | None:
    """A JSON 413 (or 400) when *exception* is a body Django's limits refused on an API path.

    The same answer as inside the DRF views (``tokens_app.parsers.request_body_error``).
    """
    refused = request_body_error(exception) if _is_api(request) else None
    if refused is None:
        return None
    return JsonResponse({"detail": str(refused.detail)}, status=refused.status_code)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """400 with ``DEBUG`` off: JSON for API paths (413 for a body over the limits).

    Django calls it for a body limit (``RequestDataTooBig``, ``TooManyFieldsSent``,
    ``TooManyFilesSent``) or another ``SuspiciousOperation`` raised outside a DRF view,
    in a plain view or a middleware reading ``request.POST``.
    """
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    refused = request_body_refused(request, exception)
    return refused or JsonResponse({"detail": "Bad request."}, status=400)


def server_error(request: HttpRequest) -> HttpResponse:
    """500: a generic JSON body for API paths; the traceback stays in the server log."""
    if _is_api(request):
        return JsonResponse({"detail": "A server error occurred."}, status=500)
    return defaults.server_error(request)
