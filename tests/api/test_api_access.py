"""The current token, the scopes and sessions each endpoint needs, and one uniform 404.

The self-service token API under /api/tokens/: real requests, real database, no mocks.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.api.helpers import CURRENT, detail, rotate, works
from tests.helpers import TOKENS, WHOAMI, bearer, counts
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db


# --- the current token --------------------------------------------------------------------


def test_current_shows_the_authenticating_token(api, alice, issue):
    issue(alice, ["tokens:read"])
    issued = issue(alice, ["tokens:read"])
    response = api.get(CURRENT, **bearer(issued.plaintext))
    assert response.status_code == 200
    assert response.json()["id"] == issued.token.key_id
    assert issued.plaintext.encode() not in response.content


def test_current_get_needs_tokens_read(api, alice, issue):
    issued = issue(alice, ["notes:read"])
    assert api.get(CURRENT, **bearer(issued.plaintext)).status_code == 403


def test_current_delete_self_revokes_without_scope(api, alice, issue):
    issued = issue(alice, ["notes:read"])
    other = issue(alice, ["notes:read"])
    response = api.delete(CURRENT, **bearer(issued.plaintext))
    assert response.status_code == 204
    assert api.delete(CURRENT, **bearer(issued.plaintext)).status_code == 401
    assert not works(api, issued.plaintext)
    assert works(api, other.plaintext)
    event = TokenEvent.objects.get(kind="revoked")
    assert (event.token, event.actor, event.via) == (issued.token, alice, "api")
    assert event.detail == {"reason": "self-revoked"}


@pytest.mark.parametrize("method", ["get", "delete"])
def test_current_with_session_is_400(api, alice, issue, method):
    issue(alice)
    api.force_login(alice)
    response = getattr(api, method)(CURRENT)
    assert response.status_code == 400
    assert "not authenticated with an API token" in response.json()["non_field_errors"][0]
    assert not APIToken.objects.filter(revoked_at__isnull=False).exists()


def test_current_delete_after_real_login_with_csrf_is_400(staff):
    client = APIClient(enforce_csrf_checks=True)
    client.get("/admin/login/")
    csrf = client.cookies["csrftoken"].value
    login = {"username": "staff", "password": "pw-staff", "csrfmiddlewaretoken": csrf}
    client.post("/admin/login/", login, format="multipart")  # a form, not the API's JSON
    assert client.get(WHOAMI).json()["credential"] == "session"
    assert client.delete(CURRENT).status_code == 403  # no CSRF token
    response = client.delete(CURRENT, HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", TOKENS), ("post", TOKENS), ("get", CURRENT), ("delete", CURRENT)],
)
def test_anonymous_requests_are_401(api, method, path):
    response = getattr(api, method)(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_invalid_token_is_401(api, alice, issue):
    issued = issue(alice, ["tokens:write"])
    services.revoke_token(issued.token)
    assert api.get(TOKENS, **bearer(issued.plaintext)).status_code == 401


# --- scopes and sessions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "method", "target", "allowed"),
    [
        (["notes:read"], "get", "list", False),
        (["notes:read"], "post", "list", False),
        (["notes:read"], "get", "detail", False),
        (["notes:write"], "get", "list", False),
        (["tokens:read"], "get", "list", True),
        (["tokens:read"], "get", "detail", True),
        (["tokens:read"], "post", "list", False),
        (["tokens:read"], "patch", "detail", False),
        (["tokens:read"], "delete", "detail", False),
        (["tokens:read"], "post", "rotate", False),
        (["tokens:write"], "get", "list", True),
        (["tokens:write"], "get", "detail", True),
        (["tokens:write"], "get", "current", True),
        (["tokens:write"], "post", "list", True),
        (["tokens:write"], "patch", "detail", True),
        (["tokens:write"], "delete", "detail", True),
        (["tokens:write"], "post", "rotate", True),
        (["tokens:introspect"], "post", "rotate", False),
    ],
)
def test_token_endpoints_require_scopes(api, alice, issue, held, method, target, allowed):
    caller = issue(alice, held)
    # A token the caller created: one it may act on once it has the scope.
    other = issue(alice, held, caller=Caller(presented=caller.token)).token
    path = {
        "list": TOKENS,
        "detail": detail(other.key_id),
        "rotate": rotate(other.key_id),
        "current": CURRENT,
    }[target]
    body = {"name": "new", "scopes": ["tokens:read"]} if target == "list" else {}
    before = counts()
    response = getattr(api, method)(path, body, format="json", **bearer(caller.plaintext))
    if allowed:
        assert response.status_code in (200, 201, 204)
        return
    assert response.status_code == 403
    needed = "tokens:read" if method == "get" else "tokens:write"
    assert response.json()["required_scopes"] == [needed]
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]
    assert counts() == before
    assert APIToken.objects.get(pk=other.pk).revoked_at is None


def test_session_user_manages_own_tokens_fully(api, alice, issue):
    api.force_login(alice)
    created = api.post(TOKENS, {"name": "s", "scopes": ["notes:read"]}, format="json").json()
    key_id = created["id"]
    assert api.get(TOKENS).json()["count"] == 1
    assert api.get(detail(key_id)).status_code == 200
    assert api.patch(detail(key_id), {"name": "s2"}, format="json").status_code == 200
    rotated = api.post(rotate(key_id), format="json")
    assert rotated.status_code == 200
    assert api.delete(detail(key_id)).status_code == 204
    assert not works(api, rotated.json()["token"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", TOKENS, {"name": "s", "scopes": ["notes:read"]}),
        ("patch", "detail", {"name": "renamed"}),
        ("delete", "detail", {}),
        ("post", "rotate", {}),
    ],
)
def test_session_writes_need_csrf(alice, issue, method, path, body):
    token = issue(alice).token
    path = {"detail": detail(token.key_id), "rotate": rotate(token.key_id)}.get(path, path)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    before = counts()
    response = getattr(client, method)(path, body, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert counts() == before
    assert APIToken.objects.get(pk=token.pk).revoked_at is None
    assert client.get(TOKENS).status_code == 200  # reads need no CSRF token


def test_session_write_with_csrf_token_succeeds(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/admin/login/")
    body = {"name": "s", "scopes": ["notes:read"]}
    csrf = client.cookies["csrftoken"].value
    response = client.post(TOKENS, body, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 201


def test_token_writes_need_no_csrf(alice, issue):
    caller = issue(alice, ["tokens:write"])
    client = APIClient(enforce_csrf_checks=True)
    body = {"name": "s", "scopes": ["tokens:read"]}
    assert client.post(TOKENS, body, format="json", **bearer(caller.plaintext)).status_code == 201


# --- uniform 404 --------------------------------------------------------------------------

WELL_FORMED_MISSING = "nonexistent"
MALFORMED = ["zz", "x" * 2000, "%00", "\x00", "a b", "ünï", "current.."]


def call(api, method, path, auth):
    kwargs = {"format": "json", **auth}
    with CaptureQueriesContext(connection) as queries:
        if method == "get":
            response = api.get(path, **auth)
        elif method == "patch":
            response = api.patch(path, {"name": "renamed"}, **kwargs)
        elif method == "delete":
            response = api.delete(path, **auth)
        else:
            response = api.post(path, {"grace_seconds": 60}, **kwargs)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
    return response.status_code, response.content, headers, len(queries)


def foreign_and_missing_ids(bob, issue):
    theirs = issue(bob).token.key_id
    missing = tokenstring.generate_key_id()
    assert not APIToken.objects.filter(key_id=missing).exists()
    return theirs, missing


@pytest.mark.parametrize(
    ("method", "route"),
    [("get", detail), ("patch", detail), ("delete", detail), ("post", rotate)],
)
@pytest.mark.parametrize("session", [False, True])
def test_other_users_missing_and_malformed_ids_answer_identically(
    api, alice, bob, issue, clock, method, route, session
):
    caller = issue(alice, ["tokens:write"])
    auth = {} if session else bearer(caller.plaintext)
    if session:
        api.force_login(alice)
    theirs, missing = foreign_and_missing_ids(bob, issue)
    assert works(api, caller.plaintext)  # the last_used stamp is written now, not below
    reference = call(api, method, route(theirs), auth)
    assert reference[0] == 404
    assert reference[1] == b'{"detail":"Not found."}'
    for key_id in [missing, *MALFORMED]:
        assert call(api, method, route(key_id), auth) == reference, key_id
    bobs = APIToken.objects.get(key_id=theirs)
    assert bobs.revoked_at is None and bobs.name.startswith("token-")
    assert not TokenEvent.objects.exclude(kind="issued").exists()


@pytest.mark.parametrize(
    ("method", "route"),
    [("get", detail), ("patch", detail), ("delete", detail), ("post", rotate)],
)
def test_slash_in_id_answers_identically(api, alice, bob, issue, clock, method, route):
    caller = issue(alice, ["tokens:write"])
    auth = bearer(caller.plaintext)
    theirs, _missing = foreign_and_missing_ids(bob, issue)
    assert works(api, caller.plaintext)
    reference = call(api, method, route(theirs), auth)
    assert call(api, method, route("../"), auth) == reference


def test_own_ids_still_resolve_next_to_uniform_404(api, alice, bob, issue):
    mine = issue(alice, ["tokens:write"])
    assert api.get(detail(mine.token.key_id), **bearer(mine.plaintext)).status_code == 200
    assert api.get(detail(WELL_FORMED_MISSING), **bearer(mine.plaintext)).status_code == 404
