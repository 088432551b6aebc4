"""One media type per request body (issue 15): what the schema lists is what the endpoint reads.

The API reads JSON; RFC 7662 introspection reads the form its RFC names (listed in the
schema) and JSON. A form or multipart body anywhere else is a 415 that names the media
type, before the body is read: nothing is created, changed, rotated or revoked.
"""

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.middleware.csrf import _get_new_csrf_string
from rest_framework.test import APIClient

from project.notes.models import Note
from tests.helpers import bearer
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
INTROSPECT = "/api/auth/introspect/"
REVOKE = "/api/auth/revoke/"
EVERY_SCOPE = ["notes:read", "notes:write", "tokens:read", "tokens:write", "tokens:introspect"]

#: Each body operation of the example API: method, path (``{key_id}``: a token the caller
#: created) and fields that would be valid as JSON.
OPERATIONS = [
    ("post", "/api/auth/token/", {"username": "alice", "password": "pw-alice", "name": "cli"}),
    ("post", "/api/tokens/", {"name": "ci", "scopes": "notes:read"}),
    ("patch", "/api/tokens/{key_id}/", {"name": "renamed"}),
    ("post", "/api/tokens/{key_id}/rotate/", {"grace_seconds": "0"}),
    ("post", "/api/tokens/revoke-all/", {"reason": "form"}),
    ("post", "/api/notes/", {"title": "hello", "body": "world"}),
    ("post", "/api/auth/jwt/", {"scope": "notes:read"}),
]


def label(case: tuple[str, str, dict[str, str]]) -> str:
    return f"{case[0]}-{case[1].strip('/').replace('/', '-')}"


def stored() -> tuple[list[dict[str, Any]], int, int]:
    """What any write would change: every token's fields (but its use), events, notes."""
    tokens = [
        {k: v for k, v in row.items() if not k.startswith("last_used")}
        for row in APIToken.objects.order_by("pk").values()
    ]
    return tokens, TokenEvent.objects.count(), Note.objects.count()


def encoded(media_type: str, fields: dict[str, str]) -> dict[str, Any]:
    """``APIClient`` arguments that send *fields* as *media_type*."""
    if media_type == FORM:
        return {"data": urlencode(fields), "content_type": FORM}
    return {"data": fields, "format": "multipart"}


def assert_unsupported(response: Any, media_type: str) -> None:
    sent = response.wsgi_request.META["CONTENT_TYPE"]  # multipart's names its boundary too
    assert sent.startswith(media_type)
    assert response.status_code == 415, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f'Unsupported media type "{sent}" in request.'}


@pytest.fixture
def schema_doc(api: APIClient) -> dict[str, Any]:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture
def caller(alice: Any) -> services.IssuedToken:
    return services.issue_token(alice, name="caller", scopes=EVERY_SCOPE)


@pytest.fixture
def child(api: APIClient, caller: services.IssuedToken) -> str:
    """The key id of a token the caller created (one it may patch and rotate)."""
    body = {"name": "child", "scopes": ["notes:read"]}
    response = api.post("/api/tokens/", body, format="json", **bearer(caller.plaintext))
    assert response.status_code == 201
    key_id: str = response.json()["id"]
    return key_id


def test_schema_lists_one_media_type_per_request_body(schema_doc: dict[str, Any]) -> None:
    media_types = {
        (method, path): list(operation["requestBody"]["content"])
        for path, item in schema_doc["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    }
    oauth = {("post", INTROSPECT), ("post", REVOKE)}
    assert {(method, path) for method, path, _ in OPERATIONS} | oauth == set(media_types)
    assert media_types.pop(("post", INTROSPECT)) == [FORM]  # RFC 7662 §2.1
    assert media_types.pop(("post", REVOKE)) == [FORM]  # RFC 7009 §2.1
    assert set(map(tuple, media_types.values())) == {("application/json",)}


@pytest.mark.parametrize("media_type", [FORM, MULTIPART], ids=["form", "multipart"])
@pytest.mark.parametrize("case", OPERATIONS, ids=label)
def test_form_or_multipart_body_to_a_json_endpoint_is_a_415_changing_nothing(
    api: APIClient,
    caller: services.IssuedToken,
    child: str,
    case: tuple[str, str, dict[str, str]],
    media_type: str,
) -> None:
    method, path, fields = case
    before = stored()
    send = getattr(api, method)
    response = send(
        path.format(key_id=child), **encoded(media_type, fields), **bearer(caller.plaintext)
    )
    assert_unsupported(response, media_type)
    assert stored() == before


@pytest.mark.parametrize("media_type", [FORM, MULTIPART], ids=["form", "multipart"])
def test_session_form_post_is_a_415_too(alice: Any, media_type: str) -> None:
    # The CSRF check reads the body through DRF's parsers: it finds no form parser either.
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    csrf = _get_new_csrf_string()
    client.cookies[settings.CSRF_COOKIE_NAME] = csrf
    before = stored()
    fields = {"name": "s", "scopes": "notes:read", "csrfmiddlewaretoken": csrf}
    response = client.post("/api/tokens/", **encoded(media_type, fields), HTTP_X_CSRFTOKEN=csrf)
    assert_unsupported(response, media_type)
    assert stored() == before


def test_without_credentials_the_401_comes_first(api: APIClient) -> None:
    # Who is asking is settled before the body: an anonymous form gets the 401, not a 415.
    response = api.post("/api/tokens/", **encoded(FORM, {"name": "x"}))
    assert response.status_code == 401


@pytest.mark.parametrize("media_type", [FORM, "application/json"], ids=["form", "json"])
def test_introspection_reads_form_and_json(
    api: APIClient, alice: Any, issue: Callable[..., Any], media_type: str
) -> None:
    caller = issue(alice, ["tokens:introspect"]).plaintext
    fields = {"token": issue(alice, ["notes:read"]).plaintext}
    body = urlencode(fields) if media_type == FORM else json.dumps(fields)
    response = api.post(INTROSPECT, body, content_type=media_type, **bearer(caller))
    assert response.status_code == 200, response.content
    assert response.json()["active"] is True


def test_introspection_refuses_multipart(
    api: APIClient, alice: Any, issue: Callable[..., Any]
) -> None:
    caller = issue(alice, ["tokens:introspect"]).plaintext
    response = api.post(INTROSPECT, {"token": "tka_x"}, format="multipart", **bearer(caller))
    assert_unsupported(response, MULTIPART)
