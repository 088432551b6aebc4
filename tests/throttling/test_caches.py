"""Caches that hold security state: floods never erase it (issue 13, item 6).

The attack: Django's local-memory and file caches delete live entries once they hold 300,
so ~300 revocations (or password attempts) of one's own erased a revoked token's JWT
deny-list entry (or a blocked client's counters). Here: the same floods through the real
API, the backends that now keep live entries, the system checks that refuse caches which
can lose them, and ``/health/ready/`` reading a real Redis's eviction settings.
"""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import RequestFactory
from django_ratelimit.core import get_usage

from tests.helpers import EXCHANGE, ROOT, WHOAMI, bearer, ids, is_production_profile, mint_jwt
from tokens_app import services
from tokens_app.cache import NonCullingFileBasedCache, NonCullingLocMemCache
from tokens_app.checks import check_caches
from tokens_app.core.retention import RedisEviction

pytestmark = pytest.mark.django_db

READY = "/health/ready/"
FLOOD = 320  # past MAX_ENTRIES (300), as in the report
DJANGO = "django.core.cache.backends."


# --- 6(b): a flood of revocations, over HTTP, on the profile's real deny-list cache --------


def test_revocation_flood_leaves_every_revoked_tokens_jwt_refused(api, alice, bob, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ACTIVE_TOKENS_PER_USER": None}
    victim = issue(alice, ["notes:read", "tokens:write"])
    manager = issue(alice, ["tokens:write"])
    victim_jwt = mint_jwt(api, victim.plaintext)
    assert api.get(WHOAMI, **bearer(victim_jwt)).status_code == 200
    url = f"/api/tokens/{quote(victim.token.key_id, safe='')}/"
    assert api.delete(url, **bearer(manager.plaintext)).status_code == 204
    assert api.get(WHOAMI, **bearer(victim_jwt)).status_code == 401

    # The attacker's own tokens: each revocation writes one more deny-list entry.
    others = [issue(bob, ["notes:read"]) for _ in range(FLOOD)]
    sampled = [mint_jwt(api, other.plaintext) for other in others[::10]]
    for other in others:
        assert services.revoke_token(other.token) is True

    refused = api.get(WHOAMI, **bearer(victim_jwt))
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith('Bearer realm="api", error="invalid_token"')
    # Django's FileBasedCache deletes a random third at 300 entries: the odds that it spares
    # the victim and these 32 are about (2/3)**31, under one in 100,000.
    assert [api.get(WHOAMI, **bearer(jwt)).status_code for jwt in sampled] == [401] * 32


# --- 6(a), the cache's part: a flood of counters from other clients ------------------------


def test_password_flood_from_other_clients_keeps_the_blocked_clients_counters(api, alice):
    def attempt(username: str, address: str) -> int:
        body = {"username": username, "password": "wrong", "name": "n", "scopes": ["notes:read"]}
        return api.post(EXCHANGE, body, format="json", REMOTE_ADDR=address).status_code

    assert [attempt("alice", "10.0.0.1") for _ in range(5)] == [400] * 5
    assert attempt("alice", "10.0.0.1") == 429
    # Each request from another address under another username adds two counters.
    for number in range(FLOOD):
        attempt(f"user{number}", f"10.1.{number // 250}.{number % 250}")
    assert attempt("alice", "10.0.0.1") == 429
    assert attempt("ALICE ", "10.9.9.9") == 429  # the username's counter survived too


# --- the backends: only expired entries go -------------------------------------------------


@pytest.fixture
def memory_cache(request: pytest.FixtureRequest) -> Iterator[NonCullingLocMemCache]:
    cache = NonCullingLocMemCache(f"test-{request.node.name}", {})
    yield cache
    cache.clear()


@pytest.fixture
def file_cache(tmp_path: Path) -> NonCullingFileBasedCache:
    cache = NonCullingFileBasedCache(str(tmp_path / "cache"), {})
    cache.sweep()  # as if just swept: the next sweep is due in SWEEP_INTERVAL (60 s)
    return cache


def fill(cache: BaseCache, count: int, prefix: str = "flood", timeout: float | None = 600) -> None:
    for number in range(count):
        cache.set(f"{prefix}:{number}", number, timeout=timeout)


def kept(cache: BaseCache, count: int, prefix: str = "flood") -> int:
    return sum(cache.get(f"{prefix}:{number}") == number for number in range(count))


def test_django_caches_cull_live_entries_past_max_entries(tmp_path):
    # Why the subclasses exist: the stock backends lose live entries to a flood.
    for cache in (LocMemCache("test-stock", {}), FileBasedCache(str(tmp_path), {})):
        fill(cache, 400)
        assert kept(cache, 400) < 400
        cache.clear()


@pytest.mark.parametrize("backend", ["memory_cache", "file_cache"])
def test_flood_past_max_entries_keeps_every_live_entry(request, backend):
    cache = request.getfixturevalue(backend)
    cache.set("deny:victim", {"revoked": True}, timeout=600)
    fill(cache, 1000)
    assert cache.get("deny:victim") == {"revoked": True}
    assert kept(cache, 1000) == 1000


def test_memory_cache_sweeps_only_expired_entries_when_full(memory_cache):
    fill(memory_cache, 250, prefix="expired", timeout=0)  # timeout 0: expired at once
    fill(memory_cache, 100, prefix="live")
    assert kept(memory_cache, 100, prefix="live") == 100
    assert len(memory_cache._cache) == 100  # the sweep at 300 took the 250 expired
    assert kept(memory_cache, 100, prefix="expired") == 0


def test_memory_cache_sweeps_again_only_when_the_store_has_doubled(memory_cache):
    fill(memory_cache, 400)  # all live: the sweep at 300 finds nothing to take
    assert memory_cache._sweep_at[0] == 600
    memory_cache.clear()
    assert memory_cache._sweep_at[0] == 300


def test_file_cache_sweep_deletes_expired_files_and_keeps_live_ones(file_cache):
    fill(file_cache, 50, prefix="expired", timeout=0)
    fill(file_cache, 50, prefix="live")
    assert file_cache.get("expired:1") is None
    assert len(file_cache._list_cache_files()) == 100  # reads never delete
    assert file_cache.sweep() == 50
    assert len(file_cache._list_cache_files()) == 50
    assert kept(file_cache, 50, prefix="live") == 50


def test_file_cache_sweeps_on_a_write_once_the_interval_has_passed(tmp_path):
    cache = NonCullingFileBasedCache(str(tmp_path), {"OPTIONS": {"SWEEP_INTERVAL": 3600}})
    cache.set("first", 1)  # no sweep yet: the first write sweeps (an empty directory)
    fill(cache, 10, prefix="expired", timeout=0)
    assert len(cache._list_cache_files()) == 11  # swept less than an hour ago: not again
    past = time.time() - 3601
    os.utime(cache._swept_path(), (past, past))
    cache.set("second", 2)
    assert sorted(cache.get_many(["first", "second"]).values()) == [1, 2]
    assert len(cache._list_cache_files()) == 2


def test_file_cache_incr_keeps_the_entrys_expiry(file_cache):
    # Django's file cache re-set the counter with the default timeout (300 s): a 15-minute
    # rate window's counter expired after 5 minutes.
    file_cache.add("counter", 0, timeout=900)
    before = file_cache._read(file_cache._key_to_file("counter"))
    assert file_cache.incr("counter") == 1
    after = file_cache._read(file_cache._key_to_file("counter"))
    assert before is not None and after is not None
    assert after[0] == before[0]
    assert after[1] == 1


@pytest.mark.parametrize("backend", ["memory_cache", "file_cache"])
def test_add_and_incr_count_after_a_flood(request, backend):
    cache = request.getfixturevalue(backend)
    fill(cache, 400)
    assert cache.add("counter", 1, timeout=60) is True
    assert cache.add("counter", 1, timeout=60) is False
    assert [cache.incr("counter") for _ in range(4)] == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    assert cache.touch("counter", 60) is True
    assert cache.touch("missing", 60) is False


def test_memory_cache_counts_exactly_across_threads(memory_cache):
    memory_cache.add("hits", 0, timeout=60)

    def hit() -> None:
        for _ in range(200):
            memory_cache.incr("hits")

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert memory_cache.get("hits") == 1600


COUNTER_SCRIPT = """
import sys
from tokens_app.cache import NonCullingFileBasedCache
cache = NonCullingFileBasedCache(sys.argv[1], {})
cache.add("hits", 0, timeout=600)
for _ in range(int(sys.argv[2])):
    cache.incr("hits")
"""


def test_file_cache_counts_exactly_across_processes(tmp_path):
    # Django's file cache increments by get-then-set: concurrent processes lose counts.
    directory = str(tmp_path / "shared")
    workers = [
        subprocess.Popen([sys.executable, "-c", COUNTER_SCRIPT, directory, "150"], cwd=ROOT)
        for _ in range(4)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0] * 4
    assert NonCullingFileBasedCache(directory, {}).get("hits") == 600


def test_rate_limit_counting_still_limits_after_a_flood():
    # django-ratelimit's own counting (add, then incr) on the profile's rate-limit cache.
    fill(caches["default"], 400)
    request = RequestFactory().post("/", REMOTE_ADDR="10.0.0.7")

    def count() -> Any:
        return get_usage(request, group="test.flood", key="ip", rate="5/m", increment=True)

    usages = [count() for _ in range(6)]
    assert [usage["count"] for usage in usages] == [1, 2, 3, 4, 5, 6]
    assert [usage["should_limit"] for usage in usages] == [False] * 5 + [True]
    fill(caches["default"], 400, prefix="second-flood")
    assert count()["should_limit"] is True


# --- the example project's caches ----------------------------------------------------------


def test_embedded_profile_uses_the_non_culling_backends(settings):
    if is_production_profile():
        pytest.skip("the production profile uses Redis for both")
    assert settings.CACHES["default"]["BACKEND"] == "tokens_app.cache.NonCullingLocMemCache"
    assert settings.CACHES["shared"]["BACKEND"] == "tokens_app.cache.NonCullingFileBasedCache"
    assert isinstance(caches["default"], NonCullingLocMemCache)
    assert isinstance(caches["shared"], NonCullingFileBasedCache)


def test_example_project_caches_pass_their_checks(settings):
    # The embedded default's one message, one process's memory, is silenced for `make run`.
    expected = [] if is_production_profile() else ["tokens_app.E009"]
    assert ids(check_caches(None)) == expected
    assert set(expected) <= set(settings.SILENCED_SYSTEM_CHECKS)


# --- system checks: E006-E009, W004 --------------------------------------------------------


class CullingSubclass(FileBasedCache):
    """A project's own subclass of a culling backend: it culls too."""


class HomeMadeCache(BaseCache):
    """A backend nobody can judge from its name."""


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (f"{DJANGO}dummy.DummyCache", ["tokens_app.E007"]),
        (f"{DJANGO}locmem.LocMemCache", ["tokens_app.E007"]),
        (f"{DJANGO}filebased.FileBasedCache", ["tokens_app.E007"]),
        (f"{DJANGO}db.DatabaseCache", ["tokens_app.E007"]),
        (f"{DJANGO}memcached.PyMemcacheCache", ["tokens_app.E007"]),
        (f"{DJANGO}memcached.PyLibMCCache", ["tokens_app.E007"]),
        ("tests.throttling.test_caches.CullingSubclass", ["tokens_app.E007"]),
        ("tokens_app.cache.NonCullingLocMemCache", ["tokens_app.E007"]),  # one process only
        ("tokens_app.cache.NonCullingFileBasedCache", []),
        (f"{DJANGO}redis.RedisCache", []),
        ("django_redis.cache.RedisCache", []),
        ("tests.throttling.test_caches.HomeMadeCache", ["tokens_app.W004"]),
        ("no_such_package.Cache", ["tokens_app.W004"]),
    ],
)
def test_deny_list_cache_backend_gets_its_check(settings, backend, expected):
    settings.CACHES = {**settings.CACHES, "shared": {"BACKEND": backend, "LOCATION": "x"}}
    messages = [m for m in check_caches(None) if "deny-list" in m.msg]
    assert ids(messages) == expected
    assert all(message.hint for message in messages)
    if expected:
        assert "'shared'" in messages[0].msg and backend in messages[0].msg


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (f"{DJANGO}dummy.DummyCache", []),  # E005, from check_settings
        (f"{DJANGO}locmem.LocMemCache", ["tokens_app.E008", "tokens_app.E009"]),
        (f"{DJANGO}filebased.FileBasedCache", ["tokens_app.E008"]),
        (f"{DJANGO}db.DatabaseCache", ["tokens_app.E008"]),
        (f"{DJANGO}memcached.PyMemcacheCache", ["tokens_app.E008"]),
        (f"{DJANGO}memcached.PyLibMCCache", ["tokens_app.E008"]),
        ("tests.throttling.test_caches.CullingSubclass", ["tokens_app.E008"]),
        ("tokens_app.cache.NonCullingLocMemCache", ["tokens_app.E009"]),
        ("tokens_app.cache.NonCullingFileBasedCache", []),
        (f"{DJANGO}redis.RedisCache", []),
        ("django_redis.cache.RedisCache", []),
        ("tests.throttling.test_caches.HomeMadeCache", ["tokens_app.W004"]),
    ],
)
def test_rate_limit_cache_backend_gets_its_check(settings, backend, expected):
    settings.CACHES = {**settings.CACHES, "counters": {"BACKEND": backend, "LOCATION": "x"}}
    settings.RATELIMIT_USE_CACHE = "counters"
    messages = [m for m in check_caches(None) if "rate-limit" in m.msg]
    assert ids(messages) == expected
    assert all(message.hint and "'counters'" in message.msg for message in messages)


