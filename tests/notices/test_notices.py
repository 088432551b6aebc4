"""Expiry notices: the service, the email it sends and ``manage.py notify_expiring_tokens``."""

import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import FrozenInstanceError
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from tests.helpers import ROOT, T0, command_line
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.notices import _notify_owner

pytestmark = pytest.mark.django_db

WEEK = timedelta(days=7)
NOTICE = TokenEvent.Kind.EXPIRY_NOTICE


class FailingBackend(BaseEmailBackend):
    """A mail server that is down: every send raises, as an SMTP backend would."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        raise ConnectionRefusedError("mail server down")


class FailingForBobBackend(LocmemBackend):
    """Delivers to ``mail.outbox`` but refuses bob's address: one owner fails, not all."""

    def send_messages(self, messages: Sequence[EmailMessage]) -> int:
        if any("bob@example.com" in message.to for message in messages):
            raise OSError("mailbox bob@example.com unavailable\nsecond line")
        return super().send_messages(messages)


class SlowBackend(LocmemBackend):
    """Delivers, but slowly: long enough for a concurrent run to reach the same owner."""

    sending = threading.Event()

    def send_messages(self, messages: Sequence[EmailMessage]) -> int:
        self.sending.set()
        time.sleep(1)
        return super().send_messages(messages)


