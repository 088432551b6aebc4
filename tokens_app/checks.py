"""System checks: a broken ``API_TOKENS`` or a misspelt scope stops the server starting.

Ids are stable and never reused: E001 settings, E002 scope declarations,
E003 undeclared scope named by a view; W001 view with HasScope and no scopes,
W002 derived hash key (deploy), W003 non-expiring tokens allowed (deploy),
E004 the rate-limit cache alias is not in ``CACHES``, E005 it is Django's dummy cache.
"""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver

from tokens_app import scopes
from tokens_app.conf import token_settings
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
