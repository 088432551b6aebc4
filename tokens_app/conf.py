"""One settings object over ``settings.API_TOKENS``: defaults, validation, lazy reload.

Nothing reads ``API_TOKENS`` at import time: :func:`token_settings` resolves it
on first use and Django's ``setting_changed`` signal (sent by ``override_settings``
and pytest-django's ``settings`` fixture) drops the cached copy, together with
every object derived from it (scope registry, hashers).
"""

import functools
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from tokens_app.core import tokenstring
from tokens_app.core.durations import parse_duration
from tokens_app.core.rates import parse_rate

HASHERS = ("hmac-sha256", "argon2")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MIN_HASH_KEY_LENGTH = 32

DEFAULTS: dict[str, Any] = {
    "TOKEN_PREFIX": "tka",
    "SCOPES": {},
    "DEFAULT_LIFETIME": "30d",
    "MAX_LIFETIME": "365d",
    "ALLOW_NON_EXPIRING": False,
    "MAX_ACTIVE_TOKENS_PER_USER": 50,
    "LAST_USED_INTERVAL": "5m",
    "MAX_ROTATION_GRACE": "1d",
    "PASSWORD_EXCHANGE_RATE": "5/15m",
    "DEFAULT_TOKEN_RATE": None,
    "TRUSTED_PROXIES": [],
    "HASHER": "hmac-sha256",
    "HASH_KEY": None,
    "OLD_HASH_KEYS": [],
    "ARGON2_OPTIONS": {},
    "ACCEPT_X_API_KEY": False,
    "REALM": "api",
    "PREPARED_STATEMENTS": True,
    "TOKEN_LOOKUP": "prepared",
    "JWT_ALGORITHM": "HS256",
    "JWT_SIGNING_KEY": None,
    "JWT_VERIFICATION_KEYS": [],
    "JWT_ISSUER": "tokens_app",
    "JWT_AUDIENCES": ["api"],
    "JWT_LIFETIME": "5m",
    "JWT_LEEWAY_SECONDS": 10,
    "JWT_LOAD_USER": False,
    "JWT_DENY_LIST_CACHE": "default",
}
JWT_ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
#: How the request path reads a token: its own prepared statement, or the ORM's query.
PREPARED_LOOKUP, ORM_LOOKUP = "prepared", "orm"
TOKEN_LOOKUPS = (PREPARED_LOOKUP, ORM_LOOKUP)
MIN_JWT_SECRET_LENGTH = 32
MAX_JWT_LIFETIME = timedelta(hours=1)
MAX_JWT_LEEWAY_SECONDS = 300
_ARGON2_OPTIONS = {"time_cost", "memory_cost", "parallelism", "hash_len", "salt_len"}


@dataclass(frozen=True)
class TokenSettings:
    """The validated, typed view of ``API_TOKENS``."""

    prefix: str
    scopes: Mapping[str, Any]
    default_lifetime: timedelta | None
    max_lifetime: timedelta | None
    allow_non_expiring: bool
    max_active_tokens_per_user: int | None
    last_used_interval: timedelta
    max_rotation_grace: timedelta
    password_exchange_rate: str
    #: Rate for tokens that set none (``None``: such tokens are not limited).
    default_token_rate: str | None
    trusted_proxies: tuple[IPNetwork, ...]
    hasher: str
    hash_key: bytes
    hash_key_is_derived: bool
    old_hash_keys: tuple[bytes, ...]
    argon2_options: Mapping[str, int]
    accept_x_api_key: bool
    realm: str
    prepared_statements: bool
    #: ``"prepared"`` (``tokens_app.lookup``'s statement) or ``"orm"`` (a plain queryset).
    token_lookup: str
    jwt: "JWTSettings"
    #: django-ratelimit's own settings, read here too: the alias holding the counters,
    #: and whether a cache fault lets requests through (False: they get a 503).
    rate_limit_cache: str = "default"
    rate_limit_fail_open: bool = False


@dataclass(frozen=True)
class JWTSettings:
    """The JWT part of ``API_TOKENS`` (keys are parsed by ``jwt.signing_keys``)."""

    algorithm: str
    signing_key: str | None
    verification_keys: tuple[str, ...]
    issuer: str
    audiences: tuple[str, ...]
    lifetime: timedelta
    leeway_seconds: int
    load_user: bool
    deny_list_cache: str