def run(*args: str) -> str:
    """Run notify_expiring_tokens in-process and return its stdout."""
    out = StringIO()
    call_command("notify_expiring_tokens", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def notices() -> list[tuple[str, dict[str, Any]]]:
    """Every expiry-notice event as (key id, detail), oldest first."""
    events = TokenEvent.objects.filter(kind=NOTICE).order_by("pk")
    return [(e.key_id, e.detail) for e in events]


def snapshot() -> tuple[int, int]:
    """What a run may change: mails sent and events written."""
    return len(mail.outbox), TokenEvent.objects.count()


def expiring(issue: Any, owner: Any, delta: timedelta, **kwargs: Any) -> Any:
    """Issue a token for *owner* that expires *delta* after T0."""
    return issue(owner, expires_at=T0 + delta, **kwargs)


def detail(token: APIToken, within: timedelta = WEEK) -> dict[str, Any]:
    assert token.expires_at is not None
    return {
        "within_seconds": int(within.total_seconds()),
        "expires_at": token.expires_at.isoformat(),
    }


# --- who is notified: the window --------------------------------------------------------


def test_window_is_active_tokens_expiring_after_now_and_at_most_within_later(
    alice, django_user_model, issue, clock, settings
):
    settings.API_TOKENS = {**settings.API_TOKENS, "ALLOW_NON_EXPIRING": True}
    just_inside = expiring(issue, alice, WEEK - timedelta(seconds=1)).token
    at_boundary = expiring(issue, alice, WEEK).token
    expiring(issue, alice, WEEK + timedelta(seconds=1))  # just outside
    issue(alice, never_expires=True)
    services.revoke_token(expiring(issue, alice, timedelta(days=2)).token)
    carol = django_user_model.objects.create_user("carol", "carol@example.com")
    expiring(issue, carol, timedelta(days=2))
    carol.is_active = False
    carol.save()
    clock.current = T0 - timedelta(days=2)
    expired = expiring(issue, alice, -timedelta(days=1)).token
    expires_now = expiring(issue, alice, timedelta(0)).token
    clock.current = T0
    assert not expired.is_usable(T0) and not expires_now.is_usable(T0)

    result = services.notify_expiring_tokens(within=WEEK)

    assert result.sent == (services.OwnerNotice("alice", (just_inside.key_id, at_boundary.key_id)),)
    assert (result.now, result.until, result.within_seconds) == (T0, T0 + WEEK, 604800)
    assert len(mail.outbox) == 1
    assert [key_id for key_id, _ in notices()] == [just_inside.key_id, at_boundary.key_id]


def test_nothing_expiring_sends_nothing(alice, issue, clock):
    expiring(issue, alice, timedelta(days=30))
    result = services.notify_expiring_tokens(within=WEEK)
    assert (result.owners_emailed, result.tokens_noticed, result.sent) == (0, 0, ())
    assert snapshot() == (0, 1)


# --- one email per owner, and what it says ---------------------------------------------


def test_one_email_per_owner_listing_all_their_due_tokens(alice, bob, issue, clock):
    a1 = expiring(issue, alice, timedelta(days=5), name="deploy").token
    a2 = expiring(issue, alice, timedelta(days=1), name="backup").token
    b1 = expiring(issue, bob, timedelta(days=3), name="ci").token

    result = services.notify_expiring_tokens(within=WEEK)

    assert result.sent == (
        services.OwnerNotice("alice", (a2.key_id, a1.key_id)),  # soonest first
        services.OwnerNotice("bob", (b1.key_id,)),
    )
    assert (result.owners_emailed, result.tokens_noticed) == (2, 3)
    assert [m.to for m in mail.outbox] == [["alice@example.com"], ["bob@example.com"]]
    alice_mail, bob_mail = mail.outbox
    assert alice_mail.subject == "Your API tokens expire soon"
    assert bob_mail.subject == "Your API token expires soon"
    for token in (a1, a2):
        assert token.name in alice_mail.body and token.key_id in alice_mail.body
    assert b1.key_id not in alice_mail.body and a1.key_id not in bob_mail.body
    assert alice_mail.body.index("backup") < alice_mail.body.index("deploy")


def test_email_names_the_token_its_expiry_and_how_to_replace_it_but_no_secret(
    alice, issue, clock, settings
):
    issued = expiring(issue, alice, timedelta(days=3), name="deploy: prod-eu @v2+")
    services.notify_expiring_tokens(within=WEEK)
    (message,) = mail.outbox
    body = message.body
    key_id = issued.token.key_id
    assert message.from_email == settings.DEFAULT_FROM_EMAIL
    assert body.startswith("Hello alice,\n")
    assert body.endswith("for each notice period.\n")
    assert "This API token of yours expires within 1 week:" in body
    assert f"- Token you named “deploy: prod-eu @v2+” (key id {key_id})\n" in body
    assert "Expires: 2030-01-04T12:00:00+00:00 (in 3 days)\n" in body
    assert "POST /api/tokens/" in body
    assert f"DELETE /api/tokens/{key_id}/" in body
    assert "DELETE /api/tokens/<key id>/" in body
    assert "Switch your clients to the new token." in body
    assert "a rotated token keeps its expiry date" in body
    assert "\xa0" not in body and "&amp;" not in body and "&lt;" not in body
    secret = issued.plaintext.rsplit("_", 1)[-1]
    for text in (body, message.subject):
        assert issued.plaintext not in text
        assert secret not in text
        assert issued.token.secret_hash not in text


def test_email_lists_several_tokens_each_with_its_own_expiry(alice, issue, clock):
    expiring(issue, alice, timedelta(days=2, hours=5), name="one")
    expiring(issue, alice, timedelta(hours=20), name="two")
    services.notify_expiring_tokens(within=timedelta(days=3))
    body = mail.outbox[0].body
    assert "These 2 API tokens of yours expire within 3 days:" in body
    assert "Expires: 2030-01-03T17:00:00+00:00 (in 2 days, 5 hours)" in body
    assert "Expires: 2030-01-02T08:00:00+00:00 (in 20 hours)" in body


def test_each_notified_token_gets_one_audit_event(alice, bob, issue, clock):
    a = expiring(issue, alice, timedelta(days=2)).token
    b = expiring(issue, bob, timedelta(days=6)).token
    run("--within", "7d")
    events = TokenEvent.objects.filter(kind=NOTICE).order_by("pk")
    assert [(e.token, e.key_id, e.actor, e.via, e.ip, e.created_at) for e in events] == [
        (a, a.key_id, None, "command", None, T0),
        (b, b.key_id, None, "command", None, T0),
    ]
    assert [e.detail for e in events] == [detail(a), detail(b)]
    assert events[0].get_kind_display() == "Expiry notice sent"


# --- idempotency: once per token per window --------------------------------------------


def test_second_run_of_the_same_window_sends_and_records_nothing(alice, bob, issue, clock):
    expiring(issue, alice, timedelta(days=2))
    expiring(issue, bob, timedelta(days=5))
    services.notify_expiring_tokens(within=WEEK)
    before = snapshot()
    assert before == (2, 4)
    result = services.notify_expiring_tokens(within=WEEK)
    assert (result.owners_emailed, result.tokens_noticed, result.failed) == (0, 0, ())
    assert snapshot() == before


def test_same_window_later_notifies_only_tokens_that_entered_it(alice, issue, clock):
    first = expiring(issue, alice, timedelta(days=5)).token
    second = expiring(issue, alice, timedelta(days=9)).token
    services.notify_expiring_tokens(within=WEEK)
    clock.advance(days=3)  # the second now expires in 6 days; the first stays notified
    result = services.notify_expiring_tokens(within=WEEK)
    assert result.sent == (services.OwnerNotice("alice", (second.key_id,)),)
    assert first.key_id not in mail.outbox[1].body
    assert [key_id for key_id, _ in notices()] == [first.key_id, second.key_id]


def test_a_different_window_notifies_again(alice, issue, clock):
    soon = expiring(issue, alice, timedelta(hours=12)).token
    later = expiring(issue, alice, timedelta(days=5)).token
    run("--within=7d")
    run("--within=1d")
    assert len(mail.outbox) == 2
    assert later.key_id not in mail.outbox[1].body
    assert notices() == [
        (soon.key_id, detail(soon)),
        (later.key_id, detail(later)),
        (soon.key_id, detail(soon, timedelta(days=1))),
    ]
    run("--within=7d")
    run("--within=24h")  # the same window as 1d, in other words
    assert snapshot() == (2, 2 + 3)


def test_a_token_whose_expiry_changed_is_notified_again(alice, issue, clock):
    token = expiring(issue, alice, timedelta(days=5)).token
    services.notify_expiring_tokens(within=WEEK)
    APIToken.objects.filter(pk=token.pk).update(expires_at=T0 + timedelta(days=4))
    token.refresh_from_db()
    result = services.notify_expiring_tokens(within=WEEK)
    assert result.tokens_noticed == 1
    assert notices()[-1] == (token.key_id, detail(token))


def test_notices_of_other_windows_or_unreadable_details_do_not_count(alice, issue, clock):
    token = expiring(issue, alice, timedelta(days=5)).token
    for odd in (
        ["not", "a", "dict"],
        {"within_seconds": 604800, "expires_at": "not a date"},
        {"within_seconds": 604800, "expires_at": None},
        {"within_seconds": 86400, "expires_at": detail(token)["expires_at"]},
        {},
    ):
        TokenEvent.objects.create(token=token, key_id=token.key_id, kind=NOTICE, detail=odd)
    TokenEvent.objects.create(
        token=token, key_id=token.key_id, kind="updated", detail=detail(token)
    )
    assert services.notify_expiring_tokens(within=WEEK).tokens_noticed == 1


def test_a_notice_recorded_meanwhile_by_another_run_is_not_sent_twice(alice, issue, clock):
    # Each owner's tokens are re-read under lock before sending: what another run
    # notified between this run's first read and the lock is left out.
    expiring(issue, alice, timedelta(days=2))
    services.notify_expiring_tokens(within=WEEK)
    before = snapshot()
    assert _notify_owner(alice, T0, T0 + WEEK, 604800, "command") == ()
    assert snapshot() == before


@pytest.mark.production_profile  # row locks: PostgreSQL; SQLite serialises whole transactions
@pytest.mark.django_db(transaction=True)  # two connections must see each other's commits
def test_concurrent_runs_notify_each_token_once(alice, issue, clock, settings):
    settings.EMAIL_BACKEND = "tests.notices.test_notices.SlowBackend"
    SlowBackend.sending.clear()
    token = expiring(issue, alice, timedelta(days=2)).token
    results: list[services.NoticeResult] = []

    def notify() -> None:
        try:
            results.append(services.notify_expiring_tokens(within=WEEK))
        finally:
            connection.close()

    first = threading.Thread(target=notify)
    first.start()
    assert SlowBackend.sending.wait(timeout=10)
    # The first run holds alice's token rows and is sending; the second reads her token
    # as due (the first has not committed), waits for the lock, then finds the notice.
    notify()
    first.join(timeout=30)
    assert sorted(r.owners_emailed for r in results) == [0, 1]
    assert [r.failed for r in results] == [(), ()]
    assert len(mail.outbox) == 1
    assert [key_id for key_id, _ in notices()] == [token.key_id]


# --- dry run ----------------------------------------------------------------------------


def test_dry_run_reports_and_neither_sends_nor_records(alice, bob, issue, clock):
    a = expiring(issue, alice, timedelta(days=2)).token
    bob.email = ""
    bob.save()
    b = expiring(issue, bob, timedelta(days=2)).token
    before = snapshot()
    result = services.notify_expiring_tokens(within=WEEK, dry_run=True)
    assert result.dry_run is True
    assert result.sent == (services.OwnerNotice("alice", (a.key_id,)),)
    assert result.skipped_without_email == (services.OwnerNotice("bob", (b.key_id,)),)
    assert snapshot() == before
    # Nothing was recorded, so the real run sends what the dry run announced.
    assert services.notify_expiring_tokens(within=WEEK).sent == result.sent


# --- owners without an email address ----------------------------------------------------


@pytest.mark.parametrize("email", ["", "   "])
def test_owner_without_email_is_skipped_reported_and_not_recorded(alice, bob, issue, clock, email):
    bob.email = email
    bob.save()
    b = expiring(issue, bob, timedelta(days=2)).token
    a = expiring(issue, alice, timedelta(days=2)).token
    result = services.notify_expiring_tokens(within=WEEK)
    assert result.skipped_without_email == (services.OwnerNotice("bob", (b.key_id,)),)
    assert result.sent == (services.OwnerNotice("alice", (a.key_id,)),)
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert [key_id for key_id, _ in notices()] == [a.key_id]
    # Once bob has an address, he is notified: nothing marked his token as done.
    bob.email = "bob@example.com"
    bob.save()
    assert services.notify_expiring_tokens(within=WEEK).sent == (
        services.OwnerNotice("bob", (b.key_id,)),
    )


# --- failures ---------------------------------------------------------------------------


def test_a_failing_mail_server_records_nothing_and_the_command_fails(
    alice, bob, issue, clock, settings
):
    settings.EMAIL_BACKEND = "tests.notices.test_notices.FailingBackend"
    a = expiring(issue, alice, timedelta(days=2)).token
    expiring(issue, bob, timedelta(days=3))
    before = snapshot()
    out = StringIO()
    with pytest.raises(CommandError) as error:
        call_command("notify_expiring_tokens", stdout=out, stderr=StringIO())
    assert str(error.value) == (
        "could not email 2 owners (alice, bob); nothing was recorded for them, "
        "so the next run retries"
    )
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Emailed 0 owners about 0 tokens expiring by ")
    assert lines[1] == (
        f"alice: not sent, ConnectionRefusedError: mail server down; 1 token ({a.key_id})"
    )
    assert snapshot() == before
    # The server is back: the next run sends everything.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert services.notify_expiring_tokens(within=WEEK).owners_emailed == 2


def test_one_owner_failing_does_not_stop_the_others(alice, bob, issue, clock, settings, caplog):
    settings.EMAIL_BACKEND = "tests.notices.test_notices.FailingForBobBackend"
    a = expiring(issue, alice, timedelta(days=2)).token
    b = expiring(issue, bob, timedelta(days=3)).token
    with caplog.at_level(logging.INFO, logger="tokens_app"):
        result = services.notify_expiring_tokens(within=WEEK)
    assert result.sent == (services.OwnerNotice("alice", (a.key_id,)),)
    assert result.failed == (
        services.NoticeFailure(
            "bob", (b.key_id,), "OSError: mailbox bob@example.com unavailable second line"
        ),
    )
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert [key_id for key_id, _ in notices()] == [a.key_id]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tokens_app"]
    assert messages[-2] == (
        logging.WARNING,
        f"Expiry notice to user pk={bob.pk} not sent: "
        "OSError: mailbox bob@example.com unavailable second line",
    )
    assert messages[-1] == (
        logging.INFO,
        "Sent expiry notices to 1 owners for 1 API tokens expiring by "
        "2030-01-08T12:00:00+00:00 (0 owners without email, 1 failed)",
    )


@pytest.mark.django_db(transaction=True)  # run_from_argv closes connections, as manage.py does
def test_command_line_failure_exits_non_zero(alice, issue, clock, settings, capsys):
    settings.EMAIL_BACKEND = "tests.notices.test_notices.FailingBackend"
    expiring(issue, alice, timedelta(days=2))
    assert command_line("notify_expiring_tokens") == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "CommandError: could not email 1 owner (alice); nothing was recorded for them, "
        "so the next run retries\n"
    )
    assert "alice: not sent, ConnectionRefusedError: mail server down" in captured.out
    assert notices() == []


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "within",
    [
        timedelta(0),
        timedelta(seconds=-1),
        timedelta(days=-7),
        timedelta(days=365, seconds=1),
        timedelta(days=400),
        timedelta(seconds=1, microseconds=1),
        timedelta(microseconds=1),
        7,
        "7d",
        None,
    ],
)
def test_bad_within_raises_validation_error_and_sends_nothing(alice, issue, clock, within):
    expiring(issue, alice, timedelta(days=2))
    before = snapshot()
    with pytest.raises(ValidationError) as error:
        services.notify_expiring_tokens(within=within)
    assert error.value.message_dict == {
        "within": ["Give a duration in whole seconds, more than zero and at most 365 days."]
    }
    assert snapshot() == before


