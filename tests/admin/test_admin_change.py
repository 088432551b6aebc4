"""The token console in the admin: changing a token, revoking one or many, the audit events."""

import pytest
from django.contrib.admin.models import LogEntry

from tests.admin.helpers import (
    EVENTS_URL,
    LIST_URL,
    choices,
    message_texts,
    page,
    token_url,
    whoami,
)
from tests.helpers import change_data, grant
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db


# --- change view --------------------------------------------------------------------------


def test_superuser_edits_name_description_and_scopes_with_an_event(client, superuser, alice, issue):
    token = issue(alice, name="old").token
    client.force_login(superuser)
    data = change_data(token, name="new", description="why", scopes=["notes:read", "tokens:read"])
    response = client.post(token_url(token), data)
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.name, token.description) == ("new", "why")
    assert token.scopes == ["notes:read", "tokens:read"]
    event = TokenEvent.objects.get(kind="updated")
    assert (event.actor, event.via, event.token) == (superuser, "admin", token)
    assert event.detail["name"] == {"from": "old", "to": "new"}
    assert event.detail["description"] == {"from": "", "to": "why"}
    assert event.detail["scopes"] == {"from": ["notes:read"], "to": ["notes:read", "tokens:read"]}


def test_saving_without_changes_records_no_event(client, superuser, alice, issue):
    token = issue(alice).token
    client.force_login(superuser)
    assert client.post(token_url(token), change_data(token)).status_code == 302
    assert not TokenEvent.objects.filter(kind="updated").exists()


def test_view_only_staff_open_their_token(client, staff, issue):
    token = issue(grant(staff, "view_apitoken")).token
    client.force_login(staff)
    assert client.get(token_url(token)).status_code == 200


def test_limited_staff_edit_name_but_not_scopes(client, limited, issue):
    token = issue(limited, name="old").token
    client.force_login(limited)
    content = page(client, token_url(token))
    assert 'name="name"' in content
    assert 'name="scopes"' not in content
    data = change_data(token, name="new", scopes=["notes:read", "tokens:read"])
    assert client.post(token_url(token), data).status_code == 302
    token.refresh_from_db()
    assert (token.name, token.scopes) == ("new", ["notes:read"])


def test_change_page_offers_scopes_the_owner_may_hold(client, superuser, alice, issue):
    token = issue(alice).token
    client.force_login(superuser)
    offered = choices(client.get(token_url(token)), "scopes")
    assert "notes:read" in offered
    assert "audit:read" not in offered
    response = client.post(token_url(token), change_data(token, scopes=["audit:read"]))
    assert response.status_code == 200
    assert "scopes" in response.context["adminform"].form.errors
    token.refresh_from_db()
    assert token.scopes == ["notes:read"]
    assert not TokenEvent.objects.filter(kind="updated").exists()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [({"name": "taken"}, "already exists"), ({"scopes": []}, "at least one scope")],
)
def test_change_refused_by_the_service_shows_an_error_and_changes_nothing(
    client, superuser, alice, issue, overrides, error
):
    issue(alice, name="taken")
    token = issue(alice, name="mine").token
    client.force_login(superuser)
    response = client.post(token_url(token), change_data(token, **overrides), follow=True)
    assert error in response.content.decode()
    token.refresh_from_db()
    assert (token.name, token.scopes) == ("mine", ["notes:read"])
    assert not TokenEvent.objects.filter(kind="updated").exists()


def test_change_refused_by_the_service_claims_no_success(client, superuser, alice, issue):
    issue(alice, name="taken")
    token = issue(alice, name="mine").token
    client.force_login(superuser)
    response = client.post(token_url(token), change_data(token, name="taken"), follow=True)
    assert not any("successfully" in text for text in message_texts(response))
    assert not LogEntry.objects.exists()


