"""What the token commands share: one-line errors, the one translation of refusals, user look-up."""

import argparse
import json
from typing import Any, NoReturn

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tokens_app.models import APIToken
from tokens_app.services import NotPermitted
from tokens_app.services.caller import COMMAND, Caller


def _error_without_usage(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    # Operators script these commands: an error is one line on stderr, no usage dump.
    parser.exit(2, f"{parser.prog}: error: {message}\n")


class TokenCommand(BaseCommand):
    """Base for the token commands: errors are a single line on stderr.

    A service's refusal raised anywhere in ``handle`` becomes that line here, once
    (:func:`refusal_message`), so the commands call services without a ``try``.
    """

    #: Who a command acts as: the operator, through the command line.
    caller: Caller = COMMAND
    #: Service fields that are this command's options: their errors name the option and value.
    option_fields: frozenset[str] = frozenset()

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except ValidationError as refusal:
            raise CommandError(refusal_message(refusal, options, self.option_fields)) from None
        except NotPermitted as refusal:
            raise CommandError(str(refusal.message)) from None

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


def refusal_message(
    error: ValidationError, options: dict[str, Any], option_fields: frozenset[str]
) -> str:
    """Flatten a service ``ValidationError`` into one line for stderr.

    A field that is one of *option_fields* reads ``invalid --the-option 'value': why``;
    another field ``field: why``; a refusal of no field only ``why``.
    """
    if hasattr(error, "error_dict"):
        by_field = list(error.message_dict.items())
    else:
        by_field = [("", error.messages)]
    parts = [
        _describe(field, str(message), options, option_fields)
        for field, messages in by_field
        for message in messages
    ]
    return " ".join(parts).replace("\n", " ")


def _describe(
    field: str, message: str, options: dict[str, Any], option_fields: frozenset[str]
) -> str:
    if field in option_fields:
        return f"invalid --{field.replace('_', '-')} {options[field]!r}: {message}"
    if field in ("", "__all__"):
        return message
    return f"{field}: {message}"


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