@pytest.mark.parametrize("within", [timedelta(seconds=1), timedelta(days=365)])
def test_within_limits_are_inclusive(alice, issue, clock, within):
    expiring(issue, alice, within)
    assert services.notify_expiring_tokens(within=within).tokens_noticed == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0d", "--within: invalid duration '0d': use a positive whole number"),
        ("abc", "--within: invalid duration 'abc': use a positive whole number"),
        ("", "--within: invalid duration '': use a positive whole number"),
        ("-7d", "--within: invalid duration '-7d': use a positive whole number"),
        ("7", "--within: invalid duration '7': use a positive whole number"),
        (
            "400d",
            "invalid --within '400d': Give a duration in whole seconds, more than zero "
            "and at most 365 days.",
        ),
        ("53w", "invalid --within '53w': Give a duration in whole seconds"),
    ],
)
def test_command_bad_within_fails_on_one_line_and_changes_nothing(
    alice, issue, clock, value, message
):
    expiring(issue, alice, timedelta(days=2))
    before = snapshot()
    with pytest.raises(CommandError) as error:
        run(f"--within={value}")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
    assert snapshot() == before


@pytest.mark.django_db(transaction=True)  # run_from_argv closes connections, as manage.py does
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--within", "abc"], "--within: invalid duration 'abc'"),
        (["--within"], "argument --within: expected one argument"),
        (["extra"], "unrecognized arguments: extra"),
    ],
)
def test_command_line_error_is_one_stderr_line_exit_non_zero(
    alice, issue, clock, capsys, args, message
):
    expiring(issue, alice, timedelta(days=2))
    before = snapshot()
    assert command_line("notify_expiring_tokens", *args) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert message in captured.err
    assert snapshot() == before


