"""A database fault on the request path answers a generic 503, never an accept."""

import pytest
from django.db import connection

from tests.helpers import bearer, database_down

pytestmark = pytest.mark.django_db


def test_database_fault_during_authentication_is_503_without_internals(api, alice, issue):
    token = issue(alice, ["notes:read"]).plaintext
    with connection.execute_wrapper(database_down):
        response = api.get("/api/notes/", **bearer(token))
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == {
        "detail": "The service is temporarily unavailable. Try again shortly."
    }
    assert b"secret-internal-detail" not in response.content


def test_garbage_tokens_are_still_401_while_database_is_down(api):
    with connection.execute_wrapper(database_down):
        response = api.get("/api/notes/", HTTP_AUTHORIZATION="Bearer garbage")
    assert response.status_code == 401


def test_other_api_errors_keep_their_status(api):
    assert api.get("/api/notes/").status_code == 401
