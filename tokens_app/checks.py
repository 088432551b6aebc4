"""System checks: a broken ``API_TOKENS`` or a misspelt scope stops the server starting.

Ids are stable and never reused: E001 settings, E002 scope declarations,
E003 undeclared scope named by a view; W001 view with HasScope and no scopes,
W002 derived hash key (deploy), W003 non-expiring tokens allowed (deploy),
E004 the rate-limit cache alias is not in ``CACHES``, E005 it is Django's dummy cache.
Caches holding security state (``tokens_app.core.retention`` says why): E006 the JWT deny-list
cache alias is not in ``CACHES``, E007 that cache can lose live entries (it culls, evicts,
keeps nothing, or is one process's memory), E008 the rate-limit cache can lose live
counters, E009 the rate-limit cache is one process's memory, W004 either cache's backend
is one whose retention cannot be told. Password views routed without the password rate
limit (``tokens_app.login``): W005 an admin site's login or password change, W006 a view
built on Django's ``LoginView`` or ``PasswordChangeView`` (DRF's browsable-API login too).
The token cache's channel (``tokens_app.invalidation``): E010 ``TOKEN_CACHE = "postgresql"``
but the token database is not PostgreSQL with psycopg 3, E011 ``"redis"`` without the
``redis`` package.
"""

import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router
from django.urls import URLPattern, URLResolver, get_resolver

from tokens_app.conf import token_settings
from tokens_app.core import scopes
from tokens_app.core.retention import backend_retention
from tokens_app.login import unthrottled_password_views
from tokens_app.models import APIToken
from tokens_app.permissions import HasScope, is_well_formed


@register(Tags.security)
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E001/E002/E004/E005: ``API_TOKENS``, its scopes and the limiter cache are sound."""
    try:
        loaded = token_settings()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="Fix settings.API_TOKENS.", id="tokens_app.E001")]
    limiter_problem = _rate_limit_cache_problem(loaded.rate_limit_cache)
    if limiter_problem:
        return [limiter_problem]
    return [
        Error(
            f"API_TOKENS['SCOPES']: {problem}.",
            hint="Fix the scope declaration.",
            id="tokens_app.E002",
        )
        for problem in scopes.declaration_problems(loaded.scopes)
    ]


def _rate_limit_cache_problem(alias: str) -> Error | None:
    caches = getattr(settings, "CACHES", {})
    if alias not in caches:
        return Error(
            f"RATELIMIT_USE_CACHE names {alias!r}, which is not in CACHES.",
            hint="Name a cache alias shared by every process (Redis in production).",
            id="tokens_app.E004",
        )
    if caches[alias].get("BACKEND") == "django.core.cache.backends.dummy.DummyCache":
        # It "adds" every key and keeps none: every attempt would count as the first.
        return Error(
            f"The rate-limit cache {alias!r} is DummyCache, which never limits anything.",
            hint="Use a real cache shared by every process (Redis in production).",
            id="tokens_app.E005",
        )
    return None


@register(Tags.caches, Tags.security)
def check_caches(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E006-E009/W004: the deny-list and rate-limit caches keep every entry until it expires.

    Both are Errors: a lost deny-list entry makes a revoked token's JWTs work again, and
    a lost counter lets a blocked client guess passwords again (the only brake on it).
    Redis is accepted here; whether the server evicts is reported by ``/health/ready/``.
    """
    try:
        loaded = token_settings()
    except ImproperlyConfigured:
        return []  # reported by check_settings
    caches = getattr(settings, "CACHES", {})
    messages = _deny_list_cache_messages(loaded.jwt.deny_list_cache, caches)
    limiter = loaded.rate_limit_cache
    if _rate_limit_cache_problem(limiter) is None:  # else E004/E005, from check_settings
        messages += _rate_limit_cache_messages(limiter, caches[limiter])
    return messages


def _unknown_retention(role: str, alias: str, backend: Any) -> Warning:
    return Warning(
        f"Cannot tell whether the {role} cache {alias!r} ({backend}) keeps every entry until "
        "it expires.",
        hint="Make sure it never culls or evicts live entries (Redis: maxmemory-policy "
        "noeviction), then silence tokens_app.W004.",
        id="tokens_app.W004",
    )