def test_change_page_shows_events_and_never_the_hash(client, superuser, alice, issue):
    token = issue(alice, caller=Caller(user=superuser)).token
    services.update_token(token, caller=Caller(user=superuser), name="renamed")
    client.force_login(superuser)
    response = client.get(token_url(token))
    content = response.content.decode()
    inline = response.context["inline_admin_formsets"][0]
    assert inline.formset.prefix == "events"
    assert [form.original.kind for form in inline] == ["updated", "issued"]
    assert token.secret_hash not in content
    assert token.secret_hash.rsplit("$", 1)[-1] not in content
    assert "secret_hash" not in content


def test_revoked_token_name_and_description_are_read_only(client, superuser, alice, issue):
    token = issue(alice, name="frozen").token
    services.revoke_token(token)
    client.force_login(superuser)
    response = client.get(token_url(token))
    form_fields = response.context["adminform"].form.fields
    assert "name" not in form_fields
    assert "description" not in form_fields
    assert 'id="revoke-token"' not in response.content.decode()


def test_revoked_token_is_frozen_for_managers_too(client, superuser, alice, issue):
    token = issue(alice, name="frozen").token
    services.revoke_token(token)
    client.force_login(superuser)
    response = client.get(token_url(token))
    assert "scopes" not in response.context["adminform"].form.fields
    saved = client.post(token_url(token), change_data(token), follow=True)
    assert not any("cannot be changed" in text for text in message_texts(saved))


# --- revoke button --------------------------------------------------------------------------


def test_revoke_button_confirms_with_a_reason_and_revokes(client, superuser, alice, issue, clock):
    issued = issue(alice)
    token = issued.token
    client.force_login(superuser)
    assert f'href="{token_url(token, "revoke")}" id="revoke-token"' in page(
        client, token_url(token)
    )
    confirmation = page(client, token_url(token, "revoke"))
    assert 'id="revoke-form"' in confirmation
    assert 'name="reason"' in confirmation
    assert token.key_id in confirmation
    response = client.post(token_url(token, "revoke"), {"reason": "leaked in CI log"})
    assert response.status_code == 302
    assert response["Location"] == token_url(token)
    assert any("Revoked" in text for text in message_texts(response))
    token.refresh_from_db()
    assert token.revoked_at == clock.current
    assert (token.revoked_by, token.revoke_reason) == (superuser, "leaked in CI log")
    event = TokenEvent.objects.get(kind="revoked")
    assert (event.actor, event.via, event.detail) == (
        superuser,
        "admin",
        {"reason": "leaked in CI log"},
    )
    assert whoami(issued.plaintext) == 401

    again = client.post(token_url(token, "revoke"), {"reason": "twice"}, follow=True)
    assert "already revoked" in again.content.decode()
    assert TokenEvent.objects.filter(kind="revoked").count() == 1


def test_overlong_revoke_reason_is_refused(client, superuser, alice, issue):
    token = issue(alice).token
    client.force_login(superuser)
    response = client.post(token_url(token, "revoke"), {"reason": "x" * 201})
    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    token.refresh_from_db()
    assert token.revoked_at is None


def test_limited_staff_revoke_their_own_token(client, limited, issue):
    token = issue(limited).token
    client.force_login(limited)
    assert client.post(token_url(token, "revoke"), {"reason": ""}).status_code == 302
    token.refresh_from_db()
    assert token.revoked_by == limited


# --- bulk revoke ----------------------------------------------------------------------------


