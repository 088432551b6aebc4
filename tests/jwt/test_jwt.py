"""JWT access tokens: minting and using them, their queries, and what they may not reach.

Real requests, real database, real deny-list cache. Bad JWTs are forged with PyJWT (or,
where PyJWT refuses to help an attacker, by hand); keys are generated with cryptography.
Refused JWTs, revocation, introspection and JWKS have modules of their own.
"""

import time
from datetime import timedelta

import jwt
import pytest

from project.notes.models import Note
from tests.helpers import (
    INVALID_BODY,
    ISSUER,
    MINT,
    NOTES,
    TOKENS,
    WHOAMI,
    assert_invalid,
    bearer,
    mint,
    mint_jwt,
)
from tests.jwt.helpers import RESPONSE_FIELDS, claims_for, configure, forge, introspect, payload_of
from tokens_app import services
from tokens_app.conf import token_settings
from tokens_app.jwt import access_tokens, signing_keys
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db


# --- minting and using --------------------------------------------------------------------


def test_minted_jwt_reads_notes_but_cannot_write(api, alice, reader):
    Note.objects.create(owner=alice, title="mine")
    token = mint_jwt(api, reader.plaintext)
    listed = api.get(NOTES, **bearer(token))
    assert listed.status_code == 200
    assert [note["title"] for note in listed.json()["results"]] == ["mine"]
    refused = api.post(NOTES, {"title": "t"}, format="json", **bearer(token))
    assert refused.status_code == 403
    assert refused["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", scope="notes:write"'
    )
    assert refused.json()["required_scopes"] == ["notes:write"]
    assert Note.objects.count() == 1


def test_jwt_sees_only_its_owners_notes(api, alice, bob, issue):
    Note.objects.create(owner=bob, title="bob's")
    token = mint_jwt(api, issue(alice, ["notes:read"]).plaintext)
    assert api.get(NOTES, **bearer(token)).json()["results"] == []


def test_whoami_shows_jwt_credential_and_key_id(api, reader):
    token = mint_jwt(api, reader.plaintext)
    response = api.get(WHOAMI, **bearer(token))
    assert response.status_code == 200
    assert response.json() == {
        "username": "alice",
        "credential": "jwt",
        "key_id": reader.token.key_id,
        "scopes": ["notes:read"],
    }


def test_mint_response_shape_and_no_store(api, reader):
    response = mint(api, reader.plaintext)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == RESPONSE_FIELDS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "notes:read"


def test_minted_jwt_header_and_claims(api, alice, reader):
    before = int(time.time())
    token = mint_jwt(api, reader.plaintext)
    after = int(time.time())
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "at+jwt", "kid": signing_keys.keyring().signing_kid}
    claims = payload_of(token)
    assert set(claims) == {*access_tokens.REQUIRED_CLAIMS, "username", "secret_version"}
    assert claims["secret_version"] == 1
    assert claims["iss"] == ISSUER
    assert claims["sub"] == str(alice.pk)
    assert claims["aud"] == "api"
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 300
    assert claims["scope"] == "notes:read"
    assert claims["client_id"] == reader.token.key_id
    assert claims["username"] == "alice"
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16


def test_each_jwt_has_its_own_jti(api, reader):
    first, second = mint_jwt(api, reader.plaintext), mint_jwt(api, reader.plaintext)
    assert payload_of(first)["jti"] != payload_of(second)["jti"]


def test_default_key_is_not_the_hash_key(api, reader):
    token = mint_jwt(api, reader.plaintext)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, token_settings().hash_key, algorithms=["HS256"], audience="api")


def test_mint_with_scope_subset_narrows_the_jwt(api, alice, issue):
    writer = issue(alice, ["notes:write"])
    body = mint(api, writer.plaintext, scope="notes:read").json()
    assert body["scope"] == "notes:read"
    response = api.post(NOTES, {"title": "t"}, format="json", **bearer(body["access_token"]))
    assert response.status_code == 403


def test_mint_without_scope_carries_effective_scopes(api, alice, issue):
    writer = issue(alice, ["notes:write"])
    body = mint(api, writer.plaintext).json()
    assert body["scope"] == "notes:read notes:write"  # implied scopes included


