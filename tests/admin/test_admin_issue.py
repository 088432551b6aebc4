"""The token console in the admin: issuing a token, shown once and only there."""

from datetime import datetime, timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.sessions.models import Session
from django.utils import timezone

from tests.admin.helpers import (
    ADD_URL,
    ADMIN,
    EVENTS_URL,
    LIST_URL,
    MISSING_PK,
    choices,
    issued_token,
    message_texts,
    page,
    token_url,
    whoami,
)
from tests.helpers import grant, issue_data
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db


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
