"""Hostile request bodies (issue 13, items 7 and 8): a JSON 400, 413 or 415, fast, nothing written.

Item 7: ``[`` x 100,000 was a ``RecursionError`` (a 500) on every JSON endpoint. Item 8:
bodies over Django's limits (``DATA_UPLOAD_MAX_MEMORY_SIZE``, ``_NUMBER_FIELDS``,
``_NUMBER_FILES``) were Django's HTML 400 under ``/api/``. Each attack runs at the HTTP
level, through the real middleware, parsers and exception handlers. Since issue 15 the
token API reads JSON only (forms too on introspection): a form or multipart attack on an
endpoint that does not read that media type is a 415, unread; the form and multipart
limits stay under test on the introspection endpoint and on a project's view that reads
all three (``tests/urls_bodies.py``).
"""

import http.client
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from rest_framework.test import APIClient

from project.notes.models import Note
from tests import live
from tests.helpers import bearer
from tokens_app.models import APIToken, TokenEvent
from tokens_app.parsers import MAX_JSON_DEPTH, TOO_DEEP_MESSAGE

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000
LIMIT = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # Django's default: 2.5 MB
OVERSIZE = LIMIT + 1
TOO_LARGE = f"The request body is larger than {LIMIT} bytes."
TOO_MANY_FIELDS = f"The request body has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields."
TOO_MANY_FILES = f"The request body has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files."
#: Seconds: the deep body is refused in milliseconds; a regression to a slow path is not.
FAST = 1.0

JSON, FORM, MULTIPART = "json", "form", "multipart"
MEDIA_TYPES = {
    JSON: "application/json",
    FORM: "application/x-www-form-urlencoded",
    MULTIPART: "multipart/form-data",
}
INTROSPECT = "/api/auth/introspect/"
#: A project's view that reads all three media types (``tests/urls_bodies.py``).
ALL_PARSERS = "/api/test/all-parsers/"

# Each endpoint, the scopes its caller's token holds (None: unauthenticated), a body that
# is valid apart from the attack, and the media types it reads.
ENDPOINTS = {
    "/api/auth/token/": (
        None,
        {"username": "alice", "password": "pw-alice", "name": "cli", "scopes": "notes:read"},
        {JSON},
    ),
    "/api/tokens/": (
        ["tokens:write", "notes:read"],
        {"name": "ci", "scopes": "notes:read"},
        {JSON},
    ),
    "/api/notes/": (["notes:write"], {"title": "hello", "body": "world"}, {JSON}),
    INTROSPECT: (["tokens:introspect"], {"token": "tka_x"}, {JSON, FORM}),
    "/api/auth/jwt/": (["notes:read"], {"scope": "notes:read", "audience": "api"}, {JSON}),
    ALL_PARSERS: (None, {"name": "x"}, {JSON, FORM, MULTIPART}),
}


def _endpoint_param(path: str) -> Any:
    marks = [pytest.mark.urls("tests.urls_bodies")] if path == ALL_PARSERS else []
    return pytest.param(path, marks=marks, id=path.strip("/").replace("/", "-"))


@pytest.fixture(params=[_endpoint_param(path) for path in ENDPOINTS])
def endpoint(request: pytest.FixtureRequest, alice: Any, issue: Callable[..., Any]) -> Any:
    """(path, headers, valid form fields) of one endpoint, with a real API token if it needs one."""
    path = request.param
    scopes, fields, _reads = ENDPOINTS[path]
    headers = {} if scopes is None else bearer(issue(alice, scopes).plaintext)
    return path, headers, fields


def written() -> tuple[int, int, int]:
    """What an accepted request would have created: tokens, their events, notes."""
    return APIToken.objects.count(), TokenEvent.objects.count(), Note.objects.count()


