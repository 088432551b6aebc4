"""Fixtures of the token cache tests: a channel per test, turned on and torn down, a relay.

Each test that turns the cache on is transactional: notifications are delivered at
commit, and the listener is another connection, which sees only committed rows. Its
listener is stopped, and gone, before the test's database is flushed (a PostgreSQL
listener still connected would also keep the test database from being dropped).
"""

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connections

from tests.tokencache.helpers import (
    CHANNELS,
    REDIS_CHANNEL_URL,
    REDIS_HOST,
    REDIS_PORT,
    WAIT_SECONDS,
    cache_settings,
    listener_running,
    require_channel,
    wait_for,
)
from tests.tokencache.proxy import Relay, relay
from tokens_app import invalidation
from tokens_app.conf import token_settings
from tokens_app.invalidation import Channel
from tokens_app.models import token_database


@pytest.fixture(params=CHANNELS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each channel in turn: ``postgresql`` (LISTEN/NOTIFY) and ``redis`` (pub/sub)."""
    require_channel(request.param)
    return str(request.param)


@pytest.fixture
def cache_on(settings: Any, transactional_db: None) -> Iterator[Callable[..., Channel]]:
    """Turn the token cache on over a channel; return it once its listener is fresh.

    ``fresh=False``: return it at once (its listener may never connect).
    """
    started: list[Channel] = []

    def turn_on(
        kind: str, *, redis_url: str = REDIS_CHANNEL_URL, fresh: bool = True, **extra: Any
    ) -> Channel:
        settings.API_TOKENS = {**settings.API_TOKENS, **cache_settings(kind, redis_url, **extra)}
        channel = invalidation.channel()
        assert channel is not None
        started.append(channel)
        if fresh:
            assert channel.wait_fresh(WAIT_SECONDS), f"the {kind} listener never became fresh"
        return channel

    yield turn_on
    for channel in started:
        channel.stop()
    wait_for(lambda: not any(map(listener_running, started)), "the listeners to end")


@pytest.fixture
def relayed(kind: str, transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relay]:
    """A relay in front of *kind*'s server, through which the listener will connect.

    Redis: the channel's URL names the relay (``relayed_url``). PostgreSQL: the
    listener connects with the token database's parameters, so the port in those
    parameters names the relay for the test's duration; this process's own connection is
    opened first, directly, and stays so.
    """
    if kind == "redis":
        with relay(REDIS_HOST, REDIS_PORT) as running:
            yield running
        return
    connection = connections[token_database()]
    connection.ensure_connection()
    database = connection.settings_dict
    with relay(database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)) as running:
        monkeypatch.setitem(database, "HOST", "127.0.0.1")
        monkeypatch.setitem(database, "PORT", str(running.port))
        yield running


@pytest.fixture
def deny_list_reads(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many reads this process has asked of the deny-list cache so far.

    Calls into the real cache object, each counted once (the file cache's ``get_many``
    calls its own ``get`` for each key: one question still).
    """
    cache = caches[token_settings().jwt.deny_list_cache]
    calls: list[str] = []
    inside = threading.local()
    for name in ("get", "get_many", "has_key"):
        real = getattr(cache, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            if getattr(inside, "depth", 0) == 0:
                calls.append(_name)
            inside.depth = getattr(inside, "depth", 0) + 1
            try:
                return _real(*args, **kwargs)
            finally:
                inside.depth -= 1

        monkeypatch.setattr(cache, name, counted)
    return lambda: len(calls)
