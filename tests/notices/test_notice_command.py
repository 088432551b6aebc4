"""``manage.py notify_expiring_tokens``: its output, the result and log, a real process."""

import logging
import os
import re
import sqlite3
import subprocess
from contextlib import closing
from dataclasses import FrozenInstanceError
from datetime import timedelta

import pytest

from tests import live
from tests.helpers import command_line
from tests.notices.helpers import WEEK, expiring, run, snapshot
from tokens_app import services

pytestmark = pytest.mark.django_db


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
        return live.run_python("manage.py", *args, env={**env, **extra_env}, timeout=120)

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
        DJANGO_EMAIL_BACKEND="tests.notices.backends.FailingBackend",
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
