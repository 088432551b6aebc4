"""Settings of the example project, driven by the environment.

``DATABASE_URL`` (default: SQLite under ``var/``), ``REDIS_URL`` (unset: local
memory cache), ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG`` (default on: this is a
demo; production sets ``DJANGO_DEBUG=0`` and must then give a secret key),
``DJANGO_ALLOWED_HOSTS`` (comma-separated), ``DJANGO_SECURE`` (HTTPS-only
cookies, HSTS, SSL redirect; default off), ``DJANGO_STATIC_ROOT`` (where
``collectstatic`` puts files; default ``var/static``), ``DJANGO_CORS_ALLOWED_ORIGINS``
(comma-separated web origins whose pages may call ``/api/``; default none),
``DJANGO_TOKEN_CACHE`` (``postgresql`` or ``redis``: the opt-in token cache, whose Redis
channel is ``REDIS_URL``; default off) and ``API_TOKENS_HASH_KEY``. README's "Deploying"
section explains each for production.
"""

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def env_flag(name: str, default: bool) -> bool:
    """Return the boolean value of environment variable *name*; reject anything unclear."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0, true/false, yes/no or on/off, not {value!r}.")


DEBUG = env_flag("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "django-insecure-example-project-development-only-key"  # noqa: S105

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if host.strip()
]

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
#: A web origin as browsers send it (RFC 6454): scheme, host (a name, an IPv4 address or a
#: bracketed IPv6 one) and an optional port; no path, no trailing slash, no wildcard.
ORIGIN = re.compile(
    rf"https?://(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?"
)

DEFAULT_PORTS = {"http": "80", "https": "443"}


def web_origin(value: str) -> str | None:
    """*value* written as browsers send it in ``Origin``, or ``None`` if it is not an origin.

    Lowercase and without a default port, since the middleware compares strings: a
    configured ``https://App.example.com:443`` would otherwise never match.
    """
    origin = value.strip().lower()
    match = ORIGIN.fullmatch(origin)
    if match is None or not 0 < int(match["port"] or 443) < 65536:
        return None
    if match["port"] == DEFAULT_PORTS[origin.partition("://")[0]]:
        origin = origin.removesuffix(f":{match['port']}")
    return origin


def env_origins(name: str) -> list[str]:
    """Return the comma-separated web origins of environment variable *name*; refuse others.

    A value that is not exactly an origin (a trailing slash or path, a wildcard, a missing
    scheme, a port out of range) would silently never match what browsers send, so it
    stops the start-up instead, naming the value. Blank entries are skipped, as in
    ``DJANGO_ALLOWED_HOSTS``.
    """
    origins = []
    for entry in filter(str.strip, os.environ.get(name, "").split(",")):
        origin = web_origin(entry)
        if origin is None:
            raise ImproperlyConfigured(
                f"{name} must list origins such as https://app.example.com (scheme, host and "
                f"optional port; no path, no trailing slash, no wildcard), not {entry.strip()!r}."
            )
        origins.append(origin)
    return origins


INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "corsheaders",
    "django_ratelimit",  # for its system checks on the rate-limit cache
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tokens_app",
    "project.notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything that answers on its own (503, 413, CommonMiddleware's redirects), so
    # those carry CORS headers too; it answers preflights itself, before any authentication.
    "corsheaders.middleware.CorsMiddleware",
    "project.middleware.ServiceUnavailableMiddleware",
    "project.middleware.APIRequestBodyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if not DEBUG:
    # Static files under gunicorn (`make serve`); with DEBUG on, runserver serves them.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _default_database_url() -> str:
    VAR_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{VAR_DIR / 'db.sqlite3'}"


#: Seconds a request waits for a dead database or cache before failing (closed) with a 503.
SERVICE_TIMEOUT_SECONDS = 3


def _database(url: str) -> dict[str, Any]:
    # Persistent connections. No CONN_HEALTH_CHECKS: they cost a `SELECT 1` round trip on
    # every request. After a database restart a worker's first request may answer 503
    # (fail closed); Django then drops the broken connection and the next one reconnects.
    database: dict[str, Any] = {**dj_database_url.parse(url, conn_max_age=60)}
    options = dict(database.get("OPTIONS") or {})
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # BEGIN IMMEDIATE: a transaction that checks then writes (the per-owner token
        # quota) holds the write lock from its first read, so threads cannot race it.
        options.setdefault("transaction_mode", "IMMEDIATE")
    elif database["ENGINE"] == "django.db.backends.postgresql":
        options.setdefault("connect_timeout", SERVICE_TIMEOUT_SECONDS)
    database["OPTIONS"] = options
    return database


DATABASES = {"default": _database(os.environ.get("DATABASE_URL") or _default_database_url())}

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    if importlib.util.find_spec("redis") is None:
        raise ImproperlyConfigured(
            "REDIS_URL is set but the redis package is missing: pip install 'tokens_app[redis]'."
        )
    REDIS_CACHE = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "socket_connect_timeout": SERVICE_TIMEOUT_SECONDS,
            "socket_timeout": SERVICE_TIMEOUT_SECONDS,
        },
    }
    CACHES = {"default": REDIS_CACHE, "shared": REDIS_CACHE}
else:
    # "default" holds the rate-limit counters of this one process (`make run`); "shared"
    # what every process must see (the JWT deny list: the server, `manage.py revoke_token`
    # and the admin may each be a different process), so even the embedded default keeps
    # it in files under var/, never in one process's memory. Django's own local-memory and
    # file caches would delete live entries past 300 (a flood of attempts or revocations
    # would erase a blocked client's counters or a revoked token's JWT deny-list entry):
    # these subclasses delete only expired ones (tokens_app/cache.py says what bounds them).
    CACHES = {
        "default": {"BACKEND": "tokens_app.cache.NonCullingLocMemCache"},
        "shared": {
            "BACKEND": "tokens_app.cache.NonCullingFileBasedCache",
            "LOCATION": str(Path(os.environ.get("DJANGO_CACHE_DIR") or VAR_DIR / "cache")),
        },
    }

# Two checks on the rate-limit cache are silenced, and why:
# - django_ratelimit.W001 "not officially supported" names every backend but memcached and
#   django-redis. Rate counting needs an atomic create (`add`) and an atomic increment
#   (`incr`); Django's own RedisCache does both (SET NX with expiry, INCRBY), and
#   tests/deployment/test_multiprocess.py proves the limit holds across gunicorn workers;
#   so does the embedded NonCullingLocMemCache, under its lock. Backends that cannot count are E003.
# - tokens_app.E009 "one process's memory" only with DEBUG on and no REDIS_URL: that is
#   the embedded default, one process (`make run`), whose counters are exact. With DEBUG
#   off it stands, so `make serve` and `check --deploy` stop until REDIS_URL is set.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
if DEBUG and not REDIS_URL:
    SILENCED_SYSTEM_CHECKS.append("tokens_app.E009")

# Rate-limit counters (password exchange) live in this cache. When it cannot be reached
# the limited endpoints answer 503 (fail closed); True would let requests through instead.
RATELIMIT_USE_CACHE = "default"
RATELIMIT_FAIL_OPEN = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"

# Expiry notices (manage.py notify_expiring_tokens) go through Django's email framework.
# The console backend prints them, so the example project sends nothing anywhere.
EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "tokens@example.com")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT") or VAR_DIR / "static")
# With DEBUG off, file names carry a content hash (collectstatic writes the manifest) so
# whitenoise serves them compressed and cacheable for a year.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tokens_app.authentication.APITokenAuthentication",
        "tokens_app.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "tokens_app.exceptions.exception_handler",
    # Bounded parsers: deep JSON is a 400, a body over DATA_UPLOAD_MAX_MEMORY_SIZE a 413.
    # JSON only: one media type per request body in the schema, as client generators need;
    # a form or multipart body is a 415.
    "DEFAULT_PARSER_CLASSES": ["tokens_app.parsers.JSONParser"],
    # DRF's test client sends what the API reads (its default is multipart).
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "tokens_app.api.schema.ScopedAutoSchema",
}

# OpenAPI 3 at /api/schema/, docs UI at /api/docs/ (assets served locally: no CDN).
SPECTACULAR_SETTINGS = {
    "TITLE": "tokens_app example API",
    "DESCRIPTION": (
        "Scoped, hashed, expiring, revocable API tokens. Send `Authorization: Bearer tka_...`; "
        "each operation lists the scopes a token needs in its security requirement and in "
        "`x-required-scopes`."
    ),
    "VERSION": "0.1.0",
    # 3.1: scopes in the security requirement of a bearer (non-OAuth2) scheme are valid.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

API_TOKENS = {
    "TOKEN_PREFIX": "tka",
    "HASH_KEY": os.environ.get("API_TOKENS_HASH_KEY") or None,
    # JWTs: HS256 under a key derived from HASH_KEY unless a PEM key is given (RS256,
    # ES256 or EdDSA), whose public half /.well-known/jwks.json publishes.
    "JWT_ALGORITHM": os.environ.get("API_TOKENS_JWT_ALGORITHM") or "HS256",
    "JWT_SIGNING_KEY": os.environ.get("API_TOKENS_JWT_SIGNING_KEY") or None,
    "JWT_ISSUER": os.environ.get("API_TOKENS_JWT_ISSUER") or "tokens_app-example",
    "JWT_AUDIENCES": ["api"],
    "JWT_DENY_LIST_CACHE": "shared",
    "SCOPES": {
        "notes:read": "Read your notes.",
        "notes:write": {"description": "Create and delete your notes.", "implies": ["notes:read"]},
        "tokens:read": "List and inspect your API tokens.",
        "tokens:write": {
            "description": "Create, rotate and revoke your API tokens.",
            "implies": ["tokens:read"],
        },
        "tokens:introspect": "Introspect tokens presented to your service.",
        "audit:read": {"description": "Read the token audit trail.", "requires": "staff"},
    },
}

# The opt-in token cache (README, "Token cache"): token rows and deny-list entries kept in
# each process, dropped by PostgreSQL NOTIFY or Redis pub/sub when something changes.
INVALIDATION_CHANNEL = os.environ.get("DJANGO_TOKEN_CACHE") or None
if INVALIDATION_CHANNEL is not None:
    API_TOKENS["TOKEN_CACHE"] = INVALIDATION_CHANNEL
    if INVALIDATION_CHANNEL == "redis":
        API_TOKENS["TOKEN_CACHE_REDIS_URL"] = REDIS_URL or None

# CORS (django-cors-headers), for the API only: pages on these origins may call /api/ with
# a bearer token. No cookies cross-origin (a session is never driven from another site), and
# a preflight is answered by the middleware, so it never needs a credential. Empty (the
# default): no CORS headers at all. The public documents under /.well-known/ are outside
# CORS_URLS_REGEX: their views answer any origin with `*` themselves (tokens_app.api.wellknown).
CORS_ALLOWED_ORIGINS = env_origins("DJANGO_CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = ["authorization", "content-type"]
# A browser client reads why it was refused and when to retry (RFC 6750, RFC 9728 §5.1).
CORS_EXPOSE_HEADERS = ["retry-after", "www-authenticate"]

SECURE = env_flag("DJANGO_SECURE", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"tokens_app": {"handlers": ["console"], "level": "INFO"}},
}
