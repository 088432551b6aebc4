"""The token console in the admin: who sees which tokens, and the change list."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.admin.helpers import ADD_URL, LIST_URL, MISSING_PK, issued_token, page, token_url
from tests.helpers import grant, issue_data
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db


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
            token = issue(alice if i % 2 else bob, caller=Caller(user=superuser)).token
            if i % 3 == 0:
                services.revoke_token(token, caller=Caller(user=superuser))

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