def test_jwt_with_write_scope_creates_note(api, alice, issue):
    token = mint_jwt(api, issue(alice, ["notes:write"]).plaintext)
    response = api.post(NOTES, {"title": "t", "body": "b"}, format="json", **bearer(token))
    assert response.status_code == 201
    assert Note.objects.get().owner == alice


def test_mint_with_scope_not_held_is_400(api, reader):
    response = mint(api, reader.plaintext, scope="notes:read notes:write")
    assert response.status_code == 400
    assert "scope" in response.json()
    assert "access_token" not in response.json()


@pytest.mark.parametrize("scope", ["", "   ", "unknown:scope"])
def test_mint_with_bad_scope_is_400(api, reader, scope):
    response = mint(api, reader.plaintext, scope=scope)
    assert response.status_code == 400
    assert "scope" in response.json()


def test_mint_with_unknown_audience_is_400(api, reader):
    response = mint(api, reader.plaintext, audience="billing")
    assert response.status_code == 400
    assert "audience" in response.json()


def test_mint_with_unknown_field_is_400(api, reader):
    response = mint(api, reader.plaintext, lifetime=3600)
    assert response.status_code == 400
    assert "lifetime" in response.json()


def test_mint_for_configured_audience(api, settings, reader):
    configure(settings, JWT_AUDIENCES=["api", "reports"])
    token = mint_jwt(api, reader.plaintext, audience="reports")
    assert payload_of(token)["aud"] == "reports"
    assert payload_of(mint_jwt(api, reader.plaintext))["aud"] == "api"  # default: the first


def test_jwt_for_another_audience_is_refused_here_but_introspects_active(
    api, settings, alice, issue
):
    configure(settings, JWT_AUDIENCES=["api", "reports"])
    caller = issue(alice, ["notes:read", "tokens:introspect"])
    for_reports = mint_jwt(api, caller.plaintext, audience="reports")
    assert_invalid(api.get(NOTES, **bearer(for_reports)))  # this API is audience "api"
    assert api.get(NOTES, **bearer(mint_jwt(api, caller.plaintext))).status_code == 200
    answer = introspect(api, caller.plaintext, for_reports).json()
    assert (answer["active"], answer["tokens_app_kind"], answer["aud"]) == (True, "jwt", "reports")


def test_jwt_cannot_mint_another_jwt(api, reader):
    token = mint_jwt(api, reader.plaintext)
    response = api.post(MINT, {}, format="json", **bearer(token))
    assert response.status_code == 401
    assert "access_token" not in response.json()


def test_session_cannot_mint(api, alice):
    api.force_login(alice)
    response = api.post(MINT, {}, format="json")
    assert response.status_code in (401, 403)
    assert "access_token" not in response.json()


def test_anonymous_and_invalid_api_token_cannot_mint(api, reader):
    assert api.post(MINT, {}, format="json").status_code == 401
    assert_invalid(mint(api, reader.plaintext[:-2] + "xx"))


def test_revoked_api_token_cannot_mint(api, reader):
    services.revoke_token(reader.token)
    assert_invalid(mint(api, reader.plaintext))


def test_expiry_is_capped_at_the_api_tokens_expiry(api, alice, issue):
    issued = issue(alice, ["notes:read"], expires_in=timedelta(seconds=90))
    body = mint(api, issued.plaintext).json()
    assert 0 < body["expires_in"] <= 90
    claims = payload_of(body["access_token"])
    assert claims["exp"] == int(issued.token.expires_at.timestamp())
    assert claims["exp"] - claims["iat"] == body["expires_in"]


def test_lifetime_setting_sets_expiry(api, settings, reader):
    configure(settings, JWT_LIFETIME="1h")
    body = mint(api, reader.plaintext).json()
    assert body["expires_in"] == 3600


def test_mint_when_api_token_expires_this_second_is_400(api, alice, issue, clock):
    # The JWT's exp is in whole seconds, and must not pass the token's expiry.
    issued = issue(alice, ["notes:read"], expires_in=timedelta(seconds=10, microseconds=500_000))
    clock.advance(seconds=10, microseconds=200_000)
    response = mint(api, issued.plaintext)
    assert response.status_code == 400
    assert "access_token" not in response.json()


# --- queries and the user -----------------------------------------------------------------


