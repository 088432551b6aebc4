"""Shared fixtures: users, a movable clock, token issuing and an API client; the profiles.

Only fixtures and hooks live here: the plain helpers (``bearer``, the admin forms, the
paths, ``FakeClock``) are in ``tests/helpers.py``, imported like any module.

The suite runs twice (``make test``): on the embedded default (SQLite, local memory)
and on the production profile (PostgreSQL, Redis). Tests marked ``production_profile``
need the second (real processes sharing one database and one cache) and say so when
skipped in the first.
"""

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from rest_framework.test import APIClient

from tests.helpers import MODEL_PERMISSIONS, T0, FakeClock, grant, is_production_profile
from tokens_app import services
from tokens_app.core import clock as clock_module


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


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(T0)
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


# --- the admin ------------------------------------------------------------------------------


@pytest.fixture
def limited(staff: Any) -> Any:
    """Staff with the model permissions but without the manage-all right."""
    return grant(staff, *MODEL_PERMISSIONS)


@pytest.fixture
def manager(django_user_model: Any) -> Any:
    """Staff who is no superuser but holds the manage-all permission."""
    user = django_user_model.objects.create_user("manager", "m@example.com", "pw", is_staff=True)
    return grant(user, *MODEL_PERMISSIONS, "manage_all_tokens")
