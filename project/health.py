"""Health endpoints for load balancers: ``/health/`` (process up) and ``/health/ready/``.

Readiness checks the database and the cache the way requests use them, and says
which one is down, never why: the details go to the server log.

For each Redis-backed cache that holds security state (the rate-limit counters and
the JWT deny list) it also reports the server's ``maxmemory`` and ``maxmemory-policy``,
and is not ready when that Redis can evict keys (a ``maxmemory`` and a policy other
than ``noeviction``): an evicted counter lets a blocked client guess again, an evicted
deny-list entry makes a revoked token's JWTs work again. Settings that cannot be read
(``CONFIG`` and ``INFO`` both refused, or Redis down) are "unknown", and not ready
either: readiness claims this state holds, and not knowing is not that claim (grant
the application's Redis user ``INFO`` if ``CONFIG`` is forbidden). Backends other than
Redis are judged from settings by the system checks (tokens_app.E007/E008), not here.
"""

import logging
from collections.abc import Callable
from typing import Any

from django.core.cache import caches
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from tokens_app.conf import token_settings
from tokens_app.core.retention import UNKNOWN, RedisEviction, redis_client, redis_eviction

logger = logging.getLogger("tokens_app")


def _database_answers() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")


def _cache_answers() -> None:
    limiter_cache = caches[token_settings().rate_limit_cache]
    limiter_cache.set("health:probe", "1", timeout=10)
    if limiter_cache.get("health:probe") != "1":
        raise RuntimeError("the cache did not return what was stored")


CHECKS: dict[str, Callable[[], None]] = {"database": _database_answers, "cache": _cache_answers}


def _security_caches() -> dict[str, str]:
    conf = token_settings()
    return {"rate_limit": conf.rate_limit_cache, "deny_list": conf.jwt.deny_list_cache}


def _redis_evictions(cache_answered: bool) -> tuple[str, dict[str, RedisEviction]] | None:
    """Return the worst eviction state and each Redis-backed role's settings, or ``None``.

    ``None`` when no role is on Redis (nothing to report). A role whose cache cannot be
    built counts as unknown; so does every Redis role once the cache probe has failed,
    without asking again: that would double the time to answer, and the answer is 503.
    """
    found: dict[str, RedisEviction] = {}
    unknown = False
    try:
        roles = _security_caches()
    except Exception as exc:  # settings are broken: the system checks say how
        logger.error("Readiness: cache settings unreadable (%s)", type(exc).__name__)
        return "unknown", found
    for role, alias in roles.items():
        try:
            client = redis_client(caches[alias])
        except Exception as exc:  # a missing alias or a backend that cannot be built
            logger.error("Readiness: %s cache unusable (%s)", role, type(exc).__name__)
            unknown = True
            continue
        if client is not None:
            found[role] = redis_eviction(client) if cache_answered else UNKNOWN
    if not found and not unknown:
        return None
    states = {eviction.state for eviction in found.values()} | ({"unknown"} if unknown else set())
    worst = next(state for state in ("evicts", "unknown", "ok") if state in states)
    if worst != "ok":
        logger.error("Readiness: Redis eviction %s (%s)", worst, ", ".join(sorted(found)))
    return worst, found


def _state(name: str, check: Callable[[], None]) -> str:
    try:
        check()
    except Exception as exc:  # any failure means "not ready"; the log says which
        logger.error("Readiness: %s unavailable (%s)", name, type(exc).__name__, exc_info=exc)
        return "unavailable"
    return "ok"


@require_safe
@never_cache
def live(request: HttpRequest) -> JsonResponse:
    """The process answers: touches neither the database nor the cache."""
    return JsonResponse({"status": "ok"})


@require_safe
@never_cache
def ready(request: HttpRequest) -> JsonResponse:
    """200 when the database and the cache answer and no Redis can evict, else 503 saying why.

    With Redis, ``eviction`` is ``ok``, ``evicts`` or ``unknown``, and ``redis`` gives
    each role's ``maxmemory`` (bytes, 0: no limit) and ``maxmemory_policy``, ``null``
    where unknown. Never a server address: only what the operator must change.
    """
    states: dict[str, Any] = {name: _state(name, check) for name, check in CHECKS.items()}
    evictions = _redis_evictions(states["cache"] == "ok")
    extra: dict[str, Any] = {}
    if evictions is not None:
        states["eviction"], found = evictions
        extra["redis"] = {
            role: {"maxmemory": eviction.maxmemory, "maxmemory_policy": eviction.policy}
            for role, eviction in found.items()
        }
    healthy = all(state == "ok" for state in states.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **states, **extra},
        status=200 if healthy else 503,
    )
