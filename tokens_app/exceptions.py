"""DRF exception handling: a fault of a backing service is a generic 503, never a stack trace."""

import logging
from typing import Any

from django.db import DatabaseError
from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.response import Response

logger = logging.getLogger("tokens_app")

RETRY_AFTER_SECONDS = 5
UNAVAILABLE_MESSAGE = _("The service is temporarily unavailable. Try again shortly.")


class ServiceUnavailable(APIException):
    """A backing service (database, rate-limit cache) failed: the request is refused, not let in."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = UNAVAILABLE_MESSAGE
    default_code = "service_unavailable"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer DRF's errors as DRF does, and service faults with a JSON 503 + ``Retry-After``.

    A refusal of the authority rule (``services.NotPermitted``) is a 403 with its reason.
    A body over Django's limits is a JSON 413, a body nested too deeply for DRF's own
    ``JSONParser`` a 400 (``parsers.request_body_error``), not Django's HTML 400 or a 500.

    Set as ``REST_FRAMEWORK["EXCEPTION_HANDLER"]``. A database fault is logged with
    its traceback on the server; the client learns only that it may retry.
    """
    if isinstance(exc, DatabaseError):
        view = context.get("view")
        logger.error("Database error in %s", type(view).__name__, exc_info=exc)
        exc = ServiceUnavailable()
    # Imported here: rest_framework.views imports the authentication classes, which
    # import this module (ServiceUnavailable); services import the models.
    from rest_framework.views import exception_handler as drf_exception_handler

    from tokens_app.parsers import request_body_error
    from tokens_app.services.errors import NotPermitted

    if isinstance(exc, NotPermitted):
        # DRF would replace Django's PermissionDenied by its generic message; ours says why.
        exc = PermissionDenied(exc.message)
    exc = request_body_error(exc) or exc

    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
