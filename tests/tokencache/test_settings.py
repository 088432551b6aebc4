"""The token cache's settings and checks: every bad value named, a channel that cannot listen.

``TOKEN_CACHE*`` values are validated with the rest of ``API_TOKENS`` (an
``ImproperlyConfigured`` listing every problem, reported by ``manage.py check`` as
tokens_app.E001); E010 and E011 say when the chosen channel cannot be listened to.
"""

import os
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from tests import live
from tests.helpers import ids
from tokens_app import conf
from tokens_app.checks import check_settings, check_token_cache
from tokens_app.models import token_database

REDIS_URL = "redis://127.0.0.1:6379/13"

CHANNEL_PROBLEM = "TOKEN_CACHE must be None (off) or one of postgresql, redis"
URL_PROBLEM = "TOKEN_CACHE_REDIS_URL must be None or a redis://, rediss:// or unix:// URL"
SIZE_PROBLEM = "TOKEN_CACHE_SIZE must be a positive integer (entries per process)"
LAG_PROBLEM = "TOKEN_CACHE_MAX_LAG_MS must be a whole number of milliseconds from 10 to 1000"
TTL_CEILING_PROBLEM = "TOKEN_CACHE_TTL must be at most 1h (it bounds staleness from raw SQL)"
NEEDS_URL = "TOKEN_CACHE 'redis' needs TOKEN_CACHE_REDIS_URL"
URL_WITHOUT_REDIS = "TOKEN_CACHE_REDIS_URL is set but TOKEN_CACHE is not 'redis'"

INVALID = [
    ({"TOKEN_CACHE": "memcached"}, CHANNEL_PROBLEM),
    ({"TOKEN_CACHE": "Redis"}, CHANNEL_PROBLEM),
    ({"TOKEN_CACHE": ""}, CHANNEL_PROBLEM),
    ({"TOKEN_CACHE": True}, CHANNEL_PROBLEM),
    ({"TOKEN_CACHE": "redis", "TOKEN_CACHE_REDIS_URL": "http://127.0.0.1:6379/0"}, URL_PROBLEM),
    ({"TOKEN_CACHE": "redis", "TOKEN_CACHE_REDIS_URL": "127.0.0.1:6379"}, URL_PROBLEM),
    ({"TOKEN_CACHE": "redis", "TOKEN_CACHE_REDIS_URL": 6379}, URL_PROBLEM),
    ({"TOKEN_CACHE_TTL": "2h"}, TTL_CEILING_PROBLEM),
    ({"TOKEN_CACHE_TTL": timedelta(hours=1, seconds=1)}, TTL_CEILING_PROBLEM),
    ({"TOKEN_CACHE_TTL": "0s"}, "TOKEN_CACHE_TTL: invalid duration '0s'"),
    ({"TOKEN_CACHE_TTL": "60"}, "TOKEN_CACHE_TTL: invalid duration '60'"),
    ({"TOKEN_CACHE_TTL": 60}, "TOKEN_CACHE_TTL: invalid duration 60"),
    ({"TOKEN_CACHE_TTL": timedelta(0)}, "TOKEN_CACHE_TTL must be a positive duration"),
    ({"TOKEN_CACHE_TTL": timedelta(seconds=-1)}, "TOKEN_CACHE_TTL must be a positive duration"),
    ({"TOKEN_CACHE_SIZE": 0}, SIZE_PROBLEM),
    ({"TOKEN_CACHE_SIZE": -1}, SIZE_PROBLEM),
    ({"TOKEN_CACHE_SIZE": "10000"}, SIZE_PROBLEM),
    ({"TOKEN_CACHE_SIZE": 10.0}, SIZE_PROBLEM),
    ({"TOKEN_CACHE_SIZE": True}, SIZE_PROBLEM),
    ({"TOKEN_CACHE_MAX_LAG_MS": 9}, LAG_PROBLEM),
    ({"TOKEN_CACHE_MAX_LAG_MS": 1001}, LAG_PROBLEM),
    ({"TOKEN_CACHE_MAX_LAG_MS": 0}, LAG_PROBLEM),
    ({"TOKEN_CACHE_MAX_LAG_MS": "500"}, LAG_PROBLEM),
    ({"TOKEN_CACHE_MAX_LAG_MS": 500.0}, LAG_PROBLEM),
    ({"TOKEN_CACHE_MAX_LAG_MS": True}, LAG_PROBLEM),
    ({"TOKEN_CACHE": "redis"}, NEEDS_URL),
    ({"TOKEN_CACHE": "redis", "TOKEN_CACHE_REDIS_URL": None}, NEEDS_URL),
    ({"TOKEN_CACHE_REDIS_URL": REDIS_URL}, URL_WITHOUT_REDIS),
    ({"TOKEN_CACHE": "postgresql", "TOKEN_CACHE_REDIS_URL": REDIS_URL}, URL_WITHOUT_REDIS),
]


