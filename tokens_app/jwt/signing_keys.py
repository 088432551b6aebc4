"""The JWT signing keys: the one that signs, the ones that still verify, and the public JWKS.

HS256 under a key derived from ``HASH_KEY`` by default (or ``JWT_SIGNING_KEY``); RS256,
ES256 or EdDSA with a PEM private key in ``JWT_SIGNING_KEY``, whose public half is
published at ``/.well-known/jwks.json``. ``JWT_VERIFICATION_KEYS`` keeps older keys
verifying during a rotation. "Signing key" here never means a token's key id or the
hash key of its secret.
"""

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from django.core.exceptions import ImproperlyConfigured

from tokens_app.conf import cached_until_settings_change, token_settings

_KEY_TYPES = {"RS256": rsa.RSAPublicKey, "ES256": ec.EllipticCurvePublicKey,
              "EdDSA": ed25519.Ed25519PublicKey}  # fmt: skip
#: The required members of each key type's public JWK (RFC 7518 §6, RFC 8037 §2).
_KEY_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    key: Any  # bytes for HS256, a public key object otherwise


@dataclass(frozen=True)
class Keyring:
    algorithm: str
    signing_kid: str
    signing_key: Any
    verification: Mapping[str, VerificationKey]

    def public_jwks(self) -> list[dict[str, Any]]:
        """The public keys as JWKs (none for HS256: a shared secret is never published).

        Each key says what it is for once, with ``use: "sig"``, whatever its type: RFC 7517
        §4.3 says ``use`` and ``key_ops`` SHOULD NOT both appear, and PyJWT gives RSA keys
        ``key_ops`` but EC keys none, so only the key type's own members are kept.
        """
        if self.algorithm == "HS256":
            return []
        return [
            {**_key_members(entry.key), "kid": kid, "use": "sig", "alg": self.algorithm}
            for kid, entry in self.verification.items()
        ]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_jwk(public_key: Any) -> dict[str, Any]:
    algorithm = jwt.algorithms.get_default_algorithms()[_alg_for(public_key)]
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public_key))
    return jwk


def _alg_for(public_key: Any) -> str:
    for algorithm, key_type in _KEY_TYPES.items():
        if isinstance(public_key, key_type):
            return algorithm
    raise ImproperlyConfigured("JWT keys must be RSA, EC P-256 or Ed25519 keys")


def _key_members(public_key: Any) -> dict[str, Any]:
    """The members that are the public key itself (RFC 7638 §3.2), and nothing PyJWT adds."""
    jwk = _public_jwk(public_key)
    return {name: jwk[name] for name in _KEY_MEMBERS[jwk["kty"]]}


def thumbprint(public_key: Any) -> str:
    """The key's RFC 7638 JWK thumbprint: a ``kid`` that names the key, not a secret."""
    canonical = _key_members(public_key)
    encoded = json.dumps(canonical, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(encoded).digest())


def _secret_kid(secret: bytes) -> str:
    return "hs-" + hashlib.sha256(b"tokens_app.jwt-kid|" + secret).hexdigest()[:16]


def _public_key(pem: str) -> Any:
    data = pem.encode()
    try:
        return load_pem_public_key(data)
    except ValueError:
        return load_pem_private_key(data, password=None).public_key()


def _asymmetric(algorithm: str, signing_pem: str, extra: Iterable[str]) -> Keyring:
    try:
        private_key = load_pem_private_key(signing_pem.encode(), password=None)
        public_keys = [private_key.public_key(), *(_public_key(pem) for pem in extra)]
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"API_TOKENS JWT keys: cannot read a PEM key ({exc})") from None
    expected = _KEY_TYPES[algorithm]
    if not all(isinstance(key, expected) for key in public_keys):
        raise ImproperlyConfigured(f"API_TOKENS JWT keys: {algorithm} needs {expected.__name__}s")
    if algorithm == "ES256" and not all(key.curve.name == "secp256r1" for key in public_keys):
        raise ImproperlyConfigured("API_TOKENS JWT keys: ES256 needs P-256 keys")
    verification = {thumbprint(key): VerificationKey(thumbprint(key), key) for key in public_keys}
    return Keyring(algorithm, thumbprint(public_keys[0]), private_key, verification)


def _symmetric(configured: str | None, extra: Iterable[str]) -> Keyring:
    if configured is None:
        # Domain-separated from the token hash key, so neither can stand in for the other.
        derive = hmac.new(token_settings().hash_key, b"tokens_app.jwt-signing-key.v1", "sha256")
        signing = derive.digest()
    else:
        signing = configured.encode()
    secrets_ = [signing, *(key.encode() for key in extra)]
    verification = {_secret_kid(key): VerificationKey(_secret_kid(key), key) for key in secrets_}
    return Keyring("HS256", _secret_kid(signing), signing, verification)


@cached_until_settings_change
def keyring() -> Keyring:
    """The configured keys; raise ``ImproperlyConfigured`` when they cannot be used."""
    conf = token_settings().jwt
    if conf.algorithm == "HS256":
        return _symmetric(conf.signing_key, conf.verification_keys)
    assert conf.signing_key is not None  # noqa: S101 — settings validation requires it
    return _asymmetric(conf.algorithm, conf.signing_key, conf.verification_keys)
