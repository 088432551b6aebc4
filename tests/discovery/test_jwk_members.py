"""Every published JWK says what it is for once: ``use: "sig"``, no ``key_ops`` (RFC 7517 §4.3)."""

import jwt
import pytest

from tests.discovery.helpers import KEY_MAKERS, use_algorithm
from tests.helpers import ISSUER, mint_jwt
from tests.jwt.helpers import JWKS, configure, public_pem

pytestmark = pytest.mark.django_db

#: The public members of each key type (RFC 7518 §6, RFC 8037 §2), then ours.
KEY_MEMBERS = {"RSA": {"kty", "n", "e"}, "EC": {"kty", "crv", "x", "y"}, "OKP": {"kty", "crv", "x"}}
OURS = {"kid", "use", "alg"}


@pytest.mark.parametrize("algorithm", sorted(KEY_MAKERS))
def test_every_key_type_has_use_sig_and_no_key_ops(api, settings, alice, issue, algorithm):
    use_algorithm(settings, algorithm)
    older = KEY_MAKERS[algorithm]()  # a key still verifying during a rotation
    configure(settings, JWT_VERIFICATION_KEYS=[public_pem(older).decode()])
    keys = api.get(JWKS).json()["keys"]
    assert len(keys) == 2
    for key in keys:
        assert key["use"] == "sig"
        assert "key_ops" not in key
        assert key["alg"] == algorithm
        assert set(key) == KEY_MEMBERS[key["kty"]] | OURS
    # Still what verifies the JWTs this server mints.
    token = mint_jwt(api, issue(alice, ["notes:read"]).plaintext)
    (current,) = [k for k in keys if k["kid"] == jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(current).key, algorithms=[algorithm], audience="api")
    assert claims["iss"] == ISSUER