def test_jwt_request_runs_no_sql(api, reader, django_assert_num_queries):
    token = mint_jwt(api, reader.plaintext)
    with django_assert_num_queries(0):
        response = api.get(WHOAMI, **bearer(token))
    assert response.status_code == 200
    assert response.json()["credential"] == "jwt"


def test_jwt_of_deactivated_owner_is_refused_at_once(api, alice, reader):
    """Without JWT_LOAD_USER no row is read, so deactivation reaches JWTs by the deny list."""
    token = mint_jwt(api, reader.plaintext)
    assert api.get(WHOAMI, **bearer(token)).status_code == 200
    alice.is_active = False
    alice.save()
    response = api.get(WHOAMI, **bearer(token))
    assert response.status_code == 401
    assert response.json() == INVALID_BODY


def test_load_user_costs_one_query(api, settings, alice, reader, django_assert_num_queries):
    configure(settings, JWT_LOAD_USER=True)
    token = mint_jwt(api, reader.plaintext)
    with django_assert_num_queries(1):
        response = api.get(WHOAMI, **bearer(token))
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_load_user_refuses_inactive_owner(api, settings, alice, reader):
    configure(settings, JWT_LOAD_USER=True)
    token = mint_jwt(api, reader.plaintext)
    alice.is_active = False
    alice.save()
    assert_invalid(api.get(WHOAMI, **bearer(token)))


@pytest.mark.parametrize("sub", ["999999", "not-a-number", ""])
def test_load_user_refuses_unknown_subject(api, settings, reader, sub):
    configure(settings, JWT_LOAD_USER=True)
    assert_invalid(api.get(WHOAMI, **bearer(forge(claims_for(reader, sub=sub)))))


def test_load_user_refuses_deleted_owner(api, settings, alice, reader):
    configure(settings, JWT_LOAD_USER=True)
    token = mint_jwt(api, reader.plaintext)
    alice.delete()
    assert_invalid(api.get(WHOAMI, **bearer(token)))


def test_jwt_user_holds_no_staff_power(api, staff, issue):
    token = mint_jwt(api, issue(staff, ["notes:read"]).plaintext)
    response = api.get(WHOAMI, **bearer(token))
    assert response.json()["username"] == "staff"
    assert response.json()["scopes"] == ["notes:read"]


# --- JWTs at the token-management endpoints -----------------------------------------------


def test_jwts_cannot_reach_the_token_management_endpoints(api, alice, issue):
    # A five-minute JWT must not mint a long-lived API token, nor read or change tokens:
    # the token API authenticates API tokens and sessions only.
    issued = issue(alice, ["tokens:read", "tokens:write"])
    token = mint_jwt(api, issued.plaintext)
    before = APIToken.objects.count()
    key_id = issued.token.key_id
    attempts = [
        api.get(TOKENS, **bearer(token)),
        api.post(TOKENS, {"name": "escalated", "scopes": ["tokens:read"]}, format="json",
                 **bearer(token)),
        api.get(f"{TOKENS}{key_id}/", **bearer(token)),
        api.delete(f"{TOKENS}{key_id}/", **bearer(token)),
        api.post(f"{TOKENS}{key_id}/rotate/", {}, format="json", **bearer(token)),
        api.get(f"{TOKENS}current/", **bearer(token)),
    ]  # fmt: skip
    assert [response.status_code for response in attempts] == [401] * len(attempts)
    assert APIToken.objects.count() == before
    assert APIToken.objects.get(key_id=key_id).revoked_at is None


def test_loaded_jwt_user_cannot_issue_beyond_the_jwts_scope(api, settings, alice, issue):
    configure(settings, JWT_LOAD_USER=True)
    parent = issue(alice, ["tokens:write"], expires_in=timedelta(hours=1))
    token = mint_jwt(api, parent.plaintext)
    # The API token itself may not do this: a child cannot exceed its parent.
    as_api_token = {"name": "by-token", "scopes": ["notes:write"]}
    refused = api.post(TOKENS, as_api_token, format="json", **bearer(parent.plaintext))
    assert refused.status_code == 400
    body = {"name": "escalated", "scopes": ["notes:write"]}
    response = api.post(TOKENS, body, format="json", **bearer(token))
    assert response.status_code == 401
    assert not APIToken.objects.filter(name="escalated").exists()
