"""Pruning long-ended tokens: the service, the queryset rule and ``manage.py prune_tokens``."""

import logging
import os
import pty
import re
import sqlite3
import subprocess
from contextlib import closing, suppress
from dataclasses import FrozenInstanceError
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import live
from tests.helpers import T0, command_line
from tokens_app import services
from tokens_app.management.commands.prune_tokens import Command
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db


class TTY(StringIO):
    """A captured stream that says it is a terminal, as a person's shell would."""

    def isatty(self) -> bool:
        return True


def run(*args: str, stderr: StringIO | None = None, **options: Any) -> str:
    """Run prune_tokens in-process and return its stdout."""
    out = StringIO()
    call_command("prune_tokens", *args, stdout=out, stderr=stderr or StringIO(), **options)
    return out.getvalue()


def snapshot() -> tuple[list[int], list[tuple[int, int | None, str]]]:
    """Every token pk, and every event as (pk, token pk, key id): what pruning may change."""
    tokens = list(APIToken.objects.order_by("pk").values_list("pk", flat=True))
    events = list(TokenEvent.objects.order_by("pk").values_list("pk", "token_id", "key_id"))
    return tokens, events


def ended_long_ago(issue: Any, owner: Any, clock: Any, count: int) -> list[APIToken]:
    """Issue *count* tokens that expire a day later, then move the clock 100 days on."""
    tokens = [issue(owner, expires_in=timedelta(days=1)).token for _ in range(count)]
    clock.advance(days=100)
    return tokens


@pytest.fixture
def mix(alice, bob, issue, clock, settings):
    """One token of every kind; at the end the clock is T0 + 100 days (cutoff T0 + 10 days)."""
    settings.API_TOKENS = {**settings.API_TOKENS, "ALLOW_NON_EXPIRING": True}
    tokens = {
        "expired_long_ago": issue(alice, expires_in=timedelta(days=1)).token,
        "revoked_long_ago": issue(bob, expires_in=timedelta(days=365)).token,
        "never_expires": issue(alice, never_expires=True).token,
    }
    services.revoke_token(tokens["revoked_long_ago"], reason="leaked")
    clock.advance(days=50)
    tokens["expired_recently"] = issue(alice, expires_in=timedelta(days=30)).token  # T0 + 80d
    clock.advance(days=45)
    tokens["revoked_recently"] = issue(bob).token
    services.revoke_token(tokens["revoked_recently"])  # T0 + 95d
    clock.advance(days=4)
    tokens["active"] = issue(alice).token
    clock.advance(days=1)
    assert clock.current == T0 + timedelta(days=100)
    return tokens


PRUNED = {"expired_long_ago", "revoked_long_ago"}


# --- the queryset rule ------------------------------------------------------------------


def test_prunable_is_tokens_revoked_or_expired_by_the_cutoff(mix):
    found = set(APIToken.objects.prunable(T0 + timedelta(days=10)))
    assert found == {mix[name] for name in PRUNED}


def test_prunable_includes_a_token_that_ended_exactly_at_the_cutoff(alice, issue, clock):
    at_cutoff = issue(alice, expires_at=T0 + timedelta(days=5)).token
    issue(alice, expires_at=T0 + timedelta(days=5, microseconds=1))
    assert list(APIToken.objects.prunable(T0 + timedelta(days=5))) == [at_cutoff]


# --- the service ------------------------------------------------------------------------


def test_prune_deletes_long_ended_tokens_and_keeps_the_rest(mix):
    result = services.prune_tokens(older_than=timedelta(days=90))
    assert result == services.PruneResult(
        cutoff=T0 + timedelta(days=10), tokens=2, events_kept=3, dry_run=False
    )
    assert set(APIToken.objects.all()) == {t for name, t in mix.items() if name not in PRUNED}


def test_prune_keeps_audit_events_with_token_null_and_key_id(mix):
    before = {pk: (token_id, key_id) for pk, token_id, key_id in snapshot()[1]}
    pruned_pks = {mix[name].pk for name in PRUNED}
    services.prune_tokens(older_than=timedelta(days=90))
    after = {pk: (token_id, key_id) for pk, token_id, key_id in snapshot()[1]}
    assert after.keys() == before.keys()  # not one event deleted
    for pk, (token_id, key_id) in before.items():
        if token_id in pruned_pks:
            assert after[pk] == (None, key_id)
        else:
            assert after[pk] == (token_id, key_id)
    kinds = sorted(
        TokenEvent.objects.filter(key_id=mix["revoked_long_ago"].key_id).values_list(
            "kind", "token_id"
        )
    )
    assert kinds == [("issued", None), ("revoked", None)]


