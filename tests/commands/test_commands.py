"""The token commands: issue_token, revoke_token, list_tokens, and their shared base."""

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from tests.helpers import NOTES, ROOT, bearer, command_line, counts
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db

COLUMNS = ["key_id", "owner", "name", "status", "scopes", "expires_at", "last_used_at"]


def run(command: str, *args: str, **options: Any) -> str:
    """Run *command* in-process and return its stdout."""
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def argv(
    *extra: str, user: str = "alice", name: str | None = "ci", scopes: str | None = "notes:read"
) -> list[str]:
    """Return issue_token arguments: a valid call unless the caller breaks a part."""
    args = [user]
    if name is not None:
        args.append(f"--name={name}")
    if scopes is not None:
        args.append(f"--scopes={scopes}")
    return [*args, *extra]


def issued_token(out: str) -> tuple[str, APIToken]:
    """Return the plaintext printed by issue_token and the row it names."""
    plaintext = out.removesuffix("\n")
    parsed = tokenstring.parse(plaintext, "tka")
    assert parsed is not None
    return plaintext, APIToken.objects.get(key_id=parsed.key_id)


# --- issue_token: success ---------------------------------------------------------------


def test_issue_prints_token_alone_and_it_authenticates(alice):
    out = run("issue_token", *argv(scopes="notes:read"))
    assert out.count("\n") == 1
    assert out.endswith("\n")
    plaintext, token = issued_token(out)
    assert token.owner == alice
    assert token.name == "ci"
    assert token.scopes == ["notes:read"]
    assert plaintext not in token.secret_hash
    event = TokenEvent.objects.get(token=token)
    assert (event.kind, event.via) == ("issued", "command")
    assert APIClient().get(NOTES, **bearer(plaintext)).status_code == 200


def test_issue_json_prints_one_object_with_token_and_metadata_but_no_hash(alice, clock):
    out = run("issue_token", *argv("--json", "--description=deploy bot", scopes="notes:write"))
    assert out.count("\n") == 1
    data = json.loads(out)
    token = APIToken.objects.get()
    assert tokenstring.parse(data["token"], "tka").key_id == token.key_id == data["key_id"]
    assert data["owner"] == "alice"
    assert data["name"] == "ci"
    assert data["description"] == "deploy bot"
    assert data["scopes"] == ["notes:write"]
    assert data["status"] == "active"
    assert datetime.fromisoformat(data["created_at"]) == clock.current
    assert datetime.fromisoformat(data["expires_at"]) == clock.current + timedelta(days=30)
    assert data["revoked_at"] is None
    assert not [key for key in data if "hash" in key or "secret" in key]
    assert token.secret_hash not in out


def test_issue_without_expiry_flag_uses_default_lifetime(alice, clock):
    _, token = issued_token(run("issue_token", *argv()))
    assert token.expires_at == clock.current + timedelta(days=30)


def test_issue_description_is_stored(alice):
    _, token = issued_token(run("issue_token", *argv("--description", "Nightly export job.")))
    assert token.description == "Nightly export job."


@pytest.mark.parametrize(
    ("value", "lifetime"),
    [
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("365d", timedelta(days=365)),
    ],
)
def test_issue_expires_in_sets_expiry_from_now(alice, clock, value, lifetime):
    _, token = issued_token(run("issue_token", *argv("--expires-in", value)))
    assert token.expires_at == clock.current + lifetime


@pytest.mark.parametrize(
    "value", ["2030-03-01T08:30:00+02:00", "2030-03-01T06:30:00Z", "2030-03-01T06:30:00+00:00"]
)
def test_issue_expires_at_with_zone_is_kept(alice, clock, value):
    _, token = issued_token(run("issue_token", *argv("--expires-at", value)))
    assert token.expires_at == datetime(2030, 3, 1, 6, 30, tzinfo=UTC)


def test_issue_naive_expires_at_is_read_in_utc_time_zone(alice, clock):
    _, token = issued_token(run("issue_token", *argv("--expires-at", "2030-03-01T08:30:00")))
    assert token.expires_at == datetime(2030, 3, 1, 8, 30, tzinfo=UTC)


def test_issue_naive_expires_at_follows_the_project_time_zone(alice, clock, settings):
    settings.TIME_ZONE = "Asia/Tokyo"  # UTC+9, no daylight saving
    _, token = issued_token(run("issue_token", *argv("--expires-at", "2030-03-01T08:30:00")))
    assert token.expires_at == datetime(2030, 2, 28, 23, 30, tzinfo=UTC)


def test_issue_scopes_may_have_spaces_and_repeats(alice):
    out = run("issue_token", *argv(scopes=" notes:write , notes:read,notes:write "))
    _, token = issued_token(out)
    assert sorted(token.scopes) == ["notes:read", "notes:write"]


def test_issue_staff_only_scope_for_staff_succeeds(staff):
    _, token = issued_token(run("issue_token", *argv(user="staff", scopes="audit:read")))
    assert token.scopes == ["audit:read"]