def assert_json_error(response: Any, status: int, detail: str) -> None:
    body = response.content.decode()
    assert response.status_code == status, body[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": detail}
    assert "Traceback" not in body
    assert "<html" not in body.lower()


def assert_refused(response: Any, path: str, kind: str, status: int, detail: str) -> None:
    """The limit's JSON error where *path* reads *kind* bodies; else a 415 naming the type."""
    if kind in ENDPOINTS[path][2]:
        assert_json_error(response, status, detail)
        return
    sent = response.wsgi_request.META["CONTENT_TYPE"]  # multipart's names its boundary too
    assert sent.startswith(MEDIA_TYPES[kind])
    assert_json_error(response, 415, f'Unsupported media type "{sent}" in request.')


def oversized(kind: str, fields: dict[str, str]) -> dict[str, Any]:
    """Arguments of ``post()``: *fields* plus one field that takes the body past the limit."""
    big = {**fields, "padding": "x" * OVERSIZE}
    if kind == "json":
        return {"data": json.dumps(big), "content_type": "application/json"}
    if kind == "form":
        return {"data": urlencode(big), "content_type": "application/x-www-form-urlencoded"}
    return {"data": big, "format": "multipart"}


def many_fields(kind: str, fields: dict[str, str]) -> dict[str, Any]:
    """*fields* plus enough extra fields to pass ``DATA_UPLOAD_MAX_NUMBER_FIELDS``."""
    extra = {f"f{i}": "1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    if kind == "form":
        data = urlencode({**fields, **extra})
        return {"data": data, "content_type": "application/x-www-form-urlencoded"}
    return {"data": {**fields, **extra}, "format": "multipart"}


# --- item 7: deeply nested JSON ---------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_deeply_nested_json_is_a_fast_json_400(
    api: APIClient, endpoint: Any, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    path, headers, _ = endpoint
    before = written()
    started = time.perf_counter()
    response = api.post(path, DEEP, content_type="application/json", **headers)
    elapsed = time.perf_counter() - started
    assert_json_error(response, 400, str(TOO_DEEP_MESSAGE))
    assert elapsed < FAST
    assert written() == before


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,  # well formed: refused by depth, not by syntax
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        # one level more than allowed, in an otherwise ordinary body
        '{"name": "x", "scopes": ' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}",
    ],
    ids=["balanced-100000", "objects-50000", "just-over-the-limit"],
)
def test_nesting_beyond_the_limit_is_a_json_400(api: APIClient, body: str) -> None:
    started = time.perf_counter()
    response = api.post("/api/auth/token/", body, content_type="application/json")
    assert_json_error(response, 400, str(TOO_DEEP_MESSAGE))
    assert time.perf_counter() - started < FAST


def test_nesting_at_the_limit_reaches_the_serializer(api: APIClient) -> None:
    body = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    response = api.post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() != {"detail": str(TOO_DEEP_MESSAGE)}  # the serializer's complaint


def test_brackets_inside_strings_do_not_count_as_nesting(api: APIClient, alice: Any) -> None:
    description = '[{"\\' * 250  # 1,000 characters: brackets, quotes and escapes
    body = {
        "username": "alice",
        "password": "pw-alice",
        "name": "cli",
        "description": description,
        "scopes": ["notes:read"],
    }
    response = api.post("/api/auth/token/", body, format="json")
    assert response.status_code == 201, response.content
    assert APIToken.objects.get().description == description