def test_deny_list_alias_missing_from_caches_is_e006(settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "JWT_DENY_LIST_CACHE": "revocations"}
    messages = check_caches(None)
    assert ids(messages)[:1] == ["tokens_app.E006"]
    assert "'revocations'" in messages[0].msg
    with pytest.raises(SystemCheckError, match=r"tokens_app\.E006"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


def test_culling_deny_list_cache_stops_check(settings):
    backend = {"BACKEND": f"{DJANGO}filebased.FileBasedCache", "LOCATION": "unused"}
    settings.CACHES = {**settings.CACHES, "shared": backend}
    with pytest.raises(SystemCheckError, match=r"tokens_app\.E007"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


def test_broken_api_tokens_leaves_cache_checks_to_e001(settings):
    settings.API_TOKENS = {"TOKEN_PREFIX": "X"}
    assert check_caches(None) == []


# --- /health/ready/ ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("maxmemory", "policy", "state"),
    [
        (0, "noeviction", "ok"),
        (0, "allkeys-lru", "ok"),  # no memory limit: nothing is ever evicted
        (100_000_000, "noeviction", "ok"),  # full: writes fail (closed), keys stay
        (100_000_000, "allkeys-lru", "evicts"),
        (100_000_000, "volatile-ttl", "evicts"),  # every entry here has a TTL
        (None, None, "unknown"),
    ],
)
def test_redis_eviction_state(maxmemory, policy, state):
    assert RedisEviction(maxmemory, policy).state == state


def test_readiness_without_redis_reports_no_eviction(client):
    if is_production_profile():
        pytest.skip("the embedded profile has no Redis")
    assert client.get(READY).json() == {"status": "ok", "database": "ok", "cache": "ok"}


def redis_admin() -> Any:
    import redis

    return redis.Redis.from_url(caches["default"]._cache._servers[0])


@pytest.fixture
def redis_config() -> Iterator[Any]:
    """Set the shared Redis server's eviction settings; always put the previous ones back."""
    admin = redis_admin()
    previous = admin.config_get("maxmemory*")
    changed: list[str] = []

    def configure(**values: Any) -> None:
        for name, value in values.items():
            option = name.replace("_", "-")
            changed.append(option)
            admin.config_set(option, value)

    try:
        yield configure
    finally:
        for option in changed:
            admin.config_set(option, previous[option])
        admin.close()


BOTH_ROLES = ("rate_limit", "deny_list")


@pytest.mark.production_profile
def test_readiness_reports_a_redis_that_never_evicts(client, redis_config):
    redis_config(maxmemory=0, maxmemory_policy="noeviction")
    response = client.get(READY)
    assert response.status_code == 200
    report = {"maxmemory": 0, "maxmemory_policy": "noeviction"}
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "cache": "ok",
        "eviction": "ok",
        "redis": dict.fromkeys(BOTH_ROLES, report),
    }


