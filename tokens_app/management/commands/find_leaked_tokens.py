"""``manage.py find_leaked_tokens``: find this installation's tokens in files, logs or stdin.

Exit status, as ``grep`` and ``makemigrations --check`` have taught scripts to expect:
0 nothing found, 1 tokens found, 2 the scan could not be done. The finding is not an
error (it is the answer), so it is not a ``CommandError``; every failure is, and uses
status 2 like argparse's own usage errors, so a hook or CI job can tell "found" from
"could not look".
"""

import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from django.core.management.base import CommandError, CommandParser

from tokens_app import services
from tokens_app.management.base import TokenCommand, dumps
from tokens_app.services.leaks import UNVERIFIED

STDIN = "-"
STDIN_NAME = "<stdin>"
#: Tool and dependency directories: never the project's own text, often huge.
SKIPPED_DIRECTORIES = frozenset({".git", ".venv", "node_modules", "__pycache__"})
EXIT_FOUND = 1
EXIT_ERROR = 2


def _fail(message: str) -> CommandError:
    return CommandError(message, returncode=EXIT_ERROR)


def _files_under(directory: str) -> Iterator[str]:
    # Regular files only, symlinks not followed (no loops, nothing outside the tree,
    # nothing twice), in name order so reports are stable. Unlike os.walk, an
    # unreadable directory raises instead of being skipped in silence.
    with os.scandir(directory) as scanned:
        entries = sorted(scanned, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in SKIPPED_DIRECTORIES:
                yield from _files_under(entry.path)
        elif entry.is_file(follow_symlinks=False):
            yield entry.path


def _stdin_lines(stream: IO[str]) -> Iterator[str]:
    # Piped input can be anything (a diff with binary hunks, a log): decode the bytes
    # ourselves so a stray non-UTF-8 byte cannot end the scan.
    raw = getattr(stream, "buffer", None)
    if raw is None:
        yield from stream
    else:
        for line in raw:
            yield line.decode("utf-8", errors="replace")


def _open(path: str) -> Iterator[tuple[str, Iterable[str]]]:
    # Binary files are read as text with replacement characters: a token is ASCII and
    # is still found in them, and nothing is skipped for "looking binary".
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield path, handle


def _sources(paths: list[str], stdin: IO[str]) -> Iterator[tuple[str, Iterable[str]]]:
    """Yield ``(name, lines)`` for stdin, each file given and each file under each directory."""
    for path in paths:
        if path == STDIN:
            yield STDIN_NAME, _stdin_lines(stdin)
        elif os.path.isdir(path):
            for file in _files_under(path):
                yield from _open(file)
        else:
            yield from _open(path)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class Command(TokenCommand):
    help = (
        "Find tokens of this installation in files, directories (recursively; .git, .venv, "
        "node_modules and __pycache__ skipped) or standard input (-). A token is recognised "
        "by its exact format and checksum; only its key id is printed, never the secret. "
        "Each finding's secret is verified against the database, and the finding reported "
        "with a status: active, expired, revoked, owner_inactive (the token's, verified), "
        "retired (a secret a rotation replaced, no longer accepted), unverified (a known key "
        "id whose secret does not match: a look-alike, never revoked) or unknown (not issued "
        "here). --revoke revokes the verified active, expired and owner_inactive tokens "
        "(reason 'leaked'); --offline checks the checksum only and never touches the "
        "database, so findings have no status, for pre-commit hooks. Exit status: 0 nothing "
        "found, 1 tokens found, 2 error (bad arguments, missing or unreadable path)."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "paths",
            metavar="PATH",
            nargs="+",
            help="File or directory to scan, or - for standard input.",
        )
        parser.add_argument(
            "--revoke",
            action="store_true",
            help="Revoke every token found whose secret verified (active, expired or "
            "owner_inactive), with reason 'leaked'. Look-alikes revoke nothing.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help='Print one JSON object: {"findings": [{"path", "line", "key_id", "status"}], '
            '"revoked": [key ids]}; status is null under --offline.',
        )
        parser.add_argument(
            "--offline",
            action="store_true",
            help="Checksum only, no database: nothing is verified, so findings have no "
            "status (null in --json). Not with --revoke.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        offline, revoke = options["offline"], options["revoke"]
        if offline and revoke:
            raise _fail(
                "--revoke needs the database to verify each token; it cannot be used with --offline"
            )
        paths: list[str] = options["paths"]
        # Every path is checked before any is read, so a typo changes nothing.
        for path in paths:
            if path != STDIN and not os.path.exists(path):
                raise _fail(f"{path}: no such file or directory")
        # Under --offline not one query: the hook must work with no database at all.
        files, findings = self.scan(paths, options.get("stdin") or sys.stdin, verify=not offline)
        revoked = services.revoke_leaked(findings, caller=self.caller) if revoke else None
        if options["json"]:
            self.write_json(findings, revoked or [])
        else:
            self.write_text(files, findings, revoked, offline=offline)
        if findings:
            sys.exit(EXIT_FOUND)

    def scan(
        self, paths: list[str], stdin: IO[str], *, verify: bool
    ) -> tuple[int, list[services.Finding]]:
        """Return how many files were read and what was found (and verified) in them."""
        files = 0

        def counted() -> Iterator[tuple[str, Iterable[str]]]:
            nonlocal files
            for source in _sources(paths, stdin):
                files += 1
                yield source

        try:
            findings = services.scan_sources(counted(), verify=verify)
        except OSError as exc:
            # Fail closed: "nothing found" must mean every file was read.
            raise _fail(f"cannot read {exc.filename or 'input'}: {exc.strerror or exc}") from None
        return files, findings

    def write_json(self, findings: list[services.Finding], revoked: list[str]) -> None:
        self.stdout.write(
            dumps(
                {
                    "findings": [
                        {
                            "path": finding.source,
                            "line": finding.line,
                            "key_id": finding.key_id,
                            "status": finding.status,
                        }
                        for finding in findings
                    ],
                    "revoked": revoked,
                }
            )
        )

    def write_text(
        self,
        files: int,
        findings: list[services.Finding],
        revoked: list[str] | None,
        *,
        offline: bool,
    ) -> None:
        """One line per finding, then a summary; *revoked* is ``None`` without --revoke."""
        for finding in findings:
            status = "" if finding.status is None else f" ({finding.status})"
            self.stdout.write(f"{finding.source}:{finding.line}: key id {finding.key_id}{status}")
        scanned = f"Scanned {_plural(files, 'file')}"
        if not findings:
            self.stdout.write(f"{scanned}: no tokens found.")
            return
        distinct = _plural(len({finding.key_id for finding in findings}), "key id")
        summary = f"{scanned}: found {_plural(len(findings), 'token')} ({distinct})."
        lookalikes = sum(finding.status == UNVERIFIED for finding in findings)
        if lookalikes:
            summary += (
                f" {_plural(lookalikes, 'look-alike')} (unverified: a known key id with a "
                "secret that is not its token's) left alone."
            )
        if offline:
            summary += " Checksum only: the database was not consulted."
        elif revoked is not None:
            names = f": {', '.join(revoked)}" if revoked else " (none was still unrevoked)"
            summary += f" Revoked {_plural(len(revoked), 'token')}{names}."
        self.stdout.write(summary)
