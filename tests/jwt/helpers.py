"""Helpers of the JWT tests: base64url, keys and their PEMs, forged and hand-signed JWTs.

Not collected (no ``test_`` prefix); the key and token fixtures are in ``conftest.py``.
"""

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from rest_framework.test import APIClient

from tests.helpers import ISSUER, bearer
from tokens_app import services
from tokens_app.jwt import signing_keys

INTROSPECT = "/api/auth/introspect/"
JWKS = "/.well-known/jwks.json"
RESPONSE_FIELDS = {"access_token", "token_type", "expires_in", "scope"}
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


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