def _jwt_settings(raw: dict[str, Any], problems: list[str]) -> JWTSettings:
    algorithm = raw["JWT_ALGORITHM"]
    if algorithm not in JWT_ALGORITHMS:
        problems.append(f"JWT_ALGORITHM must be one of {', '.join(JWT_ALGORITHMS)}")
    signing_key = raw["JWT_SIGNING_KEY"]
    if signing_key is not None and not (isinstance(signing_key, str) and signing_key.strip()):
        problems.append("JWT_SIGNING_KEY must be a string (a secret, or a PEM private key)")
    if algorithm != "HS256" and not signing_key:
        problems.append(f"JWT_ALGORITHM {algorithm} needs JWT_SIGNING_KEY (a PEM private key)")
    short = isinstance(signing_key, str) and len(signing_key) < MIN_JWT_SECRET_LENGTH
    if algorithm == "HS256" and short:
        problems.append(
            f"JWT_SIGNING_KEY for HS256 must have at least {MIN_JWT_SECRET_LENGTH} characters"
        )
    extra = raw["JWT_VERIFICATION_KEYS"]
    if not isinstance(extra, list | tuple) or not all(isinstance(k, str) and k for k in extra):
        problems.append("JWT_VERIFICATION_KEYS must be a list of keys (secrets or PEM)")
        extra = ()
    elif algorithm == "HS256" and any(len(k) < MIN_JWT_SECRET_LENGTH for k in extra):
        problems.append(
            f"JWT_VERIFICATION_KEYS for HS256 must have at least {MIN_JWT_SECRET_LENGTH} "
            "characters each"
        )
    issuer = raw["JWT_ISSUER"]
    if not isinstance(issuer, str) or not issuer or not issuer.isprintable():
        problems.append("JWT_ISSUER must be a non-empty printable string")
    audiences = raw["JWT_AUDIENCES"]
    if (
        not isinstance(audiences, list | tuple)
        or not audiences
        or not all(isinstance(a, str) and a and a.isprintable() and " " not in a for a in audiences)
    ):
        problems.append("JWT_AUDIENCES must be a non-empty list of audience names")
        audiences = ("api",)
    lifetime = _duration(raw, "JWT_LIFETIME", problems, optional=False)
    if lifetime is not None and lifetime > MAX_JWT_LIFETIME:
        problems.append("JWT_LIFETIME must be at most 1h (JWTs cannot be revoked one by one)")
    leeway = raw["JWT_LEEWAY_SECONDS"]
    if type(leeway) is not int or not 0 <= leeway <= MAX_JWT_LEEWAY_SECONDS:
        problems.append(
            f"JWT_LEEWAY_SECONDS must be a whole number from 0 to {MAX_JWT_LEEWAY_SECONDS}"
        )
        leeway = 0
    cache = raw["JWT_DENY_LIST_CACHE"]
    if not isinstance(cache, str) or not cache:
        problems.append("JWT_DENY_LIST_CACHE must name a cache alias")
    return JWTSettings(
        algorithm=str(algorithm),
        signing_key=signing_key if isinstance(signing_key, str) else None,
        verification_keys=tuple(extra),
        issuer=str(issuer),
        audiences=tuple(audiences),
        lifetime=lifetime or timedelta(minutes=5),
        leeway_seconds=leeway,
        load_user=_flag(raw, "JWT_LOAD_USER", problems),
        deny_list_cache=str(cache),
    )


def _duration(raw: dict[str, Any], name: str, problems: list[str], *, optional: bool) -> Any:
    value = raw[name]
    if value is None and optional:
        return None
    if isinstance(value, timedelta):
        if value > timedelta(0):
            return value
        problems.append(f"{name} must be a positive duration")
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        problems.append(f"{name}: {exc}")
        return None


