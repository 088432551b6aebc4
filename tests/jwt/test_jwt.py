"""JWT access tokens: minting, verification, revocation, introspection and JWKS.

Real requests, real database, real deny-list cache. Bad JWTs are forged with PyJWT (or,
where PyJWT refuses to help an attacker, by hand); keys are generated with cryptography.
"""

import base64
import hashlib
import hmac
import io
import json
import time
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from rest_framework.test import APIClient

from project.notes.models import Note
from tests.helpers import (
    DEAD_REDIS,
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
from tokens_app import services
from tokens_app.conf import token_settings
from tokens_app.jwt import access_tokens, denylist, signing_keys
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db

INTROSPECT = "/api/auth/introspect/"
JWKS = "/.well-known/jwks.json"
RESPONSE_FIELDS = {"access_token", "token_type", "expires_in", "scope"}
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


# --- helpers ------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def payload_of(token: str) -> dict[str, Any]:
    return json.loads(unb64url(token.split(".")[1]))


def configure(settings: Any, **jwt_settings: Any) -> None:
    settings.API_TOKENS = {**settings.API_TOKENS, **jwt_settings}


def private_pem(key: Any) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def rfc7638_rsa_thumbprint(private_key: rsa.RSAPrivateKey) -> str:
    numbers = private_key.public_key().public_numbers()

    def member(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    members = {"e": member(numbers.e), "kty": "RSA", "n": member(numbers.n)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def claims_for(issued: services.IssuedToken, **overrides: Any) -> dict[str, Any]:
    """Claims as the server would mint them for *issued*, now, changed by *overrides*."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": str(issued.token.owner.pk),
        "aud": "api",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": "forged-jti",
        "scope": "notes:read",
        "client_id": issued.token.key_id,
        "username": issued.token.owner.get_username(),
    }
    claims.update(overrides)
    return claims


def forge(
    claims: dict[str, Any],
    *,
    headers: dict[str, Any] | None = None,
    key: Any = None,
    algorithm: str | None = None,
) -> str:
    """Sign *claims* with the server's own signing key, unless told otherwise."""
    ring = signing_keys.keyring()
    header = {"typ": "at+jwt", "kid": ring.signing_kid, **(headers or {})}
    return jwt.encode(
        claims,
        ring.signing_key if key is None else key,
        algorithm=algorithm or ring.algorithm,
        headers=header,
    )


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256 without PyJWT, which refuses PEM bytes as an HMAC secret."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def introspect(api: APIClient, caller: str, token: str) -> Any:
    return api.post(INTROSPECT, {"token": token}, format="json", **bearer(caller))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def rs256(settings: Any, rsa_key: rsa.RSAPrivateKey) -> rsa.RSAPrivateKey:
    configure(settings, JWT_ALGORITHM="RS256", JWT_SIGNING_KEY=private_pem(rsa_key))
    return rsa_key


@pytest.fixture
def reader(alice: Any, issue: Any) -> services.IssuedToken:
    return issue(alice, ["notes:read"])


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
    assert (answer["active"], answer["token_type"]) == (True, "jwt")


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


# --- refused JWTs -------------------------------------------------------------------------


def test_forged_control_token_is_accepted(api, reader):
    """The forging helper makes what the server makes: the refusals below are meaningful."""
    response = api.get(NOTES, **bearer(forge(claims_for(reader))))
    assert response.status_code == 200


def test_alg_none_is_refused(api, reader):
    token = jwt.encode(
        claims_for(reader),
        None,
        algorithm="none",
        headers={"typ": "at+jwt", "kid": signing_keys.keyring().signing_kid},
    )
    assert token.endswith(".")
    assert_invalid(api.get(NOTES, **bearer(token)))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_spellings_with_a_real_signature_are_refused(api, reader, alg):
    real = forge(claims_for(reader))
    header = {"alg": alg, "typ": "at+jwt", "kid": signing_keys.keyring().signing_kid}
    _header, payload, signature = real.split(".")
    assert_invalid(api.get(NOTES, **bearer(f"{b64url_json(header)}.{payload}.{signature}")))
    assert_invalid(api.get(NOTES, **bearer(f"{b64url_json(header)}.{payload}.")))


def test_algorithm_confusion_hs256_with_rs_public_key_is_refused(api, rs256, reader):
    header = {"alg": "HS256", "typ": "at+jwt", "kid": signing_keys.keyring().signing_kid}
    token = hs256_by_hand(header, claims_for(reader), public_pem(rs256))
    assert_invalid(api.get(NOTES, **bearer(token)))
    # The same claims, properly signed, pass: only the algorithm was wrong.
    assert api.get(NOTES, **bearer(forge(claims_for(reader)))).status_code == 200


def test_rs256_token_signed_by_another_key_with_our_kid_is_refused(
    api, rs256, other_rsa_key, reader
):
    token = forge(claims_for(reader), key=other_rsa_key)
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_embedded_jwk_header_is_not_trusted(api, rs256, other_rsa_key, reader):
    algorithm = jwt.algorithms.RSAAlgorithm
    embedded = json.loads(algorithm.to_jwk(other_rsa_key.public_key()))
    token = forge(claims_for(reader), key=other_rsa_key, headers={"jwk": embedded})
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_hs256_token_when_server_is_rs256_is_refused(api, settings, rsa_key, reader):
    hs_token = forge(claims_for(reader))  # signed under the default HS256 key
    assert api.get(NOTES, **bearer(hs_token)).status_code == 200
    configure(settings, JWT_ALGORITHM="RS256", JWT_SIGNING_KEY=private_pem(rsa_key))
    assert_invalid(api.get(NOTES, **bearer(hs_token)))


def test_tampered_signature_is_refused(api, reader):
    token = mint_jwt(api, reader.plaintext)
    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert_invalid(api.get(NOTES, **bearer(f"{header}.{payload}.{flipped}")))
    assert_invalid(api.get(NOTES, **bearer(f"{header}.{payload}.")))


def test_tampered_payload_is_refused(api, reader):
    token = mint_jwt(api, reader.plaintext)
    header, _payload, signature = token.split(".")
    claims = payload_of(token)
    claims["scope"] = "notes:read notes:write"
    forged = f"{header}.{b64url_json(claims)}.{signature}"
    assert_invalid(api.post(NOTES, {"title": "t"}, format="json", **bearer(forged)))
    assert_invalid(api.get(NOTES, **bearer(forged)))
    assert Note.objects.count() == 0


def test_signed_with_another_hs256_secret_is_refused(api, reader):
    assert_invalid(api.get(NOTES, **bearer(forge(claims_for(reader), key=b"x" * 32))))


def test_expired_jwt_is_refused(api, reader):
    now = int(time.time())
    claims = claims_for(reader, iat=now - 400, nbf=now - 400, exp=now - 60)
    assert_invalid(api.get(NOTES, **bearer(forge(claims))))


def test_expired_within_leeway_is_accepted(api, reader):
    now = int(time.time())
    claims = claims_for(reader, iat=now - 300, nbf=now - 300, exp=now - 3)
    assert api.get(NOTES, **bearer(forge(claims))).status_code == 200


def test_zero_leeway_refuses_just_expired(api, settings, reader):
    configure(settings, JWT_LEEWAY_SECONDS=0)
    now = int(time.time())
    claims = claims_for(reader, iat=now - 300, nbf=now - 300, exp=now - 3)
    assert_invalid(api.get(NOTES, **bearer(forge(claims))))


def test_nbf_beyond_leeway_is_refused(api, reader):
    claims = claims_for(reader, nbf=int(time.time()) + 60)
    assert_invalid(api.get(NOTES, **bearer(forge(claims))))


def test_nbf_within_leeway_is_accepted(api, reader):
    claims = claims_for(reader, nbf=int(time.time()) + 3)
    assert api.get(NOTES, **bearer(forge(claims))).status_code == 200


def test_iat_in_the_future_is_refused(api, reader):
    now = int(time.time())
    claims = claims_for(reader, iat=now + 120, nbf=now, exp=now + 300)
    assert_invalid(api.get(NOTES, **bearer(forge(claims))))


@pytest.mark.parametrize("aud", ["other", ["other"], "", "API"])
def test_wrong_audience_is_refused(api, reader, aud):
    assert_invalid(api.get(NOTES, **bearer(forge(claims_for(reader, aud=aud)))))


def test_audience_list_containing_ours_is_accepted(api, reader):
    token = forge(claims_for(reader, aud=["other", "api"]))
    assert api.get(NOTES, **bearer(token)).status_code == 200


@pytest.mark.parametrize("iss", ["tokens_app", "evil", "", "TOKENS_APP-EXAMPLE"])
def test_wrong_issuer_is_refused(api, reader, iss):
    assert_invalid(api.get(NOTES, **bearer(forge(claims_for(reader, iss=iss)))))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt2", "", "application/jwt", None])
def test_wrong_or_missing_typ_is_refused(api, reader, typ):
    token = forge(claims_for(reader), headers={"typ": typ})
    header = jwt.get_unverified_header(token)
    assert header.get("typ") == (typ or None)
    assert_invalid(api.get(NOTES, **bearer(token)))


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
def test_accepted_typ_spellings(api, reader, typ):
    token = forge(claims_for(reader), headers={"typ": typ})
    assert api.get(NOTES, **bearer(token)).status_code == 200


@pytest.mark.parametrize("claim", access_tokens.REQUIRED_CLAIMS)
def test_each_required_claim_missing_is_refused(api, reader, claim):
    claims = claims_for(reader)
    del claims[claim]
    assert_invalid(api.get(NOTES, **bearer(forge(claims))))


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_id": 12345},
        {"client_id": None},
        {"scope": ["notes:read"]},
        {"scope": None},
        {"sub": 1},
        {"exp": "soon"},
    ],
    ids=repr,
)
def test_claims_of_the_wrong_type_are_refused(api, reader, overrides):
    assert_invalid(api.get(NOTES, **bearer(forge(claims_for(reader, **overrides)))))


@pytest.mark.parametrize("kid", ["unknown", "", "MISSING", None, 7, ["x"]])
def test_unknown_missing_or_odd_kid_is_refused(api, reader, kid):
    # By hand: PyJWT refuses to write a kid that is not a string.
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    if kid == "MISSING":
        del header["kid"]
    token = hs256_by_hand(header, claims_for(reader), signing_keys.keyring().signing_key)
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_hand_signed_control_token_is_accepted(api, reader):
    header = {"alg": "HS256", "typ": "at+jwt", "kid": signing_keys.keyring().signing_kid}
    token = hs256_by_hand(header, claims_for(reader), signing_keys.keyring().signing_key)
    assert api.get(NOTES, **bearer(token)).status_code == 200


@pytest.mark.parametrize(
    "value",
    ["eyJ.eyJ.", "eyJhbGciOiJIUzI1NiJ9.e30.x", "eyJ!!!.eyJ!!!.sig", "eyJ" + "A" * 9000 + ".a.b"],
    ids=["empty-segments", "no-claims", "not-base64", "too-long"],
)
def test_malformed_jwts_are_refused(api, value):
    assert_invalid(api.get(NOTES, **bearer(value)))


def test_old_hs256_key_verifies_while_listed_then_not(api, settings, reader):
    old, new = "o" * 40, "n" * 40
    configure(settings, JWT_SIGNING_KEY=old)
    token = mint_jwt(api, reader.plaintext)
    configure(settings, JWT_SIGNING_KEY=new, JWT_VERIFICATION_KEYS=[old])
    assert api.get(NOTES, **bearer(token)).status_code == 200
    fresh = mint_jwt(api, reader.plaintext)
    assert jwt.get_unverified_header(fresh)["kid"] != jwt.get_unverified_header(token)["kid"]
    configure(settings, JWT_SIGNING_KEY=new, JWT_VERIFICATION_KEYS=[])
    assert_invalid(api.get(NOTES, **bearer(token)))
    assert api.get(NOTES, **bearer(fresh)).status_code == 200


def test_old_rsa_key_verifies_while_listed_then_not(api, settings, rsa_key, other_rsa_key, reader):
    configure(settings, JWT_ALGORITHM="RS256", JWT_SIGNING_KEY=private_pem(other_rsa_key))
    token = mint_jwt(api, reader.plaintext)
    old_public = public_pem(other_rsa_key).decode()
    configure(settings, JWT_SIGNING_KEY=private_pem(rsa_key), JWT_VERIFICATION_KEYS=[old_public])
    assert api.get(NOTES, **bearer(token)).status_code == 200
    kids = {key["kid"] for key in api.get(JWKS).json()["keys"]}
    assert kids == {rfc7638_rsa_thumbprint(rsa_key), rfc7638_rsa_thumbprint(other_rsa_key)}
    configure(settings, JWT_VERIFICATION_KEYS=[])
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_changing_hash_key_invalidates_derived_jwt_key(api, settings, reader):
    token = mint_jwt(api, reader.plaintext)
    configure(settings, HASH_KEY="h" * 40)
    assert_invalid(api.get(WHOAMI, **bearer(token)))


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
        "token_type": "api_token",
        "client_id": target.token.key_id,
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
        "sub": str(alice.pk),
        "username": "alice",
        "token_type": "jwt",
        "client_id": reader.token.key_id,
    }


