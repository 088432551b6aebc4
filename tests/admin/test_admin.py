"""The token console in the admin: issue once, list, inspect, revoke, audit, who sees what."""

import re
from datetime import datetime, timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.messages import get_messages
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from tests.helpers import bearer, change_data, grant, issue_data
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db

ADMIN = "/admin/"
LIST_URL = "/admin/tokens_app/apitoken/"
ADD_URL = f"{LIST_URL}add/"
EVENTS_URL = "/admin/tokens_app/tokenevent/"
MISSING_PK = 987654


def token_url(token_or_pk, action="change"):
    pk = getattr(token_or_pk, "pk", token_or_pk)
    return f"{LIST_URL}{pk}/{action}/"


def issued_token(response):
    match = re.search(r'id="issued-token" value="([^"]+)"', response.content.decode())
    assert match, "no #issued-token on the page"
    return match.group(1)


def page(client, url):
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def choices(response, field):
    form = response.context["adminform"].form if "adminform" in response.context else None
    form = form or response.context["form"]
    return [value for value, _label in form.fields[field].choices]


def message_texts(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def whoami(plaintext):
    return APIClient().get("/api/whoami/", **bearer(plaintext)).status_code


# --- branding ---------------------------------------------------------------------------


def test_admin_index_is_branded_as_token_console(client, superuser):
    client.force_login(superuser)
    assert "API token console" in page(client, ADMIN)


# --- issue form ---------------------------------------------------------------------------


def test_superuser_issues_for_self_and_sees_the_token_once(client, superuser, clock):
    client.force_login(superuser)
    assert "issue-token-form" in page(client, ADD_URL)
    response = client.post(ADD_URL, issue_data(superuser, description="deploys"))
    assert response.status_code == 200
    assert "Location" not in response
    assert "no-store" in response["Cache-Control"]
    plaintext = issued_token(response)
    token = APIToken.objects.get()
    assert (token.owner, token.created_by, token.description) == (superuser, superuser, "deploys")
    assert token.expires_at == clock.current + timedelta(days=30)
    event = TokenEvent.objects.get()
    assert (event.kind, event.actor, event.via) == ("issued", superuser, "admin")
    assert whoami(plaintext) == 200


def test_superuser_issues_for_another_user(client, superuser, alice):
    client.force_login(superuser)
    response = client.post(ADD_URL, issue_data(alice, scopes=["notes:read", "tokens:read"]))
    plaintext = issued_token(response)
    token = APIToken.objects.get()
    assert (token.owner, token.created_by) == (alice, superuser)
    assert token.scopes == ["notes:read", "tokens:read"]
    assert services.authenticate_token(plaintext) == token


def test_owner_choice_restricts_offered_scopes_to_what_owner_may_hold(client, superuser, alice):
    client.force_login(superuser)
    own = choices(client.get(ADD_URL), "scopes")
    for_alice = choices(client.get(f"{ADD_URL}?owner={alice.pk}"), "scopes")
    assert "audit:read" in own
    assert "audit:read" not in for_alice
    assert "notes:read" in for_alice


@pytest.mark.parametrize("owner", ["not-a-number", str(MISSING_PK)])
def test_unusable_owner_parameter_falls_back_to_the_actor(client, superuser, owner):
    client.force_login(superuser)
    assert "audit:read" in choices(client.get(f"{ADD_URL}?owner={owner}"), "scopes")


def test_scope_owner_may_not_hold_is_refused_on_the_form(client, superuser, alice):
    client.force_login(superuser)
    response = client.post(ADD_URL, issue_data(alice, scopes=["notes:read", "audit:read"]))
    assert response.status_code == 200
    assert "scopes" in response.context["form"].errors
    assert "issued-token" not in response.content.decode()
    assert not APIToken.objects.exists()
    assert not TokenEvent.objects.exists()


def test_owner_field_searches_users_through_autocomplete(client, superuser, alice, bob):
    client.force_login(superuser)
    response = client.get(
        f"{ADMIN}autocomplete/",
        {"term": "ali", "app_label": "tokens_app", "model_name": "apitoken", "field_name": "owner"},
    )
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["alice"]


@pytest.mark.parametrize("days", [7, 30, 90, 365])
def test_expiry_preset_sets_expiry(client, superuser, clock, days):
    client.force_login(superuser)
    client.post(ADD_URL, issue_data(superuser, expiry=str(days)))
    assert APIToken.objects.get().expires_at == clock.current + timedelta(days=days)


def test_custom_expiry_date_is_used(client, superuser, clock):
    client.force_login(superuser)
    data = issue_data(superuser, expiry="custom", expires_at_0="2030-02-01", expires_at_1="10:30")
    issued_token(client.post(ADD_URL, data))
    expected = timezone.make_aware(datetime(2030, 2, 1, 10, 30))
    assert APIToken.objects.get().expires_at == expected


def test_custom_expiry_without_date_is_an_error(client, superuser, clock):
    client.force_login(superuser)
    response = client.post(ADD_URL, issue_data(superuser, expiry="custom"))
    assert "expiry" in response.context["form"].errors
    assert not APIToken.objects.exists()


def test_never_is_offered_only_when_non_expiring_tokens_are_allowed(client, superuser, settings):
    client.force_login(superuser)
    assert "never" not in choices(client.get(ADD_URL), "expiry")
    refused = client.post(ADD_URL, issue_data(superuser, expiry="never"))
    assert "expiry" in refused.context["form"].errors
    assert not APIToken.objects.exists()

    settings.API_TOKENS = {**settings.API_TOKENS, "ALLOW_NON_EXPIRING": True}
    assert "never" in choices(client.get(ADD_URL), "expiry")
    issued_token(client.post(ADD_URL, issue_data(superuser, expiry="never")))
    assert APIToken.objects.get().expires_at is None


def test_presets_beyond_the_maximum_lifetime_are_not_offered(client, superuser, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_LIFETIME": "30d"}
    client.force_login(superuser)
    assert choices(client.get(ADD_URL), "expiry") == ["7", "30", "custom"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "taken"}, "name"),
        ({"description": "x" * 1001}, "description"),
        ({"expiry": "custom", "expires_at_0": "2029-01-01", "expires_at_1": "00:00"}, "expiry"),
        ({"name": ""}, "name"),
        ({"scopes": []}, "scopes"),
    ],
)
def test_invalid_issue_shows_error_on_the_field_and_writes_nothing(
    client, superuser, issue, clock, overrides, field
):
    issue(superuser, name="taken")
    counts = APIToken.objects.count(), TokenEvent.objects.count(), LogEntry.objects.count()
    client.force_login(superuser)
    response = client.post(ADD_URL, issue_data(superuser, **overrides))
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert "issued-token" not in response.content.decode()
    assert (APIToken.objects.count(), TokenEvent.objects.count(), LogEntry.objects.count()) == (
        counts
    )


