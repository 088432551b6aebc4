"""``manage.py revoke_token``: by key id or full token, with a reason, once."""

import pytest
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from tests.commands.helpers import argv, issued_token, run
from tests.helpers import NOTES, bearer, counts
from tokens_app.core import tokenstring
from tokens_app.models import TokenEvent

pytestmark = pytest.mark.django_db


# --- revoke_token -----------------------------------------------------------------------


def test_revoke_by_key_id_records_reason_and_event(alice, issue, clock):
    issued = issue(alice, name="laptop")
    clock.advance(hours=1)
    out = run("revoke_token", issued.token.key_id, "--reason", "Laptop stolen.")
    assert out == f"Revoked token {issued.token.key_id} ('laptop' of alice).\n"
    issued.token.refresh_from_db()
    assert issued.token.revoked_at == clock.current
    assert issued.token.revoke_reason == "Laptop stolen."
    event = TokenEvent.objects.get(token=issued.token, kind="revoked")
    assert event.via == "command"
    assert event.detail == {"reason": "Laptop stolen."}


def test_revoke_by_full_token_revokes_it_and_never_echoes_it(alice, issue):
    issued = issue(alice)
    out = run("revoke_token", issued.plaintext)
    assert issued.token.key_id in out
    assert issued.plaintext not in out
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is not None


def test_revoked_token_gets_401_from_the_api(alice):
    plaintext, token = issued_token(run("issue_token", *argv()))
    assert APIClient().get(NOTES, **bearer(plaintext)).status_code == 200
    run("revoke_token", token.key_id)
    assert APIClient().get(NOTES, **bearer(plaintext)).status_code == 401


def test_revoke_already_revoked_succeeds_without_second_event(alice, issue):
    issued = issue(alice, name="old")
    run("revoke_token", issued.token.key_id, "--reason", "first")
    before = counts()
    out = run("revoke_token", issued.plaintext, "--reason", "second")
    assert out == f"Token {issued.token.key_id} ('old' of alice) was already revoked.\n"
    assert counts() == before
    issued.token.refresh_from_db()
    assert issued.token.revoke_reason == "first"


@pytest.mark.parametrize(
    "reference",
    [
        "AAAAAAAAAAAA",  # well-formed key id that does not exist
        "garbage",
        "",
        "'; DROP TABLE tokens_app_apitoken; --",
        "tka_" + "A" * tokenstring.BODY_LENGTH,  # bad checksum
        tokenstring.assemble(
            "tka", "B" * tokenstring.KEY_ID_LENGTH, "C" * tokenstring.SECRET_LENGTH
        ),  # unknown id
    ],
)
def test_revoke_unknown_reference_fails(alice, issue, reference):
    issued = issue(alice)
    before = counts()
    with pytest.raises(CommandError, match="no token matches that key id or token"):
        run("revoke_token", reference)
    assert counts() == before
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is None


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda token: token[:-1] + ("0" if token[-1] != "0" else "1"),  # checksum typo
        lambda token: "ghp" + token[3:],  # another prefix
        lambda token: token + "x",
        lambda token: token[:-1],
    ],
)
def test_revoke_corrupted_token_revokes_nothing(alice, issue, corrupt):
    issued = issue(alice)
    with pytest.raises(CommandError, match="no token matches"):
        run("revoke_token", corrupt(issued.plaintext))
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is None


def test_revoke_over_long_reason_fails_and_token_stays_active(alice, issue):
    issued = issue(alice)
    before = counts()
    with pytest.raises(CommandError, match="reason: The reason must be text of at most 200"):
        run("revoke_token", issued.token.key_id, "--reason", "x" * 201)
    assert counts() == before
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is None
    assert APIClient().get(NOTES, **bearer(issued.plaintext)).status_code == 200


def test_revoke_reason_of_200_characters_is_kept(alice, issue):
    issued = issue(alice)
    run("revoke_token", issued.token.key_id, "--reason", "x" * 200)
    issued.token.refresh_from_db()
    assert issued.token.revoke_reason == "x" * 200
