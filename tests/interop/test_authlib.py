"""authlib 1.9, unmodified, against a live server: RFC 7662, RFC 7009 and RFC 9068 (issue 15).

The client side: ``OAuth2Session`` (authlib's requests client) calls ``introspect_token``
with ``client_secret_basic`` (its default) and ``client_secret_post``, and
``revoke_token``, the client being an API token (``client_id`` its key id,
``client_secret`` the whole token). The resource-server side: ``IntrospectTokenValidator``
(RFC 7662) and ``JWTBearerTokenValidator`` (RFC 9068, keys read from the JWKS) behind
authlib's ``ResourceProtector``, validating what the server issued.
"""

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749 import ResourceProtector
from authlib.oauth2.rfc6749.requests import JsonRequest
from authlib.oauth2.rfc6750 import InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc7662 import IntrospectTokenValidator
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import KeySet

from tests.helpers import ISSUER, MINT, NOTES
from tests.interop.oauth_helpers import INTROSPECT, REVOKE
from tests.jwt.helpers import configure, private_pem
from tokens_app import services

# live_server serves from another thread: the data must be committed to be seen there.
pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10


@pytest.fixture(params=["RS256", "ES256"])
def signing(request: pytest.FixtureRequest, settings: Any) -> str:
    """The server signs JWTs with a fresh RSA or P-256 key: verifiers need only its JWKS."""
    algorithm: str = request.param
    if algorithm == "RS256":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    configure(settings, JWT_ALGORITHM=algorithm, JWT_SIGNING_KEY=private_pem(key))
    return algorithm


@pytest.fixture
def server(live_server: Any) -> str:
    return str(live_server.url)


@pytest.fixture
def introspector(alice: Any, issue: Any) -> services.IssuedToken:
    return issue(alice, ["tokens:introspect"], name="resource-server")


@pytest.fixture
def reader(bob: Any, issue: Any) -> services.IssuedToken:
    return issue(bob, ["notes:read"], name="app")


def session_of(client: services.IssuedToken, **options: Any) -> Iterator[OAuth2Session]:
    session = OAuth2Session(client.token.key_id, client.plaintext, **options)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def basic_session(introspector: services.IssuedToken) -> Iterator[OAuth2Session]:
    yield from session_of(introspector)  # authlib's default: client_secret_basic


@pytest.fixture
def post_session(introspector: services.IssuedToken) -> Iterator[OAuth2Session]:
    yield from session_of(
        introspector,
        token_endpoint_auth_method="client_secret_post",
        revocation_endpoint_auth_method="client_secret_post",
    )


