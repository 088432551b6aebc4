"""Plain helpers and constants shared by the test modules; the fixtures are in ``conftest.py``.

Each is defined once, here: a path, an answer or a request that several modules need
changes in one place. Helpers that one feature folder alone uses stay in that folder.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.management import load_command_class
from django.db import OperationalError
from django.test import Client
from rest_framework.test import APIClient

from tokens_app.models import APIToken, TokenEvent

#: The repository: ``manage.py``, the fixtures and the examples.
ROOT = Path(__file__).resolve().parent.parent

# --- the example project's endpoints --------------------------------------------------------

NOTES = "/api/notes/"
WHOAMI = "/api/whoami/"
TOKENS = "/api/tokens/"
MINT = "/api/auth/jwt/"
EXCHANGE = "/api/auth/token/"
ADMIN_LIST = "/admin/tokens_app/apitoken/"
ADMIN_ADD = f"{ADMIN_LIST}add/"

# --- what the server answers ----------------------------------------------------------------

INVALID_BODY = {"detail": "Invalid token."}
#: The RFC 9728 document's URL, which every 401 challenge names (as the test client's host).
RESOURCE_METADATA = 'resource_metadata="http://testserver/.well-known/oauth-protected-resource"'
NO_CREDENTIALS_CHALLENGE = f'Bearer realm="api", {RESOURCE_METADATA}'
INVALID_CHALLENGE = f'Bearer realm="api", error="invalid_token", {RESOURCE_METADATA}'
UNAVAILABLE = {"detail": "The service is temporarily unavailable. Try again shortly."}
ISSUER = "tokens_app-example"  # JWT_ISSUER of the example project

# --- values the tests start from ------------------------------------------------------------

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # where the ``clock`` fixture starts
HOME = "10.0.0.1"  # a client address inside 10.0.0.0/8, for requests that must get through
PREFIX = "tka"  # the default TOKEN_PREFIX
SECRET = "0123456789abcdefghijABCDEFGHIJxy"  # a well-formed 32-character secret
FAST_ARGON2 = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
DEAD_REDIS = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1: connection refused
    "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
}


def is_production_profile() -> bool:
    """True when the suite runs on PostgreSQL and Redis."""
    engine = settings.DATABASES["default"]["ENGINE"]
    backend = settings.CACHES["default"]["BACKEND"]
    return engine.endswith("postgresql") and backend.endswith("RedisCache")


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


# --- requests -------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def assert_invalid(response: Any) -> None:
    """The one answer to every unusable credential: 401, the challenge, the body."""
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == INVALID_CHALLENGE
    assert response.json() == INVALID_BODY


def detail_url(key_id: str) -> str:
    return f"{TOKENS}{quote(key_id, safe='')}/"


def exchange(
    api: APIClient,
    username: str = "alice",
    password: str = "pw-alice",
    *,
    ip: str = HOME,
    **fields: Any,
) -> Any:
    """Exchange a password for a ``notes:read`` token named "cli", from *ip*, with *fields*."""
    body = {"username": username, "password": password, "name": "cli", "scopes": ["notes:read"]}
    return api.post(EXCHANGE, {**body, **fields}, format="json", REMOTE_ADDR=ip)


def mint(api: APIClient, plaintext: str, **body: Any) -> Any:
    """Ask *api* to mint a JWT from the API token *plaintext*; return the response."""
    return api.post(MINT, body, format="json", **bearer(plaintext))


def mint_jwt(api: APIClient, plaintext: str, **body: Any) -> str:
    """Mint a JWT as ``mint`` does and return it; fail unless the server made one."""
    response = mint(api, plaintext, **body)
    assert response.status_code == 200, response.content
    return str(response.json()["access_token"])


def mint_from(plaintext: str, ip: str = HOME) -> Any:
    """Mint a JWT from client address *ip* on a fresh client; return the response.

    For tokens with an allow-list: ``mint`` comes from the test client's default address.
    """
    return APIClient().post(MINT, {}, format="json", REMOTE_ADDR=ip, **bearer(plaintext))


def mint_jwt_from(plaintext: str, ip: str = HOME) -> str:
    """Mint a JWT as ``mint_from`` does and return it; fail unless the server made one."""
    response = mint_from(plaintext, ip)
    assert response.status_code == 200, response.content
    return str(response.json()["access_token"])


# --- the database ---------------------------------------------------------------------------


def counts() -> tuple[int, int]:
    """Tokens and events stored: what a refused request must leave as it was."""
    return APIToken.objects.count(), TokenEvent.objects.count()


def database_down(execute: Any, sql: str, *args: Any) -> Any:
    """An execute wrapper (``connection.execute_wrapper``): every statement fails.

    Django's own instrumentation hook: as if the database server were gone.
    """
    raise OperationalError("could not connect to server: secret-internal-detail")


# --- commands and checks --------------------------------------------------------------------


def command_line(command: str, *args: str) -> Any:
    """Run a tokens_app command as ``manage.py`` does from a shell; return its exit status.

    Unlike ``call_command``, this goes through ``run_from_argv``: argument errors and
    ``CommandError`` become one line on stderr and a ``SystemExit``, as operators see them.
    The command must end by exiting (an error, ``--help``, or its own exit status).
    """
    with pytest.raises(SystemExit) as exit_info:
        load_command_class("tokens_app", command).run_from_argv(["manage.py", command, *args])
    return exit_info.value.code


def ids(messages: list[Any]) -> list[str | None]:
    """The ids of system-check messages, in order."""
    return [message.id for message in messages]


# --- the admin ------------------------------------------------------------------------------

#: What staff need to use the token console at all (manage-all is on top of these).
MODEL_PERMISSIONS = ("add_apitoken", "change_apitoken", "view_apitoken", "view_tokenevent")


def grant(user: Any, *codenames: str) -> Any:
    """Give *user* these permissions of any app; return the user."""
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


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


def form_errors(response: Any) -> dict[str, list[str]]:
    """The errors of the admin form on the page, field by field, as text."""
    context = response.context
    form = context["adminform"].form if "adminform" in context else context["form"]
    return {field: [str(m) for m in messages] for field, messages in form.errors.items()}
