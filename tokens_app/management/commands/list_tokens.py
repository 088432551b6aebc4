"""``manage.py list_tokens``: show token metadata (never secrets, never hashes)."""

from typing import Any

from django.core.management.base import CommandParser

from tokens_app import services
from tokens_app.core import labels
from tokens_app.management.base import TokenCommand, dumps, token_as_dict

_COLUMNS = ("key_id", "owner", "name", "status", "scopes", "expires_at", "last_used_at")


def _cell(value: Any) -> str:
    # Names are user-chosen, and rows named before today's rule may hold line breaks or
    # terminal escapes: one table line per token, nothing that acts on the terminal.
    if isinstance(value, list):
        return labels.label(",".join(value)) or "-"
    return "-" if value is None else labels.label(str(value))


class Command(TokenCommand):
    help = "List tokens with their status, scopes, expiry and last use."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Only this user's tokens.")
        parser.add_argument("--json", action="store_true", help="Print a JSON array.")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = self.get_user(options["user"]) if options["user"] else None
        rows = [token_as_dict(token) for token in services.tokens_for(owner).iterator()]
        if options["json"]:
            self.stdout.write(dumps(rows))
            return
        table = [list(_COLUMNS)] + [[_cell(row[c]) for c in _COLUMNS] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
        for line in table:
            self.stdout.write(
                "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            )
