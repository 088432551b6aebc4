"""One settings object over ``settings.API_TOKENS``: defaults, validation, lazy reload.

Each key of ``API_TOKENS`` is declared once, in :data:`SETTINGS`: its name, its default
and its parser. :data:`DEFAULTS`, the unknown-key check and the building of
:class:`TokenSettings` follow from that table.

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
from typing import Any, NamedTuple, ParamSpec, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from tokens_app.core import tokenstring
from tokens_app.core.durations import parse_duration
from tokens_app.core.rates import parse_rate

HASHERS = ("hmac-sha256", "argon2")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
JWT_ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
#: How the request path reads a token: its own prepared statement, or the ORM's query.
PREPARED_LOOKUP, ORM_LOOKUP = "prepared", "orm"
TOKEN_LOOKUPS = (PREPARED_LOOKUP, ORM_LOOKUP)
#: Where the opt-in token cache hears of changes (``tokens_app.invalidation``).
TOKEN_CACHE_CHANNELS = ("postgresql", "redis")
MAX_TOKEN_CACHE_LAG_MS = 1000
MAX_TOKEN_CACHE_TTL = timedelta(hours=1)
MIN_JWT_SECRET_LENGTH = 32
MAX_JWT_LIFETIME = timedelta(hours=1)
MAX_JWT_LEEWAY_SECONDS = 300
#: The shortest ``HASH_KEY`` or ``OLD_HASH_KEYS`` entry accepted (a derived key has 32 bytes).
MIN_HASH_KEY_LENGTH = 32
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
    #: Requests per client IP to the RFC 7009 revocation endpoint.
    revocation_rate: str
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
    #: ``None`` (off), ``"postgresql"`` or ``"redis"``: see ``tokens_app.invalidation``.
    token_cache: str | None
    token_cache_redis_url: str | None
    token_cache_ttl: timedelta
    token_cache_size: int
    token_cache_max_lag_ms: int
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


#: Returns the value of setting *name* for ``TokenSettings``, or raises ``ValueError``
#: with the problem, in words for the operator (as ``parse_duration`` does).
Parser = Callable[[Any, str], Any]


def _must(valid: Callable[[Any], object], problem: str, convert: Any = None) -> Parser:
    """Return a parser that raises *problem* unless ``valid(value)``; *convert* shapes the rest."""

    def parse(value: Any, name: str) -> Any:
        if not valid(value):
            raise ValueError(problem)
        return value if convert is None else convert(value)

    return parse


def _one_of(choices: tuple[str, ...]) -> Parser:
    def parse(value: Any, name: str) -> Any:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}")
        return value

    return parse


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False")
    return value


def _duration(value: Any, name: str) -> timedelta:
    if not isinstance(value, timedelta):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if value <= timedelta(0):
        raise ValueError(f"{name} must be a positive duration")
    return value


def _duration_or_none(value: Any, name: str) -> timedelta | None:
    return None if value is None else _duration(value, name)


def _jwt_lifetime(value: Any, name: str) -> timedelta:
    lifetime = _duration(value, name)
    if lifetime > MAX_JWT_LIFETIME:
        raise ValueError("JWT_LIFETIME must be at most 1h (JWTs cannot be revoked one by one)")
    return lifetime


def _networks(value: Any, name: str) -> tuple[IPNetwork, ...]:
    try:
        if isinstance(value, list | tuple):
            return tuple(ipaddress.ip_network(item, strict=False) for item in value)
    except (TypeError, ValueError):
        pass
    raise ValueError("TRUSTED_PROXIES must be a list of IP addresses or CIDR networks")


def _printable(value: Any) -> bool:
    return isinstance(value, str) and value != "" and value.isprintable()


def _long_keys(keys: Any) -> bool:
    return all(isinstance(key, str) and len(key) >= MIN_HASH_KEY_LENGTH for key in keys)


_prefix = _must(
    lambda prefix: isinstance(prefix, str) and tokenstring.PREFIX_PATTERN.fullmatch(prefix),
    "TOKEN_PREFIX must be 2-16 lowercase letters or digits, starting with a letter",
)
_scopes = _must(
    lambda scopes: isinstance(scopes, Mapping), "SCOPES must be a dict of scope name to description"
)
_password_exchange_rate = _must(
    lambda rate: parse_rate(rate) is not None,
    "PASSWORD_EXCHANGE_RATE must look like '5/15m' (count/[n]s|m|h|d)",
)
_revocation_rate = _must(
    lambda rate: parse_rate(rate) is not None,
    "REVOCATION_RATE must look like '60/m' (count/[n]s|m|h|d)",
)
_default_token_rate = _must(
    lambda rate: rate is None or parse_rate(rate) is not None,
    "DEFAULT_TOKEN_RATE must be None or look like '1000/h' (count/[n]s|m|h|d)",
)
_max_active_tokens = _must(
    lambda count: count is None or (type(count) is int and count > 0),
    "MAX_ACTIVE_TOKENS_PER_USER must be a positive integer or None",
)
_argon2_options = _must(
    lambda options: (
        isinstance(options, Mapping)
        and all(key in _ARGON2_OPTIONS and type(n) is int and n > 0 for key, n in options.items())
    ),
    f"ARGON2_OPTIONS must map some of {', '.join(sorted(_ARGON2_OPTIONS))} to positive integers",
    convert=dict,
)
#: One problem for the two settings (``load`` lists it once); ``_assemble`` derives the keys.
_HASH_KEYS_PROBLEM = (
    f"HASH_KEY and OLD_HASH_KEYS entries must be strings of at least "
    f"{MIN_HASH_KEY_LENGTH} characters"
)
_hash_key = _must(lambda key: key is None or _long_keys([key]), _HASH_KEYS_PROBLEM)
_old_hash_keys = _must(
    lambda keys: isinstance(keys, list | tuple) and _long_keys(keys), _HASH_KEYS_PROBLEM, tuple
)
_realm = _must(
    lambda realm: _printable(realm) and '"' not in realm,
    "REALM must be a non-empty printable string without quotes",
)
_signing_key = _must(
    lambda key: key is None or (isinstance(key, str) and key.strip()),
    "JWT_SIGNING_KEY must be a string (a secret, or a PEM private key)",
)
_verification_keys = _must(
    lambda keys: isinstance(keys, list | tuple) and all(isinstance(k, str) and k for k in keys),
    "JWT_VERIFICATION_KEYS must be a list of keys (secrets or PEM)",
    convert=tuple,
)
_issuer = _must(_printable, "JWT_ISSUER must be a non-empty printable string")
_audiences = _must(
    lambda audiences: (
        isinstance(audiences, list | tuple)
        and bool(audiences)
        and all(_printable(audience) and " " not in audience for audience in audiences)
    ),
    "JWT_AUDIENCES must be a non-empty list of audience names",
    convert=tuple,
)
_leeway_seconds = _must(
    lambda leeway: type(leeway) is int and 0 <= leeway <= MAX_JWT_LEEWAY_SECONDS,
    f"JWT_LEEWAY_SECONDS must be a whole number from 0 to {MAX_JWT_LEEWAY_SECONDS}",
)
_token_cache = _must(
    lambda channel: channel is None or channel in TOKEN_CACHE_CHANNELS,
    f"TOKEN_CACHE must be None (off) or one of {', '.join(TOKEN_CACHE_CHANNELS)}",
)
_token_cache_redis_url = _must(
    lambda url: (
        url is None
        or (isinstance(url, str) and url.startswith(("redis://", "rediss://", "unix://")))
    ),
    "TOKEN_CACHE_REDIS_URL must be None or a redis://, rediss:// or unix:// URL",
)
_token_cache_size = _must(
    lambda size: type(size) is int and size > 0,
    "TOKEN_CACHE_SIZE must be a positive integer (entries per process)",
)
_token_cache_max_lag_ms = _must(
    lambda lag: type(lag) is int and 10 <= lag <= MAX_TOKEN_CACHE_LAG_MS,
    f"TOKEN_CACHE_MAX_LAG_MS must be a whole number of milliseconds from 10 to "
    f"{MAX_TOKEN_CACHE_LAG_MS}",
)


def _token_cache_ttl(value: Any, name: str) -> timedelta:
    ttl = _duration(value, name)
    if ttl > MAX_TOKEN_CACHE_TTL:
        raise ValueError("TOKEN_CACHE_TTL must be at most 1h (it bounds staleness from raw SQL)")
    return ttl


_deny_list_cache = _must(
    lambda alias: isinstance(alias, str) and alias != "",
    "JWT_DENY_LIST_CACHE must name a cache alias",
)


class Setting(NamedTuple):
    """One key of ``API_TOKENS``: its default, its parser, the attribute it fills."""

    default: Any
    parse: Parser
    #: Its ``TokenSettings`` attribute; for ``JWT_*`` keys, its ``JWTSettings`` one.
    attribute: str


#: Every key of ``API_TOKENS``, in the order they are checked (and their problems listed).
#: Rules between settings are in ``_conflicts``.
SETTINGS: dict[str, Setting] = {
    "TOKEN_PREFIX": Setting("tka", _prefix, "prefix"),
    "SCOPES": Setting({}, _scopes, "scopes"),
    "DEFAULT_LIFETIME": Setting("30d", _duration_or_none, "default_lifetime"),
    "MAX_LIFETIME": Setting("365d", _duration_or_none, "max_lifetime"),
    "LAST_USED_INTERVAL": Setting("5m", _duration, "last_used_interval"),
    "MAX_ROTATION_GRACE": Setting("1d", _duration, "max_rotation_grace"),
    "PASSWORD_EXCHANGE_RATE": Setting("5/15m", _password_exchange_rate, "password_exchange_rate"),
    "REVOCATION_RATE": Setting("60/m", _revocation_rate, "revocation_rate"),
    "DEFAULT_TOKEN_RATE": Setting(None, _default_token_rate, "default_token_rate"),
    "TRUSTED_PROXIES": Setting([], _networks, "trusted_proxies"),
    "ALLOW_NON_EXPIRING": Setting(False, _flag, "allow_non_expiring"),
    "MAX_ACTIVE_TOKENS_PER_USER": Setting(50, _max_active_tokens, "max_active_tokens_per_user"),
    "HASHER": Setting("hmac-sha256", _one_of(HASHERS), "hasher"),
    "ARGON2_OPTIONS": Setting({}, _argon2_options, "argon2_options"),
    "HASH_KEY": Setting(None, _hash_key, "hash_key"),
    "OLD_HASH_KEYS": Setting([], _old_hash_keys, "old_hash_keys"),
    "ACCEPT_X_API_KEY": Setting(False, _flag, "accept_x_api_key"),
    "PREPARED_STATEMENTS": Setting(True, _flag, "prepared_statements"),
    "TOKEN_LOOKUP": Setting(PREPARED_LOOKUP, _one_of(TOKEN_LOOKUPS), "token_lookup"),
    "TOKEN_CACHE": Setting(None, _token_cache, "token_cache"),
    "TOKEN_CACHE_REDIS_URL": Setting(None, _token_cache_redis_url, "token_cache_redis_url"),
    "TOKEN_CACHE_TTL": Setting("60s", _token_cache_ttl, "token_cache_ttl"),
    "TOKEN_CACHE_SIZE": Setting(10_000, _token_cache_size, "token_cache_size"),
    "TOKEN_CACHE_MAX_LAG_MS": Setting(500, _token_cache_max_lag_ms, "token_cache_max_lag_ms"),
    "JWT_ALGORITHM": Setting("HS256", _one_of(JWT_ALGORITHMS), "algorithm"),
    "JWT_SIGNING_KEY": Setting(None, _signing_key, "signing_key"),
    "JWT_VERIFICATION_KEYS": Setting([], _verification_keys, "verification_keys"),
    "JWT_ISSUER": Setting("tokens_app", _issuer, "issuer"),
    "JWT_AUDIENCES": Setting(["api"], _audiences, "audiences"),
    "JWT_LIFETIME": Setting("5m", _jwt_lifetime, "lifetime"),
    "JWT_LEEWAY_SECONDS": Setting(10, _leeway_seconds, "leeway_seconds"),
    "JWT_DENY_LIST_CACHE": Setting("default", _deny_list_cache, "deny_list_cache"),
    "JWT_LOAD_USER": Setting(False, _flag, "load_user"),
    "REALM": Setting("api", _realm, "realm"),
}
DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in SETTINGS.items()}


def _conflicts(raw: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """Return the problems between settings; *values* holds those that parsed."""
    found = []
    if raw["DEFAULT_LIFETIME"] is None and raw["ALLOW_NON_EXPIRING"] is not True:
        found.append("DEFAULT_LIFETIME may be None only when ALLOW_NON_EXPIRING is True")
    default, maximum = values.get("DEFAULT_LIFETIME"), values.get("MAX_LIFETIME")
    if default and maximum and default > maximum:
        found.append("DEFAULT_LIFETIME must not exceed MAX_LIFETIME")
    algorithm, key = raw["JWT_ALGORITHM"], raw["JWT_SIGNING_KEY"]
    if algorithm != "HS256" and not key:
        found.append(f"JWT_ALGORITHM {algorithm} needs JWT_SIGNING_KEY (a PEM private key)")
    if algorithm == "HS256" and isinstance(key, str) and len(key) < MIN_JWT_SECRET_LENGTH:
        found.append(
            f"JWT_SIGNING_KEY for HS256 must have at least {MIN_JWT_SECRET_LENGTH} characters"
        )
    verification_keys = values.get("JWT_VERIFICATION_KEYS", ())
    if algorithm == "HS256" and any(len(k) < MIN_JWT_SECRET_LENGTH for k in verification_keys):
        found.append(
            f"JWT_VERIFICATION_KEYS for HS256 must have at least {MIN_JWT_SECRET_LENGTH} "
            "characters each"
        )
    channel, redis_url = raw["TOKEN_CACHE"], raw["TOKEN_CACHE_REDIS_URL"]
    if channel == "redis" and not redis_url:
        found.append("TOKEN_CACHE 'redis' needs TOKEN_CACHE_REDIS_URL")
    if redis_url and channel != "redis":
        found.append("TOKEN_CACHE_REDIS_URL is set but TOKEN_CACHE is not 'redis'")
    return found


def _rate_limit_settings(cache: Any, fail_open: Any, problems: list[str]) -> tuple[str, bool]:
    if not isinstance(cache, str) or not cache:
        problems.append("settings.RATELIMIT_USE_CACHE must name a cache alias")
    # A string such as "False" would be truthy and open the limiter: only a bool will do.
    if not isinstance(fail_open, bool):
        problems.append("settings.RATELIMIT_FAIL_OPEN must be True or False")
    return str(cache), fail_open is True


def _assemble(values: Mapping[str, Any], **extra: Any) -> TokenSettings:
    """Return the ``TokenSettings`` for *values*, every setting parsed."""
    # Imported here: core.hashing imports this module (its caches) at import time.
    from tokens_app.core.hashing import hmac_keys

    own = {s.attribute: values[n] for n, s in SETTINGS.items() if not n.startswith("JWT_")}
    jwt = {s.attribute: values[n] for n, s in SETTINGS.items() if n.startswith("JWT_")}
    # HASH_KEY and OLD_HASH_KEYS are key strings: the attributes hold the HMAC keys.
    secret_key = str(getattr(settings, "SECRET_KEY", ""))
    fallbacks = [str(key) for key in getattr(settings, "SECRET_KEY_FALLBACKS", []) if key]
    keys = hmac_keys(values["HASH_KEY"], values["OLD_HASH_KEYS"], secret_key, fallbacks)
    own["hash_key"], own["old_hash_keys"] = keys
    own["hash_key_is_derived"] = values["HASH_KEY"] is None
    return TokenSettings(**own, jwt=JWTSettings(**jwt), **extra)


def load(
    raw_settings: Any, *, rate_limit_cache: Any = "default", rate_limit_fail_open: Any = False
) -> TokenSettings:
    """Return validated settings for *raw_settings*, or raise ``ImproperlyConfigured``.

    Every problem is reported at once, so one deploy fixes them all.
    """
    if not isinstance(raw_settings, Mapping):
        raise ImproperlyConfigured("API_TOKENS must be a dict.")
    unknown = sorted(set(raw_settings) - set(SETTINGS), key=repr)
    problems = [f"unknown key {name!r}" for name in unknown]
    raw = {**DEFAULTS, **raw_settings}
    values = {}
    for name, setting in SETTINGS.items():
        try:
            values[name] = setting.parse(raw[name], name)
        except ValueError as exc:
            if str(exc) not in problems:  # HASH_KEY and OLD_HASH_KEYS share one
                problems.append(str(exc))
    problems += _conflicts(raw, values)
    limiter_cache, fail_open = _rate_limit_settings(
        rate_limit_cache, rate_limit_fail_open, problems
    )
    if problems:
        raise ImproperlyConfigured("API_TOKENS: " + "; ".join(problems) + ".")
    return _assemble(values, rate_limit_cache=limiter_cache, rate_limit_fail_open=fail_open)


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
