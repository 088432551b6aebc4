"""A token with guardrails making or changing tokens: its children never get beyond them.

Real requests, real database, real rate-limit cache (local memory, or Redis in the
production profile); neither the limiter nor the checksum is bypassed.
"""

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.guardrails.helpers import V4, V6, snapshot, status
from tests.helpers import HOME, TOKENS, assert_invalid, bearer, counts, detail_url
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db


# --- a restricted token making or changing tokens ------------------------------------------


@pytest.fixture
def restricted_parent(alice: Any, issue: Any) -> services.IssuedToken:
    return issue(alice, ["tokens:write", "notes:read"], allowed_ips=[V4])


def post_child(parent: services.IssuedToken, **fields: Any) -> Any:
    body = {"name": fields.pop("name", "child"), "scopes": ["notes:read"], **fields}
    return APIClient().post(
        TOKENS, body, format="json", REMOTE_ADDR=HOME, **bearer(parent.plaintext)
    )


def test_child_of_a_restricted_token_inherits_its_networks(restricted_parent):
    response = post_child(restricted_parent)
    assert response.status_code == 201, response.content
    assert response.json()["allowed_ips"] == [V4]
    child = response.json()["token"]
    assert status(child, "10.9.9.9") == 200
    assert status(child, "203.0.113.9") == 401


def test_child_of_a_restricted_token_inherits_even_when_asked_for_anywhere(restricted_parent):
    response = post_child(restricted_parent, allowed_ips=[])
    assert response.status_code == 201
    assert response.json()["allowed_ips"] == [V4]


def test_child_of_a_restricted_token_can_narrow(restricted_parent):
    response = post_child(restricted_parent, allowed_ips=["10.1.0.0/16", "10.2.3.4"])
    assert response.status_code == 201
    assert response.json()["allowed_ips"] == ["10.1.0.0/16", "10.2.3.4/32"]
    child = response.json()["token"]
    assert status(child, "10.1.200.1") == 200
    assert status(child, "10.3.0.1") == 401


@pytest.mark.parametrize(
    "wider",
    [["0.0.0.0/0"], ["10.0.0.0/7"], ["11.0.0.1"], [V6], ["10.1.0.0/16", "192.0.2.0/24"], ["::/0"]],
)
def test_child_of_a_restricted_token_cannot_widen(restricted_parent, wider):
    before = counts()
    response = post_child(restricted_parent, allowed_ips=wider)
    assert response.status_code == 400, response.content
    assert any("its parent token does not" in m for m in response.json()["allowed_ips"])
    assert counts() == before


def test_restricted_token_cannot_widen_another_token_by_patch(alice, issue, restricted_parent):
    # A token it created (one it may change at all), narrower than itself.
    sibling = issue(
        alice, allowed_ips=["10.5.0.0/16"], caller=Caller(presented=restricted_parent.token)
    ).token
    before = snapshot(sibling)
    for wider in (["0.0.0.0/0"], ["10.5.0.0/16", "192.0.2.0/24"], [V6]):
        response = APIClient().patch(
            detail_url(sibling.key_id),
            {"allowed_ips": wider},
            format="json",
            REMOTE_ADDR=HOME,
            **bearer(restricted_parent.plaintext),
        )
        assert response.status_code == 400, (wider, response.content)
    assert snapshot(sibling) == before


def test_restricted_token_cannot_change_a_wider_sibling(alice, issue, restricted_parent):
    sibling = issue(alice).token  # anywhere, set by the owner
    before = TokenEvent.objects.count()
    response = APIClient().patch(
        detail_url(sibling.key_id),
        {"allowed_ips": [], "name": "renamed"},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(restricted_parent.plaintext),
    )
    # A weaker token may not change (nor lock out) a token that can do more than it can.
    assert response.status_code == 403
    assert APIToken.objects.get(pk=sibling.pk).name == sibling.name
    assert TokenEvent.objects.count() == before