def test_prune_twice_deletes_nothing_the_second_time(mix):
    services.prune_tokens(older_than=timedelta(days=90))
    before = snapshot()
    result = services.prune_tokens(older_than=timedelta(days=90))
    assert (result.tokens, result.events_kept) == (0, 0)
    assert snapshot() == before


def test_prune_cutoff_follows_older_than(mix, clock):
    result = services.prune_tokens(older_than=timedelta(days=10))
    assert result.cutoff == clock.current - timedelta(days=10)  # T0 + 90d
    assert result.tokens == 3  # and the one that expired at T0 + 80d
    kept = {mix[name] for name in ("never_expires", "active", "revoked_recently")}
    assert set(APIToken.objects.all()) == kept


def test_prune_older_than_zero_prunes_every_ended_token(mix):
    result = services.prune_tokens(older_than=timedelta(0))
    assert result.tokens == 4
    assert set(APIToken.objects.all()) == {mix["never_expires"], mix["active"]}


def test_prune_cutoff_is_rounded_down_to_whole_seconds(alice, issue, clock):
    clock.current = T0.replace(microsecond=750_000)
    token = issue(alice, expires_at=T0 + timedelta(days=1, microseconds=500_000)).token
    clock.advance(days=91)
    result = services.prune_tokens(older_than=timedelta(days=90))
    # The exact cutoff (…12:00:00.75) is after the expiry (…12:00:00.5); rounded down it is
    # not, so the token stays: rounding never prunes a token younger than asked.
    assert result.cutoff == T0 + timedelta(days=1)
    assert (result.tokens, list(APIToken.objects.all())) == (0, [token])


def test_dry_run_counts_and_writes_nothing(mix):
    before = snapshot()
    result = services.prune_tokens(older_than=timedelta(days=90), dry_run=True)
    assert result == services.PruneResult(
        cutoff=T0 + timedelta(days=10), tokens=2, events_kept=3, dry_run=True
    )
    assert snapshot() == before


def test_dry_run_does_not_report_progress(mix):
    calls: list[tuple[int, int]] = []
    services.prune_tokens(
        older_than=timedelta(days=90), dry_run=True, progress=lambda *a: calls.append(a)
    )
    assert calls == []


def test_prune_result_is_frozen(mix):
    result = services.prune_tokens(older_than=timedelta(days=90), dry_run=True)
    with pytest.raises(FrozenInstanceError):
        result.tokens = 0  # type: ignore[misc]


