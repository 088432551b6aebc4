"""Bad IP allow-lists, through the service and every adapter: a clear error, nothing written."""

import re

import pytest
from django.core.exceptions import ValidationError
from django.core.management import load_command_class
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from tests.guardrails.helpers import V4, admin_change_url, run_command, session, snapshot
from tests.helpers import (
    ADMIN_ADD,
    TOKENS,
    admin_client,
    change_data,
    counts,
    detail_url,
    exchange,
    form_errors,
    issue_data,
)
from tokens_app import services
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db


# --- bad allow-lists: a clear error, and nothing written ---------------------------------

BAD_ENTRIES = [
    ("10.0.0.5/8", "host bits set: did you mean 10.0.0.0/8?"),
    ("300.1.1.1", "300.1.1.1 is not an IP address or CIDR network"),
    ("abc", "abc is not an IP address or CIDR network"),
    ("10.0.0.0/33", "10.0.0.0/33 is not an IP address or CIDR network"),
    ("2001:db8::1/32", "host bits set: did you mean 2001:db8::/32?"),
]
TOO_MANY = [f"10.0.{n // 256}.{n % 256}" for n in range(101)]


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_service_refuses_a_bad_entry_and_writes_nothing(alice, entry, message):
    with pytest.raises(ValidationError) as info:
        services.issue_token(alice, name="x", scopes=["notes:read"], allowed_ips=[V4, entry])
    assert any(message in m for m in info.value.message_dict["allowed_ips"])
    assert counts() == (0, 0)


@pytest.mark.parametrize("value", [[V4, 7], [None], 42, {"10.0.0.0/8": 1}, [["10.0.0.0/8"]]])
def test_service_refuses_non_text_entries_and_writes_nothing(alice, value):
    with pytest.raises(ValidationError) as info:
        services.issue_token(alice, name="x", scopes=["notes:read"], allowed_ips=value)
    assert info.value.message_dict["allowed_ips"] == [
        "Give a list of addresses or networks, none of them blank."
    ]
    assert counts() == (0, 0)


def test_service_refuses_more_than_100_networks_and_writes_nothing(alice):
    with pytest.raises(ValidationError) as info:
        services.issue_token(alice, name="x", scopes=["notes:read"], allowed_ips=TOO_MANY)
    assert info.value.message_dict["allowed_ips"] == ["Give at most 100 networks."]
    assert counts() == (0, 0)
    issued = services.issue_token(
        alice, name="x", scopes=["notes:read"], allowed_ips=TOO_MANY[:100]
    )
    assert len(issued.token.allowed_ips) == 100


@pytest.mark.parametrize("value", [[""], ["  "]])
def test_service_refuses_a_list_of_blank_entries(alice, value):
    with pytest.raises(ValidationError):
        services.issue_token(alice, name="x", scopes=["notes:read"], allowed_ips=value)
    assert counts() == (0, 0)


def test_service_text_form_empty_means_anywhere(alice):
    # The documented "no restriction" (the admin's empty textarea): not an error.
    issued = services.issue_token(alice, name="x", scopes=["notes:read"], allowed_ips="")
    assert issued.token.allowed_ips == []


API_BAD_LISTS = [
    *[[V4, entry] for entry, _message in BAD_ENTRIES],
    [""],
    [V4, " "],
    [V4, 7],
    [V4, None],
    [V4, {"a": 1}],
    "10.0.0.0/8",  # not a list
    TOO_MANY,
]


