"""JWT checks with the token cache on: the deny list answered from memory, revocations heard.

A JWT is verified without SQL; what it costs besides is the deny-list read (its token's,
its owner's and its own entry). With the cache on and the listener fresh, those entries
are remembered in the store (absence included) and dropped by the same channel as token
rows, so a steady JWT check reads neither the database nor the deny-list cache, and a
revocation (of its parent token, of its owner's standing, of the JWT itself by RFC 7009)
is refused as soon as its message is applied.

Cache round trips are counted on the real cache object of the deny list (every call into
it), and in the production profile on its Redis server too (``MONITOR``, by key id).
"""

from collections.abc import Callable, Iterator

import pytest
from django.conf import settings as django_settings

from tests import live
from tests.tokencache.helpers import RedisMonitor, status, steady, wait_for, whoami
from tokens_app import services
from tokens_app.conf import token_settings


@pytest.fixture
def deny_list_server() -> Iterator[RedisMonitor | None]:
    """The deny-list cache's Redis server, watched (``None`` when it is no Redis)."""
    alias = token_settings().jwt.deny_list_cache
    config = django_settings.CACHES[alias]
    if not config["BACKEND"].endswith("RedisCache"):
        yield None
        return
    monitor = RedisMonitor(str(config["LOCATION"]))
    try:
        yield monitor
    finally:
        monitor.close()


def minted(issued: services.IssuedToken) -> str:
    return services.mint_jwt(issued.token).access_token


def refused(jwt: str) -> bool:
    return status(jwt) == 401


def test_a_steady_jwt_check_reads_neither_the_database_nor_the_deny_list_cache(
    kind, cache_on, alice, issue, deny_list_reads, deny_list_server
):
    channel = cache_on(kind)
    issued = issue(alice)
    jwt = minted(issued)
    before = deny_list_reads()
    assert status(jwt) == 200  # the first check reads the entries (absent) and remembers them
    assert deny_list_reads() > before
    counters: tuple[Callable[[], int], ...] = (deny_list_reads,)
    if deny_list_server is not None:
        key_id = issued.token.key_id
        assert deny_list_server.naming(key_id) > 0  # the first check's read, on the server
        counters += (lambda: deny_list_server.naming(key_id),)
    answer = steady(channel, lambda: whoami(jwt), times=5, counters=counters)
    assert answer.json()["credential"] == "jwt"


def test_a_jwt_check_reads_the_deny_list_when_the_cache_is_off(
    alice, issue, deny_list_reads, django_assert_num_queries, transactional_db
):
    issued = issue(alice)
    jwt = minted(issued)
    for _ in range(3):
        before = deny_list_reads()
        with django_assert_num_queries(0):
            assert status(jwt) == 200
        assert deny_list_reads() - before == 1  # one get_many per check


def test_a_jwt_of_a_revoked_token_is_refused(kind, cache_on, alice, issue):
    channel = cache_on(kind)
    issued = issue(alice)
    jwt = minted(issued)
    steady(channel, lambda: whoami(jwt))
    services.revoke_token(issued.token, reason="test")
    wait_for(lambda: refused(jwt), "the JWT of the revoked token to be refused")
    assert steady(channel, lambda: whoami(jwt)).status_code == 401


def test_a_jwt_revoked_by_rfc_7009_is_refused_alone(kind, cache_on, alice, issue):
    channel = cache_on(kind)
    issued = issue(alice)
    jwt, sibling = minted(issued), minted(issued)
    steady(channel, lambda: whoami(jwt))
    steady(channel, lambda: whoami(sibling))
    assert services.revoke_presented(jwt) is True  # by its jti
    wait_for(lambda: refused(jwt), "the JWT revoked by its jti to be refused")
    assert steady(channel, lambda: whoami(jwt)).status_code == 401
    assert status(sibling) == 200  # the token's other JWTs live on
    assert status(issued.plaintext) == 200


def test_a_jwt_of_a_deactivated_owner_is_refused(kind, cache_on, alice, issue):
    channel = cache_on(kind)
    jwt = minted(issue(alice))
    steady(channel, lambda: whoami(jwt))
    alice.is_active = False
    alice.save()
    wait_for(lambda: refused(jwt), "the JWT of the deactivated owner to be refused")


def test_a_jwt_of_a_token_rotated_without_grace_is_refused(kind, cache_on, alice, issue):
    channel = cache_on(kind)
    issued = issue(alice)
    jwt = minted(issued)
    steady(channel, lambda: whoami(jwt))
    services.rotate_token(issued.token, grace_seconds=0)
    wait_for(lambda: refused(jwt), "the JWT of the rotated-out secret to be refused")


@pytest.mark.production_profile
def test_a_jwt_of_a_token_revoked_by_another_process_is_refused_here(kind, cache_on, alice, issue):
    # manage.py revoke_token in a process of its own: only the channel tells this one.
    channel = cache_on(kind, redis_url=live.session_redis_url())
    issued = issue(alice)
    jwt = minted(issued)
    steady(channel, lambda: whoami(jwt))
    env = live.server_env(
        live.session_database_url(), live.session_redis_url(), DJANGO_TOKEN_CACHE=kind
    )
    live.manage(env, "revoke_token", issued.token.key_id, "--reason", "elsewhere")
    wait_for(lambda: refused(jwt), "the JWT revoked in another process to be refused here")
