"""Revoking an API token refuses its JWTs at once; the deny list failing fails closed."""

import io
from urllib.parse import quote

import pytest
from django.core.cache import caches
from django.core.management import call_command

from tests.helpers import DEAD_REDIS, NOTES, TOKENS, WHOAMI, assert_invalid, bearer, mint, mint_jwt
from tests.jwt.helpers import introspect
from tokens_app import services
from tokens_app.jwt import denylist

pytestmark = pytest.mark.django_db


# --- revocation ---------------------------------------------------------------------------


def test_revoking_parent_token_refuses_its_jwts_at_once(api, alice, issue):
    parent, unrelated = issue(alice, ["notes:read"]), issue(alice, ["notes:read"])
    token, other = mint_jwt(api, parent.plaintext), mint_jwt(api, unrelated.plaintext)
    assert api.get(NOTES, **bearer(token)).status_code == 200
    assert services.revoke_token(parent.token) is True
    assert_invalid(api.get(NOTES, **bearer(token)))
    assert_invalid(api.get(WHOAMI, **bearer(token)))
    assert api.get(NOTES, **bearer(other)).status_code == 200


def test_revoking_an_unrelated_token_changes_nothing(api, alice, bob, issue):
    parent = issue(alice, ["notes:read"])
    token = mint_jwt(api, parent.plaintext)
    services.revoke_token(issue(alice, ["notes:read"]).token)
    services.revoke_token(issue(bob, ["notes:read"]).token)
    assert api.get(NOTES, **bearer(token)).status_code == 200


def test_revoking_by_api_delete_refuses_its_jwts(api, alice, issue):
    parent = issue(alice, ["notes:read", "tokens:write"])
    manager = issue(alice, ["tokens:write"])
    token = mint_jwt(api, parent.plaintext)
    other = mint_jwt(api, manager.plaintext)
    url = f"{TOKENS}{quote(parent.token.key_id, safe='')}/"
    assert api.delete(url, **bearer(manager.plaintext)).status_code == 204
    assert_invalid(api.get(NOTES, **bearer(token)))
    assert api.get(WHOAMI, **bearer(other)).status_code == 200


def test_self_revoke_by_api_delete_refuses_its_jwts(api, alice, issue):
    parent = issue(alice, ["notes:read", "tokens:write"])
    token = mint_jwt(api, parent.plaintext)
    url = f"{TOKENS}{quote(parent.token.key_id, safe='')}/"
    assert api.delete(url, **bearer(parent.plaintext)).status_code == 204
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_revoking_current_token_refuses_its_jwts(api, reader):
    token = mint_jwt(api, reader.plaintext)
    assert api.delete(f"{TOKENS}current/", **bearer(reader.plaintext)).status_code == 204
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_revoking_by_command_refuses_its_jwts(api, reader):
    token = mint_jwt(api, reader.plaintext)
    out = io.StringIO()
    call_command("revoke_token", reader.token.key_id, stdout=out)
    assert "Revoked token" in out.getvalue()
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_revocation_lands_in_the_shared_cache(api, reader):
    token = mint_jwt(api, reader.plaintext)
    assert denylist.is_denied(reader.token.key_id) is False
    services.revoke_token(reader.token)
    assert denylist.is_denied(reader.token.key_id) is True
    # Verification runs no SQL: the shared cache entry is what refuses the JWT.
    caches["shared"].clear()
    assert api.get(NOTES, **bearer(token)).status_code == 200


# --- deny list unavailable ----------------------------------------------------------------


def test_unreadable_deny_list_fails_closed_for_jwts_only(api, settings, alice, issue):
    reader = issue(alice, ["notes:read", "tokens:introspect"])
    token = mint_jwt(api, reader.plaintext)
    settings.CACHES = {**settings.CACHES, "shared": DEAD_REDIS}
    refused = api.get(NOTES, **bearer(token))
    assert refused.status_code == 503
    assert refused["Retry-After"]
    assert token.encode() not in refused.content
    assert api.get(NOTES, **bearer(reader.plaintext)).status_code == 200
    assert introspect(api, reader.plaintext, token).status_code == 503
    assert introspect(api, reader.plaintext, reader.plaintext).json()["active"] is True


def test_revoke_succeeds_when_deny_list_is_down(api, settings, reader):
    settings.CACHES = {**settings.CACHES, "shared": DEAD_REDIS}
    assert services.revoke_token(reader.token) is True
    assert reader.token.revoked_at is not None
    assert_invalid(api.get(NOTES, **bearer(reader.plaintext)))


def test_minting_does_not_need_the_deny_list(api, settings, reader):
    settings.CACHES = {**settings.CACHES, "shared": DEAD_REDIS}
    assert mint(api, reader.plaintext).status_code == 200