def test_malformed_json_is_still_drf_parse_error(api: APIClient) -> None:
    response = api.post("/api/auth/token/", '{"username": ', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error - Expecting value")


def test_json_in_a_codec_that_is_not_text_is_refused(api: APIClient) -> None:
    # bz2_codec would decompress: a tiny body could inflate past every size limit.
    response = api.post(
        "/api/auth/token/", b"x" * 10, content_type="application/json; charset=bz2_codec"
    )
    assert_json_error(response, 400, 'Unsupported charset "bz2_codec" in the Content-Type header.')


@pytest.mark.urls("tests.urls_bodies")
def test_project_view_with_drfs_own_json_parser_is_a_json_400(api: APIClient) -> None:
    # The exception handler's net: a RecursionError raised while DRF parsed the body.
    response = api.post("/api/test/stock-json/", DEEP, content_type="application/json")
    assert_json_error(response, 400, str(TOO_DEEP_MESSAGE))


@pytest.mark.urls("tests.urls_bodies")
def test_recursion_bug_in_a_view_stays_a_500(settings: Any) -> None:
    # The net does not hide bugs: recursion after the body parsed is a server error.
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    response = client.post("/api/test/recursion-bug/", "[1]", content_type="application/json")
    assert response.status_code == 500
    assert response.json() == {"detail": "A server error occurred."}


# --- item 8: bodies over Django's limits, inside the DRF views --------------------------------


@pytest.mark.parametrize("kind", [JSON, FORM, MULTIPART])
def test_oversized_body_is_a_json_413(api: APIClient, endpoint: Any, kind: str) -> None:
    path, headers, fields = endpoint
    before = written()
    response = api.post(path, **oversized(kind, fields), **headers)
    assert_refused(response, path, kind, 413, TOO_LARGE)
    assert written() == before


@pytest.mark.parametrize("kind", [FORM, MULTIPART])
def test_too_many_fields_is_a_json_413(api: APIClient, endpoint: Any, kind: str) -> None:
    path, headers, fields = endpoint
    before = written()
    response = api.post(path, **many_fields(kind, fields), **headers)
    assert_refused(response, path, kind, 413, TOO_MANY_FIELDS)
    assert written() == before


def test_too_many_files_is_a_json_413(api: APIClient, endpoint: Any) -> None:
    path, headers, fields = endpoint
    files = {
        f"file{i}": SimpleUploadedFile(f"{i}.txt", b"x")
        for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)
    }
    before = written()
    response = api.post(path, {**fields, **files}, format="multipart", **headers)
    assert_refused(response, path, MULTIPART, 413, TOO_MANY_FILES)
    assert written() == before


def test_file_larger_than_the_limit_is_refused_unread(api: APIClient, endpoint: Any) -> None:
    # Django counts only non-file fields: without the bounded parser this file went to disk.
    path, headers, fields = endpoint
    upload = SimpleUploadedFile("big.bin", b"x" * OVERSIZE)
    before = written()
    response = api.post(path, {**fields, "upload": upload}, format="multipart", **headers)
    assert_refused(response, path, MULTIPART, 413, TOO_LARGE)
    assert written() == before


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_limits_are_json_with_debug_on_too(
    api: APIClient, alice: Any, issue: Callable[..., Any], settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    headers = bearer(issue(alice, ["tokens:introspect"]).plaintext)
    response = api.post(INTROSPECT, **oversized(FORM, {"token": "x"}), **headers)
    assert_json_error(response, 413, TOO_LARGE)
    response = api.post(INTROSPECT, **many_fields(FORM, {"token": "x"}), **headers)
    assert_json_error(response, 413, TOO_MANY_FIELDS)


@pytest.mark.parametrize(
    ("path", "arguments", "detail"),
    [
        ("/api/tokens/", oversized(JSON, {"name": "x"}), TOO_LARGE),
        (ALL_PARSERS, oversized(FORM, {"name": "x"}), TOO_LARGE),
        (ALL_PARSERS, many_fields(FORM, {"name": "x"}), TOO_MANY_FIELDS),
        (ALL_PARSERS, many_fields(MULTIPART, {"name": "x"}), TOO_MANY_FIELDS),
        ("/api/tokens/", {"data": DEEP, "content_type": "application/json"}, str(TOO_DEEP_MESSAGE)),
    ],
    ids=["json-size", "form-size", "form-fields", "multipart-fields", "json-depth"],
)
@pytest.mark.urls("tests.urls_bodies")
def test_session_csrf_check_reading_the_body_is_json_too(
    alice: Any, path: str, arguments: dict[str, Any], detail: str
) -> None:
    # With a CSRF cookie, SessionAuthentication's CSRF check reads request.POST during
    # authentication: the limits surface there, before the view runs. (The token API reads
    # no forms: there a form body is a 415, see tests/interop/test_openapi_media_types.py.)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies[settings.CSRF_COOKIE_NAME] = _get_new_csrf_string()
    before = written()
    status = 400 if detail == str(TOO_DEEP_MESSAGE) else 413
    assert_json_error(client.post(path, **arguments), status, detail)
    assert written() == before


# --- item 8: /api/ paths that are not DRF views -----------------------------------------------


@pytest.mark.parametrize("kind", ["json", "form", "multipart"])
def test_unknown_api_path_does_not_read_the_body(api: APIClient, kind: str) -> None:
    assert_json_error(api.post("/api/nope/", **oversized(kind, {})), 404, "Not found.")


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_do_not_read_the_body(api: APIClient, path: str) -> None:
    response = api.post(path, **many_fields("form", {}))
    assert response.status_code == 405
    assert b"Traceback" not in response.content


@pytest.mark.urls("tests.urls_bodies")
@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize(
    ("kind", "detail"),
    [("size", TOO_LARGE), ("fields", TOO_MANY_FIELDS), ("files", TOO_MANY_FILES)],
)
def test_plain_view_under_api_answers_json_413(
    settings: Any, debug: bool, kind: str, detail: str
) -> None:
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)
    if kind == "size":
        response = client.post("/api/test/plain-form/", {"padding": "x" * OVERSIZE})
    elif kind == "fields":
        response = client.post("/api/test/plain-form/", **many_fields("form", {}))
    else:
        files = {f"f{i}": SimpleUploadedFile(f"{i}", b"x") for i in range(101)}
        response = client.post("/api/test/plain-form/", files)
    assert_json_error(response, 413, detail)


