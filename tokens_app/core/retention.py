"""Whether a cache keeps live entries until they expire: by its backend, and for Redis, live.

Rate-limit counters and JWT deny-list entries are security state: losing one before
it expires lets a blocked client guess again or a revoked token's JWTs work again.
``backend_retention`` answers from settings alone (the system checks use it);
``redis_eviction`` asks a Redis server how it is configured (``/health/ready/`` uses it),
because whether Redis evicts keys is the server's ``maxmemory`` setting, not ours.
"""

from dataclasses import dataclass
from typing import Any

from django.utils.module_loading import import_string

#: Backends Django's cache framework and django-redis offer, by dotted path, for when the
#: class cannot be imported (a missing optional package) and must be judged by name.
_REDIS_BACKENDS = ("django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache")
_CULLS = "deletes live entries once it holds MAX_ENTRIES (300 by default)"


@dataclass(frozen=True)
class Retention:
    """What a cache backend does to live entries.

    ``loses`` says how it can lose one before it expires (``None``: it cannot, short of
    Redis's own eviction, which ``redis`` flags for a live check); ``per_process`` that
    each process has its own store; ``known`` is ``False`` for backends we cannot judge.
    """

    known: bool
    loses: str | None = None
    per_process: bool = False
    redis: bool = False


def _judge(backend_class: type) -> Retention | None:
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.filebased import FileBasedCache
    from django.core.cache.backends.locmem import LocMemCache
    from django.core.cache.backends.memcached import BaseMemcachedCache
    from django.core.cache.backends.redis import RedisCache

    from tokens_app.cache import NonCullingFileBasedCache, NonCullingLocMemCache

    # Ours first: they subclass the Django backends that cull.
    if issubclass(backend_class, NonCullingLocMemCache):
        return Retention(known=True, per_process=True)
    if issubclass(backend_class, NonCullingFileBasedCache):
        return Retention(known=True)
    if issubclass(backend_class, DummyCache):
        return Retention(known=True, loses="keeps nothing at all")
    if issubclass(backend_class, LocMemCache):
        return Retention(known=True, loses=_CULLS, per_process=True)
    if issubclass(backend_class, FileBasedCache | DatabaseCache):
        return Retention(known=True, loses=_CULLS)
    if issubclass(backend_class, BaseMemcachedCache):
        return Retention(known=True, loses="evicts live entries when its memory is full")
    if issubclass(backend_class, RedisCache):
        return Retention(known=True, redis=True)
    return None


def backend_retention(cache_settings: Any) -> Retention:
    """Judge the backend of one ``CACHES`` entry by its class (subclasses included)."""
    backend = cache_settings.get("BACKEND") if isinstance(cache_settings, dict) else None
    if not isinstance(backend, str):
        return Retention(known=False)
    try:
        backend_class = import_string(backend)
    except ImportError:
        backend_class = None
    if isinstance(backend_class, type):
        judged = _judge(backend_class)
        if judged is not None:
            return judged
        if any(
            f"{cls.__module__}.{cls.__qualname__}" in _REDIS_BACKENDS
            for cls in backend_class.__mro__
        ):
            return Retention(known=True, redis=True)
        return Retention(known=False)
    return (
        Retention(known=True, redis=True) if backend in _REDIS_BACKENDS else Retention(known=False)
    )


# --- Redis, live ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisEviction:
    """A Redis server's eviction settings; ``None`` where they could not be read."""

    maxmemory: int | None
    policy: str | None

    @property
    def state(self) -> str:
        """Return "ok", "evicts" (a memory limit and a policy that deletes keys) or "unknown"."""
        if self.maxmemory is None or self.policy is None:
            return "unknown"
        if self.maxmemory > 0 and self.policy != "noeviction":
            return "evicts"
        return "ok"


UNKNOWN = RedisEviction(maxmemory=None, policy=None)


def redis_client(cache: Any) -> Any | None:
    """The client of the primary server behind a Redis-backed *cache*, else ``None``.

    Writes go to the primary; replicas apply its deletions and, by default, ignore
    ``maxmemory`` themselves (``replica-ignore-maxmemory``), so the primary decides.
    """
    from django.core.cache.backends.redis import RedisCache

    if isinstance(cache, RedisCache):
        return cache._cache.get_client(write=True)  # type: ignore[attr-defined]  # not in the stubs
    if any(cls.__module__.startswith("django_redis") for cls in type(cache).__mro__):
        return cache.client.get_client(write=True)  # django-redis
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_eviction(client: Any) -> RedisEviction:
    """Read ``maxmemory`` and ``maxmemory-policy`` from the server behind *client*.

    ``CONFIG GET`` first; managed services often forbid or rename ``CONFIG``, so a
    refused command falls back to ``INFO memory``, which reports both. A connection
    failure does not retry (the readiness probe is already failing), and anything that
    cannot be read is ``None``: the caller decides what not knowing means.
    """
    import redis

    try:
        found = {_text(k): _text(v) for k, v in client.config_get("maxmemory*").items()}
        return RedisEviction(int(found["maxmemory"]), found["maxmemory-policy"])
    except (redis.ConnectionError, redis.TimeoutError):
        return UNKNOWN
    except (redis.ResponseError, KeyError, ValueError):
        pass  # CONFIG refused, renamed or odd: ask INFO
    try:
        memory = client.info("memory")
        return RedisEviction(int(memory["maxmemory"]), _text(memory["maxmemory_policy"]))
    except (redis.RedisError, KeyError, ValueError, TypeError):
        return UNKNOWN