def test_jwt_with_introspect_scope_may_introspect(api, alice, issue, reader):
    caller = mint_jwt(api, issue(alice, ["tokens:introspect"]).plaintext)
    response = introspect(api, caller, reader.plaintext)
    assert response.status_code == 200
    assert response.json()["token_type"] == "api_token"


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


def test_introspect_rejects_bad_body(api, introspector):
    missing = api.post(INTROSPECT, {}, format="json", **bearer(introspector.plaintext))
    assert missing.status_code == 400
    unknown = api.post(
        INTROSPECT, {"token": "x", "extra": 1}, format="json", **bearer(introspector.plaintext)
    )
    assert unknown.status_code == 400


def test_introspect_accepts_token_type_hint(api, reader, introspector):
    body = {"token": reader.plaintext, "token_type_hint": "access_token"}
    response = api.post(INTROSPECT, body, format="json", **bearer(introspector.plaintext))
    assert response.json()["active"] is True


# --- JWKS and asymmetric algorithms -------------------------------------------------------


def test_jwks_is_empty_for_hs256(api):
    response = api.get(JWKS)
    assert response.status_code == 200
    assert response.json() == {"keys": []}
    assert response["Cache-Control"] == "public, max-age=300"


def test_jwks_refuses_post(api):
    assert api.post(JWKS).status_code == 405


