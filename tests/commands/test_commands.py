"""The token commands' shared base: errors as one line on stderr, a real shell, help text.

Each command has its module: ``test_issue_token.py``, ``test_revoke_token.py``,
``test_list_tokens.py``.
"""

import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from django.core.management import load_command_class

from tests import live
from tests.commands.helpers import argv
from tests.helpers import command_line, counts
from tokens_app.core import tokenstring

pytestmark = pytest.mark.django_db


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
        return live.run_python("manage.py", *args, env=self.env, timeout=120)

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
