"""Fixtures of the JWT tests: RSA keys (one per module), RS256 signing, a reader token."""

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.jwt.helpers import configure, private_pem
from tokens_app import services


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
