"""Request bodies: parse them or refuse them with a JSON 400 or 413, never a 500 or HTML.

DRF's ``JSONParser`` lets ``RecursionError`` escape on deeply nested input (``[`` x 100,000
was a 500); DRF before 3.17.2 read JSON and form bodies with no size limit; and Django
streams multipart file parts of any size to disk before a view can refuse them. The token
API sets :data:`API_PARSERS` (JSON only) on its views whatever the project's
``DEFAULT_PARSER_CLASSES`` say, and :data:`OAUTH_PARSERS` (form and JSON) on the RFC
endpoints that clients send forms to; a project can make them its defaults too. Any other
media type is DRF's 415, before a byte is read. :func:`request_body_error` turns Django's
own body limits into the same 413 for the exception handlers.
"""

import json
import operator
import re
from collections.abc import Mapping
from itertools import accumulate, count
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.utils.translation import gettext_lazy as _
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.request import Request
from rest_framework.utils.json import strict_constant

#: Deep enough for any real API body; shallow enough that code walking the data
#: recursively (serializers, renderers: several frames per level) stays far from
#: Python's recursion limit of 1,000 frames.
MAX_JSON_DEPTH = 64
TOO_DEEP_MESSAGE = _("JSON parse error - arrays and objects are nested too deeply.")
TOO_LARGE_MESSAGE = _("The request body is larger than %(limit)d bytes.")
TOO_MANY_FIELDS_MESSAGE = _("The request body has more than %(limit)d fields.")
TOO_MANY_FILES_MESSAGE = _("The request body has more than %(limit)d files.")

# A JSON string, escapes included: brackets inside strings do not nest anything.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
# An opening bracket counts 2 and a closing one 0: after the i-th bracket the depth is
# (sum of counts) - i, which accumulate/map/max compute without a Python-level loop.
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