def test_restricted_token_cannot_open_a_sibling_wider_than_itself(alice, issue, restricted_parent):
    sibling = issue(alice, allowed_ips=[V4], caller=Caller(presented=restricted_parent.token)).token
    before = snapshot(sibling)
    response = APIClient().patch(
        detail_url(sibling.key_id),
        {"allowed_ips": []},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(restricted_parent.plaintext),
    )
    # Asking for "anywhere" through a restricted token gets the parent's networks, no wider.
    assert response.status_code == 200
    assert response.json()["allowed_ips"] == [V4]
    assert snapshot(sibling) == before


def test_restricted_token_cannot_widen_itself(restricted_parent):
    before = snapshot(restricted_parent.token)
    response = APIClient().patch(
        detail_url(restricted_parent.token.key_id),
        {"allowed_ips": ["0.0.0.0/0"]},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(restricted_parent.plaintext),
    )
    assert response.status_code == 400
    assert snapshot(restricted_parent.token) == before


def test_restricted_token_may_narrow_another_token(alice, issue, restricted_parent):
    sibling = issue(alice, caller=Caller(presented=restricted_parent.token)).token
    response = APIClient().patch(
        detail_url(sibling.key_id),
        {"allowed_ips": ["10.7.0.0/16"]},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(restricted_parent.plaintext),
    )
    assert response.status_code == 200
    assert response.json()["allowed_ips"] == ["10.7.0.0/16"]


def test_restricted_token_used_from_outside_cannot_make_tokens(restricted_parent):
    before = counts()
    response = APIClient().post(
        TOKENS,
        {"name": "c", "scopes": ["notes:read"]},
        format="json",
        REMOTE_ADDR="203.0.113.9",
        **bearer(restricted_parent.plaintext),
    )
    assert_invalid(response)
    assert counts() == before


# --- a rate-limited token making tokens ------------------------------------------------


@pytest.fixture
def limited_parent(alice: Any, issue: Any) -> services.IssuedToken:
    return issue(alice, ["tokens:write", "notes:read"], rate_limit="10/h")


def test_child_of_a_rate_limited_token_inherits_its_rate(limited_parent):
    response = post_child(limited_parent)
    assert response.status_code == 201
    assert response.json()["rate_limit"] == "10/h"


def test_child_of_a_rate_limited_token_may_tighten(limited_parent):
    response = post_child(limited_parent, rate_limit="5/2h")
    assert response.status_code == 201
    assert response.json()["rate_limit"] == "5/2h"


@pytest.mark.parametrize("looser", ["11/h", "1/m", "1/s", "300/d"])
def test_child_of_a_rate_limited_token_cannot_loosen(limited_parent, looser):
    before = counts()
    response = post_child(limited_parent, rate_limit=looser)
    assert response.status_code == 400
    assert response.json()["rate_limit"] == ["The rate may be at most 10/h."]
    assert counts() == before


def test_rate_limited_token_cannot_loosen_another_token(alice, issue, limited_parent):
    sibling = issue(alice, rate_limit="5/h", caller=Caller(presented=limited_parent.token)).token
    before = snapshot(sibling)
    response = APIClient().patch(
        detail_url(sibling.key_id),
        {"rate_limit": "100/h"},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(limited_parent.plaintext),
    )
    assert response.status_code == 400
    assert snapshot(sibling) == before


def test_superuser_token_child_is_still_bounded_by_its_parent(superuser, issue):
    parent = issue(superuser, ["tokens:write", "notes:read"], rate_limit="10/h")
    response = post_child(parent, rate_limit="1000/h")
    assert response.status_code == 400


def test_child_of_a_token_under_the_default_inherits_the_default(alice, issue, default_rate):
    parent = issue(alice, ["tokens:write", "notes:read"])
    response = post_child(parent)
    assert response.status_code == 201
    assert response.json()["rate_limit"] == "2/m"
    loose = post_child(parent, name="loose", rate_limit="3/m")
    assert loose.status_code == 400
    assert loose.json()["rate_limit"] == ["The rate may be at most 2/m."]


def test_requests_that_make_children_spend_the_parent_budget(alice, issue):
    parent = issue(alice, ["tokens:write", "notes:read"], rate_limit="2/h")
    assert post_child(parent, name="a").status_code == 201
    assert post_child(parent, name="b").status_code == 201
    assert post_child(parent, name="c").status_code == 429
    assert not APIToken.objects.filter(name="c").exists()