def problem_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        conf.load(raw)
    return str(excinfo.value)


def with_api_tokens(settings: Any, **changes: Any) -> None:
    settings.API_TOKENS = {**settings.API_TOKENS, **changes}


# --- values ---------------------------------------------------------------------------------


def test_the_cache_is_off_by_default_with_documented_defaults():
    loaded = conf.load({})
    assert loaded.token_cache is None
    assert loaded.token_cache_redis_url is None
    assert loaded.token_cache_ttl == timedelta(seconds=60)
    assert loaded.token_cache_size == 10_000
    assert loaded.token_cache_max_lag_ms == 500


def test_the_example_project_leaves_the_cache_off(settings):
    assert conf.token_settings().token_cache is None


@pytest.mark.parametrize(
    "raw",
    [
        {"TOKEN_CACHE": None},
        {"TOKEN_CACHE": "postgresql"},
        {"TOKEN_CACHE": "redis", "TOKEN_CACHE_REDIS_URL": REDIS_URL},
        {"TOKEN_CACHE": "redis", "TOKEN_CACHE_REDIS_URL": "rediss://cache.example.com:6380/0"},
        {"TOKEN_CACHE": "redis", "TOKEN_CACHE_REDIS_URL": "unix:///run/redis.sock?db=2"},
        {"TOKEN_CACHE_TTL": "1h", "TOKEN_CACHE_SIZE": 1, "TOKEN_CACHE_MAX_LAG_MS": 10},
        {"TOKEN_CACHE_TTL": timedelta(milliseconds=1), "TOKEN_CACHE_MAX_LAG_MS": 1000},
    ],
)
def test_valid_values_are_accepted(raw):
    loaded = conf.load(raw)
    assert loaded.token_cache == raw.get("TOKEN_CACHE")
    assert loaded.token_cache_redis_url == raw.get("TOKEN_CACHE_REDIS_URL")


def test_a_ttl_is_parsed_like_every_duration():
    assert conf.load({"TOKEN_CACHE_TTL": "90s"}).token_cache_ttl == timedelta(seconds=90)
    assert conf.load({"TOKEN_CACHE_TTL": "5m"}).token_cache_ttl == timedelta(minutes=5)


@pytest.mark.parametrize(("raw", "problem"), INVALID)
def test_each_invalid_value_is_named(raw, problem):
    message = problem_of(raw)
    assert message.startswith("API_TOKENS: ")
    assert problem in message


@pytest.mark.parametrize(("raw", "problem"), INVALID)
def test_each_invalid_value_is_a_settings_error_of_the_check(settings, raw, problem):
    with_api_tokens(settings, **raw)
    messages = check_settings(None)
    assert ids(messages) == ["tokens_app.E001"]
    assert problem in messages[0].msg
    assert check_token_cache(None) == []  # not reported twice


def test_every_problem_is_reported_at_once():
    message = problem_of(
        {"TOKEN_CACHE": "redis", "TOKEN_CACHE_SIZE": 0, "TOKEN_CACHE_MAX_LAG_MS": 5}
    )
    for problem in (NEEDS_URL, SIZE_PROBLEM, LAG_PROBLEM):
        assert problem in message


# --- E010 / E011: a channel that cannot be listened to --------------------------------------


