"""Introspection of API tokens and JWTs: who may ask, and what active and inactive look like."""

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest

from tests.helpers import ISSUER, bearer, mint_jwt
from tests.jwt.helpers import INTROSPECT, claims_for, forge, introspect, payload_of
from tokens_app import services
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db


# --- introspection ------------------------------------------------------------------------


@pytest.fixture
def introspector(alice: Any, issue: Any) -> services.IssuedToken:
    return issue(alice, ["tokens:introspect"])


def test_introspection_needs_the_scope(api, reader):
    response = introspect(api, reader.plaintext, reader.plaintext)
    assert response.status_code == 403
    assert response.json()["required_scopes"] == ["tokens:introspect"]
    assert api.post(INTROSPECT, {"token": "x"}, format="json").status_code == 401


def test_introspection_jwt_without_the_scope_is_403(api, reader):
    token = mint_jwt(api, reader.plaintext)
    assert introspect(api, token, reader.plaintext).status_code == 403


def test_introspect_active_api_token(api, bob, issue, introspector):
    target = issue(bob, ["notes:write"])
    assert target.token.last_used_at is None
    response = introspect(api, introspector.plaintext, target.plaintext)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert response.json() == {
        "active": True,
        "scope": "notes:read notes:write",
        "exp": int(target.token.expires_at.timestamp()),
        "iat": int(target.token.created_at.timestamp()),
        "sub": str(bob.pk),
        "username": "bob",
        "token_type": "Bearer",
        "tokens_app_kind": "api_token",
        "client_id": target.token.key_id,
        "iss": ISSUER,
    }
    target.token.refresh_from_db()
    assert target.token.last_used_at is None
    assert target.token.last_used_ip is None


def test_introspect_active_jwt(api, alice, reader, introspector):
    token = mint_jwt(api, reader.plaintext)
    claims = payload_of(token)
    response = introspect(api, introspector.plaintext, token)
    assert response.status_code == 200
    assert response.json() == {
        "active": True,
        "scope": "notes:read",
        "exp": claims["exp"],
        "iat": claims["iat"],
        "nbf": claims["nbf"],
        "sub": str(alice.pk),
        "username": "alice",
        "token_type": "Bearer",
        "tokens_app_kind": "jwt",
        "client_id": reader.token.key_id,
        "iss": ISSUER,
        "aud": "api",
        "jti": claims["jti"],
    }


def test_jwt_with_introspect_scope_may_introspect(api, alice, issue, reader):
    caller = mint_jwt(api, issue(alice, ["tokens:introspect"]).plaintext)
    response = introspect(api, caller, reader.plaintext)
    assert response.status_code == 200
    assert response.json()["tokens_app_kind"] == "api_token"


def test_session_with_introspect_may_introspect(api, alice, reader):
    api.force_login(alice)
    response = api.post(INTROSPECT, {"token": reader.plaintext}, format="json")
    assert response.status_code == 200
    assert response.json()["active"] is True


def test_introspect_revoked_api_token_and_its_jwt(api, reader, introspector):
    token = mint_jwt(api, reader.plaintext)
    services.revoke_token(reader.token)
    assert introspect(api, introspector.plaintext, reader.plaintext).json() == {"active": False}
    assert introspect(api, introspector.plaintext, token).json() == {"active": False}


def test_introspect_expired_api_token(api, alice, issue, clock):
    caller = issue(alice, ["tokens:introspect"])
    target = issue(alice, ["notes:read"], expires_in=timedelta(minutes=5))
    clock.advance(minutes=6)
    response = introspect(api, caller.plaintext, target.plaintext)
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_introspect_expired_jwt(api, reader, introspector):
    now = int(time.time())
    token = forge(claims_for(reader, iat=now - 400, nbf=now - 400, exp=now - 60))
    assert introspect(api, introspector.plaintext, token).json() == {"active": False}


def test_introspect_forged_jwts(api, reader, introspector):
    forged = [
        forge(claims_for(reader), key=b"y" * 32),
        forge(claims_for(reader, aud="other")),
        forge(claims_for(reader), headers={"typ": "JWT"}),
        jwt.encode(claims_for(reader), None, algorithm="none", headers={"typ": "at+jwt"}),
    ]
    for token in forged:
        response = introspect(api, introspector.plaintext, token)
        assert response.status_code == 200
        assert response.json() == {"active": False}


@pytest.mark.parametrize(
    "make",
    [
        lambda issued: "garbage",
        lambda issued: "tka_" + "a" * 40,
        lambda issued: issued.plaintext[:-3] + "zzz",
        lambda issued: issued.plaintext.replace(issued.token.key_id, "0" * 12, 1),
        lambda issued: "eyJ.eyJ.eyJ",
    ],
    ids=["garbage", "prefixed", "wrong-secret", "unknown-key-id", "jwt-shaped"],
)
def test_introspect_unusable_is_exactly_inactive(api, reader, introspector, make):
    response = introspect(api, introspector.plaintext, make(reader))
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_introspect_deleted_token(api, reader, introspector):
    APIToken.objects.filter(pk=reader.token.pk).delete()
    assert introspect(api, introspector.plaintext, reader.plaintext).json() == {"active": False}


def test_introspect_rejects_a_body_without_token(api, introspector):
    missing = api.post(INTROSPECT, {}, format="json", **bearer(introspector.plaintext))
    assert missing.status_code == 400
    assert "token" in missing.json()


def test_introspect_ignores_unknown_parameters(api, reader, introspector):
    # RFC 7662 section 2.1: the endpoint may take other parameters; unknown ones are ignored.
    body = {"token": reader.plaintext, "extra": 1, "resource": "https://rs.example"}
    response = api.post(INTROSPECT, body, format="json", **bearer(introspector.plaintext))
    assert response.status_code == 200
    assert response.json()["active"] is True


def test_introspect_accepts_token_type_hint(api, reader, introspector):
    body = {"token": reader.plaintext, "token_type_hint": "access_token"}
    response = api.post(INTROSPECT, body, format="json", **bearer(introspector.plaintext))
    assert response.json()["active"] is True
