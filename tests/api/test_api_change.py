"""A token's detail, its changes and revocation, and rotating its secret with a grace.

The self-service token API under /api/tokens/: real requests, real database, no mocks.
"""

from datetime import timedelta

import pytest

from tests.api.helpers import METADATA, detail, rotate, works
from tests.helpers import bearer, counts
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db


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
