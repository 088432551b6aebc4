"""The one translation of service refusals and faults into DRF errors.

:func:`api_error` maps each exception ``services`` (and the JWT deny list, and the
database) raise to the DRF error a client sees, by its type and in one table. The
exception handler uses it for every view that answers through it (the token API
always does, whatever the project's ``EXCEPTION_HANDLER``), and both authentication
classes use it directly, so a project view keeps the same answers under DRF's default
handler. Forms (``admin.forms.add_service_errors``) and commands
(``management.base.TokenCommand``) have their own single translations.
"""

import logging
import unicodedata
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError as ServiceError
from django.db import DatabaseError
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from tokens_app import services
from tokens_app.jwt.denylist import DenyListUnavailable
from tokens_app.parsers import request_body_error

logger = logging.getLogger("tokens_app")

RETRY_AFTER_SECONDS = 5
UNAVAILABLE_MESSAGE = _("The service is temporarily unavailable. Try again shortly.")
#: A service error's field, renamed to the request field it concerns (others keep theirs).
_REQUEST_FIELD = {"owner": "non_field_errors", "__all__": "non_field_errors"}


class ServiceUnavailable(APIException):
    """A backing service (database, rate-limit cache) failed: the request is refused, not let in."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = UNAVAILABLE_MESSAGE
    default_code = "service_unavailable"


def _invalid_request(error: ServiceError) -> exceptions.ValidationError:
    """A service ``ValidationError`` is DRF's 400, keyed by request field."""
    if not hasattr(error, "error_dict"):
        return exceptions.ValidationError({"non_field_errors": error.messages})
    by_field = error.message_dict.items()
    return exceptions.ValidationError(
        {_REQUEST_FIELD.get(field, field): messages for field, messages in by_field}
    )


def _not_permitted(refusal: services.NotPermitted) -> exceptions.PermissionDenied:
    # DRF would replace Django's PermissionDenied by its generic message; ours says why.
    return exceptions.PermissionDenied(refusal.message)


def _throttled(limited: services.TooManyAttempts) -> exceptions.Throttled:
    return exceptions.Throttled(wait=limited.retry_after)


def _unavailable(_fault: Exception) -> ServiceUnavailable:
    return ServiceUnavailable()


#: Exception type -> its DRF error; the first matching row wins (``NotPermitted`` is a
#: ``PermissionDenied``, so it comes before anything Django's own would match).
_TRANSLATIONS: tuple[tuple[type[Exception], Callable[[Any], APIException]], ...] = (
    (services.NotPermitted, _not_permitted),
    (ServiceError, _invalid_request),
    (services.TooManyAttempts, _throttled),
    (services.RateLimiterUnavailable, _unavailable),
    (DenyListUnavailable, _unavailable),
    (DatabaseError, _unavailable),
)


def api_error(exc: Exception) -> Exception:
    """Return the DRF error *exc* stands for; an exception of no known kind comes back as is.

    A refused request body (Django's size limits, JSON nested too deeply) is the JSON 413
    or 400 of ``parsers.request_body_error``.
    """
    for kind, translate in _TRANSLATIONS:
        if isinstance(exc, kind):
            return translate(exc)
    return request_body_error(exc) or exc


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer DRF's errors as DRF does, and service refusals and faults as :func:`api_error` says.

    Set as ``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` to give every view of the project these
    answers; the token API's views use it regardless. A database fault is logged with its
    traceback on the server; the client learns only that it may retry (503, ``Retry-After``).
    """
    if isinstance(exc, DatabaseError):
        view = context.get("view")
        logger.error("Database error in %s", type(view).__name__, exc_info=exc)
    # Imported here: rest_framework.views reads DEFAULT_AUTHENTICATION_CLASSES when it is
    # imported, and the authentication classes import this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    translated = api_error(exc)
    response = drf_exception_handler(translated, context)
    if response is not None and isinstance(translated, ServiceUnavailable):
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class TranslatedErrors:
    """A view mixin: answer through :func:`exception_handler` whatever the project configured.

    The views then call services without a ``try``: a refusal raised anywhere inside
    becomes its DRF error here, once.
    """

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return exception_handler


# --- the OAuth endpoints' error body (RFC 6749 § 5.2, RFC 7009 § 2.2.1) ------------------------

#: The ``error`` code of each status an OAuth endpoint answers with. RFC 6749 § 5.2
#: defines the request and client errors; ``slow_down`` (RFC 8628) and
#: ``temporarily_unavailable`` (RFC 6749 § 4.1.2.1) are the registered codes closest to a
#: rate limit and an outage, whose ``Retry-After`` header says when to try again.
OAUTH_ERRORS = {
    400: "invalid_request",
    401: "invalid_client",
    405: "invalid_request",
    413: "invalid_request",
    415: "invalid_request",
    429: "slow_down",
    503: "temporarily_unavailable",
}


def _oauth_text(text: str) -> str:
    """*text* in the characters RFC 6749 allows in ``error_description``.

    Printable ASCII without ``"`` or ``\\``: accents are dropped, quotes made single.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = ascii_text.replace('"', "'").replace("\\", "/")
    return "".join(char for char in cleaned if " " <= char <= "~")


def _describe(data: Any) -> str:
    """One line for DRF's error body: its ``detail``, or each field with its messages."""
    if isinstance(data, dict):
        if set(data) == {"detail"}:
            return _describe(data["detail"])
        return "; ".join(f"{field}: {_describe(value)}" for field, value in data.items())
    if isinstance(data, list):
        return " ".join(_describe(item) for item in data)
    return str(data)


def oauth_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """:func:`exception_handler`'s answer, with the body OAuth clients read.

    ``{"error": <code>, "error_description": <text>}`` (RFC 6749 § 5.2, which RFC 7009
    § 2.2.1 and RFC 7662 § 2.3 refer to); status and headers (``WWW-Authenticate``,
    ``Retry-After``) unchanged.
    """
    response = exception_handler(exc, context)
    if response is None:
        return None
    status_code = response.status_code
    fallback = "server_error" if status_code >= 500 else "invalid_request"
    response.data = {
        "error": OAUTH_ERRORS.get(status_code, fallback),
        "error_description": _oauth_text(_describe(response.data)),
    }
    return response


class OAuthErrors(TranslatedErrors):
    """A view mixin: :class:`TranslatedErrors`, answered in the OAuth error body."""

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return oauth_exception_handler