def test_batches_delete_everything_and_report_progress(alice, bob, issue, clock):
    ended_long_ago(issue, alice, clock, 5)
    keep = issue(bob).token
    calls: list[tuple[int, int]] = []
    result = services.prune_tokens(
        older_than=timedelta(days=90),
        batch_size=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert (result.tokens, result.events_kept) == (5, 5)
    assert list(APIToken.objects.all()) == [keep]
    assert TokenEvent.objects.filter(token__isnull=True).count() == 5


def test_nothing_to_prune_reports_no_progress(alice, issue, clock):
    issue(alice)
    calls: list[tuple[int, int]] = []
    result = services.prune_tokens(
        older_than=timedelta(days=90), progress=lambda *a: calls.append(a)
    )
    assert (result.tokens, calls) == (0, [])
    assert APIToken.objects.count() == 1


def _prune_queries(batch_size: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        services.prune_tokens(older_than=timedelta(days=90), batch_size=batch_size)
    return len(queries)


def test_query_count_grows_with_batches_not_with_rows(alice, issue, clock):
    # Four tokens in two batches of two, then eight tokens with three events each in two
    # batches of four: the same number of queries, so no query runs per row.
    ended_long_ago(issue, alice, clock, 4)
    small = _prune_queries(batch_size=2)
    clock.current = T0
    for token in ended_long_ago(issue, alice, clock, 8):
        services.revoke_token(token)  # a second event
        TokenEvent.objects.create(token=token, key_id=token.key_id, kind="updated")  # a third
    assert _prune_queries(batch_size=4) == small
    assert APIToken.objects.count() == 0


def test_each_batch_reads_only_primary_keys(alice, issue, clock):
    ended_long_ago(issue, alice, clock, 3)
    with CaptureQueriesContext(connection) as queries:
        services.prune_tokens(older_than=timedelta(days=90), batch_size=2)
    table = APIToken._meta.db_table
    selects = [
        q["sql"] for q in queries if q["sql"].startswith("SELECT") and f'FROM "{table}"' in q["sql"]
    ]
    paged = [sql for sql in selects if "ORDER BY" in sql]
    assert len(paged) == 3  # two batches and the empty read that ends the loop
    for sql in paged:
        assert re.match(f'SELECT "{table}"."id"( AS "pk")? FROM', sql), sql
        assert "LIMIT 2" in sql


def test_a_token_that_stopped_being_prunable_is_neither_detached_nor_deleted(alice, issue, clock):
    # The batch re-applies the rule: pks read a moment ago are not trusted blindly.
    from tokens_app.services.maintenance import _prune_batch

    old, young = ended_long_ago(issue, alice, clock, 2)
    APIToken.objects.filter(pk=young.pk).update(expires_at=clock.current + timedelta(days=1))
    deleted, kept = _prune_batch(clock.current - timedelta(days=90), [old.pk, young.pk])
    assert (deleted, kept) == (1, 1)
    assert list(APIToken.objects.all()) == [young]
    assert TokenEvent.objects.get(key_id=young.key_id).token == young


def test_prune_logs_one_info_line_without_secrets(mix, caplog, alice, issue):
    plaintext = issue(alice).plaintext
    with caplog.at_level(logging.INFO, logger="tokens_app"):
        services.prune_tokens(older_than=timedelta(days=90))
    records = [r for r in caplog.records if r.name == "tokens_app"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert records[0].levelno == logging.INFO
    assert message == (
        "Pruned 2 API tokens that ended before 2030-01-11T12:00:00+00:00; 3 audit events kept"
    )
    assert plaintext not in message


def test_dry_run_logs_one_info_line(mix, caplog):
    with caplog.at_level(logging.INFO, logger="tokens_app"):
        services.prune_tokens(older_than=timedelta(days=90), dry_run=True)
    assert [r.getMessage() for r in caplog.records if r.name == "tokens_app"] == [
        "Dry run: would prune 2 API tokens that ended before 2030-01-11T12:00:00+00:00 "
        "(3 audit events)"
    ]


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        ({"older_than": timedelta(seconds=-1)}, {"older_than"}),
        ({"older_than": timedelta(days=-90)}, {"older_than"}),
        ({"older_than": 90}, {"older_than"}),
        ({"batch_size": 0}, {"batch_size"}),
        ({"batch_size": -1}, {"batch_size"}),
        ({"batch_size": 10_001}, {"batch_size"}),
        ({"batch_size": True}, {"batch_size"}),
        ({"batch_size": 2.0}, {"batch_size"}),
        ({"batch_size": "2"}, {"batch_size"}),
        ({"batch_size": None}, {"batch_size"}),
        ({"older_than": timedelta(days=-1), "batch_size": 0}, {"older_than", "batch_size"}),
    ],
)
def test_bad_arguments_raise_validation_error_by_field_and_delete_nothing(mix, kwargs, fields):
    before = snapshot()
    with pytest.raises(ValidationError) as error:
        services.prune_tokens(**{"older_than": timedelta(days=90), **kwargs})
    assert set(error.value.message_dict) == fields
    assert snapshot() == before


@pytest.mark.parametrize("batch_size", [1, 10_000])
def test_batch_size_limits_are_inclusive(mix, batch_size):
    assert services.prune_tokens(older_than=timedelta(days=90), batch_size=batch_size).tokens == 2


# --- the command ------------------------------------------------------------------------


def test_command_prunes_with_default_90_days_and_prints_one_summary_line(mix):
    out = run()
    assert out == (
        "Pruned 2 tokens that ended before 2030-01-11T12:00:00+00:00; 3 audit events kept.\n"
    )
    assert set(APIToken.objects.all()) == {t for name, t in mix.items() if name not in PRUNED}


def test_command_dry_run_prints_count_and_deletes_nothing(mix):
    before = snapshot()
    out = run("--dry-run")
    assert out == (
        "Would prune 2 tokens that ended before 2030-01-11T12:00:00+00:00; nothing was deleted.\n"
    )
    assert snapshot() == before


def test_command_says_one_token_and_one_event_in_the_singular(alice, issue, clock):
    ended_long_ago(issue, alice, clock, 1)
    assert run() == (
        "Pruned 1 token that ended before 2030-01-11T12:00:00+00:00; 1 audit event kept.\n"
    )
    assert run() == (
        "Pruned 0 tokens that ended before 2030-01-11T12:00:00+00:00; 0 audit events kept.\n"
    )


@pytest.mark.parametrize(
    ("value", "cutoff"),
    [
        ("30d", "2030-03-12T12:00:00+00:00"),
        ("12w", "2030-01-17T12:00:00+00:00"),
        ("36h", "2030-04-10T00:00:00+00:00"),
        (" 0 ", "2030-04-11T12:00:00+00:00"),
        ("0", "2030-04-11T12:00:00+00:00"),
    ],
)
def test_command_older_than_sets_the_cutoff(mix, value, cutoff):
    assert f"ended before {cutoff};" in run(f"--older-than={value}", "--dry-run")


def test_command_older_than_zero_prunes_every_ended_token(mix):
    assert run("--older-than", "0").startswith("Pruned 4 tokens ")
    assert set(APIToken.objects.all()) == {mix["never_expires"], mix["active"]}


def test_command_batch_size_prunes_everything(alice, issue, clock):
    ended_long_ago(issue, alice, clock, 5)
    assert run("--batch-size", "2").startswith("Pruned 5 tokens ")
    assert APIToken.objects.count() == 0


def test_command_accepts_batch_size_as_keyword(alice, issue, clock):
    ended_long_ago(issue, alice, clock, 3)
    assert run(batch_size=1, older_than="90d").startswith("Pruned 3 tokens ")


def test_command_shows_progress_on_a_terminal(alice, issue, clock):
    ended_long_ago(issue, alice, clock, 5)
    tty = TTY()
    out = run("--batch-size=2", stderr=tty)
    assert tty.getvalue() == "\rpruned 2/5 tokens\rpruned 4/5 tokens\rpruned 5/5 tokens\n"
    assert out.startswith("Pruned 5 tokens ")
    assert "\r" not in out


# run_from_argv closes every database connection when it ends, as manage.py does; on
# PostgreSQL that ends the test's own transaction, so these tests commit (transaction=True).
@pytest.mark.django_db(transaction=True)
def test_command_progress_is_not_painted_as_an_error(alice, issue, clock):
    # Django styles a command's stderr with its ERROR colour; progress is not an error.
    ended_long_ago(issue, alice, clock, 1)
    tty, out = TTY(), StringIO()
    command = Command(stdout=out, stderr=tty, force_color=True)
    command.run_from_argv(["manage.py", "prune_tokens"])
    assert tty.getvalue() == "\rpruned 1/1 tokens\n"
    assert out.getvalue().startswith("Pruned 1 token ")


def test_command_ends_the_progress_line_when_rows_vanish_meanwhile(alice, issue, clock):
    # Another process deletes a token after the count: the run stops short of the total.
    tokens = ended_long_ago(issue, alice, clock, 5)

    class RacingTTY(TTY):
        def write(self, text: str) -> int:
            APIToken.objects.filter(pk=tokens[-1].pk).delete()
            return super().write(text)

    tty = RacingTTY()
    out = run("--batch-size=2", stderr=tty)
    assert tty.getvalue() == "\rpruned 2/5 tokens\rpruned 4/5 tokens\n"
    assert out.startswith("Pruned 4 tokens ")


def test_command_shows_no_progress_when_stderr_is_not_a_terminal(alice, issue, clock):
    ended_long_ago(issue, alice, clock, 5)
    err = StringIO()
    run("--batch-size=2", stderr=err)
    assert err.getvalue() == ""


@pytest.mark.parametrize("args", [(), ("--dry-run",)])
def test_command_shows_no_progress_on_a_terminal_when_nothing_is_deleted(mix, args):
    tty = TTY()
    run("--older-than=9999d", *args, stderr=tty)
    run("--dry-run", stderr=tty)
    assert tty.getvalue() == ""


BAD_OLDER_THAN = ["abc", "-5d", "90x", "", " ", "0d", "90", "1.5d", "90D", "00", "-0"]
BAD_BATCH_SIZE = ["0", "-1", "10001", "x", "", "1.5", "1e3", "1_000", "٣"]


@pytest.mark.parametrize("value", BAD_OLDER_THAN)
def test_command_bad_older_than_fails_on_one_line_and_deletes_nothing(mix, value):
    before = snapshot()
    with pytest.raises(CommandError, match=re.escape(f"--older-than: invalid duration {value!r}")):
        run(f"--older-than={value}")
    assert snapshot() == before


@pytest.mark.parametrize("value", BAD_BATCH_SIZE)
def test_command_bad_batch_size_fails_on_one_line_and_deletes_nothing(mix, value):
    before = snapshot()
    with pytest.raises(CommandError) as error:
        run(f"--batch-size={value}")
    assert str(error.value) == (
        f"invalid --batch-size {value!r}: Give a whole number from 1 to 10000."
    )
    assert snapshot() == before


def test_command_bad_batch_size_as_keyword_fails(mix):
    with pytest.raises(CommandError, match=r"^invalid --batch-size 0: Give a whole number"):
        run(batch_size=0)


def test_command_reports_both_bad_options_on_one_line(mix):
    before = snapshot()
    with pytest.raises(CommandError) as error:
        run("--older-than=abc", "--batch-size=0")
    assert "\n" not in str(error.value)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than=-5d"], "--older-than: invalid duration '-5d'"),
        (["--batch-size=10001"], "invalid --batch-size '10001': Give a whole number"),
        (["--batch-size"], "argument --batch-size: expected one argument"),
        (["--older-than", "90d", "extra"], "unrecognized arguments: extra"),
    ],
)
@pytest.mark.django_db(transaction=True)  # see test_command_progress_is_not_painted_as_an_error
def test_command_line_error_is_one_stderr_line_exit_non_zero(mix, capsys, args, message):
    before = snapshot()
    assert command_line("prune_tokens", *args) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert message in captured.err
    assert snapshot() == before


