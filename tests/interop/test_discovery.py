"""Discovery against a live server, with clients nobody here wrote: PyJWT's PyJWKClient, joserfc.

Each verifier starts from the RFC 8414 document and reads ``jwks_uri`` from it (never a
hard-coded JWKS URL), then verifies a JWT minted over HTTP by ``POST /api/auth/jwt/``. CORS
is checked the way a browser asks: a preflight from a listed origin and from another one.
"""

import json
import urllib.request
from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit
from urllib.request import parse_http_list, parse_keqv_list

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.discovery.helpers import AUTHORIZATION_SERVER, PROTECTED_RESOURCE, use_algorithm
from tests.helpers import ISSUER, MINT, NOTES
from tests.jwt.helpers import JWKS

APP = "https://app.example.com"


def http(live_server: Any, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    """One request to the live server; the response, read (any status)."""
    parts = urlsplit(live_server.url)
    connection = HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        response.body = response.read()
        return response
    finally:
        connection.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 -- live_server http
        assert response.status == 200
        return json.loads(response.read())


def mint(live_server: Any, api_token: str) -> str:
    """A JWT for *api_token*, minted the way any HTTP client would."""
    request = urllib.request.Request(  # noqa: S310 -- the live_server's http URL
        f"{live_server.url}{MINT}",
        data=json.dumps({"scope": "notes:read"}).encode(),
        headers={"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        return str(json.loads(response.read())["access_token"])


def discovered_jwks_uri(live_server: Any) -> str:
    """``jwks_uri`` as a client finds it: from the RFC 8414 document."""
    metadata = get_json(f"{live_server.url}{AUTHORIZATION_SERVER}")
    assert metadata["issuer"] == ISSUER
    return str(metadata["jwks_uri"])


@pytest.fixture(params=["RS256", "ES256"])
def algorithm(request: Any, settings: Any) -> str:
    use_algorithm(settings, request.param)
    return str(request.param)


@pytest.fixture
def minted(live_server: Any, alice: Any, issue: Any, algorithm: str) -> str:
    return mint(live_server, issue(alice, ["notes:read"]).plaintext)


def test_pyjwkclient_verifies_a_jwt_with_the_discovered_jwks_uri(live_server, algorithm, minted):
    jwks_uri = discovered_jwks_uri(live_server)
    assert jwks_uri == f"{live_server.url}{JWKS}"
    signing_key = jwt.PyJWKClient(jwks_uri).get_signing_key_from_jwt(minted)
    claims = jwt.decode(
        minted, signing_key.key, algorithms=[algorithm], audience="api", issuer=ISSUER
    )
    assert claims["scope"] == "notes:read"


def test_joserfc_verifies_a_jwt_with_the_discovered_jwks_uri(live_server, algorithm, minted):
    keys = KeySet.import_key_set(get_json(discovered_jwks_uri(live_server)))
    token = jose_jwt.decode(minted, keys, algorithms=[algorithm])
    assert token.header["typ"] == "at+jwt"
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": "api"},
        exp={"essential": True},
        scope={"essential": True, "value": "notes:read"},
    )
    registry.validate(token.claims)  # raises on any mismatch or expiry


def test_resource_metadata_leads_to_the_same_keys(live_server, algorithm):
    # The path an RFC 9728 client takes: a 401, its resource_metadata, the issuer's keys.
    refused = http(live_server, "GET", NOTES)
    assert refused.status == 401
    scheme, _space, parameters = refused.getheader("WWW-Authenticate").partition(" ")
    assert scheme == "Bearer"
    metadata_url = parse_keqv_list(parse_http_list(parameters))["resource_metadata"]
    assert metadata_url == f"{live_server.url}{PROTECTED_RESOURCE}"
    resource = get_json(metadata_url)
    assert resource["authorization_servers"] == [ISSUER]
    assert resource["jwks_uri"] == discovered_jwks_uri(live_server)


def test_preflight_from_a_listed_origin_succeeds(live_server, settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]
    response = http(
        live_server,
        "OPTIONS",
        NOTES,
        {
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status == 200
    assert response.getheader("Access-Control-Allow-Origin") == APP
    allowed = {h.strip() for h in response.getheader("Access-Control-Allow-Headers").split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert response.getheader("Access-Control-Allow-Credentials") is None


def test_preflight_from_another_origin_gets_no_cors_headers(live_server, settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]
    response = http(
        live_server,
        "OPTIONS",
        NOTES,
        {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"},
    )
    assert not [name for name, _ in response.getheaders() if name.lower().startswith("access-")]


@pytest.mark.parametrize("path", [JWKS, AUTHORIZATION_SERVER, PROTECTED_RESOURCE])
def test_public_documents_answer_any_origin_with_a_star(live_server, settings, path):
    settings.CORS_ALLOWED_ORIGINS = [APP]
    response = http(live_server, "GET", path, {"Origin": "https://elsewhere.example"})
    assert response.status == 200
    assert response.getheader("Access-Control-Allow-Origin") == "*"
    preflight = http(
        live_server,
        "OPTIONS",
        path,
        {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 204
    assert preflight.getheader("Access-Control-Allow-Origin") == "*"
