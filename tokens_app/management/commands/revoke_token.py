"""``manage.py revoke_token``: revoke one token, or every token of a user at once."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from tokens_app import services
from tokens_app.management.base import TokenCommand


class Command(TokenCommand):
    help = (
        "Revoke a token at once: name it by its key id, or paste the whole token (its "
        "secret is verified first: a look-alike with a wrong secret revokes nothing). "
        "Or revoke every token of a user: --user USERNAME --all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "reference",
            metavar="KEY_ID_OR_TOKEN",
            nargs="?",
            help="Key id, or full token (revoked only if its secret is this token's).",
        )
        parser.add_argument("--user", metavar="USERNAME", help="With --all: whose tokens.")
        parser.add_argument(
            "--all", action="store_true", help="With --user: revoke every token of that user."
        )
        parser.add_argument(
            "--reason", default="", help="Why it is revoked (kept in the audit trail)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        reference, username, every = options["reference"], options["user"], options["all"]
        if reference is not None and (username is not None or every):
            raise CommandError("give either KEY_ID_OR_TOKEN or --user USERNAME --all, not both")
        if reference is None and (username is None or not every):
            raise CommandError("give KEY_ID_OR_TOKEN, or --user USERNAME --all")
        if reference is None:
            self.revoke_all(username, options["reason"])
        else:
            self.revoke_one(reference, options["reason"])

    def revoke_one(self, reference: str, reason: str) -> None:
        try:
            token = services.find_token(reference)
        except services.UnverifiedToken as exc:
            # Key ids are public: a string built from one proves nothing. Name only the key id.
            raise CommandError(
                f"key id {exc.key_id}: the secret given is not this token's (a look-alike?); "
                "nothing was revoked"
            ) from None
        if token is None:
            raise CommandError("no token matches that key id or token")
        revoked = services.revoke_token(token, reason=reason, caller=self.caller)
        owner = token.owner.get_username()
        if revoked:
            self.stdout.write(f"Revoked token {token.key_id} ({token.name!r} of {owner}).")
        else:
            self.stdout.write(
                f"Token {token.key_id} ({token.name!r} of {owner}) was already revoked."
            )

    def revoke_all(self, username: str, reason: str) -> None:
        owner = self.get_user(username)
        count = services.revoke_all_tokens(owner, reason=reason, caller=self.caller)
        noun = "token" if count == 1 else "tokens"
        self.stdout.write(f"Revoked {count} {noun} of {owner.get_username()}.")
