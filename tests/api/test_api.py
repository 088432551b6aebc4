"""The self-service token API under /api/tokens/: real requests, real database, no mocks."""

from datetime import timedelta
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.helpers import TOKENS, WHOAMI, bearer, counts
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db

CURRENT = "/api/tokens/current/"
METADATA = {
    "id",
    "name",
    "description",
    "scopes",
    "status",
    "owner",
    "created_at",
    "expires_at",
    "last_used_at",
    "last_used_ip",
    "revoked_at",
    "allowed_ips",
    "rate_limit",
}


def detail(key_id: str) -> str:
    return f"/api/tokens/{quote(key_id, safe='')}/"


def rotate(key_id: str) -> str:
    return f"/api/tokens/{quote(key_id, safe='')}/rotate/"


def works(api: APIClient, plaintext: str) -> bool:
    response = api.get(WHOAMI, **bearer(plaintext))
    assert response.status_code in (200, 401)
    return response.status_code == 200


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


# --- detail, update, revoke ---------------------------------------------------------------


def test_detail_shows_own_token_metadata(api, alice, issue):
    issued = issue(alice, ["notes:write"], description="hello")
    api.force_login(alice)
    response = api.get(detail(issued.token.key_id))
    assert response.status_code == 200
    data = response.json()
    assert set(data) == METADATA
    assert (data["id"], data["scopes"], data["description"]) == (
        issued.token.key_id,
        ["notes:write"],
        "hello",
    )
    assert issued.plaintext.encode() not in response.content
    assert issued.token.secret_hash.encode() not in response.content


def test_patch_changes_name_and_description_and_records_event(api, alice, issue):
    token = issue(alice, name="old").token
    api.force_login(alice)
    response = api.patch(detail(token.key_id), {"name": "new", "description": "d"}, format="json")
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["description"]) == ("new", "d")
    stored = APIToken.objects.get(pk=token.pk)
    assert (stored.name, stored.description) == ("new", "d")
    event = TokenEvent.objects.get(kind="updated")
    assert (event.token, event.actor, event.via) == (stored, alice, "api")
    assert event.detail["name"] == {"from": "old", "to": "new"}


