"""``@token_required`` on plain Django views (sync and async): the answers of a DRF view.

Every refusal is compared with what the DRF view ``/api/whoami/`` (or a scoped DRF view)
answers for the same credential: status, body and the ``WWW-Authenticate`` challenge.
"""

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import AsyncClient, Client
from rest_framework.test import APIClient

from tests.helpers import (
    HOME,
    INVALID_BODY,
    INVALID_CHALLENGE,
    NO_CREDENTIALS_CHALLENGE,
    NOTES,
    UNAVAILABLE,
    WHOAMI,
    bearer,
    database_down,
    mint_jwt,
)
from tokens_app import services
from tokens_app.decorators import token_required

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.urls_plain")]

PLAIN = "/plain/whoami/"
PLAIN_ASYNC = "/plain/async/whoami/"
PLAIN_NOTES = "/plain/notes/"
PLAIN_BOTH = "/plain/async/both/"


def answer(response: Any) -> tuple[int, Any, str | None]:
    return response.status_code, response.json(), response.headers.get("WWW-Authenticate")


def plain_get(path: str, plaintext: str | None = None) -> Any:
    headers = bearer(plaintext) if plaintext else {}
    return Client(REMOTE_ADDR=HOME).get(path, **headers)


def drf_get(path: str, plaintext: str | None = None) -> Any:
    headers = bearer(plaintext) if plaintext else {}
    return APIClient(REMOTE_ADDR=HOME).get(path, **headers)


@pytest.mark.parametrize("path", [PLAIN, PLAIN_ASYNC])
def test_a_valid_token_gets_what_the_drf_view_answers(path, alice, issue):
    issued = issue(alice, scopes=["notes:read"])
    response = plain_get(path, issued.plaintext)
    assert response.status_code == 200
    assert response.json() == drf_get(WHOAMI, issued.plaintext).json()
    assert response.json()["credential"] == "api_token"


@pytest.mark.parametrize("path", [PLAIN, PLAIN_ASYNC])
def test_a_jwt_is_accepted_as_in_drf(path, alice, issue):
    issued = issue(alice, scopes=["notes:read"])
    token = mint_jwt(APIClient(REMOTE_ADDR=HOME), issued.plaintext)
    response = plain_get(path, token)
    assert response.status_code == 200
    assert response.json()["credential"] == "jwt"
    assert response.json() == drf_get(WHOAMI, token).json()


@pytest.mark.parametrize("path", [PLAIN, PLAIN_ASYNC])
def test_no_credential_is_the_bearer_challenge(path):
    refused = answer(plain_get(path))
    assert refused == answer(drf_get(WHOAMI))
    assert refused[0] == 401
    assert refused[2] == NO_CREDENTIALS_CHALLENGE


@pytest.mark.parametrize("path", [PLAIN, PLAIN_ASYNC])
@pytest.mark.parametrize("credential", ["tka_nonsense", "not-a-token-at-all", "a.b.c"])
def test_a_bad_credential_is_invalid_token(path, credential):
    refused = answer(plain_get(path, credential))
    assert refused == (401, INVALID_BODY, INVALID_CHALLENGE)
    assert refused == answer(drf_get(WHOAMI, credential))


@pytest.mark.parametrize("path", [PLAIN, PLAIN_ASYNC])
def test_a_revoked_token_is_refused_on_the_next_request(path, alice, issue):
    issued = issue(alice)
    assert plain_get(path, issued.plaintext).status_code == 200
    services.revoke_token(issued.token)
    assert answer(plain_get(path, issued.plaintext)) == (401, INVALID_BODY, INVALID_CHALLENGE)


def test_a_missing_scope_is_insufficient_scope_as_in_drf(alice, issue):
    issued = issue(alice, scopes=["notes:read"])
    refused = Client(REMOTE_ADDR=HOME).post(PLAIN_NOTES, **bearer(issued.plaintext))
    drf = APIClient(REMOTE_ADDR=HOME).post(
        NOTES, {"title": "t", "body": "b"}, format="json", **bearer(issued.plaintext)
    )
    assert refused.status_code == drf.status_code == 403
    assert refused.json() == {
        "detail": "This credential lacks the scope this request needs.",
        "required_scopes": ["notes:write"],
    }
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", scope="notes:write"'
    )
    assert drf.headers["WWW-Authenticate"].startswith('Bearer realm="api", error="insufficient')


