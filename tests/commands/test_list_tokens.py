"""``manage.py list_tokens``: every token with its status, as a table or JSON, never a secret."""

import json
from datetime import datetime, timedelta

import pytest
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from tests.commands.helpers import COLUMNS, run
from tests.helpers import NOTES, bearer
from tokens_app import services
from tokens_app.core import tokenstring

pytestmark = pytest.mark.django_db


# --- list_tokens ------------------------------------------------------------------------


@pytest.fixture
def tokens(alice, bob, issue, clock) -> dict[str, services.IssuedToken]:
    """Alice's active, expired and revoked tokens and Bob's active one, issued a minute apart."""
    made: dict[str, services.IssuedToken] = {}
    for key, owner, lifetime in [
        ("expired", alice, timedelta(hours=1)),
        ("revoked", alice, timedelta(days=1)),
        ("active", alice, timedelta(days=1)),
        ("bob", bob, timedelta(days=1)),
    ]:
        made[key] = issue(owner, ["notes:read"], name=key, expires_in=lifetime)
        clock.advance(minutes=1)
    services.revoke_token(made["revoked"].token)
    clock.advance(hours=2)
    return made


EXPECTED_STATUS = {"expired": "expired", "revoked": "revoked", "active": "active", "bob": "active"}


def assert_no_secrets(out: str, tokens: dict[str, services.IssuedToken]) -> None:
    for issued in tokens.values():
        issued.token.refresh_from_db()
        assert issued.plaintext not in out
        assert issued.plaintext.split("_", 1)[1][tokenstring.KEY_ID_LENGTH :] not in out
        assert issued.token.secret_hash not in out
    assert "hash" not in out


def test_list_table_shows_every_token_with_status_and_no_secrets(tokens):
    out = run("list_tokens")
    lines = out.splitlines()
    assert lines[0].split() == COLUMNS
    assert len(lines) == 1 + len(tokens)
    status_column = lines[0].index("status")
    for key, issued in tokens.items():
        [row] = [line for line in lines if line.startswith(issued.token.key_id)]
        assert row[status_column:].split()[0] == EXPECTED_STATUS[key]
        assert f" {key} " in row
        assert "notes:read" in row
    assert_no_secrets(out, tokens)


def test_list_json_gives_status_and_metadata_newest_first(tokens, clock):
    APIClient().get(NOTES, **bearer(tokens["active"].plaintext), REMOTE_ADDR="10.0.0.7")
    out = run("list_tokens", "--json")
    assert out.count("\n") == 1
    rows = json.loads(out)
    assert [row["name"] for row in rows] == ["bob", "active", "revoked", "expired"]
    assert {row["name"]: row["status"] for row in rows} == EXPECTED_STATUS
    by_name = {row["name"]: row for row in rows}
    assert by_name["bob"]["owner"] == "bob"
    assert by_name["revoked"]["revoked_at"] is not None
    assert datetime.fromisoformat(by_name["active"]["last_used_at"]) == clock.current
    assert by_name["active"]["last_used_ip"] == "10.0.0.7"
    assert by_name["bob"]["last_used_at"] is None
    for row in rows:
        assert "token" not in row
        assert not [key for key in row if "hash" in key or "secret" in key]
    assert_no_secrets(out, tokens)


@pytest.mark.parametrize("as_json", [False, True])
def test_list_user_filter_shows_only_that_users_tokens(tokens, as_json):
    out = run("list_tokens", "--user", "bob", *(["--json"] if as_json else []))
    assert tokens["bob"].token.key_id in out
    for key in ("active", "expired", "revoked"):
        assert tokens[key].token.key_id not in out
    if as_json:
        assert [row["owner"] for row in json.loads(out)] == ["bob"]


def test_list_without_tokens_prints_header_or_empty_array():
    assert run("list_tokens").splitlines() == ["  ".join(COLUMNS)]
    assert json.loads(run("list_tokens", "--json")) == []


def test_list_unknown_user_fails(tokens):
    with pytest.raises(CommandError, match="user 'nobody' does not exist"):
        run("list_tokens", "--user", "nobody")


def test_list_shows_non_expiring_token_with_dash(alice, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "ALLOW_NON_EXPIRING": True}
    issued = issue(alice, never_expires=True)
    [row] = run("list_tokens").splitlines()[1:]
    assert row.startswith(issued.token.key_id)
    assert row.split()[-2:] == ["-", "-"]  # no expiry, never used
    assert json.loads(run("list_tokens", "--json"))[0]["expires_at"] is None