@pytest.mark.parametrize("value", API_BAD_LISTS)
def test_api_create_refuses_bad_lists_with_400_and_writes_nothing(alice, value):
    response = session(alice).post(
        TOKENS, {"name": "x", "scopes": ["notes:read"], "allowed_ips": value}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "allowed_ips" in response.json()
    assert counts() == (0, 0)


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_api_create_error_says_what_is_wrong(alice, entry, message):
    response = session(alice).post(
        TOKENS, {"name": "x", "scopes": ["notes:read"], "allowed_ips": [entry]}, format="json"
    )
    assert response.status_code == 400
    assert any(message in m for m in response.json()["allowed_ips"])


@pytest.mark.parametrize("value", API_BAD_LISTS)
def test_api_patch_refuses_bad_lists_and_leaves_the_row_unchanged(alice, issue, value):
    token = issue(alice, allowed_ips=["192.0.2.0/24"]).token
    before = snapshot(token)
    response = session(alice).patch(
        detail_url(token.key_id), {"allowed_ips": value, "name": "renamed"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "allowed_ips" in response.json()
    assert snapshot(token) == before


@pytest.mark.parametrize("value", API_BAD_LISTS)
def test_password_exchange_refuses_bad_lists_and_writes_nothing(alice, value):
    response = exchange(APIClient(), allowed_ips=value)
    assert response.status_code == 400, response.content
    assert "allowed_ips" in response.json()
    assert "token" not in response.json()
    assert counts() == (0, 0)


@pytest.mark.parametrize(("entry", "message"), [*BAD_ENTRIES, ("", "invalid --allow-ip")])
def test_command_refuses_bad_entries_and_writes_nothing(alice, entry, message):
    with pytest.raises(CommandError, match=re.escape(message)) as info:
        run_command(
            "alice", "--name=x", "--scopes=notes:read", f"--allow-ip={V4}", f"--allow-ip={entry}"
        )
    assert "\n" not in str(info.value)
    assert counts() == (0, 0)


def test_command_refuses_more_than_100_networks(alice):
    with pytest.raises(CommandError, match="at most 100 networks"):
        run_command("alice", "--name=x", "--scopes=notes:read", f"--allow-ip={','.join(TOO_MANY)}")
    assert counts() == (0, 0)


# run_from_argv closes the database connections when the command fails: outside a test
# transaction, so that PostgreSQL reconnects instead of losing the test's transaction.
@pytest.mark.django_db(transaction=True)
def test_command_error_on_the_command_line_is_one_stderr_line(alice, capsys):
    command = load_command_class("tokens_app", "issue_token")
    argv = ["manage.py", "issue_token", "alice", "--name=x", "--scopes=notes:read"]
    with pytest.raises(SystemExit) as exit_info:
        command.run_from_argv([*argv, "--allow-ip=10.0.0.5/8", "--rate=abc"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert "did you mean 10.0.0.0/8?" in captured.err
    assert "rate_limit" in captured.err
    assert counts() == (0, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [*BAD_ENTRIES, ("\n".join(TOO_MANY), "at most 100 networks")],
)
def test_admin_issue_form_shows_the_error_and_writes_nothing(alice, superuser, text, message):
    response = admin_client(superuser).post(ADMIN_ADD, issue_data(alice, allowed_ips=text))
    assert response.status_code == 200
    assert 'id="issued-token"' not in response.content.decode()
    assert any(message in m for m in form_errors(response)["allowed_ips"])
    assert counts() == (0, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [*BAD_ENTRIES, ("\n".join(TOO_MANY), "at most 100 networks")],
)
def test_admin_change_form_shows_the_error_and_leaves_the_row(
    alice, superuser, issue, text, message
):
    token = issue(alice, allowed_ips=["192.0.2.0/24"]).token
    before = snapshot(token)
    data = change_data(token, allowed_ips=text, name="renamed")
    response = admin_client(superuser).post(admin_change_url(token), data)
    assert response.status_code == 200
    assert any(message in m for m in form_errors(response)["allowed_ips"])
    assert snapshot(token) == before


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_service_update_refuses_bad_entries_and_leaves_the_row(alice, issue, entry, message):
    token = issue(alice, allowed_ips=["192.0.2.0/24"]).token
    before = snapshot(token)
    with pytest.raises(ValidationError) as info:
        services.update_token(token, caller=Caller(user=alice), name="renamed", allowed_ips=[entry])
    assert any(message in m for m in info.value.message_dict["allowed_ips"])
    assert snapshot(token) == before
