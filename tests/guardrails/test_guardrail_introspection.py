"""Introspection reports the guardrails it cannot apply itself (networks, rate)."""

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.guardrails.helpers import V4, V6
from tests.helpers import HOME, bearer
from tokens_app import services
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db


# --- introspection reports the guardrails it cannot apply itself -----------------------------


def introspect_from(caller: str, token: str, address: str) -> Any:
    return APIClient().post(
        "/api/auth/introspect/",
        {"token": token},
        format="json",
        REMOTE_ADDR=address,
        **bearer(caller),
    )


def test_introspection_reports_a_restricted_tokens_networks_and_rate(alice, issue):
    # The resource server asking is elsewhere: the token's own client address is unknown here.
    introspector = issue(alice, ["tokens:introspect"])
    restricted = issue(alice, allowed_ips=[V4, V6], rate_limit="100/m")
    answer = introspect_from(introspector.plaintext, restricted.plaintext, "192.0.2.99").json()
    assert answer["active"] is True
    assert answer["allowed_ips"] == [V4, V6]
    assert answer["rate_limit"] == "100/m"
    minted = APIClient().post(
        "/api/auth/jwt/", {}, format="json", REMOTE_ADDR=HOME, **bearer(restricted.plaintext)
    )
    assert minted.status_code == 200
    jwt_answer = introspect_from(
        introspector.plaintext, minted.json()["access_token"], "192.0.2.99"
    ).json()
    assert jwt_answer["active"] is True
    assert jwt_answer["allowed_ips"] == [V4, V6]
    assert jwt_answer["rate_limit"] == "100/m"


def test_introspection_of_an_unrestricted_token_has_no_guardrail_fields(alice, issue):
    introspector = issue(alice, ["tokens:introspect"])
    plain = issue(alice)
    answer = introspect_from(introspector.plaintext, plain.plaintext, HOME).json()
    assert answer["active"] is True
    assert "allowed_ips" not in answer
    assert "rate_limit" not in answer


def test_introspection_still_refuses_a_revoked_restricted_token(alice, issue):
    introspector = issue(alice, ["tokens:introspect"])
    restricted = issue(alice, allowed_ips=[V4])
    services.revoke_token(restricted.token)
    answer = introspect_from(introspector.plaintext, restricted.plaintext, HOME).json()
    assert answer == {"active": False}


@pytest.mark.parametrize("stored", [["not a network"], [["10.0.0.0/8"]], ["10.0.0.5/8"]])
def test_an_unreadable_stored_allow_list_allows_nothing(alice, issue, stored):
    # Rows written around the service (a bad migration, a manual UPDATE) fail closed.
    issued = issue(alice, allowed_ips=[V4])
    APIToken.objects.filter(pk=issued.token.pk).update(allowed_ips=stored)
    response = APIClient().get("/api/notes/", REMOTE_ADDR=HOME, **bearer(issued.plaintext))
    assert response.status_code == 401