def test_issue_name_of_revoked_token_can_be_reused(alice, issue):
    old = issue(alice, name="ci")
    services.revoke_token(old.token)
    _, token = issued_token(run("issue_token", *argv(name="ci")))
    assert token.pk != old.token.pk


def test_issue_no_expiry_when_allowed_never_expires(alice, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "ALLOW_NON_EXPIRING": True}
    data = json.loads(run("issue_token", *argv("--no-expiry", "--json")))
    assert data["expires_at"] is None
    assert APIToken.objects.get(key_id=data["key_id"]).expires_at is None


# --- issue_token: every error exits non-zero and writes nothing --------------------------

BAD_EXPIRES_IN = ["0d", "10x", "-1d", "d", "1.5d", "30", "12H", "1 d", " ", "00d", "1d2h"]
BAD_EXPIRES_AT = ["tomorrow", "2030-13-01T00:00:00", "2030-01-31 noon", "1893456000", "+99:00"]
ISSUE_ERRORS = [
    pytest.param(argv(user="nobody"), "user 'nobody' does not exist", id="unknown-user"),
    pytest.param(argv(name=None), "required: --name", id="missing-name"),
    pytest.param(argv(scopes=None), "required: --scopes", id="missing-scopes"),
    pytest.param(argv(scopes=""), "invalid --scopes", id="empty-scopes"),
    pytest.param(argv(scopes="  "), "invalid --scopes", id="blank-scopes"),
    pytest.param(argv(scopes=","), "invalid --scopes", id="comma-only-scopes"),
    pytest.param(argv(scopes="notes:read,,notes:write"), "invalid --scopes", id="empty-between"),
    pytest.param(argv(scopes="notes:read,"), "invalid --scopes", id="trailing-comma"),
    pytest.param(argv(scopes="notes:delete"), r"Unknown scopes: notes:delete\.", id="unknown"),
    pytest.param(
        argv(scopes="notes:read,audit:read"),
        "may not hold these scopes: audit:read",
        id="staff-only-scope",
    ),
    *[
        pytest.param(argv(f"--expires-in={value}"), "invalid duration", id=f"expires-in-{value!r}")
        for value in BAD_EXPIRES_IN
    ],
    *[
        pytest.param(argv(f"--expires-at={value}"), "invalid --expires-at", id=f"at-{value!r}")
        for value in BAD_EXPIRES_AT
    ],
    pytest.param(
        argv("--expires-at=2030-01-01T11:59:59+00:00"), "must be in the future", id="past"
    ),
    pytest.param(argv("--expires-at=2030-01-01T12:00:00Z"), "must be in the future", id="now"),
    pytest.param(argv("--expires-at=2020-01-01"), "must be in the future", id="past-naive-date"),
    pytest.param(argv("--expires-in=366d"), "may live at most 365d", id="in-366d"),
    pytest.param(argv("--expires-in=400d"), "may live at most 365d", id="in-400d"),
    pytest.param(argv("--expires-in=53w"), "may live at most 365d", id="in-53w"),
    pytest.param(
        argv("--expires-at=2031-01-02T12:00:00Z"), "may live at most 365d", id="at-beyond-max"
    ),
    pytest.param(argv("--no-expiry"), "never expire are not allowed", id="no-expiry"),
    pytest.param(
        argv("--expires-in=1d", "--expires-at=2030-02-01T00:00:00Z"),
        "not allowed with argument",
        id="in-and-at",
    ),
    pytest.param(
        argv("--expires-in=1d", "--no-expiry"), "not allowed with argument", id="in-and-never"
    ),
    pytest.param(argv(name=""), "needs a name", id="empty-name"),
    pytest.param(argv(name="   "), "needs a name", id="blank-name"),
    pytest.param(argv(name="-leading-dash"), "name: Use at most 100", id="leading-dash"),
    pytest.param(argv(name="semi;colon"), "name: Use at most 100", id="semicolon"),
    pytest.param(argv(name="<script>"), "name: Use at most 100", id="markup"),
    pytest.param(argv(name="tab\there"), "name: A name cannot contain / or control", id="tab"),
    pytest.param(argv(name="new\nline"), "name: A name cannot contain / or control", id="newline"),
    pytest.param(argv(name="a" * 101), "name: Use at most 100", id="name-101"),
    pytest.param(
        argv("--description=" + "x" * 1001), "at most 1000 characters", id="description-1001"
    ),
]


@pytest.mark.parametrize(("args", "match"), ISSUE_ERRORS)
def test_issue_bad_input_fails_and_writes_nothing(alice, clock, args, match):
    with pytest.raises(CommandError, match=match) as error:
        run("issue_token", *args)
    assert "\n" not in str(error.value)
    assert counts() == (0, 0)


def test_issue_for_inactive_user_fails_and_writes_nothing(django_user_model):
    django_user_model.objects.create_user("carol", is_active=False)
    with pytest.raises(CommandError, match="owner: The owner must be an active user"):
        run("issue_token", *argv(user="carol"))
    assert counts() == (0, 0)