def test_jwks_publishes_rs256_public_key(api, rs256, reader):
    token = mint_jwt(api, reader.plaintext)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    response = api.get(JWKS)
    assert response["Cache-Control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert len(keys) == 1
    (key,) = keys
    assert key["kid"] == header["kid"] == rfc7638_rsa_thumbprint(rs256)
    assert key["use"] == "sig"
    assert key["alg"] == "RS256"
    assert key["kty"] == "RSA"
    assert not PRIVATE_JWK_MEMBERS & set(key)
    # A third party verifies the JWT with nothing but the published key.
    public = jwt.PyJWK(key).key
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="api", issuer=ISSUER)
    assert claims["client_id"] == reader.token.key_id
    assert api.get(NOTES, **bearer(token)).status_code == 200


def test_rs256_private_key_never_published(api, rs256):
    body = api.get(JWKS).content.decode()
    numbers = rs256.private_numbers()
    d = b64url(numbers.d.to_bytes((numbers.d.bit_length() + 7) // 8, "big"))
    assert d not in body
    assert "PRIVATE" not in body


@pytest.mark.parametrize(
    ("algorithm", "make_key", "crv"),
    [
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1()), "P-256"),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate, "Ed25519"),
    ],
)
def test_asymmetric_algorithms_end_to_end(api, settings, alice, issue, algorithm, make_key, crv):
    key = make_key()
    configure(settings, JWT_ALGORITHM=algorithm, JWT_SIGNING_KEY=private_pem(key))
    Note.objects.create(owner=alice, title="n")
    issued = issue(alice, ["notes:read"])
    token = mint_jwt(api, issued.plaintext)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == algorithm
    assert header["typ"] == "at+jwt"
    response = api.get(NOTES, **bearer(token))
    assert response.status_code == 200
    assert [n["title"] for n in response.json()["results"]] == ["n"]
    (jwk,) = api.get(JWKS).json()["keys"]
    assert jwk["kid"] == header["kid"]
    assert jwk["alg"] == algorithm
    assert jwk["use"] == "sig"
    assert jwk["crv"] == crv
    assert "d" not in jwk
    public = jwt.PyJWK(jwk).key
    assert jwt.decode(token, public, algorithms=[algorithm], audience="api")["sub"] == str(alice.pk)
    # Revocation works the same way whatever the algorithm.
    services.revoke_token(issued.token)
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_es256_token_refused_by_eddsa_server(api, settings, reader):
    configure(
        settings,
        JWT_ALGORITHM="ES256",
        JWT_SIGNING_KEY=private_pem(ec.generate_private_key(ec.SECP256R1())),
    )
    token = mint_jwt(api, reader.plaintext)
    configure(
        settings,
        JWT_ALGORITHM="EdDSA",
        JWT_SIGNING_KEY=private_pem(ed25519.Ed25519PrivateKey.generate()),
    )
    assert_invalid(api.get(NOTES, **bearer(token)))


