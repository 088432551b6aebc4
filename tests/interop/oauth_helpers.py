"""Helpers of the OAuth endpoint tests (introspection, revocation): requests as clients send them.

Not collected (no ``test_`` prefix). The other interop modules have helpers of their own.
"""

import base64
from typing import Any
from urllib.parse import urlencode

from rest_framework.test import APIClient

from tokens_app import services

INTROSPECT = "/api/auth/introspect/"
REVOKE = "/api/auth/revoke/"
FORM = "application/x-www-form-urlencoded"
BASIC_CHALLENGE = 'Basic realm="api"'


def basic(client_id: str, client_secret: str) -> dict[str, str]:
    """``Authorization: Basic`` for *client_id* and *client_secret*, as authlib builds it."""
    pair = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {pair}"}


def basic_as(client: services.IssuedToken) -> dict[str, str]:
    """``client_secret_basic`` for the API token *client*: its key id and the whole token."""
    return basic(client.token.key_id, client.plaintext)


def post_fields(client: services.IssuedToken) -> dict[str, str]:
    """``client_secret_post`` for the API token *client*."""
    return {"client_id": client.token.key_id, "client_secret": client.plaintext}


def form(api: APIClient, path: str, fields: Any, **extra: Any) -> Any:
    """POST *fields* (a dict, or pairs to repeat a name) form-encoded, as RFC clients do."""
    return api.post(path, urlencode(fields), content_type=FORM, **extra)
