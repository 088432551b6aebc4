"""What the token cache tests share: the channels, requests, writes from "elsewhere", probes.

A write made *elsewhere* is what another process of the deployment would do: the row
changed in the database and the change's tag announced on the channel, from connections
that are not this process's listener, and without this process's own at-commit drop
(which ``services`` calls would also do, and which would hide what the listener does).
"""

import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from tests.helpers import WHOAMI, bearer
from tests.live import wait_until
from tests.services import redis_problem
from tokens_app import invalidation
from tokens_app.invalidation import CHANNEL, LISTENER_NAME, MISSING, Channel, redis_channel
from tokens_app.models import APIToken, token_database

CHANNELS = ("postgresql", "redis")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: The channel's Redis in these tests: a database number nobody else's tests use (the
#: suite's cache is /15, the bench's /14). Pub/sub itself ignores the number: every
#: client of this Redis server hears the channel.
REDIS_CHANNEL_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/13"
#: Generous bounds on what is awaited (a listener connecting, a message arriving).
WAIT_SECONDS = 10
POLL_SECONDS = 0.01
#: A short maximum lag: "behind" and "disconnected" are reached quickly.
SHORT_LAG_MS = 300


def cache_settings(kind: str, redis_url: str = REDIS_CHANNEL_URL, **extra: Any) -> dict[str, Any]:
    """The ``API_TOKENS`` keys that turn the token cache on over channel *kind*."""
    values: dict[str, Any] = {"TOKEN_CACHE": kind, **extra}
    if kind == "redis":
        values["TOKEN_CACHE_REDIS_URL"] = redis_url
    return values


def relayed_redis_url(port: int) -> str:
    """The channel's Redis URL through a relay listening on *port*."""
    return f"redis://127.0.0.1:{port}/13"


def require_channel(kind: str) -> None:
    """Skip, with the reason, when channel *kind* cannot run in this profile."""
    if kind == "postgresql" and connections[token_database()].vendor != "postgresql":
        pytest.skip(
            "TOKEN_CACHE='postgresql' listens on the token database, which must be "
            "PostgreSQL: runs in the production profile (make test-production)"
        )
    if kind == "redis" and (problem := redis_problem(REDIS_CHANNEL_URL)):
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Redis channel's server must run under CI: {problem}")
        pytest.skip(f"the Redis channel needs a Redis server: {problem}")


def listener_running(channel: Channel) -> bool:
    """Whether *channel*'s listener thread is still alive (it closes its connection last)."""
    thread: threading.Thread | None = channel._thread
    return thread is not None and thread.is_alive()


def wait_for(condition: Any, what: str, timeout: float = WAIT_SECONDS) -> None:
    wait_until(condition, what, timeout=timeout, poll=POLL_SECONDS)


# --- requests --------------------------------------------------------------------------------


def whoami(plaintext: str) -> Any:
    """``GET /api/whoami/`` with *plaintext* as the bearer token, on a fresh client."""
    return APIClient().get(WHOAMI, **bearer(plaintext))


def status(plaintext: str) -> int:
    return int(whoami(plaintext).status_code)


class Noise(Exception):  # noqa: N818 — what a run saw, not an error of the code
    """Another deployment's invalidation reached the listener: this run proves nothing.

    Redis pub/sub ignores the database number, so every process on the same Redis server
    hears the channel: other test runs, the bench (``test_channel.py`` shows it). Their
    messages only ever drop more, which can make a "still cached" check fail for a
    reason that is not the code's; a run that saw one is made again (``retried``).
    """


def quiet_since(channel: Channel, generation: int, *, own: int = 0) -> None:
    """Raise ``Noise`` if the store dropped more than *own* times since *generation*."""
    if channel.store.generation - generation > own:
        raise Noise


def retried(scenario: Callable[[], None], *, attempts: int = 5) -> None:
    """Run *scenario* until one run is not disturbed by ``Noise``; fail after *attempts*."""
    for _ in range(attempts):
        try:
            scenario()
        except Noise:
            continue
        return
    pytest.fail(
        f"the store dropped more than the test's own messages in each of {attempts} runs: "
        "a message this test did not expect (from the code, or another deployment on this "
        "Redis server, see test_channel.py)"
    )


def steady(
    channel: Channel,
    request: Callable[[], Any],
    *,
    times: int = 3,
    counters: tuple[Callable[[], int], ...] = (),
    attempts: int = 100,
) -> Any:
    """Make *request* until *times* answers in a row came from the store; return the last.

    "From the store": no query (and no change of any of *counters*) in a request made
    while the listener was fresh, after one that found no invalidation applied meanwhile
    (so its row was kept: a drop of any tag refuses a put in progress). A request in whose
    span the store's generation moved does not count, nor the one after it (``Noise``'s
    doc says whose drops those are), nor one begun or ended while the listener was not
    fresh (after a stall, the first ping to come back may be one sent before it, and fresh
    for a moment only); after *attempts* requests the test fails.
    """
    database = connections[token_database()]
    generation, previous_clean, served = channel.store.generation, False, 0
    for _ in range(attempts):
        before = [count() for count in counters]
        fresh_before = channel.fresh()
        with CaptureQueriesContext(database) as queries:
            answer = request()
        fresh_after = channel.fresh()
        clean = channel.store.generation == generation and fresh_before and fresh_after
        generation = channel.store.generation
        if clean and previous_clean:
            state = f"{len(channel.store)} held"
            sql = [q["sql"][:60] for q in queries.captured_queries]
            assert sql == [], f"a request queried ({state})"
            assert [count() for count in counters] == before, f"a request used the cache ({state})"
            served += 1
            if served == times:
                return answer
        else:
            served = 0
        previous_clean = clean
    pytest.fail(f"no {times} requests in a row were answered from the store")


def warm(channel: Channel, kind: str, plaintext: str, assert_num_queries: Any) -> None:
    """Bring *plaintext*'s row into the store: the steady state (0 queries) from now on.

    First every message published so far is let in (the token's own issue announced it),
    then the first request reads the row and stamps ``last_used`` (which drops this
    process's copy: it is stale), the second reads the stamped row and keeps it, and from
    then on requests read nothing.
    """
    round_trip(channel, kind)
    with assert_num_queries(2):
        assert status(plaintext) == 200
    with assert_num_queries(1):
        assert status(plaintext) == 200
    assert steady(channel, lambda: whoami(plaintext)).status_code == 200


# --- writes from elsewhere ------------------------------------------------------------------


def publish_elsewhere(kind: str, *tags: str, redis_url: str = REDIS_CHANNEL_URL) -> None:
    """Announce *tags* on the channel from a connection of its own, as another process does.

    PostgreSQL: ``pg_notify`` on this process's database connection (not the listener's),
    delivered when the surrounding transaction commits (at once in autocommit). Redis:
    ``PUBLISH`` from a new client, straight to the server.
    """
    payload = " ".join(tags)
    if kind == "postgresql":
        with connections[token_database()].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])
        return
    client = redis.Redis.from_url(redis_url)
    try:
        client.publish(redis_channel(redis_url), payload)
    finally:
        client.close()


