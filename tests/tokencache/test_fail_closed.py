"""Fail closed: a listener that is disconnected or behind never lets the store answer.

The listener connects through a relay (``proxy.py``) in front of the real server, so a
test can cut its connection on the server (PostgreSQL ``pg_terminate_backend``, Redis
``CLIENT KILL``, both aimed at the relay's port: other listeners on this machine keep
theirs), keep it from reconnecting (the relay closes new connections), or hold what
the server sends it (the relay stops passing bytes: the listener is behind for real).
Every request meanwhile reads the database (one query) and the deny-list cache, and a
token revoked meanwhile is refused at once.
"""

from typing import Any

import pytest

from tests.tokencache.helpers import (
    SHORT_LAG_MS,
    WAIT_SECONDS,
    kill_listener,
    quiet_since,
    relayed_redis_url,
    retried,
    revoke_elsewhere,
    round_trip,
    status,
    steady,
    wait_for,
    warm,
    whoami,
)
from tests.tokencache.proxy import Relay
from tokens_app import services
from tokens_app.invalidation import MISSING, Channel


@pytest.fixture
def channel(kind: str, relayed: Relay, cache_on: Any) -> Channel:
    """The cache on over *kind*, its listener connected through the relay, fresh."""
    on = cache_on(
        kind, redis_url=relayed_redis_url(relayed.port), TOKEN_CACHE_MAX_LAG_MS=SHORT_LAG_MS
    )
    assert relayed.accepted == 1  # the listener's connection
    return on


def jwt_of(issued: services.IssuedToken) -> str:
    return services.mint_jwt(issued.token).access_token


def test_a_listener_that_cannot_connect_leaves_every_request_to_the_database(
    kind, relayed, cache_on, alice, issue, django_assert_num_queries, deny_list_reads
):
    relayed.refusing = True  # the server is unreachable for the listener from the start
    channel = cache_on(kind, redis_url=relayed_redis_url(relayed.port), fresh=False)
    issued = issue(alice)
    jwt = jwt_of(issued)
    with django_assert_num_queries(2):  # the row and the last_used stamp
        assert status(issued.plaintext) == 200
    for _ in range(3):
        with django_assert_num_queries(1):
            assert status(issued.plaintext) == 200
        reads = deny_list_reads()
        assert status(jwt) == 200
        assert deny_list_reads() == reads + 1
    services.revoke_token(issued.token, reason="while the listener never connected")
    with django_assert_num_queries(1):
        assert status(issued.plaintext) == 401
    assert status(jwt) == 401
    assert not channel.fresh()
    assert len(channel.store) == 0
    assert relayed.accepted == 0


def test_a_killed_listener_fails_closed_and_comes_back_flushed(
    kind, relayed, channel, alice, issue, django_assert_num_queries, deny_list_reads
):
    revoked, kept = issue(alice), issue(alice)
    jwt = jwt_of(kept)
    for issued in (revoked, kept):
        warm(channel, kind, issued.plaintext, django_assert_num_queries)
    steady(channel, lambda: whoami(jwt), counters=(deny_list_reads,))

    relayed.refusing = True  # no reconnection for now
    assert kill_listener(kind, relayed.upstream_ports()) == 1
    wait_for(lambda: not channel.fresh(), "the store to be bypassed")

    for _ in range(3):  # every request reads its row, every JWT check the deny list
        with django_assert_num_queries(1):
            assert status(kept.plaintext) == 200
        reads = deny_list_reads()
        with django_assert_num_queries(0):
            assert status(jwt) == 200
        assert deny_list_reads() == reads + 1
    services.revoke_token(revoked.token, reason="while the listener is down")
    with django_assert_num_queries(1):
        assert status(revoked.plaintext) == 401  # at once: nothing to wait for
    revoked_jwt = jwt_of(kept)
    services.revoke_presented(revoked_jwt)
    assert status(revoked_jwt) == 401
    # Whatever lands in the store meanwhile (nothing should) goes at the reconnection.
    assert channel.store.put(("sentinel",), True, [], channel.store.generation)

    relayed.refusing = False
    assert channel.wait_fresh(WAIT_SECONDS), "the listener never reconnected"
    assert len(channel.store) == 0  # flushed
    assert channel.store.get(("sentinel",)) is MISSING
    assert relayed.accepted >= 2  # a connection of its own again
    with django_assert_num_queries(1):
        assert status(kept.plaintext) == 200
    assert steady(channel, lambda: whoami(kept.plaintext)).status_code == 200
    assert steady(channel, lambda: whoami(revoked.plaintext)).status_code == 401


def test_a_request_while_the_listener_is_behind_is_answered_from_the_database(
    kind, relayed, channel, alice, issue, django_assert_num_queries, deny_list_reads
):
    def run() -> None:
        assert channel.wait_fresh(WAIT_SECONDS)  # after a run cut short, too
        issued = issue(alice)
        jwt = jwt_of(issue(alice))
        warm(channel, kind, issued.plaintext, django_assert_num_queries)
        steady(channel, lambda: whoami(jwt), counters=(deny_list_reads,))
        since, connections = channel.store.generation, relayed.accepted
        relayed.pause()  # what the server sends the listener waits in the relay
        try:
            revoke_elsewhere(issued.token, kind)  # straight to the server, not through it
            wait_for(lambda: not channel.fresh(), "the listener to fall behind")
            quiet_since(channel, since)  # the stale row is still in the store...
            with django_assert_num_queries(1):
                assert status(issued.plaintext) == 401  # ...and not used
            reads = deny_list_reads()
            assert status(jwt) == 200
            assert deny_list_reads() == reads + 1  # the deny list read, not remembered
        finally:
            relayed.resume()
        assert channel.wait_fresh(WAIT_SECONDS), "the listener never caught up"
        # Fresh again may come first from a ping sent before the revoke (within the maximum
        # lag of it): wait for a message sent after it, then the stale row must be gone.
        round_trip(channel, kind)
        with django_assert_num_queries(1):  # the revoke's message dropped the stale row
            assert status(issued.plaintext) == 401
        quiet_since(channel, since, own=2)  # the revoke's message and the round trip's
        assert relayed.accepted == connections  # on the same connection: no flush did it
        assert steady(channel, lambda: whoami(issued.plaintext)).status_code == 401

    retried(run)