# --- the command's output ---------------------------------------------------------------


def test_command_prints_a_summary_and_one_line_per_owner(
    alice, bob, django_user_model, issue, clock
):
    a1 = expiring(issue, alice, timedelta(days=1)).token
    a2 = expiring(issue, alice, timedelta(days=2)).token
    b = expiring(issue, bob, timedelta(days=3)).token
    carol = django_user_model.objects.create_user("carol")
    c = expiring(issue, carol, timedelta(days=4)).token
    assert run() == (
        "Emailed 2 owners about 3 tokens expiring by 2030-01-08T12:00:00+00:00; "
        "1 without an email address skipped, 0 failed.\n"
        f"alice: 2 tokens ({a1.key_id}, {a2.key_id})\n"
        f"bob: 1 token ({b.key_id})\n"
        f"carol: skipped, no email address; 1 token ({c.key_id})\n"
    )
    assert run() == (
        "Emailed 0 owners about 0 tokens expiring by 2030-01-08T12:00:00+00:00; "
        "1 without an email address skipped, 0 failed.\n"
        f"carol: skipped, no email address; 1 token ({c.key_id})\n"
    )


def test_command_says_one_owner_in_the_singular(alice, issue, clock):
    expiring(issue, alice, timedelta(hours=1))
    assert run("--within", "2h").startswith(
        "Emailed 1 owner about 1 token expiring by 2030-01-01T14:00:00+00:00; "
    )