def _deny_list_cache_messages(alias: str, caches: Mapping[str, Any]) -> list[CheckMessage]:
    shared_hint = (
        "Use Redis shared by every process (maxmemory-policy noeviction), or "
        "tokens_app.cache.NonCullingFileBasedCache on a single host."
    )
    if alias not in caches:
        return [
            Error(
                f"API_TOKENS['JWT_DENY_LIST_CACHE'] names {alias!r}, which is not in CACHES.",
                hint=shared_hint,
                id="tokens_app.E006",
            )
        ]
    backend = caches[alias].get("BACKEND")
    retention = backend_retention(caches[alias])
    if retention.loses or retention.per_process:
        why = retention.loses or (
            "is one process's memory, so revocations made by another process (the admin, "
            "manage.py revoke_token, another worker) never reach it"
        )
        return [
            Error(
                f"The JWT deny-list cache {alias!r} ({backend}) {why}: JWTs of revoked "
                "tokens would be accepted again.",
                hint=shared_hint,
                id="tokens_app.E007",
            )
        ]
    return [] if retention.known else [_unknown_retention("JWT deny-list", alias, backend)]


def _rate_limit_cache_messages(alias: str, cache: Mapping[str, Any]) -> list[CheckMessage]:
    backend = cache.get("BACKEND")
    retention = backend_retention(cache)
    messages: list[CheckMessage] = []
    if retention.loses:
        messages.append(
            Error(
                f"The rate-limit cache {alias!r} ({backend}) {retention.loses}: a flood of "
                "other attempts can erase a blocked client's counters.",
                hint="Use Redis (maxmemory-policy noeviction), or "
                "tokens_app.cache.NonCullingLocMemCache for a single-process server.",
                id="tokens_app.E008",
            )
        )
    if retention.per_process:
        messages.append(
            Error(
                f"The rate-limit cache {alias!r} ({backend}) is one process's memory: with "
                "several processes, each counts attempts on its own.",
                hint="Use Redis shared by every process. A single-process development server "
                "may silence tokens_app.E009.",
                id="tokens_app.E009",
            )
        )
    if not retention.known:
        messages.append(_unknown_retention("rate-limit", alias, backend))
    return messages