def revoke_elsewhere(token: APIToken, kind: str) -> None:
    """Revoke *token* as another process of the deployment would, seen from here.

    The row is revoked (a plain ``UPDATE``: no service, so no drop in this process) and
    the token's tag announced: inside the transaction on PostgreSQL, after the commit on
    Redis (the app's second message there; its first, a hold before the commit, only
    makes the listeners read the row from the database sooner).
    """
    with transaction.atomic(using=token_database()):
        APIToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
        if kind == "postgresql":
            publish_elsewhere(kind, invalidation.token_tag(token.key_id))
    if kind == "redis":
        publish_elsewhere(kind, invalidation.token_tag(token.key_id))


def plant(channel: Channel, key: Any, tags: list[str]) -> None:
    """Store a sentinel entry at *key* (again if a drop came between generation and put)."""
    wait_for(lambda: channel.store.put(key, True, tags, channel.store.generation), "a put to land")


def round_trip(channel: Channel, kind: str) -> None:
    """Return once the listener has applied a message published now, from elsewhere.

    Messages arrive in order, so everything published before this one (by this process
    too) has been applied as well. A sentinel entry, tagged with a tag of its own, is
    dropped when the message is applied.
    """
    tag = f"test:{uuid.uuid4().hex}"
    key = ("round-trip", tag)
    plant(channel, key, [tag])
    publish_elsewhere(kind, tag)
    wait_for(lambda: channel.store.get(key) is MISSING, "the listener to apply a message")


# --- the listener's connection on the server ------------------------------------------------


def kill_listener(kind: str, ports: list[int]) -> int:
    """Have the server end the listener connections that come from local *ports*.

    Only those: other processes on this machine (another test run, the bench) have
    listeners of the same name. Return how many were ended.
    """
    if kind == "postgresql":
        with connections[token_database()].cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND client_port = ANY(%s)",
                [LISTENER_NAME, ports],
            )
            return int(cursor.fetchone()[0])
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        killed = 0
        for entry in client.client_list(_type="pubsub"):
            port = int(str(entry["addr"]).rsplit(":", 1)[1])
            if entry["name"] == LISTENER_NAME and port in ports:
                killed += int(client.client_kill_filter(_id=entry["id"]))
        return killed
    finally:
        client.close()


# --- what a Redis server is asked -----------------------------------------------------------


class RedisMonitor:
    """The commands a Redis server runs, as its ``MONITOR`` feed reports them.

    What this process asks the deny-list cache, counted on the server itself and told
    apart from other clients' traffic by the words it names (a key id, a digest).
    """

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._commands: list[str] = []
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                self._commands.append(str(self._monitor.next_command()["command"]))
        except (redis.RedisError, OSError, ValueError, AttributeError):
            return  # closed

    def naming(self, word: str) -> int:
        """How many commands so far named *word* (every command run before this call)."""
        marker = f"tokens_app-test-monitor:{uuid.uuid4().hex}"
        self._client.exists(marker)  # MONITOR reports in the order the server ran them
        wait_for(lambda: any(marker in c for c in self._commands), "MONITOR to catch up")
        return sum(word in command for command in self._commands)

    def close(self) -> None:
        self._monitor.connection.disconnect()
        self._thread.join(timeout=WAIT_SECONDS)
        self._client.close()
