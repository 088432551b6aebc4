"""Expiry notices that fail: a mail server down, one owner refused, bad input refused."""

import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import command_line
from tests.notices.helpers import WEEK, expiring, notices, run, snapshot
from tokens_app import services

pytestmark = pytest.mark.django_db


# --- failures ---------------------------------------------------------------------------


def test_a_failing_mail_server_records_nothing_and_the_command_fails(
    alice, bob, issue, clock, settings
):
    settings.EMAIL_BACKEND = "tests.notices.backends.FailingBackend"
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
    settings.EMAIL_BACKEND = "tests.notices.backends.FailingForBobBackend"
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
    settings.EMAIL_BACKEND = "tests.notices.backends.FailingBackend"
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