def _hash_keys(raw: dict[str, Any], problems: list[str]) -> tuple[bytes, bool, tuple[bytes, ...]]:
    configured = raw["HASH_KEY"]
    old = raw["OLD_HASH_KEYS"]
    candidates = ([] if configured is None else [configured]) + (
        list(old) if isinstance(old, list | tuple) else [None]
    )
    if not all(isinstance(key, str) and len(key) >= MIN_HASH_KEY_LENGTH for key in candidates):
        problems.append(
            f"HASH_KEY and OLD_HASH_KEYS entries must be strings of at least "
            f"{MIN_HASH_KEY_LENGTH} characters"
        )
        return b"", configured is None, ()
    # Imported here: core.hashing imports this module (its caches) at import time.
    from tokens_app.core.hashing import hmac_keys

    secret_key = str(getattr(settings, "SECRET_KEY", ""))
    fallbacks = [str(key) for key in getattr(settings, "SECRET_KEY_FALLBACKS", []) if key]
    key, old_keys = hmac_keys(configured, old, secret_key, fallbacks)
    return key, configured is None, old_keys


def _networks(value: Any, problems: list[str]) -> tuple[IPNetwork, ...]:
    if isinstance(value, list | tuple):
        try:
            return tuple(ipaddress.ip_network(item, strict=False) for item in value)
        except (TypeError, ValueError):
            pass
    problems.append("TRUSTED_PROXIES must be a list of IP addresses or CIDR networks")
    return ()


def _positive_int_or_none(raw: dict[str, Any], name: str, problems: list[str]) -> int | None:
    value = raw[name]
    if value is None or (type(value) is int and value > 0):
        return value
    problems.append(f"{name} must be a positive integer or None")
    return None


def _flag(raw: dict[str, Any], name: str, problems: list[str]) -> bool:
    if not isinstance(raw[name], bool):
        problems.append(f"{name} must be True or False")
    return raw[name] is True


def _check_argon2(options: Any, problems: list[str]) -> None:
    if not isinstance(options, Mapping) or not all(
        key in _ARGON2_OPTIONS and type(value) is int and value > 0
        for key, value in options.items()
    ):
        problems.append(
            "ARGON2_OPTIONS must map some of "
            + ", ".join(sorted(_ARGON2_OPTIONS))
            + " to positive integers"
        )


def _rate_limit_settings(cache: Any, fail_open: Any, problems: list[str]) -> tuple[str, bool]:
    if not isinstance(cache, str) or not cache:
        problems.append("settings.RATELIMIT_USE_CACHE must name a cache alias")
    # A string such as "False" would be truthy and open the limiter: only a bool will do.
    if not isinstance(fail_open, bool):
        problems.append("settings.RATELIMIT_FAIL_OPEN must be True or False")
    return str(cache), fail_open is True


