"""Fixtures several guardrails modules use."""

from typing import Any

import pytest

from tests.guardrails.helpers import set_tokens_setting


@pytest.fixture
def default_rate(settings: Any) -> str:
    set_tokens_setting(settings, DEFAULT_TOKEN_RATE="2/m")
    return "2/m"