# --- bad settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "jwt_settings",
    [
        {"JWT_ALGORITHM": "RS256"},
        {"JWT_ALGORITHM": "none"},
        {"JWT_ALGORITHM": "HS512"},
        {"JWT_SIGNING_KEY": "short-secret"},
        {"JWT_SIGNING_KEY": ""},
        {"JWT_LIFETIME": "2h"},
        {"JWT_LIFETIME": timedelta(minutes=61)},
        {"JWT_LIFETIME": "0s"},
        {"JWT_LEEWAY_SECONDS": 301},
        {"JWT_LEEWAY_SECONDS": -1},
        {"JWT_LEEWAY_SECONDS": 1.5},
        {"JWT_LEEWAY_SECONDS": True},
        {"JWT_AUDIENCES": []},
        {"JWT_AUDIENCES": "api"},
        {"JWT_AUDIENCES": ["a b"]},
        {"JWT_ISSUER": ""},
        {"JWT_VERIFICATION_KEYS": "key"},
        {"JWT_VERIFICATION_KEYS": [""]},
        {"JWT_LOAD_USER": "yes"},
        {"JWT_DENY_LIST_CACHE": ""},
    ],
    ids=repr,
)
def test_bad_jwt_settings_are_improperly_configured(settings, jwt_settings):
    configure(settings, **jwt_settings)
    with pytest.raises(ImproperlyConfigured):
        token_settings()


