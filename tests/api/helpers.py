"""Helpers of the token API tests: its paths, the metadata fields, whether a token works.

Not collected (no ``test_`` prefix).
"""

from urllib.parse import quote

from rest_framework.test import APIClient

from tests.helpers import WHOAMI, bearer

CURRENT = "/api/tokens/current/"
METADATA = {
    "id",
    "name",
    "description",
    "scopes",
    "status",
    "owner",
    "created_at",
    "expires_at",
    "last_used_at",
    "last_used_ip",
    "revoked_at",
    "allowed_ips",
    "rate_limit",
}


def detail(key_id: str) -> str:
    return f"/api/tokens/{quote(key_id, safe='')}/"


def rotate(key_id: str) -> str:
    return f"/api/tokens/{quote(key_id, safe='')}/rotate/"


def works(api: APIClient, plaintext: str) -> bool:
    response = api.get(WHOAMI, **bearer(plaintext))
    assert response.status_code in (200, 401)
    return response.status_code == 200
