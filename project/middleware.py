"""Errors outside the DRF views answered as inside them: a database outage, a refused body."""

import logging
from collections.abc import Callable

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse

from project.errors import request_body_refused
from tokens_app.exceptions import RETRY_AFTER_SECONDS, UNAVAILABLE_MESSAGE

logger = logging.getLogger("tokens_app")


class ServiceUnavailableMiddleware:
    """Answer a ``DatabaseError`` that escapes a view with a generic 503 and ``Retry-After``.

    DRF views already do (``tokens_app.exceptions.exception_handler``); this covers the
    admin and plain Django views, which would otherwise answer a 500 page. The
    traceback goes to the server log, never to the client.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DatabaseError):
            return None
        logger.error("Database error on %s", request.path, exc_info=exception)
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse({"detail": str(UNAVAILABLE_MESSAGE)}, status=503)
        else:
            response = HttpResponse(
                f"<!doctype html><title>503</title><h1>{UNAVAILABLE_MESSAGE}</h1>",
                status=503,
                content_type="text/html; charset=utf-8",
            )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


class APIRequestBodyMiddleware:
    """Answer with a JSON 413 when a plain view under ``/api/`` reads a body over the limits.

    ``handler400`` (``project.errors.bad_request``) does with ``DEBUG`` off; with ``DEBUG``
    on Django answers these ``SuspiciousOperation`` errors with its HTML debug page
    instead, so the JSON 413 is given here, before Django's handler sees them. DRF views
    answer through ``tokens_app.exceptions.exception_handler`` already.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return request_body_refused(request, exception)
