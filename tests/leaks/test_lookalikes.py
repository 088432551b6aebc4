"""Forged look-alikes (issue 13, item 4): a public key id with any secret acts on nothing.

Key ids are public (admin, API, logs). A string built from a victim's key id, any secret
and a valid checksum once made ``find_leaked_tokens --revoke`` report the victim's token
as active and revoke it, and so did ``revoke_token <that string>``. Now every full token
string has its secret verified before it is reported or acted on. The attack runs as
the issue describes it: real ``manage.py`` processes over the test database.
"""

import json
import sqlite3
import subprocess
from contextlib import closing
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from tests import live
from tests.helpers import NOTES, PREFIX, bearer, command_line
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db


# --- helpers ----------------------------------------------------------------------------


def lookalike(key_id: str) -> str:
    """What an attacker builds from a public key id: any secret, a valid checksum."""
    return tokenstring.assemble(PREFIX, key_id, tokenstring.generate_secret())


def secret_of(token: str) -> str:
    parsed = tokenstring.parse(token, PREFIX)
    assert parsed is not None
    return parsed.secret


def revoke_events(key_id: str) -> list[dict[str, Any]]:
    return list(
        TokenEvent.objects.filter(key_id=key_id, kind="revoked").values_list("detail", flat=True)
    )


def manage(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``manage.py`` in a child process over this test's (committed) database.

    PostgreSQL: the child connects to pytest-django's test database and this session's
    Redis (``tests.live``). SQLite: that database lives in this process's memory, so the
    child gets a file copy of it, and what the child wrote is copied back afterwards;
    the "shared" file cache (the JWT deny list) is the test run's own either way.
    """
    sqlite = connection.vendor == "sqlite"
    if sqlite:
        copy = tmp_path / "child-db.sqlite3"
        connection.ensure_connection()
        with closing(sqlite3.connect(copy)) as target:
            connection.connection.backup(target)
        # DEBUG on: the embedded default (`make run`), whose local-memory counters are fine.
        env = live.server_env(f"sqlite:///{copy}", None, DJANGO_DEBUG="1")
    else:
        env = live.server_env(live.session_database_url(), live.session_redis_url())
    result = live.run_python("manage.py", *args, env=env, timeout=120, stdin=stdin)
    if sqlite:
        with closing(sqlite3.connect(copy)) as source:
            source.backup(connection.connection)
        copy.unlink()
    return result


def scan(*args: str, stdin: str | None = None) -> tuple[int, str]:
    """Run find_leaked_tokens in-process; return (exit status, stdout)."""
    out = StringIO()
    extra = {"stdin": StringIO(stdin)} if stdin is not None else {}
    try:
        call_command("find_leaked_tokens", *args, stdout=out, stderr=StringIO(), **extra)
    except SystemExit as exit_info:
        assert isinstance(exit_info.code, int)
        return exit_info.code, out.getvalue()
    return 0, out.getvalue()


def scan_json(text: str, *args: str) -> dict[str, Any]:
    code, out = scan("-", "--json", *args, stdin=text)
    assert code == 1  # every caller scans at least one token
    return dict(json.loads(out))


def statuses(text: str) -> list[tuple[str, str | None]]:
    return [(f["key_id"], f["status"]) for f in scan_json(text)["findings"]]


# --- the attack, in real processes --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_planted_lookalike_in_a_log_is_unverified_and_revokes_nothing_in_a_real_process(
    alice, bob, issue, api, tmp_path
):
    victim = issue(alice, scopes=["notes:read"], name="victim")
    leaked = issue(bob, scopes=["notes:read"], name="really-leaked")
    forged = lookalike(victim.token.key_id)
    log = tmp_path / "app.log"
    log.write_text(
        f"2030-01-01T12:00:00Z INFO GET /api/notes/ Authorization: Bearer {forged}\n"
        f"2030-01-01T12:00:01Z INFO GET /api/notes/?token={leaked.plaintext}\n"
    )
    victim_id, leaked_id = victim.token.key_id, leaked.token.key_id

    result = manage(tmp_path, "find_leaked_tokens", "--revoke", str(log))

    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"{log}:1: key id {victim_id} (unverified)",
        f"{log}:2: key id {leaked_id} (active)",
    ]
    assert lines[2] == (
        "Scanned 1 file: found 2 tokens (2 key ids). 1 look-alike (unverified: a known key "
        "id with a secret that is not its token's) left alone. "
        f"Revoked 1 token: {leaked_id}."
    )
    for secret in (secret_of(forged), secret_of(leaked.plaintext), secret_of(victim.plaintext)):
        assert secret not in result.stdout + result.stderr

    # The victim's token was neither revoked nor touched: it still reads notes.
    assert api.get(NOTES, **bearer(victim.plaintext)).status_code == 200
    assert revoke_events(victim_id) == []
    assert APIToken.objects.get(key_id=victim_id).revoked_at is None
    # The token that really leaked was revoked, with its audit event, and stops.
    assert api.get(NOTES, **bearer(leaked.plaintext)).status_code == 401
    assert revoke_events(leaked_id) == [{"reason": "leaked"}]

    again = manage(tmp_path, "find_leaked_tokens", "--json", str(log))
    assert again.returncode == 1, again.stderr
    assert json.loads(again.stdout) == {
        "findings": [
            {"path": str(log), "line": 1, "key_id": victim_id, "status": "unverified"},
            {"path": str(log), "line": 2, "key_id": leaked_id, "status": "revoked"},
        ],
        "revoked": [],
    }


@pytest.mark.django_db(transaction=True)
def test_revoke_token_with_a_lookalike_fails_in_a_real_process_and_revokes_nothing(
    alice, issue, api, tmp_path
):
    victim = issue(alice, scopes=["notes:read"], name="victim")
    forged = lookalike(victim.token.key_id)

    result = manage(tmp_path, "revoke_token", forged, "--reason", "leaked")

    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"key id {victim.token.key_id}: " in result.stderr
    assert "nothing was revoked" in result.stderr
    assert forged not in result.stderr and secret_of(forged) not in result.stderr
    assert api.get(NOTES, **bearer(victim.plaintext)).status_code == 200
    assert revoke_events(victim.token.key_id) == []

    # The real token string, and the public key id, revoke as before.
    genuine = manage(tmp_path, "revoke_token", victim.plaintext, "--reason", "leaked")
    assert genuine.returncode == 0, genuine.stderr
    assert genuine.stdout == f"Revoked token {victim.token.key_id} ('victim' of alice).\n"
    assert api.get(NOTES, **bearer(victim.plaintext)).status_code == 401
    assert revoke_events(victim.token.key_id) == [{"reason": "leaked"}]


def test_revoke_token_by_key_id_still_revokes(alice, issue, api):
    issued = issue(alice)
    call_command("revoke_token", issued.token.key_id, stdout=StringIO())
    assert api.get(NOTES, **bearer(issued.plaintext)).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_offline_findings_have_no_status_and_offline_revoke_is_an_error_in_a_real_process(
    alice, issue, api, tmp_path
):
    real = issue(alice)
    other = issue(alice).token.key_id
    forged = lookalike(other)
    text = f"{real.plaintext}\n{forged}\n"

    as_text = manage(tmp_path, "find_leaked_tokens", "--offline", "-", stdin=text)
    assert as_text.returncode == 1, as_text.stderr
    assert as_text.stdout.splitlines() == [
        f"<stdin>:1: key id {real.token.key_id}",
        f"<stdin>:2: key id {other}",
        "Scanned 1 file: found 2 tokens (2 key ids). Checksum only: the database was not "
        "consulted.",
    ]
    as_json = manage(tmp_path, "find_leaked_tokens", "--offline", "--json", "-", stdin=text)
    assert as_json.returncode == 1, as_json.stderr
    assert [f["status"] for f in json.loads(as_json.stdout)["findings"]] == [None, None]

    refused = manage(tmp_path, "find_leaked_tokens", "--offline", "--revoke", "-", stdin=text)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert len(refused.stderr.splitlines()) == 1
    assert "cannot be used with --offline" in refused.stderr
    assert TokenEvent.objects.filter(kind="revoked").count() == 0
    assert api.get(NOTES, **bearer(real.plaintext)).status_code == 200


# --- one key id, two secrets: each finding is judged on its own ---------------------------


def test_the_same_key_id_with_a_real_and_a_forged_secret_gives_two_statuses(alice, issue, api):
    issued = issue(alice)
    key_id, forged = issued.token.key_id, lookalike(issued.token.key_id)
    report = scan_json(f"{forged}\n{issued.plaintext}\n{forged}\n", "--revoke")
    assert [(f["line"], f["status"]) for f in report["findings"]] == [
        (1, "unverified"),
        (2, "active"),
        (3, "unverified"),
    ]
    assert report["revoked"] == [key_id]  # the real one leaked: revoked
    assert api.get(NOTES, **bearer(issued.plaintext)).status_code == 401


def test_only_lookalikes_revoke_nothing_and_say_so(alice, issue, api):
    victims = [issue(alice), issue(alice)]
    text = "\n".join(lookalike(v.token.key_id) for v in victims)
    code, out = scan("-", "--revoke", stdin=text)
    assert code == 1
    assert out.endswith(
        "found 2 tokens (2 key ids). 2 look-alikes (unverified: a known key id with a secret "
        "that is not its token's) left alone. Revoked 0 tokens (none was still unrevoked).\n"
    )
    assert TokenEvent.objects.filter(kind="revoked").count() == 0
    assert all(api.get(NOTES, **bearer(v.plaintext)).status_code == 200 for v in victims)


def test_every_verdict_is_read_in_one_query(alice, issue, clock, django_assert_num_queries):
    active, rotated = issue(alice), issue(alice)
    services.rotate_token(rotated.token, grace_seconds=60)
    clock.advance(minutes=2)  # the grace is over: the old secret is retired
    unknown = tokenstring.assemble(
        PREFIX, tokenstring.generate_key_id(), tokenstring.generate_secret()
    )
    text = " ".join([active.plaintext, lookalike(active.token.key_id), rotated.plaintext, unknown])
    with django_assert_num_queries(1):
        found = services.scan_sources([("x", [text])])
    assert [finding.status for finding in found] == ["active", "unverified", "retired", "unknown"]


# --- the one function: what a token string is here ---------------------------------------


def test_check_token_string_names_a_token_only_when_its_secret_verifies(alice, issue):
    issued = issue(alice)
    genuine = services.check_token_string(f"  {issued.plaintext} ")
    assert genuine is not None
    assert (genuine.key_id, genuine.status, genuine.verified) == (
        issued.token.key_id,
        "active",
        True,
    )
    assert genuine.token == issued.token
    forged = services.check_token_string(lookalike(issued.token.key_id))
    assert forged is not None
    assert (forged.status, forged.verified, forged.token) == ("unverified", False, None)
    unknown = services.check_token_string(lookalike(tokenstring.generate_key_id()))
    assert unknown is not None and (unknown.status, unknown.token) == ("unknown", None)
    typo = issued.plaintext[:-1] + ("0" if issued.plaintext[-1] != "0" else "1")
    for garbage in ("", "nope", issued.token.key_id, typo):
        assert services.check_token_string(garbage) is None
    assert secret_of(issued.plaintext) not in repr(genuine)


def test_find_token_refuses_a_lookalike_but_not_a_key_id(alice, issue):
    issued = issue(alice)
    with pytest.raises(services.UnverifiedToken) as error:
        services.find_token(lookalike(issued.token.key_id))
    assert error.value.key_id == issued.token.key_id
    assert services.find_token(issued.token.key_id) == issued.token
    assert services.find_token(issued.plaintext) == issued.token


@pytest.mark.parametrize(
    ("state", "status"),
    [("revoked", "revoked"), ("expired", "expired"), ("owner_inactive", "owner_inactive")],
)
def test_a_verified_secret_reports_the_tokens_own_status(alice, issue, clock, state, status):
    issued = issue(alice, expires_in=timedelta(days=1))
    if state == "revoked":
        services.revoke_token(issued.token)
    elif state == "expired":
        clock.advance(days=2)
    else:
        alice.is_active = False
        alice.save(update_fields=["is_active"])
    assert statuses(issued.plaintext) == [(issued.token.key_id, status)]
    assert statuses(lookalike(issued.token.key_id)) == [(issued.token.key_id, "unverified")]


# --- rotation grace -----------------------------------------------------------------------


@pytest.fixture
def rotated(alice, issue, clock):
    """A token rotated with a one-hour grace: (old plaintext, new plaintext, token)."""
    issued = issue(alice)
    new = services.rotate_token(issued.token, grace_seconds=3600)
    return issued.plaintext, new.plaintext, new.token


def test_an_old_secret_inside_its_grace_is_a_live_leak_and_is_revoked(rotated, api, clock):
    old, new, token = rotated
    assert api.get(NOTES, **bearer(old)).status_code == 200  # a live credential
    report = scan_json(old, "--revoke")
    assert report == {
        "findings": [{"path": "<stdin>", "line": 1, "key_id": token.key_id, "status": "active"}],
        "revoked": [token.key_id],
    }
    assert api.get(NOTES, **bearer(old)).status_code == 401
    assert api.get(NOTES, **bearer(new)).status_code == 401


def test_an_old_secret_past_its_grace_is_retired_and_not_revoked(rotated, api, clock):
    old, new, token = rotated
    clock.advance(hours=1, seconds=1)
    assert api.get(NOTES, **bearer(old)).status_code == 401  # it works nowhere any more
    code, out = scan("-", "--revoke", stdin=old)
    assert code == 1
    assert out.startswith(f"<stdin>:1: key id {token.key_id} (retired)\n")
    assert out.endswith("Revoked 0 tokens (none was still unrevoked).\n")
    assert revoke_events(token.key_id) == []
    assert api.get(NOTES, **bearer(new)).status_code == 200  # the owner is not locked out


def test_the_new_secret_after_a_rotation_is_active(rotated):
    _old, new, token = rotated
    assert statuses(new) == [(token.key_id, "active")]


def test_a_secret_two_rotations_old_or_rotated_without_grace_is_unverified(alice, issue):
    first = issue(alice)
    second = services.rotate_token(first.token, grace_seconds=3600)
    services.rotate_token(second.token, grace_seconds=3600)
    assert statuses(first.plaintext) == [(first.token.key_id, "unverified")]
    immediate = issue(alice)
    services.rotate_token(immediate.token)  # no grace: no previous hash is kept
    assert statuses(immediate.plaintext) == [(immediate.token.key_id, "unverified")]


def test_revoke_token_accepts_an_old_secret_it_can_verify(rotated, api, clock):
    old, new, token = rotated
    clock.advance(hours=2)  # retired, but proven to be this token's: the operator means it
    call_command("revoke_token", old, stdout=StringIO())
    assert api.get(NOTES, **bearer(new)).status_code == 401
    assert revoke_events(token.key_id) == [{"reason": ""}]


def test_revoke_token_refuses_an_old_secret_it_cannot_verify(alice, issue, api):
    first = issue(alice)
    services.rotate_token(first.token)  # no grace: the old secret is forgotten
    with pytest.raises(CommandError, match=f"key id {first.token.key_id}: .*nothing was revoked"):
        call_command("revoke_token", first.plaintext, stdout=StringIO(), stderr=StringIO())
    assert revoke_events(first.token.key_id) == []


@pytest.mark.django_db(transaction=True)
def test_a_grace_secret_leaked_in_a_log_is_revoked_in_a_real_process(
    alice, issue, api, tmp_path, clock
):
    # Real time in the child: rotate "now" with an hour of grace, and a day ago with a
    # minute of grace, so one old secret is live there and the other retired.
    clock.current = datetime.now(UTC) - timedelta(days=1)
    stale = issue(alice, name="stale")
    stale_new = services.rotate_token(stale.token, grace_seconds=60)
    clock.current = datetime.now(UTC)
    live_grace = issue(alice, name="grace")
    services.rotate_token(live_grace.token, grace_seconds=3600)
    log = tmp_path / "ci.log"
    log.write_text(f"old={stale.plaintext}\nold={live_grace.plaintext}\n")

    result = manage(tmp_path, "find_leaked_tokens", "--revoke", "--json", str(log))

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert [(f["key_id"], f["status"]) for f in report["findings"]] == [
        (stale.token.key_id, "retired"),
        (live_grace.token.key_id, "active"),
    ]
    assert report["revoked"] == [live_grace.token.key_id]
    assert revoke_events(stale.token.key_id) == []
    assert api.get(NOTES, **bearer(stale_new.plaintext)).status_code == 200
    assert api.get(NOTES, **bearer(live_grace.plaintext)).status_code == 401


# --- help ---------------------------------------------------------------------------------


def test_help_texts_say_what_is_verified(capsys):
    assert command_line("find_leaked_tokens", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("verified", "unverified", "retired", "null in --json", "Look-alikes revoke"):
        assert part in text
    assert command_line("revoke_token", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "its secret is verified first" in text