@pytest.mark.urls("tests.urls_bodies")
def test_csrf_middleware_reading_an_api_body_answers_json_413(settings: Any) -> None:
    # The CSRF middleware reads request.POST before the view: handler400 answers (DEBUG off).
    settings.DEBUG = False
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.cookies[settings.CSRF_COOKIE_NAME] = _get_new_csrf_string()
    response = client.post("/api/test/csrf-form/", **many_fields("form", {}))
    assert_json_error(response, 413, TOO_MANY_FIELDS)


@pytest.mark.urls("tests.urls_bodies")
@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_outside_the_api_the_html_400_stays(settings: Any, debug: bool) -> None:
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)
    response = client.post("/test/plain-form/", **many_fields("form", {}))
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(("path", "api_path"), [("/api/whoami/", True), ("/", False)])
def test_other_bad_requests_are_json_under_api_only(
    settings: Any, path: str, api_path: bool
) -> None:
    settings.DEBUG = False
    response = Client().get(path, HTTP_HOST="evil.example")  # DisallowedHost: a 400
    assert response.status_code == 400
    if api_path:
        assert_json_error(response, 400, "Bad request.")
    else:
        assert response["Content-Type"].startswith("text/html")


# --- the schema -------------------------------------------------------------------------------


def test_schema_documents_413_on_every_body_operation(api: APIClient) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operations = [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"post", "put", "patch"}
    ]
    assert len(operations) >= 7
    for path, method, operation in operations:
        assert {"400", "413"} <= set(operation["responses"]), (path, method)


# --- a real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.LiveServer]:
    # No database at all: the body is refused before anything would ask one.
    log_dir: Path = tmp_path_factory.mktemp("bodies")
    env = live.server_env(f"postgres://postgres@127.0.0.1:{live.free_port()}/test", None)
    with live.gunicorn(env, log_dir, workers=1) as running:
        yield running


def raw_post(server: live.LiveServer, path: str, body: bytes, content_type: str) -> live.Answer:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return live.Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def test_live_server_refuses_deep_and_oversized_json_fast(server: live.LiveServer) -> None:
    started = time.perf_counter()
    deep = raw_post(server, "/api/auth/token/", DEEP.encode(), "application/json")
    elapsed = time.perf_counter() - started
    assert (deep.status, deep.json()) == (400, {"detail": str(TOO_DEEP_MESSAGE)})
    assert elapsed < FAST
    big = raw_post(server, "/api/auth/token/", b'"' + b"x" * OVERSIZE + b'"', "application/json")
    assert (big.status, big.json()) == (413, {"detail": TOO_LARGE})
    assert "Traceback" not in server.log_text()