@pytest.mark.production_profile
def test_readiness_is_503_when_redis_can_evict(client, redis_config):
    # A limit far above what the server holds: the policy says it may evict, none happens.
    redis_config(maxmemory=8 * 2**30, maxmemory_policy="allkeys-lru")
    response = client.get(READY)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["eviction"] == "evicts"
    assert body["database"] == body["cache"] == "ok"
    report = {"maxmemory": 8 * 2**30, "maxmemory_policy": "allkeys-lru"}
    assert body["redis"] == dict.fromkeys(BOTH_ROLES, report)


@pytest.mark.production_profile
def test_readiness_with_a_memory_limit_and_noeviction_is_ready(client, redis_config):
    redis_config(maxmemory=8 * 2**30, maxmemory_policy="noeviction")
    response = client.get(READY)
    assert response.status_code == 200
    assert response.json()["redis"]["deny_list"]["maxmemory"] == 8 * 2**30


@pytest.fixture
def restricted_redis(settings: Any) -> Iterator[Any]:
    """Point both caches at the test Redis as a user who may not run some commands."""
    admin = redis_admin()
    user = "tokens-app-health-test"
    location = caches["default"]._cache._servers[0]

    def restrict(*denied: str) -> str:
        admin.acl_setuser(
            user,
            enabled=True,
            passwords=["+health-test-password"],
            keys=["*"],
            commands=["+@all", *(f"-{command}" for command in denied)],
            reset=True,
        )
        parts = urlsplit(location)
        netloc = f"{user}:health-test-password@{parts.hostname}:{parts.port}"
        restricted = {
            **settings.CACHES["default"],
            "LOCATION": urlunsplit(parts._replace(netloc=netloc)),
        }
        settings.CACHES = {"default": restricted, "shared": restricted}
        return netloc

    try:
        yield restrict
    finally:
        admin.acl_deluser(user)
        admin.close()


@pytest.mark.production_profile
def test_readiness_falls_back_to_info_when_config_is_forbidden(client, restricted_redis):
    restricted_redis("config")
    response = client.get(READY)
    assert response.status_code == 200
    expected = redis_admin().info("memory")
    assert response.json()["redis"]["rate_limit"] == {
        "maxmemory": expected["maxmemory"],
        "maxmemory_policy": expected["maxmemory_policy"],
    }


@pytest.mark.production_profile
def test_readiness_is_503_when_eviction_cannot_be_read(client, restricted_redis):
    netloc = restricted_redis("config", "info")
    response = client.get(READY)
    assert response.status_code == 503
    body = response.json()
    assert body["eviction"] == "unknown"
    assert body["cache"] == "ok"
    unknown = {"maxmemory": None, "maxmemory_policy": None}
    assert body["redis"] == dict.fromkeys(BOTH_ROLES, unknown)
    # Never the server's address or credentials.
    for secret in (netloc, "health-test-password", "6379", "127.0.0.1", "redis://"):
        assert secret.encode() not in response.content
