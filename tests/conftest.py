"""Shared fixtures: users, a movable clock, token issuing and an API client."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from tokens_app import clock as clock_module
from tokens_app import services


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))
    monkeypatch.setattr(clock_module, "now", fake)
    return fake


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw-alice")


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob")


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(
        "staff", "staff@example.com", "pw-staff", is_staff=True
    )


@pytest.fixture
def superuser(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root")


@pytest.fixture
def issue() -> Callable[..., services.IssuedToken]:
    """Issue a token through the service with sensible defaults."""
    counter = iter(range(1_000_000))

    def _issue(owner: Any, scopes: list[str] | None = None, **kwargs: Any) -> services.IssuedToken:
        kwargs.setdefault("name", f"token-{next(counter)}")
        return services.issue_token(owner, scopes=scopes or ["notes:read"], **kwargs)

    return _issue


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