def test_command_help_explains_what_is_kept(capsys):
    assert command_line("prune_tokens", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("revoked or expired", "audit events are kept", "--dry-run", "--batch-size"):
        assert part in text


# --- a real manage.py process -----------------------------------------------------------

SEED = """
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from tokens_app import services
from tokens_app.models import APIToken
al = User.objects.create_user("al")
old = services.issue_token(al, name="old", scopes=["notes:read"]).token
services.revoke_token(old, reason="left the team")
APIToken.objects.filter(pk=old.pk).update(revoked_at=timezone.now() - timedelta(days=200))
services.issue_token(al, name="live", scopes=["notes:read"])
"""
SUMMARY = r"ended before \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


def manage_on_tty(manage: Any, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run *manage* with stderr on a pseudo-terminal; return the result and what it showed."""
    leader, follower = pty.openpty()
    try:
        result = manage(*args, stderr=follower)
    finally:
        os.close(follower)
    shown = b""
    with suppress(OSError):  # EIO once the child's side is closed and drained
        while chunk := os.read(leader, 4096):
            shown += chunk
    os.close(leader)
    return result, shown.decode()


def test_manage_py_prune_tokens_in_a_child_process(tmp_path):
    db = tmp_path / "db.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }

    def manage(*args: str, stderr: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
        return live.run_python(
            "manage.py", *args, env=env, stdout=subprocess.PIPE, stderr=stderr, timeout=120
        )

    def rows() -> tuple[int, int, int]:
        with closing(sqlite3.connect(db)) as con:
            return (
                con.execute("SELECT COUNT(*) FROM tokens_app_apitoken").fetchone()[0],
                con.execute("SELECT COUNT(*) FROM tokens_app_tokenevent").fetchone()[0],
                con.execute(
                    "SELECT COUNT(*) FROM tokens_app_tokenevent WHERE token_id IS NULL"
                ).fetchone()[0],
            )

    for args in (("migrate", "-v0"), ("shell", "-c", SEED)):
        result = manage(*args)
        assert result.returncode == 0, result.stderr
    assert rows() == (2, 3, 0)

    dry = manage("prune_tokens", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert re.fullmatch(f"Would prune 1 token that {SUMMARY}; nothing was deleted.\n", dry.stdout)
    assert "\r" not in dry.stderr  # not a terminal: no progress
    assert rows() == (2, 3, 0)

    # stderr on a terminal: progress, and its line is ended before the log line comes.
    real, err = manage_on_tty(manage, "prune_tokens", "--batch-size", "1")
    assert real.returncode == 0, err
    assert re.fullmatch(f"Pruned 1 token that {SUMMARY}; 2 audit events kept.\n", real.stdout)
    assert "\rpruned 1/1 tokens\r\n" in err  # the terminal turns \n into \r\n
    assert "tokensPruned" not in err
    assert rows() == (1, 3, 2)

    bad = manage("prune_tokens", "--older-than", "90x")
    assert bad.returncode != 0
    assert bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1, bad.stderr
    assert "--older-than: invalid duration '90x'" in bad.stderr
    assert rows() == (1, 3, 2)