@register(Tags.caches, Tags.database)
def check_token_cache(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E010/E011: the token cache's channel can be listened to (else it would never be used)."""
    try:
        channel = token_settings().token_cache
    except ImproperlyConfigured:
        return []  # reported by check_settings
    if channel == "postgresql":
        alias = router.db_for_write(APIToken)
        connection = connections[alias]
        if connection.vendor != "postgresql" or not importlib.util.find_spec("psycopg"):
            return [
                Error(
                    f"API_TOKENS['TOKEN_CACHE'] is 'postgresql' but the token database "
                    f"{alias!r} is {connection.vendor}, or psycopg 3 is missing: LISTEN/NOTIFY "
                    "needs PostgreSQL through psycopg 3.",
                    hint="Use TOKEN_CACHE = 'redis' with TOKEN_CACHE_REDIS_URL, or None.",
                    id="tokens_app.E010",
                )
            ]
    if channel == "redis" and not importlib.util.find_spec("redis"):
        return [
            Error(
                "API_TOKENS['TOKEN_CACHE'] is 'redis' but the redis package is missing.",
                hint="pip install 'tokens_app[redis]'.",
                id="tokens_app.E011",
            )
        ]
    return []


def _walk(patterns: Sequence[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _uses_has_scope(permission: Any) -> bool:
    # Follows DRF's composed permissions (``A & B``, ``~A``) into their operands.
    if isinstance(permission, type) and issubclass(permission, HasScope):
        return True
    operands = (getattr(permission, name, None) for name in ("op1_class", "op2_class"))
    return any(_uses_has_scope(op) for op in operands if op is not None)


def _declared_names(declared: Any) -> list[Any]:
    values = declared.values() if isinstance(declared, Mapping) else [declared]
    return [
        name for value in values for name in (value if isinstance(value, list | tuple) else [value])
    ]


def _view_attribute(callback: Any, name: str) -> Any:
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view_class is None and hasattr(callback, "required_scopes"):
        view_class = callback  # a function view (``@token_required``): it holds its own
    initkwargs = getattr(callback, "initkwargs", None) or {}
    return initkwargs.get(name, getattr(view_class, name, None)), view_class


@register(Tags.urls)
def check_view_scopes(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E003/W001: every scope a routed view names is declared; HasScope views name some."""
    try:
        registry = scopes.registry()
    except ImproperlyConfigured:
        return []  # reported by check_settings
    messages: list[CheckMessage] = []
    seen: set[tuple[Any, str]] = set()
    for route, callback in _walk(get_resolver().url_patterns):
        declared, view_class = _view_attribute(callback, "required_scopes")
        if view_class is None:
            continue
        permissions, _view = _view_attribute(callback, "permission_classes")
        view_name = f"{view_class.__module__}.{view_class.__qualname__}"
        for name in _declared_names(declared) if declared is not None else []:
            if (view_class, str(name)) in seen or (isinstance(name, str) and name in registry):
                continue
            seen.add((view_class, str(name)))
            messages.append(
                Error(
                    f"{view_name} (/{route}) requires undeclared scope {name!r}.",
                    hint="Declare it in API_TOKENS['SCOPES'] or correct the name.",
                    obj=view_class,
                    id="tokens_app.E003",
                )
            )
        if not is_well_formed(declared) and any(_uses_has_scope(p) for p in permissions or ()):
            messages.append(
                Warning(
                    f"{view_name} (/{route}) uses HasScope but declares no usable "
                    "required_scopes; every request to it is refused.",
                    hint="Set required_scopes to a non-empty list of scope names, or a mapping "
                    "of HTTP method or viewset action to such lists.",
                    obj=view_class,
                    id="tokens_app.W001",
                )
            )
    return messages


@register(Tags.security, deploy=True)
def check_deploy(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W002/W003: production settings that weaken tokens."""
    try:
        conf = token_settings()
    except ImproperlyConfigured:
        return []  # reported by check_settings
    messages: list[CheckMessage] = []
    if conf.hash_key_is_derived:
        messages.append(
            Warning(
                "API_TOKENS['HASH_KEY'] is not set; the token hash key is derived from SECRET_KEY.",
                hint="Set a separate random HASH_KEY of at least 32 characters so that rotating "
                "SECRET_KEY does not invalidate every token, and one leak does not expose both.",
                id="tokens_app.W002",
            )
        )
    if conf.allow_non_expiring:
        messages.append(
            Warning(
                "API_TOKENS['ALLOW_NON_EXPIRING'] is True: tokens may never expire.",
                hint="Prefer expiring tokens and rotation.",
                id="tokens_app.W003",
            )
        )
    return messages


@register(Tags.security, Tags.urls)
def check_password_views(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """W005/W006: every routed view that checks a password counts attempts first.

    It looks at the routed views themselves (the mark ``tokens_app.login`` sets), so
    it sees the admin however it is wired, and any include of ``django.contrib.auth.urls``
    or ``rest_framework.urls``.
    """
    messages: list[CheckMessage] = []
    for route, app_name, view in unthrottled_password_views(get_resolver().url_patterns):
        view_class = getattr(view, "view_class", None)
        if app_name == "admin" or view_class is None:
            messages.append(
                Warning(
                    f"/{route} (an admin site's password view) checks passwords "
                    "without the password rate limit.",
                    hint="Call tokens_app.login.throttle_admin_site(admin.site) in the "
                    "URLconf, before admin.site.urls.",
                    id="tokens_app.W005",
                )
            )
        else:
            messages.append(
                Warning(
                    f"/{route} ({view_class.__module__}.{view_class.__qualname__}) checks "
                    "passwords without the password rate limit.",
                    hint="Route it wrapped: tokens_app.login.throttled_login(view), or "
                    "throttled_password_change(view) for a password change.",
                    obj=view_class,
                    id="tokens_app.W006",
                )
            )
    return messages
