"""DRF exception handler: a database fault is a generic 503, never a stack trace or an accept."""

import logging
from typing import Any

from django.db import DatabaseError
from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger("tokens_app")

RETRY_AFTER_SECONDS = 5


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer DRF's errors as DRF does, and database faults with a JSON 503 + ``Retry-After``.

    Set as ``REST_FRAMEWORK["EXCEPTION_HANDLER"]``. The fault is logged with its
    traceback on the server; the client learns only that it may retry.
    """
    response = drf_exception_handler(exc, context)
    if response is None and isinstance(exc, DatabaseError):
        view = context.get("view")
        logger.error("Database error in %s", type(view).__name__, exc_info=exc)
        return Response(
            {"detail": _("The service is temporarily unavailable. Try again shortly.")},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return response