class ContentTooLarge(APIException):
    """413: the body exceeds a limit of the server (size, fields, files); send less."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The request body is too large.")
    default_code = "content_too_large"


def _limit_error(message: Any, setting: str) -> ContentTooLarge:
    limit = getattr(settings, setting, None)
    if limit is None:  # no limit is configured: name no number rather than a wrong one
        return ContentTooLarge()
    return ContentTooLarge(message % {"limit": limit})


def request_body_error(exc: BaseException) -> APIException | None:
    """Return the JSON error for a body Django's limits or a parser refused, else ``None``.

    Django raises ``RequestDataTooBig``, ``TooManyFieldsSent`` and ``TooManyFilesSent``
    (``DATA_UPLOAD_MAX_*``) as ``SuspiciousOperation``: an HTML 400 unless mapped here.
    All three are a 413: the body is well formed but more than the server accepts,
    and the client's remedy is the same, send less. A ``RecursionError`` is a 400 only
    when it rose out of DRF parsing the body (a project's own ``JSONParser``); raised
    anywhere else it is a bug and stays a 500.
    """
    if isinstance(exc, RequestDataTooBig):
        return _limit_error(TOO_LARGE_MESSAGE, "DATA_UPLOAD_MAX_MEMORY_SIZE")
    if isinstance(exc, TooManyFieldsSent):
        return _limit_error(TOO_MANY_FIELDS_MESSAGE, "DATA_UPLOAD_MAX_NUMBER_FIELDS")
    if isinstance(exc, TooManyFilesSent):
        return _limit_error(TOO_MANY_FILES_MESSAGE, "DATA_UPLOAD_MAX_NUMBER_FILES")
    if isinstance(exc, RecursionError) and _raised_while_parsing(exc):
        return ParseError(TOO_DEEP_MESSAGE)
    return None


def _raised_while_parsing(exc: BaseException) -> bool:
    """Return whether *exc* propagated out of ``Request._parse`` (DRF reading the body)."""
    parse = getattr(getattr(Request, "_parse", None), "__code__", None)
    frames = exc.__traceback__
    while frames is not None:
        if frames.tb_frame.f_code is parse:
            return True
        frames = frames.tb_next
    return False


def nests_deeper_than(text: str, limit: int) -> bool:
    """Return whether the valid JSON *text* nests arrays and objects more than *limit* deep.

    Linear, with no Python-level loop; free for bodies with at most *limit* brackets.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # it cannot nest deeper than it opens
    # Outside its strings, valid JSON is ASCII: only the brackets matter for depth.
    steps = _JSON_STRING.sub("", text).encode().translate(_STEPS, _NOT_BRACKETS)
    return max(map(operator.sub, accumulate(steps), count(1)), default=0) > limit


def refuse_oversized(parser_context: Mapping[str, Any] | None) -> None:
    """Raise a 413 when ``Content-Length`` exceeds ``DATA_UPLOAD_MAX_MEMORY_SIZE``.

    As Django checks ``request.body``, before reading any of it. A WSGI body is never
    longer than its ``Content-Length``; DRF reads none without one.
    """
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    request = (parser_context or {}).get("request")
    if limit is None or request is None:
        return
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return  # DRF reads no body then
    if length > limit:
        raise _limit_error(TOO_LARGE_MESSAGE, "DATA_UPLOAD_MAX_MEMORY_SIZE")


def _text_encoding(parser_context: Mapping[str, Any]) -> str:
    """Return the request's charset; refuse codecs that are not text (``bz2_codec`` inflates)."""
    encoding = str(parser_context.get("encoding") or settings.DEFAULT_CHARSET)
    try:
        "".encode(encoding)  # unlike bytes.decode, str.encode refuses bytes-to-bytes codecs
    except (LookupError, UnicodeError):
        raise ParseError(
            _('Unsupported charset "%(charset)s" in the Content-Type header.')
            % {"charset": encoding}
        ) from None
    return encoding


class JSONParser(parsers.JSONParser):
    """DRF's ``JSONParser``, bounded: 400 beyond ``max_depth`` levels, 413 beyond the size limit.

    Nesting that deep is refused whether Python's recursion limit or the depth count
    finds it first: the same 400 on every Python version.
    """

    max_depth = MAX_JSON_DEPTH

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        context = parser_context or {}
        refuse_oversized(context)
        encoding = _text_encoding(context)
        parse_constant = strict_constant if self.strict else None
        try:
            text = stream.read().decode(encoding)
            data = json.loads(text, parse_constant=parse_constant)
        except RecursionError:
            raise ParseError(TOO_DEEP_MESSAGE) from None
        except ValueError as exc:  # as DRF answers: what is wrong, and where
            raise ParseError(_("JSON parse error - %(error)s") % {"error": exc}) from None
        if nests_deeper_than(text, self.max_depth):
            raise ParseError(TOO_DEEP_MESSAGE)
        return data


class FormParser(parsers.FormParser):
    """DRF's ``FormParser`` with the size limit that DRF before 3.17.2 did not apply."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:  # the stubs' _ImmutableQueryDict is not importable at run time
        refuse_oversized(parser_context)
        return super().parse(stream, media_type, parser_context)


class MultiPartParser(parsers.MultiPartParser):
    """DRF's ``MultiPartParser`` for APIs that take no files: the whole body counts.

    Django counts only the non-file fields against ``DATA_UPLOAD_MAX_MEMORY_SIZE`` and
    streams file parts of any size to disk (a 50 MB file reached a temporary file on
    the unauthenticated ``/api/auth/token/``); here a longer body is a 413, unread.
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> "parsers.DataAndFiles[Any, Any]":  # generic in the stubs only
        refuse_oversized(parser_context)
        return super().parse(stream, media_type, parser_context)


#: The token API's parsers: JSON only. Each parser is one media type per request body in
#: the OpenAPI schema, and client generators handle one (openapi-python-client emitted code
#: that did not import for three); a form or multipart body is a 415, unread.
API_PARSERS: tuple[type[parsers.BaseParser], ...] = (JSONParser,)

#: The parsers of the OAuth endpoints (RFC 7662 introspection, RFC 7009 revocation): their
#: RFCs have clients send ``application/x-www-form-urlencoded``, listed first in the schema;
#: JSON is accepted too.
OAUTH_PARSERS: tuple[type[parsers.BaseParser], ...] = (FormParser, JSONParser)