def load(
    raw_settings: Any, *, rate_limit_cache: Any = "default", rate_limit_fail_open: Any = False
) -> TokenSettings:
    """Return validated settings for *raw_settings*, or raise ``ImproperlyConfigured``.

    Every problem is reported at once, so one deploy fixes them all.
    """
    if not isinstance(raw_settings, Mapping):
        raise ImproperlyConfigured("API_TOKENS must be a dict.")
    unknown = sorted(set(raw_settings) - set(DEFAULTS), key=repr)
    problems = [f"unknown key {name!r}" for name in unknown]
    raw = {**DEFAULTS, **raw_settings}

    prefix = raw["TOKEN_PREFIX"]
    if not isinstance(prefix, str) or not tokenstring.PREFIX_PATTERN.fullmatch(prefix):
        problems.append(
            "TOKEN_PREFIX must be 2-16 lowercase letters or digits, starting with a letter"
        )
    if not isinstance(raw["SCOPES"], Mapping):
        problems.append("SCOPES must be a dict of scope name to description")
    default_lifetime = _duration(raw, "DEFAULT_LIFETIME", problems, optional=True)
    max_lifetime = _duration(raw, "MAX_LIFETIME", problems, optional=True)
    last_used_interval = _duration(raw, "LAST_USED_INTERVAL", problems, optional=False)
    max_rotation_grace = _duration(raw, "MAX_ROTATION_GRACE", problems, optional=False)
    rate = raw["PASSWORD_EXCHANGE_RATE"]
    if parse_rate(rate) is None:
        problems.append("PASSWORD_EXCHANGE_RATE must look like '5/15m' (count/[n]s|m|h|d)")
    token_rate = raw["DEFAULT_TOKEN_RATE"]
    if token_rate is not None and parse_rate(token_rate) is None:
        problems.append("DEFAULT_TOKEN_RATE must be None or look like '1000/h' (count/[n]s|m|h|d)")
    trusted_proxies = _networks(raw["TRUSTED_PROXIES"], problems)
    allow_non_expiring = _flag(raw, "ALLOW_NON_EXPIRING", problems)
    if default_lifetime is None and not allow_non_expiring and raw["DEFAULT_LIFETIME"] is None:
        problems.append("DEFAULT_LIFETIME may be None only when ALLOW_NON_EXPIRING is True")
    if default_lifetime and max_lifetime and default_lifetime > max_lifetime:
        problems.append("DEFAULT_LIFETIME must not exceed MAX_LIFETIME")
    max_active = _positive_int_or_none(raw, "MAX_ACTIVE_TOKENS_PER_USER", problems)
    if raw["HASHER"] not in HASHERS:
        problems.append(f"HASHER must be one of {', '.join(HASHERS)}")
    _check_argon2(raw["ARGON2_OPTIONS"], problems)
    hash_key, derived, old_keys = _hash_keys(raw, problems)
    accept_x_api_key = _flag(raw, "ACCEPT_X_API_KEY", problems)
    prepared_statements = _flag(raw, "PREPARED_STATEMENTS", problems)
    if raw["TOKEN_LOOKUP"] not in TOKEN_LOOKUPS:
        problems.append(f"TOKEN_LOOKUP must be one of {', '.join(TOKEN_LOOKUPS)}")
    jwt = _jwt_settings(raw, problems)
    realm = raw["REALM"]
    if not isinstance(realm, str) or not realm or not realm.isprintable() or '"' in realm:
        problems.append("REALM must be a non-empty printable string without quotes")
    limiter_cache, fail_open = _rate_limit_settings(
        rate_limit_cache, rate_limit_fail_open, problems
    )
    if problems:
        raise ImproperlyConfigured("API_TOKENS: " + "; ".join(problems) + ".")
    return TokenSettings(
        prefix=prefix,
        scopes=raw["SCOPES"],
        default_lifetime=default_lifetime,
        max_lifetime=max_lifetime,
        allow_non_expiring=allow_non_expiring,
        max_active_tokens_per_user=max_active,
        last_used_interval=last_used_interval,
        max_rotation_grace=max_rotation_grace,
        password_exchange_rate=rate,
        default_token_rate=token_rate,
        trusted_proxies=trusted_proxies,
        hasher=raw["HASHER"],
        hash_key=hash_key,
        hash_key_is_derived=derived,
        old_hash_keys=old_keys,
        argon2_options=dict(raw["ARGON2_OPTIONS"]),
        accept_x_api_key=accept_x_api_key,
        realm=realm,
        prepared_statements=prepared_statements,
        token_lookup=raw["TOKEN_LOOKUP"],
        jwt=jwt,
        rate_limit_cache=limiter_cache,
        rate_limit_fail_open=fail_open,
    )


_P = ParamSpec("_P")
_R = TypeVar("_R")
_cache_clearers: list[Callable[[], None]] = []


def cached_until_settings_change(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Memoise *func* until a setting it depends on (``API_TOKENS``, ``SECRET_KEY``...) changes."""
    cached = functools.cache(func)
    _cache_clearers.append(cached.cache_clear)
    return cached  # type: ignore[return-value]


@cached_until_settings_change
def token_settings() -> TokenSettings:
    """Return the app's settings, validated; raise ``ImproperlyConfigured`` if invalid."""
    return load(
        getattr(settings, "API_TOKENS", {}),
        rate_limit_cache=getattr(settings, "RATELIMIT_USE_CACHE", "default"),
        rate_limit_fail_open=getattr(settings, "RATELIMIT_FAIL_OPEN", False),
    )


_WATCHED_SETTINGS = {
    "API_TOKENS",
    "SECRET_KEY",
    "SECRET_KEY_FALLBACKS",
    "AUTH_USER_MODEL",
    "RATELIMIT_USE_CACHE",
    "RATELIMIT_FAIL_OPEN",
}


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in _WATCHED_SETTINGS:
        for clear in _cache_clearers:
            clear()