def test_patch_without_change_records_nothing(api, alice, issue):
    token = issue(alice, name="same").token
    api.force_login(alice)
    assert api.patch(detail(token.key_id), {"name": "same"}, format="json").status_code == 200
    assert not TokenEvent.objects.filter(kind="updated").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["tokens:write"]}, "scopes"),
        ({"expires_at": "2031-01-01T00:00:00Z"}, "expires_at"),
        ({"owner": "bob"}, "owner"),
        ({"name": "bad name!"}, "name"),
        ({"name": "taken"}, "name"),
        ({"description": "x" * 1001}, "description"),
    ],
)
def test_patch_refuses_other_fields_and_bad_values(api, alice, issue, body, field):
    issue(alice, name="taken")
    token = issue(alice, name="mine").token
    api.force_login(alice)
    before = counts()
    response = api.patch(detail(token.key_id), body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    stored = APIToken.objects.get(pk=token.pk)
    assert (stored.name, stored.scopes) == ("mine", ["notes:read"])
    assert counts() == before


def test_patch_revoked_token_is_400(api, alice, issue):
    token = issue(alice).token
    services.revoke_token(token)
    api.force_login(alice)
    response = api.patch(detail(token.key_id), {"name": "renamed"}, format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_delete_revokes_once_and_is_idempotent(api, alice, issue):
    issued = issue(alice)
    api.force_login(alice)
    assert api.delete(detail(issued.token.key_id)).status_code == 204
    assert APIToken.objects.get(pk=issued.token.pk).revoked_at is not None
    assert not works(api, issued.plaintext)
    assert api.delete(detail(issued.token.key_id)).status_code == 204
    events = TokenEvent.objects.filter(kind="revoked")
    assert [(e.actor, e.via) for e in events] == [(alice, "api")]
    assert api.get(detail(issued.token.key_id)).json()["status"] == "revoked"


def test_delete_with_token_revokes_another_own_token(api, alice, issue):
    caller, target = issue(alice, ["tokens:write"]), issue(alice)
    assert api.delete(detail(target.token.key_id), **bearer(caller.plaintext)).status_code == 204
    assert not works(api, target.plaintext)
    assert works(api, caller.plaintext)


# --- rotating -----------------------------------------------------------------------------


def test_rotate_returns_new_secret_once_for_same_record(api, alice, issue, clock):
    issued = issue(alice, ["notes:write"], name="ci", expires_in=timedelta(days=7))
    old = APIToken.objects.get(pk=issued.token.pk)
    api.force_login(alice)
    response = api.post(rotate(old.key_id), format="json")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert set(data) == METADATA | {"token"}
    assert data["token"] != issued.plaintext
    new = APIToken.objects.get(pk=old.pk)
    assert (new.key_id, new.name, new.scopes, new.expires_at) == (
        old.key_id,
        old.name,
        old.scopes,
        old.expires_at,
    )
    assert data["id"] == old.key_id and new.secret_hash != old.secret_hash
    assert new.secret_hash.encode() not in response.content
    assert APIToken.objects.count() == 1
    api.logout()
    assert works(api, data["token"])
    assert not works(api, issued.plaintext)
    event = TokenEvent.objects.get(kind="rotated")
    assert (event.token, event.actor, event.via, event.detail) == (
        new,
        alice,
        "api",
        {"grace_seconds": 0},
    )


def test_rotate_with_grace_keeps_old_secret_until_it_ends(api, alice, issue, clock):
    issued = issue(alice, ["notes:read"])
    api.force_login(alice)
    response = api.post(rotate(issued.token.key_id), {"grace_seconds": 60}, format="json")
    assert response.status_code == 200
    api.logout()
    new = response.json()["token"]
    assert works(api, issued.plaintext) and works(api, new)
    clock.advance(seconds=59)
    assert works(api, issued.plaintext)
    clock.advance(seconds=2)
    assert not works(api, issued.plaintext)
    assert works(api, new)
    assert TokenEvent.objects.get(kind="rotated").detail == {"grace_seconds": 60}


def test_token_may_rotate_itself(api, alice, issue, clock):
    issued = issue(alice, ["tokens:write"])
    response = api.post(rotate(issued.token.key_id), **bearer(issued.plaintext))
    assert response.status_code == 200
    assert not works(api, issued.plaintext)
    assert works(api, response.json()["token"])


@pytest.mark.parametrize("grace", [86400, 0])
def test_rotate_grace_up_to_one_day_is_accepted(api, alice, issue, grace):
    token = issue(alice).token
    api.force_login(alice)
    assert (
        api.post(rotate(token.key_id), {"grace_seconds": grace}, format="json").status_code == 200
    )


@pytest.mark.parametrize("grace", [86401, -1, "soon", 1.5, None])
def test_rotate_bad_grace_is_400_and_changes_nothing(api, alice, issue, grace):
    issued = issue(alice)
    api.force_login(alice)
    before = APIToken.objects.get(pk=issued.token.pk).secret_hash
    response = api.post(rotate(issued.token.key_id), {"grace_seconds": grace}, format="json")
    assert response.status_code == 400
    assert "grace_seconds" in response.json()
    assert APIToken.objects.get(pk=issued.token.pk).secret_hash == before
    assert not TokenEvent.objects.filter(kind="rotated").exists()


def test_rotate_grace_limit_follows_the_setting(api, alice, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ROTATION_GRACE": "1h"}
    token = issue(alice).token
    api.force_login(alice)
    over = api.post(rotate(token.key_id), {"grace_seconds": 3601}, format="json")
    assert over.status_code == 400 and "3600" in str(over.json()["grace_seconds"])
    assert api.post(rotate(token.key_id), {"grace_seconds": 3600}, format="json").status_code == 200


def test_rotate_unknown_field_is_400(api, alice, issue):
    token = issue(alice).token
    api.force_login(alice)
    response = api.post(rotate(token.key_id), {"grace": 60}, format="json")
    assert response.status_code == 400 and "grace" in response.json()


def test_rotate_revoked_or_expired_token_is_400(api, alice, issue, clock):
    revoked = issue(alice).token
    services.revoke_token(revoked)
    expired = issue(alice, expires_in=timedelta(days=1)).token
    clock.advance(days=2)
    api.force_login(alice)
    for token in (revoked, expired):
        before = APIToken.objects.get(pk=token.pk).secret_hash
        response = api.post(rotate(token.key_id), format="json")
        assert response.status_code == 400
        assert "non_field_errors" in response.json()
        assert APIToken.objects.get(pk=token.pk).secret_hash == before
    assert not TokenEvent.objects.filter(kind="rotated").exists()


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
    client.post("/admin/login/", login)
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
    other = issue(alice, held, parent=caller.token).token
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
