"""Creating tokens: the plaintext once, the input refused, and never beyond the creator.

The self-service token API under /api/tokens/: real requests, real database, no mocks.
"""

from datetime import timedelta

import pytest

from tests.api.helpers import METADATA, detail
from tests.helpers import TOKENS, WHOAMI, bearer, counts
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db


# --- creating -----------------------------------------------------------------------------


def test_create_returns_plaintext_once_with_no_store(api, alice, clock):
    api.force_login(alice)
    body = {"name": "ci", "scopes": ["notes:read"], "description": "for CI"}
    response = api.post(TOKENS, body, format="json")
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert set(data) == METADATA | {"token"}
    stored = APIToken.objects.get(key_id=data["id"])
    assert (stored.owner, stored.name, stored.description) == (alice, "ci", "for CI")
    assert stored.expires_at == clock() + timedelta(days=30)
    assert stored.secret_hash.encode() not in response.content
    event = TokenEvent.objects.get(token=stored)
    assert (event.kind, event.via, event.actor) == ("issued", "api", alice)
    api.logout()
    who = api.get(WHOAMI, **bearer(data["token"]))
    assert who.status_code == 200
    assert (who.json()["username"], who.json()["key_id"]) == ("alice", data["id"])
    assert (
        data["token"].encode() not in api.get(detail(data["id"]), **bearer(data["token"])).content
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "scopes": ["notes:read"]}, "name"),
        ({"name": "bad name!", "scopes": ["notes:read"]}, "name"),
        ({"name": " lead", "scopes": ["notes:read"], "description": "x" * 1001}, "description"),
        ({"name": "x" * 101, "scopes": ["notes:read"]}, "name"),
        ({"scopes": ["notes:read"]}, "name"),
        ({"name": "ok"}, "scopes"),
        ({"name": "ok", "scopes": []}, "scopes"),
        ({"name": "ok", "scopes": ["nope:never"]}, "scopes"),
        ({"name": "ok", "scopes": ["audit:read"]}, "scopes"),
        ({"name": "ok", "scopes": "notes:read"}, "scopes"),
        ({"name": "ok", "scopes": ["notes:read"], "expires_in_days": 366}, "expires_at"),
        ({"name": "ok", "scopes": ["notes:read"], "expires_in_days": 0}, "expires_in_days"),
        ({"name": "ok", "scopes": ["notes:read"], "expires_in_days": 36501}, "expires_in_days"),
        (
            {"name": "ok", "scopes": ["notes:read"], "expires_at": "2031-01-02T12:00:00Z"},
            "expires_at",
        ),
        (
            {"name": "ok", "scopes": ["notes:read"], "expires_at": "2029-01-01T00:00:00Z"},
            "expires_at",
        ),
        ({"name": "ok", "scopes": ["notes:read"], "expires_at": "soon"}, "expires_at"),
        (
            {
                "name": "ok",
                "scopes": ["notes:read"],
                "expires_in_days": 1,
                "expires_at": "2030-01-03T12:00:00Z",
            },
            "expires_at",
        ),
        ({"name": "ok", "scopes": ["notes:read"], "owner": "bob"}, "owner"),
        ({"name": "ok", "scopes": ["notes:read"], "scope": ["tokens:read"]}, "scope"),
        ({"name": "ok", "scopes": ["notes:read"], "never_expires": True}, "never_expires"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(api, alice, clock, body, field):
    api.force_login(alice)
    before = counts()
    response = api.post(TOKENS, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert counts() == before


@pytest.mark.parametrize(
    ("body", "expires"),
    [
        ({"expires_in_days": 365}, timedelta(days=365)),
        ({"expires_in_days": 1}, timedelta(days=1)),
        ({"expires_at": "2031-01-01T12:00:00Z"}, timedelta(days=365)),
    ],
)
def test_create_accepts_expiry_up_to_the_maximum(api, alice, clock, body, expires):
    api.force_login(alice)
    response = api.post(TOKENS, {"name": "ok", "scopes": ["notes:read"], **body}, format="json")
    assert response.status_code == 201
    assert APIToken.objects.get(key_id=response.json()["id"]).expires_at == clock() + expires


def test_create_staff_may_take_staff_scope(api, staff):
    api.force_login(staff)
    response = api.post(TOKENS, {"name": "audit", "scopes": ["audit:read"]}, format="json")
    assert response.status_code == 201


def test_create_duplicate_active_name_is_400(api, alice, bob, issue, clock):
    issue(alice, name="ci")
    issue(bob, name="dup")
    api.force_login(alice)
    before = counts()
    response = api.post(TOKENS, {"name": "ci", "scopes": ["notes:read"]}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()
    assert counts() == before
    assert (
        api.post(TOKENS, {"name": "dup", "scopes": ["notes:read"]}, format="json").status_code
        == 201
    )


def test_create_name_of_a_revoked_token_may_be_reused(api, alice, issue):
    services.revoke_token(issue(alice, name="ci").token)
    api.force_login(alice)
    assert (
        api.post(TOKENS, {"name": "ci", "scopes": ["notes:read"]}, format="json").status_code == 201
    )


@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        (["tokens:write"], ["tokens:read"]),
        (["tokens:write"], ["tokens:write"]),
        (["tokens:write", "notes:write"], ["notes:read"]),
        (["tokens:write", "notes:write"], ["notes:write", "tokens:read"]),
    ],
)
def test_token_may_mint_scopes_it_holds(api, alice, issue, held, wanted):
    parent = issue(alice, held)
    response = api.post(
        TOKENS, {"name": "child", "scopes": wanted}, format="json", **bearer(parent.plaintext)
    )
    assert response.status_code == 201
    assert APIToken.objects.get(key_id=response.json()["id"]).scopes == sorted(wanted)


@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        (["tokens:write"], ["notes:read"]),
        (["tokens:write", "notes:read"], ["notes:write"]),
        (["tokens:write"], ["tokens:introspect"]),
        (["tokens:write"], ["tokens:read", "tokens:introspect"]),
    ],
)
def test_token_never_mints_a_more_powerful_token(api, alice, issue, held, wanted):
    parent = issue(alice, held)
    before = counts()
    response = api.post(
        TOKENS, {"name": "child", "scopes": wanted}, format="json", **bearer(parent.plaintext)
    )
    assert response.status_code == 400
    assert "cannot grant" in str(response.json()["scopes"])
    assert counts() == before


