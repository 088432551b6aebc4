"""Shared fixtures: users, a movable clock, token issuing and an API client; the profiles.

The suite runs twice (``make test``): on the embedded default (SQLite, local memory)
and on the production profile (PostgreSQL, Redis). Tests marked ``production_profile``
need the second (real processes sharing one database and one cache) and say so when
skipped in the first.
"""

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.cache import caches
from django.core.management import load_command_class
from django.test import Client
from rest_framework.test import APIClient

from tokens_app import services
from tokens_app.core import clock as clock_module
from tokens_app.models import APIToken, TokenEvent


def is_production_profile() -> bool:
    """True when the suite runs on PostgreSQL and Redis."""
    engine = settings.DATABASES["default"]["ENGINE"]
    backend = settings.CACHES["default"]["BACKEND"]
    return engine.endswith("postgresql") and backend.endswith("RedisCache")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "production_profile: needs PostgreSQL and Redis (make test-production)"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    # make test-production asks for this profile: never let it quietly run another one.
    if os.environ.get("TOKENS_APP_TEST_PROFILE") == "production" and not is_production_profile():
        pytest.exit(
            "TOKENS_APP_TEST_PROFILE=production needs DATABASE_URL=postgres://... "
            "and REDIS_URL=redis://...",
            returncode=2,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_production_profile():
        return
    skip = pytest.mark.skip(
        reason="production profile only: runs in `make test-production` (PostgreSQL + Redis)"
    )
    for item in items:
        if item.get_closest_marker("production_profile"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Every test starts with empty caches: rate-limit counters never leak between tests.

    In the production profile the cache is a Redis database of its own (``/15`` in
    ``make test-production``), shared with the servers the multi-process tests start.
    """
    for alias in settings.CACHES:
        caches[alias].clear()
    yield


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


def command_line(command: str, *args: str) -> Any:
    """Run a tokens_app command as ``manage.py`` does from a shell; return its exit status.

    Unlike ``call_command``, this goes through ``run_from_argv``: argument errors and
    ``CommandError`` become one line on stderr and a ``SystemExit``, as operators see them.
    The command must end by exiting (an error, ``--help``, or its own exit status).
    """
    with pytest.raises(SystemExit) as exit_info:
        load_command_class("tokens_app", command).run_from_argv(["manage.py", command, *args])
    return exit_info.value.code


# --- the admin ------------------------------------------------------------------------------

#: What staff need to use the token console at all (manage-all is on top of these).
MODEL_PERMISSIONS = ("add_apitoken", "change_apitoken", "view_apitoken", "view_tokenevent")


def grant(user: Any, *codenames: str) -> Any:
    """Give *user* these permissions of any app; return the user."""
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def limited(staff: Any) -> Any:
    """Staff with the model permissions but without the manage-all right."""
    return grant(staff, *MODEL_PERMISSIONS)


@pytest.fixture
def manager(django_user_model: Any) -> Any:
    """Staff who is no superuser but holds the manage-all permission."""
    user = django_user_model.objects.create_user("manager", "m@example.com", "pw", is_staff=True)
    return grant(user, *MODEL_PERMISSIONS, "manage_all_tokens")


def admin_client(user: Any) -> Client:
    """A browser-like client logged in as *user*."""
    client = Client()
    client.force_login(user)
    return client


def issue_data(owner: Any, **overrides: Any) -> dict[str, Any]:
    """The admin issue form for *owner*, filled in with defaults, with *overrides*."""
    data = {
        "owner": owner.pk,
        "name": "ci",
        "description": "",
        "scopes": ["notes:read"],
        "expiry": "30",
        "allowed_ips": "",
        "rate_limit": "",
    }
    return {**data, **overrides}


def change_data(token: APIToken, **overrides: Any) -> dict[str, Any]:
    """The admin change form of *token* as submitted unchanged, with *overrides*."""
    data = {
        "name": token.name,
        "description": token.description,
        "scopes": list(token.scopes),
        "allowed_ips": "\n".join(token.allowed_ips),
        "rate_limit": token.rate_limit,
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": str(TokenEvent.objects.filter(token=token).count()),
        "events-MIN_NUM_FORMS": "0",
        "events-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    return {**data, **overrides}
