"""Health endpoints for load balancers: ``/health/`` (process up) and ``/health/ready/``.

Readiness checks the database and the cache the way requests use them, and says
which one is down, never why: the details go to the server log.
"""

import logging
from collections.abc import Callable

from django.core.cache import caches
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from tokens_app.conf import token_settings

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
    """200 when the database and the cache both answer, else 503 naming the one that did not."""
    states = {name: _state(name, check) for name, check in CHECKS.items()}
    healthy = all(state == "ok" for state in states.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **states}, status=200 if healthy else 503
    )