def token_database_vendor() -> str:
    return str(connections[token_database()].vendor)


def test_postgresql_channel_on_sqlite_is_e010(settings):
    if token_database_vendor() != "sqlite":
        pytest.skip("the token database is not SQLite in this profile (embedded profile only)")
    with_api_tokens(settings, TOKEN_CACHE="postgresql")
    messages = check_token_cache(None)
    assert ids(messages) == ["tokens_app.E010"]
    assert "TOKEN_CACHE'] is 'postgresql' but the token database 'default' is sqlite" in (
        messages[0].msg
    )
    assert "LISTEN/NOTIFY needs PostgreSQL through psycopg 3" in messages[0].msg
    assert "TOKEN_CACHE = 'redis'" in messages[0].hint


def test_postgresql_channel_on_postgresql_passes(settings):
    if token_database_vendor() != "postgresql":
        pytest.skip("the token database is PostgreSQL in the production profile only")
    with_api_tokens(settings, TOKEN_CACHE="postgresql")
    assert check_token_cache(None) == []
    assert check_settings(None) == []


def test_postgresql_channel_without_psycopg_is_e010(settings, monkeypatch):
    # find_spec finds no module that sys.modules marks as absent: psycopg "not installed".
    with_api_tokens(settings, TOKEN_CACHE="postgresql")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert ids(check_token_cache(None)) == ["tokens_app.E010"]


def test_redis_channel_passes_on_either_database(settings):
    with_api_tokens(settings, TOKEN_CACHE="redis", TOKEN_CACHE_REDIS_URL=REDIS_URL)
    assert check_token_cache(None) == []
    assert check_settings(None) == []


def test_redis_channel_without_the_redis_package_is_e011(settings, monkeypatch):
    with_api_tokens(settings, TOKEN_CACHE="redis", TOKEN_CACHE_REDIS_URL=REDIS_URL)
    monkeypatch.setitem(sys.modules, "redis", None)
    messages = check_token_cache(None)
    assert ids(messages) == ["tokens_app.E011"]
    assert "'redis' but the redis package is missing" in messages[0].msg


def test_the_cache_off_needs_no_channel(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert check_token_cache(None) == []


# --- the example project: DJANGO_TOKEN_CACHE ------------------------------------------------


def project_env(**overrides: str) -> dict[str, str]:
    """The example project's settings with only *overrides* (not this suite's profile)."""
    inherited = ("DJANGO_", "API_TOKENS_", "DATABASE_URL", "REDIS_URL")
    env = {key: value for key, value in os.environ.items() if not key.startswith(inherited)}
    env.update(DJANGO_SETTINGS_MODULE="project.settings", **overrides)
    return env


def test_django_token_cache_selects_the_channel_and_its_redis_url():
    code = (
        "import django; django.setup(); from tokens_app.conf import token_settings as t; "
        "s = t(); print(s.token_cache, s.token_cache_redis_url)"
    )
    result = live.run_python(
        "-c", code, env=project_env(DJANGO_TOKEN_CACHE="redis", REDIS_URL=REDIS_URL), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis", REDIS_URL]


@pytest.mark.parametrize(
    ("env", "reported"),
    [
        ({"DJANGO_TOKEN_CACHE": "redis"}, NEEDS_URL),
        ({"DJANGO_TOKEN_CACHE": "memcached"}, CHANNEL_PROBLEM),
        ({"DJANGO_TOKEN_CACHE": "postgresql"}, "tokens_app.E010"),
    ],
)
def test_django_token_cache_mistakes_stop_manage_check(env, reported):
    # The project's default database is SQLite: 'postgresql' cannot listen there.
    result = live.run_python("manage.py", "check", env=project_env(**env), timeout=60)
    assert result.returncode != 0
    assert reported in result.stderr


def test_django_token_cache_postgresql_on_postgresql_passes_check():
    # `check` reads the settings; it does not connect to this database.
    env = project_env(
        DJANGO_TOKEN_CACHE="postgresql", DATABASE_URL="postgres://app@127.0.0.1:5432/app"
    )
    result = live.run_python("manage.py", "check", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
