"""Helpers of the token command tests: running a command in-process, issue_token's arguments.

Not collected (no ``test_`` prefix).
"""

from io import StringIO
from typing import Any

from django.core.management import call_command

from tokens_app.core import tokenstring
from tokens_app.models import APIToken

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
