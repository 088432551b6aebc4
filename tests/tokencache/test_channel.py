"""The channel itself: what an operator can send on it, and who else hears it.

``*`` (``EVERYTHING``) is the operator's flush after raw SQL
(``SELECT pg_notify('tokens_app_invalidate', '*')`` or
``PUBLISH tokens_app_invalidate:<db> '*'``).

On Redis, pub/sub ignores the database number, so the channel's name carries it
(``tokens_app_invalidate:<db>``): deployments that share a Redis server, each on a database
of its own, never hear each other's invalidations (or flushes).
"""

import pytest
import redis

from tests.tokencache.helpers import (
    REDIS_HOST,
    REDIS_PORT,
    plant,
    publish_elsewhere,
    require_channel,
    round_trip,
    steady,
    wait_for,
    warm,
    whoami,
)
from tokens_app import invalidation
from tokens_app.invalidation import EVERYTHING, MISSING

pytestmark = pytest.mark.django_db(transaction=True)


def test_everything_from_an_operator_empties_every_store(
    kind, cache_on, alice, issue, django_assert_num_queries
):
    channel = cache_on(kind)
    issued = issue(alice)
    warm(channel, kind, issued.plaintext, django_assert_num_queries)
    sentinel = ("test", "an entry of no tag")
    plant(channel, sentinel, [])
    publish_elsewhere(kind, EVERYTHING)
    wait_for(lambda: len(channel.store) == 0, "the store to be emptied")
    assert channel.store.get(sentinel) is MISSING
    with django_assert_num_queries(1):
        assert whoami(issued.plaintext).status_code == 200
    assert steady(channel, lambda: whoami(issued.plaintext)).status_code == 200


def test_a_deployment_on_another_redis_database_is_not_heard(cache_on):
    require_channel("redis")
    channel = cache_on("redis")  # on database 13
    key = ("test", "owner 1's row")
    plant(channel, key, [invalidation.owner_tag(1)])
    neighbour_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/12"
    neighbour = redis.Redis.from_url(neighbour_url)
    try:
        # What the other deployment's app sends when its own user pk=1 is saved.
        neighbour.publish(invalidation.redis_channel(neighbour_url), invalidation.owner_tag(1))
    finally:
        neighbour.close()
    round_trip(channel, "redis")  # this deployment's own message, after the neighbour's
    assert channel.store.get(key) is not MISSING
