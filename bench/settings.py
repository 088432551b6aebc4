"""Bench settings: the example project's, plus DRF's authtoken as the yardstick.

``BENCH_SMALL_URL`` and ``BENCH_LARGE_URL`` name two databases with the same schema, a
small token table and a large one; a router sends every query to the one the harness
has selected, so rows for both sizes interleave in one run.

``BENCH_TOKEN_CACHE`` (``postgresql`` or ``redis``) turns the token cache on for a whole
process: the gunicorn servers of the throughput and propagation runs. The in-process rows
switch it per row with ``override_settings`` instead.
"""

import os

import dj_database_url

from project.settings import *  # noqa: F403
from project.settings import API_TOKENS, INSTALLED_APPS, REST_FRAMEWORK

DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework.authtoken"]
ROOT_URLCONF = "bench.urls"
DATABASE_ROUTERS = ["bench.routing.SelectedDatabaseRouter"]


def _database(url: str) -> dict[str, object]:
    return {**dj_database_url.parse(url, conn_max_age=600)}


DATABASES = {
    "default": _database(os.environ["BENCH_SMALL_URL"]),
    "large": _database(os.environ.get("BENCH_LARGE_URL") or os.environ["BENCH_SMALL_URL"]),
}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # The JWT deny list: local memory for one row, Redis (when reachable) for another.
    "shared": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
if os.environ.get("BENCH_REDIS_URL"):
    CACHES["redis"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["BENCH_REDIS_URL"],
    }
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001", "django_ratelimit.E003"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_PAGINATION_CLASS": None}
LOGGING = {"version": 1, "disable_existing_loggers": True}
# Long enough to outlast a run: the JWTs are minted once, before the rounds.
API_TOKENS = {**API_TOKENS, "JWT_LIFETIME": "1h", "JWT_DENY_LIST_CACHE": "shared"}
CHANNEL = os.environ.get("BENCH_TOKEN_CACHE")
if CHANNEL:
    API_TOKENS["TOKEN_CACHE"] = CHANNEL
    if CHANNEL == "redis":
        API_TOKENS["TOKEN_CACHE_REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