def test_issue_duplicate_active_name_fails_and_writes_nothing(alice, issue):
    issue(alice, name="ci")
    before = counts()
    with pytest.raises(CommandError, match="An active token named ci already exists"):
        run("issue_token", *argv(name="ci"))
    assert counts() == before


def test_issue_over_per_user_limit_fails_and_writes_nothing(alice, bob, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ACTIVE_TOKENS_PER_USER": 1}
    issue(alice)
    before = counts()
    with pytest.raises(CommandError, match="already has 1 active token, the most allowed"):
        run("issue_token", *argv(name="second"))
    assert counts() == before
    run("issue_token", *argv(user="bob"))  # the limit is per user
    assert counts() == (before[0] + 1, before[1] + 1)


def test_issue_two_expiry_options_passed_as_keywords_fail(alice):
    with pytest.raises(CommandError, match="Give one of an expiry time, a lifetime, or no expiry"):
        run("issue_token", *argv(), expires_in="1d", expires_at="2099-01-01T00:00:00Z")
    assert counts() == (0, 0)


def test_issue_several_problems_are_reported_on_one_line(alice):
    with pytest.raises(CommandError) as error:
        run("issue_token", *argv("--description=" + "x" * 1001, name="bad;name", scopes="x:y"))
    message = str(error.value)
    assert "\n" not in message
    for part in ("name: ", "description: ", "scopes: Unknown scopes: x:y."):
        assert part in message
    assert counts() == (0, 0)


@pytest.mark.parametrize("value", ["9999999d", "9999999w"])
def test_issue_huge_expires_in_fails_cleanly(alice, clock, value):
    with pytest.raises(CommandError, match="may live at most 365d"):
        run("issue_token", *argv(f"--expires-in={value}"))
    assert counts() == (0, 0)


@pytest.mark.parametrize("flag", ["--expires-in=", "--expires-at="])
def test_issue_empty_expiry_value_fails_and_writes_nothing(alice, flag):
    with pytest.raises(CommandError):
        run("issue_token", *argv(flag))
    assert counts() == (0, 0)


# --- the command line: one line on stderr, nothing on stdout -----------------------------


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("issue_token", ["alice", "--scopes=notes:read"], "required: --name"),
        ("issue_token", ["alice", "--name=ci"], "required: --scopes"),
        (
            "issue_token",
            argv("--expires-in=1d", "--expires-at=2030-02-01T00:00:00Z"),
            "argument --expires-at: not allowed with argument --expires-in",
        ),
        ("revoke_token", ["--bogus"], "unrecognized arguments: --bogus"),
        ("list_tokens", ["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_argument_error_on_command_line_is_one_line_without_usage(capsys, command, args, message):
    assert command_line(command, *args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"manage.py {command}: error: ")
    assert captured.err.endswith("\n")
    assert len(captured.err.splitlines()) == 1
    assert message in captured.err
    assert counts() == (0, 0)


class Cli:
    """``manage.py`` in a child process, on its own SQLite file (not pytest's test database)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{db}",
            "DJANGO_SETTINGS_MODULE": "project.settings",
        }

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def counts(self) -> tuple[int, int]:
        with closing(sqlite3.connect(self.db)) as db:
            tokens = db.execute("SELECT COUNT(*) FROM tokens_app_apitoken").fetchone()[0]
            events = db.execute("SELECT COUNT(*) FROM tokens_app_tokenevent").fetchone()[0]
        return tokens, events


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    manage = Cli(tmp_path_factory.mktemp("cli") / "db.sqlite3")
    for args in (
        ("migrate", "-v0"),
        (
            "shell",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_user('al')",
        ),
    ):
        result = manage(*args)
        assert result.returncode == 0, result.stderr
    return manage


def test_cli_issue_prints_exactly_the_token_and_revoke_accepts_it(cli):
    issued = cli("issue_token", "al", "--name", "deploy", "--scopes", "notes:read")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.removesuffix("\n")
    assert issued.stdout == token + "\n"
    assert token == token.strip()
    parsed = tokenstring.parse(token, "tka")
    assert parsed is not None
    revoked = cli("revoke_token", token, "--reason", "rotated")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"Revoked token {parsed.key_id} ('deploy' of al).\n"
    assert token not in revoked.stdout + revoked.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["al", "--scopes", "notes:read"], id="argparse-missing-name"),
        pytest.param(["al", "--name", "x", "--scopes", "notes:delete"], id="unknown-scope"),
        pytest.param(
            ["al", "--name", "x", "--scopes", "notes:read", "--expires-in", "9999999d"],
            id="huge-lifetime",
        ),
    ],
)
def test_cli_issue_error_is_one_stderr_line_and_writes_nothing(cli, args):
    before = cli.counts()
    result = cli("issue_token", *args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert cli.counts() == before


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


COMMON_OPTIONS = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


def test_commands_declare_help_for_every_argument():
    for name in ("issue_token", "revoke_token", "list_tokens"):
        command = load_command_class("tokens_app", name)
        assert command.help
        parser = command.create_parser("manage.py", name)
        own = [a for a in parser._actions if a.dest not in COMMON_OPTIONS]
        assert own
        assert all(action.help for action in own), name
