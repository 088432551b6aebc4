"""JWKS, the asymmetric algorithms end to end, and JWT settings refused at start-up."""

from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from django.core.exceptions import ImproperlyConfigured

from project.notes.models import Note
from tests.helpers import ISSUER, NOTES, assert_invalid, bearer, mint_jwt
from tests.jwt.helpers import (
    JWKS,
    PRIVATE_JWK_MEMBERS,
    b64url,
    configure,
    private_pem,
    public_pem,
    rfc7638_rsa_thumbprint,
)
from tokens_app import services
from tokens_app.conf import token_settings
from tokens_app.jwt import signing_keys

pytestmark = pytest.mark.django_db


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