def test_short_hs256_verification_secret_is_improperly_configured(settings):
    configure(settings, JWT_VERIFICATION_KEYS=["short-old-secret"])
    with pytest.raises(ImproperlyConfigured):
        token_settings()


def test_lifetime_of_exactly_one_hour_and_leeway_300_are_allowed(settings):
    configure(settings, JWT_LIFETIME="1h", JWT_LEEWAY_SECONDS=300)
    conf = token_settings().jwt
    assert conf.lifetime == timedelta(hours=1)
    assert conf.leeway_seconds == 300


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("RS256", ed25519.Ed25519PrivateKey.generate),
        ("ES256", lambda: ec.generate_private_key(ec.SECP384R1())),
        ("ES256", ed25519.Ed25519PrivateKey.generate),
        ("EdDSA", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_wrong_key_type_for_algorithm_is_improperly_configured(settings, algorithm, make_key):
    configure(settings, JWT_ALGORITHM=algorithm, JWT_SIGNING_KEY=private_pem(make_key()))
    token_settings()  # the settings themselves are well-formed
    with pytest.raises(ImproperlyConfigured):
        signing_keys.keyring()


def test_wrong_verification_key_type_is_improperly_configured(settings, rsa_key):
    other = ec.generate_private_key(ec.SECP256R1())
    configure(
        settings,
        JWT_ALGORITHM="RS256",
        JWT_SIGNING_KEY=private_pem(rsa_key),
        JWT_VERIFICATION_KEYS=[public_pem(other).decode()],
    )
    with pytest.raises(ImproperlyConfigured):
        signing_keys.keyring()


@pytest.mark.parametrize(
    "pem",
    ["not a pem key at all, just a long string", "-----BEGIN PRIVATE KEY-----\nAAAA\n"],
)
def test_unreadable_pem_is_improperly_configured(settings, pem):
    configure(settings, JWT_ALGORITHM="RS256", JWT_SIGNING_KEY=pem)
    with pytest.raises(ImproperlyConfigured):
        signing_keys.keyring()


def test_public_key_as_signing_key_is_improperly_configured(settings, rsa_key):
    configure(settings, JWT_ALGORITHM="RS256", JWT_SIGNING_KEY=public_pem(rsa_key).decode())
    with pytest.raises(ImproperlyConfigured):
        signing_keys.keyring()
