"""What the token commands share: one-line errors and user look-up."""

import argparse
import json
from typing import Any, NoReturn

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tokens_app.models import APIToken


def _error_without_usage(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    # Operators script these commands: an error is one line on stderr, no usage dump.
    parser.exit(2, f"{parser.prog}: error: {message}\n")


class TokenCommand(BaseCommand):
    """Base for the token commands: errors are a single line on stderr."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        if parser.called_from_command_line:
            parser.error = lambda message: _error_without_usage(parser, message)  # type: ignore[method-assign]
        return parser

    def get_user(self, username: str) -> Any:
        """Return the user called *username* or fail with a clear ``CommandError``."""
        user_model = get_user_model()
        try:
            return user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"user {username!r} does not exist") from None


def validation_message(error: ValidationError) -> str:
    """Flatten a service ``ValidationError`` into one line for stderr."""
    if hasattr(error, "error_dict"):
        parts = [
            f"{field}: {message}" if field != "__all__" else str(message)
            for field, messages in error.message_dict.items()
            for message in messages
        ]
    else:
        parts = [str(message) for message in error.messages]
    return " ".join(parts).replace("\n", " ")


def token_as_dict(token: APIToken) -> dict[str, Any]:
    """Return the public metadata of *token* (never the hash, never a secret)."""
    return {
        "key_id": token.key_id,
        "owner": token.owner.get_username(),
        "name": token.name,
        "description": token.description,
        "scopes": list(token.scopes),
        "status": token.status().value,
        "created_at": token.created_at.isoformat(),
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "last_used_ip": token.last_used_ip,
        "allowed_ips": list(token.allowed_ips),
        "rate_limit": token.rate_limit or None,
    }


def dumps(value: Any) -> str:
    """Return *value* as one line of JSON."""
    return json.dumps(value, sort_keys=True)