def test_command_dry_run_prints_what_would_be_sent(alice, issue, clock):
    a = expiring(issue, alice, timedelta(days=2)).token
    before = snapshot()
    assert run("--dry-run", "--within=3d") == (
        "Would email 1 owner about 1 token expiring by 2030-01-04T12:00:00+00:00; "
        "0 without an email address skipped, 0 failed; nothing was sent or recorded.\n"
        f"alice: 1 token ({a.key_id})\n"
    )
    assert snapshot() == before


def test_command_output_holds_no_secret(alice, issue, clock):
    issued = expiring(issue, alice, timedelta(days=2))
    out = run()
    assert issued.token.key_id in out
    assert issued.plaintext not in out
    assert issued.plaintext.rsplit("_", 1)[-1] not in out


def test_command_help_explains_the_window_rule(capsys):
    assert command_line("notify_expiring_tokens", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("once per window", "sends nothing new", "--dry-run", "default 7d", "365d"):
        assert part in text


# --- the service's result and log -------------------------------------------------------


def test_result_is_frozen(alice, issue, clock):
    result = services.notify_expiring_tokens(within=WEEK, dry_run=True)
    with pytest.raises(FrozenInstanceError):
        result.sent = ()  # type: ignore[misc]


def test_dry_run_logs_one_info_line(alice, issue, clock, caplog):
    expiring(issue, alice, timedelta(days=2))
    with caplog.at_level(logging.INFO, logger="tokens_app"):
        services.notify_expiring_tokens(within=WEEK, dry_run=True)
    assert [r.getMessage() for r in caplog.records if r.name == "tokens_app"] == [
        "Dry run: would send expiry notices to 1 owners for 1 API tokens expiring by "
        "2030-01-08T12:00:00+00:00 (0 owners without email, 0 failed)"
    ]


# --- a real manage.py process -----------------------------------------------------------

SEED = """
from datetime import timedelta
from django.contrib.auth.models import User
from tokens_app import services
al = User.objects.create_user("al", "al@example.com")
services.issue_token(al, name="nightly", scopes=["notes:read"], expires_in=timedelta(days=3))
services.issue_token(al, name="later", scopes=["notes:read"], expires_in=timedelta(days=30))
"""
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


def test_manage_py_notify_expiring_tokens_in_a_child_process(tmp_path):
    db = tmp_path / "db.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    env.pop("DJANGO_EMAIL_BACKEND", None)  # the project's default: the console backend

    def manage(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def notices_in_db() -> int:
        with closing(sqlite3.connect(db)) as con:
            query = "SELECT COUNT(*) FROM tokens_app_tokenevent WHERE kind = 'expiry_notice'"
            return int(con.execute(query).fetchone()[0])

    for args in (("migrate", "-v0"), ("shell", "-c", SEED)):
        result = manage(*args)
        assert result.returncode == 0, result.stderr

    dry = manage("notify_expiring_tokens", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert re.fullmatch(
        f"Would email 1 owner about 1 token expiring by {ISO}; 0 without an email address "
        r"skipped, 0 failed; nothing was sent or recorded.\nal: 1 token \(\w+\)\n",
        dry.stdout,
    )
    assert notices_in_db() == 0

    real = manage("notify_expiring_tokens")
    assert real.returncode == 0, real.stderr
    # The console backend prints the email itself, then the command its summary.
    assert "Subject: Your API token expires soon" in real.stdout
    assert "To: al@example.com" in real.stdout
    assert "- Token you named “nightly” (key id " in real.stdout
    assert "later" not in real.stdout
    assert "POST /api/tokens/" in real.stdout
    assert re.search(
        f"\nEmailed 1 owner about 1 token expiring by {ISO}; 0 without an email address "
        r"skipped, 0 failed.\nal: 1 token \(\w+\)\n$",
        real.stdout,
    )
    assert notices_in_db() == 1

    again = manage("notify_expiring_tokens")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Emailed 0 owners about 0 tokens ")
    assert "Subject:" not in again.stdout
    assert notices_in_db() == 1

    wider = manage(
        "notify_expiring_tokens",
        "--within=31d",
        DJANGO_EMAIL_BACKEND="tests.notices.test_notices.FailingBackend",
    )
    assert wider.returncode == 1
    assert wider.stderr.splitlines()[-1] == (
        "CommandError: could not email 1 owner (al); nothing was recorded for them, "
        "so the next run retries"
    )
    assert "al: not sent, ConnectionRefusedError: mail server down; 2 tokens (" in wider.stdout
    assert notices_in_db() == 1

    bad = manage("notify_expiring_tokens", "--within", "400d")
    assert bad.returncode != 0
    assert bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1, bad.stderr
    assert "invalid --within '400d': Give a duration in whole seconds" in bad.stderr
    assert notices_in_db() == 1