def test_bulk_revoke_confirms_then_revokes_each_with_one_event(
    client, superuser, alice, bob, issue
):
    issued = [issue(alice), issue(bob), issue(alice)]
    pks = [i.token.pk for i in issued[:2]]
    client.force_login(superuser)
    selection = {"action": "revoke_selected", "_selected_action": pks}
    confirmation = client.post(LIST_URL, selection)
    assert confirmation.status_code == 200
    content = confirmation.content.decode()
    assert 'id="revoke-form"' in content
    assert all(i.token.key_id in content for i in issued[:2])
    assert issued[2].token.key_id not in content
    assert not APIToken.objects.filter(revoked_at__isnull=False).exists()

    response = client.post(LIST_URL, {**selection, "confirm": "yes", "reason": "offboarding"})
    assert response.status_code == 302
    assert "Revoked 2 tokens." in message_texts(response)
    revoked = APIToken.objects.filter(revoked_at__isnull=False)
    assert sorted(revoked.values_list("pk", flat=True)) == sorted(pks)
    assert set(revoked.values_list("revoke_reason", flat=True)) == {"offboarding"}
    events = TokenEvent.objects.filter(kind="revoked")
    assert sorted(events.values_list("token", flat=True)) == sorted(pks)
    assert {(e.via, e.actor) for e in events} == {("admin", superuser)}
    assert [whoami(i.plaintext) for i in issued] == [401, 401, 200]


def test_bulk_revoke_counts_only_tokens_it_revoked(client, superuser, alice, issue):
    tokens = [issue(alice).token, issue(alice).token]
    services.revoke_token(tokens[0])
    client.force_login(superuser)
    data = {
        "action": "revoke_selected",
        "_selected_action": [t.pk for t in tokens],
        "confirm": "yes",
        "reason": "",
    }
    response = client.post(LIST_URL, data)
    assert "Revoked 1 token." in message_texts(response)
    assert TokenEvent.objects.filter(kind="revoked").count() == 2


def test_bulk_revoke_with_overlong_reason_asks_again(client, superuser, alice, issue):
    token = issue(alice).token
    client.force_login(superuser)
    data = {
        "action": "revoke_selected",
        "_selected_action": [token.pk],
        "confirm": "yes",
        "reason": "x" * 201,
    }
    response = client.post(LIST_URL, data)
    assert response.status_code == 200
    assert 'id="revoke-form"' in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is None


# --- audit events ---------------------------------------------------------------------------


def test_event_list_is_read_only_with_filters(client, superuser, alice, issue):
    token = issue(alice, caller=Caller(user=superuser)).token
    services.revoke_token(token, caller=Caller(user=superuser))
    event = TokenEvent.objects.get(kind="issued")
    client.force_login(superuser)
    response = client.get(EVENTS_URL)
    assert response.status_code == 200
    titles = [str(spec.title) for spec in response.context["cl"].filter_specs]
    assert len(titles) == 3
    assert response.context["has_add_permission"] is False
    assert response.context["action_form"] is None  # no actions at all, so no delete
    assert [e.kind for e in client.get(f"{EVENTS_URL}?kind=revoked").context["cl"].result_list] == [
        "revoked"
    ]
    by_actor = client.get(f"{EVENTS_URL}?actor__id__exact={superuser.pk}")
    assert len(by_actor.context["cl"].result_list) == 2
    day = {"created_at__gte": "2000-01-01 00:00+00:00", "created_at__lt": "2000-01-02 00:00+00:00"}
    dated = client.get(EVENTS_URL, day)
    assert len(dated.context["cl"].result_list) == 0
    assert client.get(f"{EVENTS_URL}add/").status_code == 403
    detail = client.get(f"{EVENTS_URL}{event.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert client.post(f"{EVENTS_URL}{event.pk}/change/", {"kind": "revoked"}).status_code == 403
    assert client.post(f"{EVENTS_URL}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert event.kind == "issued"
    assert TokenEvent.objects.count() == 2


def test_limited_staff_see_only_their_own_tokens_events(client, limited, alice, issue):
    own = issue(limited).token
    other = issue(alice).token
    client.force_login(limited)
    response = client.get(EVENTS_URL)
    assert [e.token for e in response.context["cl"].result_list] == [own]
    assert other.key_id not in response.content.decode()


def test_manager_sees_every_event(client, manager, alice, issue):
    issue(alice)
    client.force_login(manager)
    assert len(client.get(EVENTS_URL).context["cl"].result_list) == 1
