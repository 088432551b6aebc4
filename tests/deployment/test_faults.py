"""Faults of the backing services: never an accepted request, never a stack trace.

Dead ports stand in for outages: nothing listens there, so every connection is refused.
The database fault runs a real gunicorn with ``DEBUG`` off; the cache fault points the
settings of this process at a dead Redis. Neither needs PostgreSQL or Redis running.
"""

from collections.abc import Iterator

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings

from tests import live
from tests.helpers import EXCHANGE, UNAVAILABLE, bearer, database_down, exchange
from tokens_app import conf
from tokens_app.core import tokenstring
from tokens_app.exceptions import RETRY_AFTER_SECONDS
from tokens_app.models import APIToken

INTERNALS = (b"Traceback", b"psycopg", b"OperationalError", b"connection", b"Error 111")


def dead_redis_caches() -> dict[str, dict[str, object]]:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{live.free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


def assert_generic_503(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 503
    assert headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert not any(internal in body for internal in INTERNALS), body


# --- the database is down: a real server, production settings -----------------------------


@pytest.fixture(scope="module")
def server_without_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.LiveServer]:
    log_dir = tmp_path_factory.mktemp("dead-db")
    static_root = log_dir / "static"
    static_root.mkdir()
    env = live.server_env(
        f"postgres://postgres@127.0.0.1:{live.free_port()}/test",
        None,
        DJANGO_STATIC_ROOT=str(static_root),
    )
    with live.gunicorn(env, log_dir, workers=2) as server:
        yield server


def well_formed_token() -> str:
    # Passes the checksum, so the server must ask the database about it.
    return tokenstring.assemble("tka", tokenstring.generate_key_id(), tokenstring.generate_secret())


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/notes/"), ("GET", "/api/whoami/"), ("GET", "/api/tokens/")]
)
def test_database_down_protected_endpoints_answer_json_503(server_without_database, method, path):
    answer = server_without_database.request(
        method, path, headers={"Authorization": f"Bearer {well_formed_token()}"}
    )
    assert_generic_503(answer.status, answer.headers, answer.body)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == UNAVAILABLE


def test_database_down_password_exchange_is_503_not_a_token(server_without_database):
    answer = server_without_database.request(
        "POST",
        EXCHANGE,
        payload={"username": "alice", "password": "pw", "name": "n", "scopes": ["notes:read"]},
    )
    assert_generic_503(answer.status, answer.headers, answer.body)
    assert "token" not in answer.json()


def test_database_down_admin_session_is_a_503_page(server_without_database):
    answer = server_without_database.request(
        "GET", "/admin/", headers={"Cookie": "sessionid=abcdefghijklmnopqrstuvwxyz012345"}
    )
    assert_generic_503(answer.status, answer.headers, answer.body)
    assert answer.headers["Content-Type"].startswith("text/html")


def test_database_down_garbage_is_still_401_and_liveness_still_200(server_without_database):
    garbage = server_without_database.request(
        "GET", "/api/notes/", headers={"Authorization": "Bearer tka_garbage"}
    )
    assert garbage.status == 401
    assert server_without_database.request("GET", "/health/").status == 200


def test_database_down_readiness_names_the_database_only(server_without_database):
    answer = server_without_database.request("GET", "/health/ready/")
    assert answer.status == 503
    assert answer.json() == {"status": "unavailable", "database": "unavailable", "cache": "ok"}


def test_database_down_leaves_the_traceback_in_the_server_log(server_without_database):
    server_without_database.request(
        "GET", "/api/whoami/", headers={"Authorization": f"Bearer {well_formed_token()}"}
    )
    assert "OperationalError" in server_without_database.log_text()


# --- the database fails inside this process: the admin and plain views -------------------


@pytest.mark.django_db
def test_database_fault_in_the_admin_is_a_503_page(client, superuser):
    client.force_login(superuser)
    with connection.execute_wrapper(database_down):
        response = client.get("/admin/tokens_app/apitoken/")
    assert_generic_503(response.status_code, dict(response.headers), response.content)
    assert b"secret-internal-detail" not in response.content