def call_notes(server: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{server}{NOTES}", headers=headers, timeout=TIMEOUT).status_code


def mint(server: str, issued: services.IssuedToken) -> str:
    headers = {"Authorization": f"Bearer {issued.plaintext}"}
    response = requests.post(f"{server}{MINT}", json={}, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer_request(token: str) -> JsonRequest:
    """What a resource server's framework hands authlib: the incoming request's headers."""
    return JsonRequest("GET", "https://rs.example/notes", {"Authorization": f"Bearer {token}"})


# --- RFC 7662: introspect_token ----------------------------------------------------------------


def test_introspect_token_with_client_secret_basic(server, basic_session, reader):
    response = basic_session.introspect_token(f"{server}{INTROSPECT}", token=reader.plaintext)
    assert response.request.headers["Authorization"].startswith("Basic ")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["active"] is True
    assert answer["token_type"] == "Bearer"
    assert answer["tokens_app_kind"] == "api_token"
    assert (answer["client_id"], answer["username"]) == (reader.token.key_id, "bob")


def test_introspect_token_with_client_secret_post(server, post_session, reader):
    response = post_session.introspect_token(
        f"{server}{INTROSPECT}", token=reader.plaintext, token_type_hint="access_token"
    )
    assert "Authorization" not in response.request.headers
    assert "client_secret=" in response.request.body
    assert response.status_code == 200, response.text
    assert response.json()["active"] is True


def test_introspect_token_of_a_jwt(server, signing, basic_session, reader):
    jwt = mint(server, reader)
    answer = basic_session.introspect_token(f"{server}{INTROSPECT}", token=jwt).json()
    assert answer["active"] is True
    assert answer["tokens_app_kind"] == "jwt"
    assert (answer["iss"], answer["aud"]) == (ISSUER, "api")
    assert {"jti", "nbf", "exp", "iat", "sub"} <= set(answer)


def test_introspect_token_with_a_wrong_secret_is_401_basic(server, introspector, reader):
    wrong = introspector.plaintext[:-6] + "AAAAAA"
    session = OAuth2Session(introspector.token.key_id, wrong)
    try:
        response = session.introspect_token(f"{server}{INTROSPECT}", token=reader.plaintext)
    finally:
        session.close()
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="api"'


# --- RFC 7009: revoke_token --------------------------------------------------------------------


def test_revoke_token_revokes_an_api_token_and_its_jwts(server, basic_session, reader):
    jwt = mint(server, reader)
    response = basic_session.revoke_token(
        f"{server}{REVOKE}", token=reader.plaintext, token_type_hint="access_token"
    )
    assert response.request.headers["Authorization"].startswith("Basic ")
    assert (response.status_code, response.json()) == (200, {})
    assert call_notes(server, reader.plaintext) == 401
    assert call_notes(server, jwt) == 401


def test_revoke_token_with_client_secret_post_revokes_a_jwt_alone(server, post_session, reader):
    jwt, sibling = mint(server, reader), mint(server, reader)
    response = post_session.revoke_token(f"{server}{REVOKE}", token=jwt)
    assert (response.status_code, response.json()) == (200, {})
    assert call_notes(server, jwt) == 401
    assert call_notes(server, sibling) == 200
    assert call_notes(server, reader.plaintext) == 200


def test_revoke_token_as_a_public_client(server, reader):
    # authlib's "none" method sends only a client_id: possession is the right to revoke.
    session = OAuth2Session("public-app", revocation_endpoint_auth_method="none")
    try:
        response = session.revoke_token(f"{server}{REVOKE}", token=reader.plaintext)
    finally:
        session.close()
    assert response.status_code == 200
    assert call_notes(server, reader.plaintext) == 401


def test_revoke_token_of_nothing_answers_the_same(server, basic_session):
    response = basic_session.revoke_token(f"{server}{REVOKE}", token="not-a-token")
    assert (response.status_code, response.json()) == (200, {})


# --- a resource server: IntrospectTokenValidator -----------------------------------------------


class ServerIntrospection(IntrospectTokenValidator):  # type: ignore[misc]
    """authlib's RFC 7662 validator, asking the live server with client_secret_basic."""

    def __init__(self, endpoint: str, client: services.IssuedToken) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.client = client

    def introspect_token(self, token_string: str) -> Any:
        session = OAuth2Session(self.client.token.key_id, self.client.plaintext)
        try:
            response = session.introspect_token(self.endpoint, token=token_string)
        finally:
            session.close()
        response.raise_for_status()
        return response.json()


@pytest.fixture
def introspection_protector(server, introspector) -> ResourceProtector:
    protector = ResourceProtector()
    protector.register_token_validator(ServerIntrospection(f"{server}{INTROSPECT}", introspector))
    return protector


def test_introspect_token_validator_accepts_a_live_api_token_and_jwt(
    server, signing, introspection_protector, reader
):
    for token in (reader.plaintext, mint(server, reader)):
        answer = introspection_protector.validate_request(["notes:read"], bearer_request(token))
        assert answer["active"] is True
        assert answer["sub"] == str(reader.token.owner.pk)


def test_introspect_token_validator_enforces_scope_and_revocation(
    server, introspection_protector, reader
):
    with pytest.raises(InsufficientScopeError):
        introspection_protector.validate_request(["notes:write"], bearer_request(reader.plaintext))
    services.revoke_token(reader.token)
    with pytest.raises(InvalidTokenError):
        introspection_protector.validate_request(["notes:read"], bearer_request(reader.plaintext))
    with pytest.raises(InvalidTokenError):
        introspection_protector.validate_request([], bearer_request("garbage"))


# --- a resource server: JWTBearerTokenValidator (RFC 9068) -------------------------------------


class ServerJWTs(JWTBearerTokenValidator):  # type: ignore[misc]
    """authlib's RFC 9068 validator, with the keys of the live server's JWKS."""

    def __init__(self, jwks_url: str) -> None:
        super().__init__(issuer=ISSUER, resource_server="api")
        self.jwks_url = jwks_url

    def get_jwks(self) -> KeySet:
        response = requests.get(self.jwks_url, timeout=TIMEOUT)
        response.raise_for_status()
        return KeySet.import_key_set(response.json())


@pytest.fixture
def jwt_protector(server) -> ResourceProtector:
    protector = ResourceProtector()
    protector.register_token_validator(ServerJWTs(f"{server}/.well-known/jwks.json"))
    return protector


def test_jwt_bearer_token_validator_accepts_a_minted_jwt(server, signing, jwt_protector, reader):
    jwt = mint(server, reader)
    claims = jwt_protector.validate_request(["notes:read"], bearer_request(jwt))
    assert claims["client_id"] == reader.token.key_id
    assert claims["iss"] == ISSUER
    assert claims.header["typ"] == "at+jwt"
    assert claims.header["alg"] == signing
    with pytest.raises(InsufficientScopeError):
        jwt_protector.validate_request(["notes:write"], bearer_request(jwt))


def test_jwt_bearer_token_validator_refuses_what_it_must(
    server, signing, settings, jwt_protector, reader
):
    jwt = mint(server, reader)
    tampered = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
    with pytest.raises(InvalidTokenError):
        jwt_protector.validate_request(["notes:read"], bearer_request(tampered))
    configure(settings, JWT_AUDIENCES=["api", "reports"])
    for_reports = requests.post(
        f"{server}{MINT}",
        json={"audience": "reports"},
        headers={"Authorization": f"Bearer {reader.plaintext}"},
        timeout=TIMEOUT,
    ).json()["access_token"]
    with pytest.raises(InvalidTokenError):  # RFC 9068 section 4: aud must name this server
        jwt_protector.validate_request(["notes:read"], bearer_request(for_reports))