def test_every_required_scope_is_needed_in_an_async_view(alice, issue):
    only_read = issue(alice, scopes=["notes:read"])
    both = issue(alice, scopes=["notes:read", "tokens:read"])
    refused = plain_get(PLAIN_BOTH, only_read.plaintext)
    assert refused.status_code == 403
    assert refused.json()["required_scopes"] == ["notes:read", "tokens:read"]
    assert plain_get(PLAIN_BOTH, both.plaintext).json() == {"read": True}


def test_a_scope_implied_by_a_held_one_counts(alice, issue):
    writer = issue(alice, scopes=["notes:write"])  # notes:write implies notes:read
    assert plain_get(PLAIN, writer.plaintext).status_code == 200
    response = Client(REMOTE_ADDR=HOME).post(PLAIN_NOTES, **bearer(writer.plaintext))
    assert response.json() == {"written": True, "method": "POST"}


def test_a_bearer_post_needs_no_csrf_token(alice, issue):
    # No cookie is involved: like DRF's views, the decorated view is exempt from CSRF.
    issued = issue(alice, scopes=["notes:write"])
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=HOME)
    assert client.post(PLAIN_NOTES, **bearer(issued.plaintext)).status_code == 200


def test_a_session_is_not_a_token(alice):
    client = Client(REMOTE_ADDR=HOME)
    client.force_login(alice)
    assert client.get(PLAIN).status_code == 401


def test_the_query_count_is_the_drf_paths(alice, issue, django_assert_num_queries):
    issued = issue(alice)
    for get in (plain_get, drf_get):  # the first request writes the last-used stamp
        get(PLAIN if get is plain_get else WHOAMI, issued.plaintext)
    with django_assert_num_queries(1):
        assert plain_get(PLAIN, issued.plaintext).status_code == 200
    with django_assert_num_queries(1):
        assert drf_get(WHOAMI, issued.plaintext).status_code == 200


def test_the_async_view_runs_under_the_async_client(alice, issue):
    # Through Django's ASGI handler: the view is awaited, the lookup runs in the
    # thread-sensitive executor (here this test's thread, so it sees the test's rows).
    issued = issue(alice)

    async def scenario() -> tuple[Any, Any]:
        client = AsyncClient(REMOTE_ADDR=HOME)
        auth = {"Authorization": f"Bearer {issued.plaintext}"}
        return await client.get(PLAIN_ASYNC, headers=auth), await client.get(PLAIN_ASYNC)

    accepted, refused = async_to_sync(scenario)()
    assert accepted.status_code == 200
    assert accepted.json()["credential"] == "api_token"
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == NO_CREDENTIALS_CHALLENGE


@pytest.mark.parametrize("scopes", ["notes:read", [""], [1], None])
def test_a_malformed_scope_list_is_refused_where_it_is_written(scopes):
    with pytest.raises(TypeError, match="token_required"):
        token_required(scopes=scopes)


@pytest.mark.urls("tests.urls_plain_bad_scope")
def test_check_names_an_undeclared_scope_of_a_plain_view():
    with pytest.raises(SystemCheckError, match=r"tokens_app\.E003.*notes:raed"):
        call_command("check")


@pytest.mark.parametrize("path", [PLAIN, PLAIN_ASYNC])
def test_a_token_over_its_rate_gets_429_with_retry_after(path, alice, issue):
    issued = issue(alice, rate_limit="2/m")
    assert [plain_get(path, issued.plaintext).status_code for _ in range(2)] == [200, 200]
    refused = plain_get(path, issued.plaintext)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "detail" in refused.json()


def test_a_database_fault_is_a_503_that_tells_nothing(alice, issue):
    from django.db import connection

    issued = issue(alice)
    with connection.execute_wrapper(database_down):
        refused = plain_get(PLAIN, issued.plaintext)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert refused.json() == UNAVAILABLE
    assert b"secret-internal-detail" not in refused.content