def test_rule_without_a_field_is_shown_above_the_form(client, superuser, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ACTIVE_TOKENS_PER_USER": 1}
    issue(superuser)
    client.force_login(superuser)
    response = client.post(ADD_URL, issue_data(superuser))
    assert response.context["form"].non_field_errors()
    assert 'class="errornote"' in response.content.decode()
    assert APIToken.objects.count() == 1


def test_issue_without_add_permission_is_forbidden(client, staff):
    client.force_login(grant(staff, "view_apitoken"))
    assert client.get(ADD_URL).status_code == 403
    assert client.post(ADD_URL, issue_data(staff)).status_code == 403
    assert not APIToken.objects.exists()


# --- the plaintext is shown once, and only there -------------------------------------------


@pytest.fixture
def issued_in_admin(client, superuser, alice, caplog):
    """Issue a token for alice through the admin; return (response, plaintext, token)."""
    caplog.set_level("DEBUG")
    client.force_login(superuser)
    response = client.post(ADD_URL, issue_data(alice, name="secret-holder"))
    return response, issued_token(response), APIToken.objects.get()


def secret_parts(plaintext):
    parsed = tokenstring.parse(plaintext, "tka")
    assert parsed is not None
    return [plaintext, parsed.secret]


def test_plaintext_is_not_in_session_messages_cookies_or_logs(client, issued_in_admin, caplog):
    response, plaintext, _token = issued_in_admin
    stored = [str(value) for value in client.session.values()]
    rows = [row.session_data for row in Session.objects.all()]
    rows += [str(row.get_decoded()) for row in Session.objects.all()]
    cookies = [morsel.value for morsel in client.cookies.values()]
    messages = message_texts(response)
    for secret in secret_parts(plaintext):
        for where in (stored, rows, cookies, messages, [caplog.text]):
            assert not any(secret in text for text in where)


def test_plaintext_is_not_in_the_admin_log(issued_in_admin, superuser):
    _response, plaintext, token = issued_in_admin
    entry = LogEntry.objects.get()
    assert (entry.action_flag, entry.user, entry.object_id) == (ADDITION, superuser, str(token.pk))
    for secret in secret_parts(plaintext):
        assert secret not in entry.object_repr
        assert secret not in entry.change_message


def test_plaintext_and_hash_are_absent_from_every_later_admin_page(client, issued_in_admin):
    _response, plaintext, token = issued_in_admin
    event = TokenEvent.objects.get()
    urls = [
        ADMIN,
        ADD_URL,
        LIST_URL,
        f"{LIST_URL}?q={token.key_id}",
        token_url(token),
        token_url(token, "history"),
        token_url(token, "revoke"),
        EVENTS_URL,
        f"{EVENTS_URL}{event.pk}/change/",
    ]
    digest = token.secret_hash.rsplit("$", 1)[-1]
    for url in urls:
        content = page(client, url)
        for secret in [*secret_parts(plaintext), token.secret_hash, digest]:
            assert secret not in content, url
        assert 'id="issued-token"' not in content


# --- who sees what --------------------------------------------------------------------------


def test_limited_staff_issue_only_for_themselves(client, limited, alice):
    client.force_login(limited)
    form = client.get(f"{ADD_URL}?owner={alice.pk}").context["form"]
    assert list(form.fields["owner"].queryset) == [limited]
    refused = client.post(ADD_URL, issue_data(alice))
    assert "owner" in refused.context["form"].errors
    assert not APIToken.objects.exists()
    plaintext = issued_token(client.post(ADD_URL, issue_data(limited)))
    assert services.authenticate_token(plaintext).owner == limited


def test_limited_staff_see_only_their_own_tokens(client, limited, alice, issue):
    own = issue(limited).token
    other = issue(alice).token
    client.force_login(limited)
    content = page(client, LIST_URL)
    assert own.key_id in content
    assert other.key_id not in content
    assert list(client.get(f"{LIST_URL}?q={other.key_id}").context["cl"].result_list) == []


@pytest.mark.parametrize("user_fixture", ["superuser", "manager"])
def test_managers_see_every_token(client, request, alice, bob, issue, user_fixture):
    user = request.getfixturevalue(user_fixture)
    tokens = [issue(alice).token, issue(bob).token]
    client.force_login(user)
    content = page(client, LIST_URL)
    assert all(token.key_id in content for token in tokens)
    assert client.get(token_url(tokens[0])).status_code == 200


@pytest.mark.parametrize("action", ["change", "history", "revoke"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_other_users_token_is_a_404_identical_to_a_missing_one(
    client, limited, alice, issue, action, method
):
    other = issue(alice).token
    client.force_login(limited)
    send = getattr(client, method)
    hidden = send(token_url(other, action), {"reason": "x"} if method == "post" else None)
    missing = send(token_url(MISSING_PK, action), {"reason": "x"} if method == "post" else None)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content
    assert other.key_id not in hidden.content.decode()
    other.refresh_from_db()
    assert other.revoked_at is None


def test_non_numeric_token_id_is_a_404(client, superuser):
    client.force_login(superuser)
    assert client.get(token_url("abc")).status_code == 404


def test_revoke_page_needs_change_permission(client, staff, issue):
    token = issue(grant(staff, "view_apitoken")).token
    client.force_login(staff)
    assert client.post(token_url(token, "revoke"), {"reason": "x"}).status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None


def test_limited_staff_bulk_revoke_skips_other_users_tokens(client, limited, alice, issue):
    own, other = issue(limited).token, issue(alice).token
    client.force_login(limited)
    data = {
        "action": "revoke_selected",
        "_selected_action": [own.pk, other.pk],
        "confirm": "yes",
        "reason": "cleanup",
    }
    response = client.post(LIST_URL, data, follow=True)
    assert "Revoked 1 token." in response.content.decode()
    own.refresh_from_db()
    other.refresh_from_db()
    assert own.revoked_at is not None
    assert other.revoked_at is None
    assert not TokenEvent.objects.filter(token=other, kind="revoked").exists()


# --- change list ----------------------------------------------------------------------------


@pytest.fixture
def four_states(alice, issue, clock):
    """One token in each badge state: active, expiring soon, expired, revoked."""
    expired = issue(alice, name="old", expires_in=timedelta(days=1)).token
    clock.advance(days=2)
    tokens = {
        "active": issue(alice, name="fresh", scopes=["tokens:read"]).token,
        "expiring": issue(alice, name="soon", expires_in=timedelta(days=3)).token,
        "expired": expired,
        "revoked": issue(alice, name="gone").token,
    }
    services.revoke_token(tokens["revoked"])
    return tokens


def test_changelist_shows_columns_and_status_badges(client, superuser, four_states):
    client.force_login(superuser)
    content = page(client, LIST_URL)
    for header in (
        "Name",
        "Key",
        "Owner",
        "Scopes",
        "Status",
        "Expires",
        "Last used",
        "Created by",
    ):
        assert header.lower() in content.lower()
    for label in ("Active", "Expiring soon", "Expired", "Revoked"):
        assert f"{label}</span>" in content
    token = four_states["active"]
    assert all(part in content for part in (token.name, token.key_id, "alice", "tokens:read"))


def test_last_used_column_shows_time_and_ip(client, superuser, alice, issue, clock):
    issued = issue(alice)
    services.authenticate_token(issued.plaintext, ip="203.0.113.9")
    client.force_login(superuser)
    assert "2030-01-01 12:00 (203.0.113.9)" in page(client, LIST_URL)


@pytest.mark.parametrize("status", ["active", "expiring", "expired", "revoked"])
def test_status_filter_lists_matching_tokens(client, superuser, four_states, status):
    client.force_login(superuser)
    content = page(client, f"{LIST_URL}?status={status}")
    shown = {state for state, token in four_states.items() if token.key_id in content}
    expected = {"active", "expiring"} if status == "active" else {status}
    assert shown == expected


def test_scope_filter_lists_tokens_holding_the_scope(client, superuser, four_states):
    client.force_login(superuser)
    content = page(client, f"{LIST_URL}?scope=tokens:read")
    assert [s for s, t in four_states.items() if t.key_id in content] == ["active"]
    unknown = page(client, f"{LIST_URL}?scope=nope:nope")
    assert all(token.key_id in unknown for token in four_states.values())


def test_owner_filter_lists_one_owners_tokens(client, superuser, alice, bob, issue):
    mine, theirs = issue(alice).token, issue(bob).token
    client.force_login(superuser)
    content = page(client, f"{LIST_URL}?owner__id__exact={bob.pk}")
    assert theirs.key_id in content
    assert mine.key_id not in content


@pytest.mark.parametrize(
    "term", ["deploy-bot", "KEY_ID", "bob", "bob@example.com"], ids=["name", "key", "user", "mail"]
)
def test_search_finds_by_name_key_id_and_owner(client, superuser, alice, bob, issue, term):
    wanted = issue(bob, name="deploy-bot").token
    other = issue(alice, name="laptop").token
    client.force_login(superuser)
    term = wanted.key_id if term == "KEY_ID" else term
    content = page(client, f"{LIST_URL}?q={term}")
    assert wanted.key_id in content
    assert other.key_id not in content


def test_changelist_has_a_date_hierarchy_on_creation(client, superuser, alice, issue, clock):
    issue(alice)
    client.force_login(superuser)
    response = client.get(LIST_URL)
    assert response.context["cl"].date_hierarchy == "created_at"
    assert "created_at__year=2030" in response.content.decode()


def test_changelist_query_count_does_not_grow_with_rows(client, superuser, alice, bob, issue):
    client.force_login(superuser)

    def count_queries():
        with CaptureQueriesContext(connection) as queries:
            assert client.get(LIST_URL).status_code == 200
        return len(queries)

    def add(n):
        for i in range(n):
            token = issue(alice if i % 2 else bob, actor=superuser).token
            if i % 3 == 0:
                services.revoke_token(token, actor=superuser)

    add(5)
    small = count_queries()
    add(45)
    assert APIToken.objects.count() == 50
    assert count_queries() == small


def test_no_delete_action_and_no_delete_url(client, superuser, alice, issue):
    token = issue(alice).token
    client.force_login(superuser)
    actions = choices_of_actions(client.get(LIST_URL))
    assert "revoke_selected" in actions
    assert "delete_selected" not in actions
    assert client.get(token_url(token, "delete")).status_code == 403
    assert client.post(token_url(token, "delete"), {"post": "yes"}).status_code == 403
    client.post(LIST_URL, {"action": "delete_selected", "_selected_action": [token.pk]})
    assert APIToken.objects.filter(pk=token.pk).exists()


def choices_of_actions(response):
    return [value for value, _label in response.context["action_form"].fields["action"].choices]


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
    token = issue(alice, actor=superuser).token
    services.update_token(token, actor=superuser, name="renamed")
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
    token = issue(alice, actor=superuser).token
    services.revoke_token(token, actor=superuser)
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
