"""Correct across processes: gunicorn workers sharing PostgreSQL and Redis with this process.

Production profile only (``make test-production``): the server processes must see the
rows this process commits, so the test database is PostgreSQL and each test commits
(``transaction=True``); rate-limit counters must be shared, so the cache is Redis.
No test sleeps longer than the readiness poll (50 ms).
"""

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests import live
from tokens_app import services
from tokens_app.conf import token_settings
from tokens_app.models import APIToken
from tokens_app.services.caller import Caller, Via

pytestmark = [pytest.mark.production_profile, pytest.mark.django_db(transaction=True)]

WORKERS = 3
POLL_SECONDS = 0.01
WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def server(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[live.LiveServer]:
    log_dir = tmp_path_factory.mktemp("gunicorn")
    static_root = log_dir / "static"
    static_root.mkdir()
    env = live.server_env(
        live.session_database_url(), live.session_redis_url(), DJANGO_STATIC_ROOT=str(static_root)
    )
    with live.gunicorn(env, log_dir, workers=WORKERS) as running:
        yield running


def authorization(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll *condition* briefly and often; fail, never hang, if it does not come true."""
    live.wait_until(condition, what, timeout=WAIT_SECONDS, poll=POLL_SECONDS)


def test_no_request_started_after_the_revoke_committed_is_accepted(server, alice, issue):
    issued = issue(alice, ["notes:read"])
    results: list[tuple[float, int]] = []  # (start time, status), appended by every client
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status = server.request("GET", "/api/whoami/", headers=authorization(issued.plaintext))
            results.append((started, status.status))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: sum(s == 200 for _, s in results) >= 20, "accepted requests under load")
        services.revoke_token(issued.token, reason="revoked under load", caller=Caller(via=Via.API))
        committed = time.monotonic()  # revoke_token returns after its transaction commits
        wait_for(lambda: sum(t > committed for t, _ in results) >= 40, "requests after revoke")
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    after = [status for started, status in results if started > committed]
    assert set(after) == {401}, f"accepted after revoke: {after.count(200)} of {len(after)}"
    assert {status for started, status in results if started < committed} <= {200, 401}
    served_by = server.serving_pids("/api/whoami/", requests=len(results))
    assert len(served_by) >= 2, "the load reached one worker only"


def test_password_exchange_limit_holds_across_workers(server, alice):
    attempts = 30
    limit = int(token_settings().password_exchange_rate.split("/")[0])

    def attempt(number: int) -> int:
        body = {"username": "alice", "password": "pw-alice", "name": f"cli-{number}"}
        return server.request(
            "POST", "/api/auth/token/", payload={**body, "scopes": ["notes:read"]}
        ).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attempt, range(attempts)))
    assert set(statuses) <= {201, 429}, statuses
    assert statuses.count(201) == limit
    assert APIToken.objects.filter(owner=alice).count() == limit
    # Per-process counters would have let up to WORKERS * limit through.
    served_by = server.serving_pids("/api/auth/token/", requests=attempts)
    assert len(served_by) >= 2, "one worker served every attempt"


RATE_PATH = "/api/notes/?per-token-rate"  # a query of its own: other tests' lines don't count


def test_per_token_rate_limit_holds_across_workers(server, alice, issue):
    limit, attempts = 10, 40
    # An hour-long window: a boundary falling inside this one-second test is ~1/3600.
    limited = issue(alice, ["notes:read"], rate_limit=f"{limit}/h")
    other = issue(alice, ["notes:read"])

    def call(token: str) -> Any:
        return server.request("GET", RATE_PATH, headers=authorization(token))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, [limited.plaintext] * attempts))
    statuses = [answer.status for answer in answers]
    assert statuses.count(200) == limit, statuses
    assert statuses.count(429) == attempts - limit
    refused = next(answer for answer in answers if answer.status == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert "throttled" in refused.body.decode()
    # Per-process counters would have let up to WORKERS * limit through.
    served_by = server.serving_pids(RATE_PATH, requests=attempts)
    assert len(served_by) >= 2, "one worker served every request"
    # The budget is the token's own: another token of the same owner is untouched.
    assert call(other.plaintext).status == 200


def test_concurrent_issuing_never_exceeds_the_active_token_limit(server, alice, issue):
    limit = token_settings().max_active_tokens_per_user
    assert limit is not None
    parent = issue(alice, ["notes:read", "tokens:write"])
    for _ in range(limit - 3):
        issue(alice)
    free = limit - APIToken.objects.usable().filter(owner=alice).count()
    assert free == 2

    def create(number: int) -> Any:
        return server.request(
            "POST",
            "/api/tokens/",
            headers=authorization(parent.plaintext),
            payload={"name": f"concurrent-{number}", "scopes": ["notes:read"]},
        )

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(create, range(12)))
    statuses = [answer.status for answer in answers]
    assert statuses.count(201) == free, statuses
    assert set(statuses) == {201, 400}
    assert APIToken.objects.usable().filter(owner=alice).count() == limit
    refused = next(answer for answer in answers if answer.status == 400)
    assert "active tokens, the most allowed" in refused.body.decode()


def test_revoke_by_command_in_another_process_takes_effect_at_once(server, alice, issue):
    issued = issue(alice, ["notes:read"])
    headers = authorization(issued.plaintext)
    assert server.request("GET", "/api/whoami/", headers=headers).status == 200
    env = live.server_env(live.session_database_url(), live.session_redis_url())
    live.manage(env, "revoke_token", issued.token.key_id, "--reason", "cli")
    assert {server.request("GET", "/api/whoami/", headers=headers).status for _ in range(6)} == {
        401
    }


def test_redis_down_server_still_authenticates_and_refuses_exchanges(
    alice, issue, tmp_path: Any
) -> None:
    issued = issue(alice, ["notes:read"])
    env = live.server_env(
        live.session_database_url(),
        f"redis://127.0.0.1:{live.free_port()}/0",
        DJANGO_STATIC_ROOT=str(tmp_path),
    )
    with live.gunicorn(env, tmp_path, workers=2) as dead_cache:
        whoami = dead_cache.request("GET", "/api/whoami/", headers=authorization(issued.plaintext))
        exchange = dead_cache.request(
            "POST",
            "/api/auth/token/",
            payload={
                "username": "alice",
                "password": "pw-alice",
                "name": "n",
                "scopes": ["notes:read"],
            },
        )
    assert whoami.status == 200
    assert whoami.json()["username"] == "alice"
    assert exchange.status == 503
    assert exchange.headers["Retry-After"] == "5"
    assert APIToken.objects.filter(owner=alice).count() == 1


def test_jwts_of_a_token_revoked_by_command_are_refused_within_a_second(server, alice, issue):
    issued = issue(alice, ["notes:read"])
    minted = server.request(
        "POST", "/api/auth/jwt/", headers=authorization(issued.plaintext), payload={}
    )
    assert minted.status == 200, minted.body
    access = authorization(minted.json()["access_token"])
    assert server.request("GET", "/api/whoami/", headers=access).json()["credential"] == "jwt"
    env = live.server_env(live.session_database_url(), live.session_redis_url())
    live.manage(env, "revoke_token", issued.token.key_id)  # the deny list entry: via Redis
    revoked_at = time.monotonic()
    wait_for(
        lambda: server.request("GET", "/api/whoami/", headers=access).status == 401,
        "the JWT to be refused",
    )
    assert time.monotonic() - revoked_at < 1
    assert {server.request("GET", "/api/whoami/", headers=access).status for _ in range(9)} == {401}
