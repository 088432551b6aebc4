"""A cached credential serves requests; what it derives, changes or revokes is judged afresh.

The cache may trail the database by up to ``TOKEN_CACHE_MAX_LAG_MS`` (or the TTL, for a write
that bypasses the app). A JWT minted from a row narrowed a moment ago would carry the old scopes
for its whole life, so ``services.authority`` reads a cached credential again before any
action and judges it by the database's row; if the secret it was verified by has changed,
the action is refused. Here the database is changed behind the cache's back
(``QuerySet.update``, which publishes nothing), so the cached row is stale for certain,
without racing a listener.
"""

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.helpers import HOME, MINT, TOKENS, WHOAMI, bearer, detail_url
from tokens_app import invalidation, services
from tokens_app.core import hashing
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db(transaction=True)

#: A Redis channel runs in both profiles (Redis is on every machine, CI's too).
CHANNEL_URL = "redis://127.0.0.1:6379/9"


@pytest.fixture
def cache_on(settings: Any) -> invalidation.Channel:
    settings.API_TOKENS = {
        **settings.API_TOKENS,
        "TOKEN_CACHE": "redis",
        "TOKEN_CACHE_REDIS_URL": CHANNEL_URL,
    }
    channel = invalidation.channel()
    assert channel is not None
    assert channel.wait_fresh(10), "the listener never caught up"
    return channel


def _cached_client(plaintext: str) -> APIClient:
    """An API client whose token row is in this process's store (its stamp written first)."""
    api = APIClient(REMOTE_ADDR=HOME)
    api.credentials(**bearer(plaintext))
    for _ in range(3):  # the SELECT and the stamp, the SELECT again, then from memory
        assert api.get(WHOAMI).status_code == 200
    return api


def _served_from_cache(api: APIClient, django_assert_num_queries: Any) -> dict[str, Any]:
    with django_assert_num_queries(0):
        response = api.get(WHOAMI)
    assert response.status_code == 200
    return dict(response.json())


def test_a_jwt_minted_from_a_cached_row_carries_what_the_database_says(
    cache_on: invalidation.Channel, alice: Any, issue: Any, django_assert_num_queries: Any
) -> None:
    issued = issue(alice, scopes=["notes:read", "notes:write"])
    api = _cached_client(issued.plaintext)
    APIToken.objects.filter(pk=issued.token.pk).update(scopes=["notes:read"])

    # The request itself is still served from memory: that is the documented window...
    assert _served_from_cache(api, django_assert_num_queries)["scopes"] == [
        "notes:read",
        "notes:write",
    ]
    # ...but minting reads the row again and is judged by it: the old scopes never reach a JWT.
    response = api.post(MINT, {"scope": "notes:write"}, format="json")
    assert response.status_code == 400, response.content
    assert response.json() == {"scope": ["A JWT can carry only scopes its API token holds."]}
    response = api.post(MINT, {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "notes:read"


def test_a_secret_rotated_behind_the_cache_acts_on_nothing(
    cache_on: invalidation.Channel, alice: Any, issue: Any, django_assert_num_queries: Any
) -> None:
    issued = issue(alice, scopes=["tokens:write"])
    victim = issue(alice, name="victim", scopes=["notes:read"])
    api = _cached_client(issued.plaintext)
    other = hashing.hash_secret("an entirely different secret, as a rotation leaves")
    APIToken.objects.filter(pk=issued.token.pk).update(secret_hash=other)

    _served_from_cache(api, django_assert_num_queries)
    assert api.post(detail_url(victim.token.key_id) + "revoke/").status_code == 403
    assert (
        api.post(TOKENS, {"name": "child", "scopes": ["tokens:read"]}, format="json").status_code
        == 403
    )
    assert api.post(detail_url(issued.token.key_id) + "rotate/").status_code == 403
    victim.token.refresh_from_db()
    assert victim.token.revoked_at is None
    assert APIToken.objects.filter(name="child").count() == 0


def test_an_owner_demoted_behind_the_cache_derives_no_staff_scope(
    cache_on: invalidation.Channel, django_user_model: Any, issue: Any
) -> None:
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    issued = issue(staff, scopes=["audit:read", "tokens:write"])
    api = _cached_client(issued.plaintext)
    django_user_model.objects.filter(pk=staff.pk).update(is_staff=False)

    response = api.post(TOKENS, {"name": "child", "scopes": ["audit:read"]}, format="json")
    assert response.status_code in (400, 403), response.content
    assert APIToken.objects.filter(name="child").count() == 0
    assert api.post(MINT, {"scope": "audit:read"}, format="json").status_code == 400
    assert "audit:read" not in api.post(MINT, {}, format="json").json()["scope"].split()


def test_an_unchanged_cached_credential_acts_as_usual(
    cache_on: invalidation.Channel, alice: Any, issue: Any
) -> None:
    issued = issue(alice, scopes=["notes:read", "tokens:write"])
    api = _cached_client(issued.plaintext)
    response = api.post(TOKENS, {"name": "child", "scopes": ["notes:read"]}, format="json")
    assert response.status_code == 201, response.content
    assert api.post(MINT, {"scope": "notes:read"}, format="json").status_code == 200
    services.revoke_token(issued.token)
