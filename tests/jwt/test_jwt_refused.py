"""JWTs the server refuses: forged, tampered, expired, of the wrong kind, or unknown keys.

Real requests, real database, real deny-list cache. Bad JWTs are forged with PyJWT (or,
where PyJWT refuses to help an attacker, by hand); keys are generated with cryptography.
"""

import json
import time

import jwt
import pytest

from project.notes.models import Note
from tests.helpers import NOTES, WHOAMI, assert_invalid, bearer, mint_jwt
from tests.jwt.helpers import (
    JWKS,
    b64url_json,
    claims_for,
    configure,
    forge,
    hs256_by_hand,
    payload_of,
    private_pem,
    public_pem,
    rfc7638_rsa_thumbprint,
)
from tokens_app.jwt import access_tokens, signing_keys

pytestmark = pytest.mark.django_db


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