@pytest.mark.django_db
def test_readiness_is_200_when_database_and_cache_answer(client):
    response = client.get("/health/ready/")
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("status", "database", "cache")} == {
        "status": "ok",
        "database": "ok",
        "cache": "ok",
    }
    assert body.get("eviction", "ok") == "ok"  # with Redis: tests/throttling/test_caches.py
    assert "no-cache" in response["Cache-Control"]


def test_health_endpoints_accept_only_reads(client):
    assert client.post("/health/").status_code == 405
    assert client.post("/health/ready/").status_code == 405


# --- Redis is down: authentication goes on, rate-limited endpoints fail closed ------------


@pytest.mark.django_db
def test_redis_down_token_authentication_still_works(api, alice, issue):
    token = issue(alice, ["notes:read", "notes:write"]).plaintext
    with override_settings(CACHES=dead_redis_caches()):
        assert api.get("/api/notes/", **bearer(token)).status_code == 200
        created = api.post("/api/notes/", {"title": "t"}, format="json", **bearer(token))
        assert created.status_code == 201
        assert api.get("/api/whoami/", **bearer(token)).json()["username"] == "alice"


@pytest.mark.django_db
def test_redis_down_password_exchange_fails_closed_with_503(api, alice):
    with override_settings(CACHES=dead_redis_caches()):
        response = exchange(api, ip="127.0.0.1")
    assert_generic_503(response.status_code, dict(response.headers), response.content)
    assert response.json() == UNAVAILABLE
    assert not APIToken.objects.exists()


@pytest.mark.django_db
def test_redis_down_with_fail_open_policy_lets_the_exchange_through(api, alice):
    with override_settings(CACHES=dead_redis_caches(), RATELIMIT_FAIL_OPEN=True):
        response = exchange(api, ip="127.0.0.1")
    assert response.status_code == 201
    assert APIToken.objects.filter(owner=alice).count() == 1


@pytest.mark.django_db
def test_redis_down_readiness_names_the_cache_only(client):
    with override_settings(CACHES=dead_redis_caches()):
        response = client.get("/health/ready/")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "cache": "unavailable",
        # Nor can Redis's eviction settings be read (project/health.py): unknown, not ready.
        "eviction": "unknown",
        "redis": {"rate_limit": {"maxmemory": None, "maxmemory_policy": None}},
    }


def test_dummy_cache_as_rate_limit_store_is_e005(settings):
    # DummyCache "adds" every key and stores none: every attempt would be the first.
    dummy = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
    settings.CACHES = {**settings.CACHES, "default": dummy}
    assert [m.id for m in run_checks() if m.id.startswith("tokens_app.E")] == ["tokens_app.E005"]


# --- the policy settings are validated like every other setting ---------------------------


@pytest.mark.parametrize("value", ["False", 0, None, "yes"])
def test_fail_open_must_be_a_real_boolean(settings, value):
    settings.RATELIMIT_FAIL_OPEN = value
    with pytest.raises(ImproperlyConfigured, match="RATELIMIT_FAIL_OPEN must be True or False"):
        conf.token_settings()


@pytest.mark.parametrize("value", ["", None, 3])
def test_rate_limit_cache_must_name_an_alias(settings, value):
    settings.RATELIMIT_USE_CACHE = value
    with pytest.raises(ImproperlyConfigured, match="RATELIMIT_USE_CACHE must name"):
        conf.token_settings()


def test_rate_limit_cache_missing_from_caches_is_e004(settings):
    settings.RATELIMIT_USE_CACHE = "counters"
    errors = [m for m in run_checks() if m.id == "tokens_app.E004"]
    assert len(errors) == 1
    assert "'counters'" in errors[0].msg


def test_every_process_reads_the_policy_from_one_place(settings):
    assert conf.token_settings().rate_limit_fail_open is False
    settings.RATELIMIT_FAIL_OPEN = True
    assert conf.token_settings().rate_limit_fail_open is True
    assert conf.token_settings().rate_limit_cache == "default"
