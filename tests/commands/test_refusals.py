"""One translation of service refusals for every token command (``TokenCommand.execute``)."""

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from tokens_app import services
from tokens_app.management.base import TokenCommand


class Refusing(TokenCommand):
    """A command whose service refuses with whatever the test hands it."""

    option_fields = frozenset({"older_than"})

    def __init__(self, refusal: Exception) -> None:
        super().__init__()
        self.refusal = refusal

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than", default="9x")

    def handle(self, *args: Any, **options: Any) -> None:
        raise self.refusal


@pytest.mark.parametrize(
    ("refusal", "line"),
    [
        (ValidationError({"older_than": ["Too long."]}), "invalid --older-than '9x': Too long."),
        (ValidationError({"name": ["Taken.", "Too\nshort."]}), "name: Taken. name: Too short."),
        (ValidationError({"__all__": ["Both."]}), "Both."),
        (ValidationError("Plain."), "Plain."),
        (services.NotPermitted("Not yours."), "Not yours."),
    ],
)
def test_a_refusal_anywhere_in_handle_is_one_line(refusal, line):
    with pytest.raises(CommandError) as raised:
        call_command(Refusing(refusal))
    assert str(raised.value) == line


def test_other_errors_are_not_disguised_as_refusals():
    with pytest.raises(KeyError):
        call_command(Refusing(KeyError("bug")))