def test_session_user_may_mint_any_holdable_scope(api, alice):
    api.force_login(alice)
    body = {"name": "all", "scopes": ["notes:write", "tokens:write", "tokens:introspect"]}
    assert api.post(TOKENS, body, format="json").status_code == 201


def test_token_child_cannot_outlive_its_parent(api, alice, issue, clock):
    parent = issue(alice, ["tokens:write"], expires_in=timedelta(days=2))
    auth = bearer(parent.plaintext)
    body = {"name": "child", "scopes": ["tokens:read"]}
    too_long = api.post(TOKENS, {**body, "expires_in_days": 3}, format="json", **auth)
    assert too_long.status_code == 400 and "expires_at" in too_long.json()
    assert (
        api.post(TOKENS, {**body, "expires_in_days": 2}, format="json", **auth).status_code == 201
    )


def post_child(api, parent):
    """Create a child token with no expiry, authenticated by *parent*."""
    return api.post(
        TOKENS,
        {"name": "child", "scopes": ["tokens:read"]},
        format="json",
        **bearer(parent.plaintext),
    )


def test_token_child_without_expiry_expires_with_its_parent(api, alice, issue, clock):
    parent = issue(alice, ["tokens:write"], expires_in=timedelta(days=2))
    clock.advance(hours=1)
    response = post_child(api, parent)
    assert response.status_code == 201
    child = APIToken.objects.get(key_id=response.json()["id"])
    assert child.expires_at == parent.token.expires_at


@pytest.mark.parametrize("parent_expires", [True, False])
def test_token_child_without_default_lifetime(api, alice, issue, clock, settings, parent_expires):
    settings.API_TOKENS = {
        **settings.API_TOKENS,
        "ALLOW_NON_EXPIRING": True,
        "DEFAULT_LIFETIME": None,
    }
    expiry = {"expires_in": timedelta(days=2)} if parent_expires else {}
    parent = issue(alice, ["tokens:write"], **expiry)
    response = post_child(api, parent)
    assert response.status_code == 201
    child = APIToken.objects.get(key_id=response.json()["id"])
    assert child.expires_at == parent.token.expires_at


def test_token_child_without_expiry_within_parent_life_gets_default(api, alice, issue, clock):
    parent = issue(alice, ["tokens:write"], expires_in=timedelta(days=60))
    response = post_child(api, parent)
    assert response.status_code == 201
    child = APIToken.objects.get(key_id=response.json()["id"])
    assert child.expires_at == clock() + timedelta(days=30)


def test_create_beyond_active_token_quota_is_400(api, alice, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ACTIVE_TOKENS_PER_USER": 1}
    issue(alice)
    api.force_login(alice)
    before = counts()
    response = api.post(TOKENS, {"name": "two", "scopes": ["notes:read"]}, format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    assert counts() == before
