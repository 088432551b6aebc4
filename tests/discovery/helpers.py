"""Paths, expected values and key set-up of the discovery tests (not collected)."""

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.urls import NoReverseMatch, reverse

from tests.jwt.helpers import JWKS, configure, private_pem

AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
PROTECTED_RESOURCE = "/.well-known/oauth-protected-resource"
DOCUMENTS = (AUTHORIZATION_SERVER, PROTECTED_RESOURCE, JWKS)
#: The example project's declared scopes, by name.
DEMO_SCOPES = [
    "audit:read",
    "notes:read",
    "notes:write",
    "tokens:introspect",
    "tokens:read",
    "tokens:write",
]
KEY_MAKERS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


def use_algorithm(settings: Any, algorithm: str) -> Any:
    """Sign JWTs with a new key of *algorithm*; return the private key."""
    key = KEY_MAKERS[algorithm]()
    configure(settings, JWT_ALGORITHM=algorithm, JWT_SIGNING_KEY=private_pem(key))
    return key


def revocation_members(base: str) -> dict[str, Any]:
    """The RFC 7009 members, when this project routes ``tokens_api:revoke`` (else none)."""
    try:
        path = reverse("tokens_api:revoke")
    except NoReverseMatch:
        return {}
    return {
        "revocation_endpoint": f"{base}{path}",
        "revocation_endpoint_auth_methods_supported": ["none"],
    }
