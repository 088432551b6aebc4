"""Listing tokens: one's own as metadata, filtered and paginated; all of them for managers.

The self-service token API under /api/tokens/: real requests, real database, no mocks.
"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission

from tests.api.helpers import METADATA
from tests.helpers import TOKENS, bearer
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(django_user_model):
    user = django_user_model.objects.create_user("manager", "m@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="manage_all_tokens"))
    return user


# --- listing ------------------------------------------------------------------------------


def test_list_shows_only_own_tokens_as_metadata(api, alice, bob, issue, clock):
    mine = [issue(alice), issue(alice)]
    theirs = issue(bob)
    api.force_login(alice)
    response = api.get(TOKENS)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert {row["id"] for row in body["results"]} == {i.token.key_id for i in mine}
    assert all(set(row) == METADATA for row in body["results"])
    assert all(row["owner"] == "alice" and row["status"] == "active" for row in body["results"])
    for issued in [*mine, theirs]:
        stored = APIToken.objects.get(pk=issued.token.pk)
        assert issued.plaintext.encode() not in response.content
        assert issued.plaintext.rsplit("_", 1)[-1].encode() not in response.content
        assert stored.secret_hash.encode() not in response.content
    assert b"secret" not in response.content


def test_list_includes_revoked_and_expired_with_status(api, alice, issue, clock):
    active = issue(alice, expires_in=timedelta(days=10)).token
    expired = issue(alice, expires_in=timedelta(days=1)).token
    revoked = issue(alice).token
    services.revoke_token(revoked)
    clock.advance(days=2)
    api.force_login(alice)
    rows = api.get(TOKENS).json()["results"]
    assert {row["id"]: row["status"] for row in rows} == {
        active.key_id: "active",
        expired.key_id: "expired",
        revoked.key_id: "revoked",
    }
    assert next(r for r in rows if r["id"] == revoked.key_id)["revoked_at"] is not None


@pytest.mark.parametrize("status", ["active", "expired", "revoked"])
def test_list_filters_by_status(api, alice, issue, clock, status):
    tokens = {
        "active": issue(alice, expires_in=timedelta(days=10)).token,
        "expired": issue(alice, expires_in=timedelta(days=1)).token,
        "revoked": issue(alice).token,
    }
    services.revoke_token(tokens["revoked"])
    clock.advance(days=2)
    api.force_login(alice)
    response = api.get(TOKENS, {"status": status})
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [tokens[status].key_id]
    assert api.get(TOKENS, {"status": "owner_inactive"}).json()["count"] == 0


def test_list_filters_owner_inactive_for_managers(api, alice, bob, superuser, issue, clock):
    gone = issue(bob).token
    issue(alice)
    bob.is_active = False
    bob.save()
    api.force_login(superuser)
    response = api.get(TOKENS, {"all": "true", "status": "owner_inactive"})
    assert response.status_code == 200
    assert [(r["id"], r["status"]) for r in response.json()["results"]] == [
        (gone.key_id, "owner_inactive")
    ]


@pytest.mark.parametrize("status", ["bogus", "ACTIVE", ""])
def test_list_unknown_status_is_400(api, alice, status):
    api.force_login(alice)
    response = api.get(TOKENS, {"status": status})
    assert response.status_code == 400
    assert "active" in response.json()["status"][0]


def test_list_is_paginated(api, alice, issue, clock):
    for _ in range(3):
        issue(alice)
    api.force_login(alice)
    first = api.get(TOKENS, {"page_size": 2}).json()
    assert (first["count"], len(first["results"])) == (3, 2)
    assert first["next"] and first["previous"] is None
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None


def test_page_size_is_capped_at_200(api, alice):
    APIToken.objects.bulk_create(
        APIToken(owner=alice, name=f"t{i}", key_id=tokenstring.generate_key_id(), secret_hash="x")
        for i in range(201)
    )
    api.force_login(alice)
    body = api.get(TOKENS, {"page_size": 500}).json()
    assert (body["count"], len(body["results"])) == (201, 200)


@pytest.mark.parametrize("user", ["alice", "staff"])
def test_list_all_is_forbidden_to_normal_users(api, issue, request, user):
    caller = request.getfixturevalue(user)
    api.force_login(caller)
    response = api.get(TOKENS, {"all": "true"})
    assert response.status_code == 403
    assert "Only token managers" in response.json()["detail"]


@pytest.mark.parametrize("user", ["superuser", "manager"])
def test_list_all_shows_every_token_to_managers(api, alice, bob, issue, request, user):
    tokens = {issue(alice).token.key_id, issue(bob).token.key_id}
    api.force_login(request.getfixturevalue(user))
    response = api.get(TOKENS, {"all": "true"})
    assert response.status_code == 200
    assert {row["id"] for row in response.json()["results"]} == tokens
    assert api.get(TOKENS).json()["count"] == 0  # without all=true: only their own


def test_list_all_with_a_manager_token(api, alice, superuser, issue):
    theirs = issue(alice).token
    own = issue(superuser, ["tokens:read"])
    response = api.get(TOKENS, {"all": "true"}, **bearer(own.plaintext))
    assert {row["id"] for row in response.json()["results"]} == {theirs.key_id, own.token.key_id}
