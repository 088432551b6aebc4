"""Every 401 challenge names the RFC 9728 document (``resource_metadata``, RFC 9728 §5.1)."""

from urllib.request import parse_http_list, parse_keqv_list

import pytest

from tests.discovery.helpers import PROTECTED_RESOURCE, use_algorithm
from tests.helpers import (
    INVALID_CHALLENGE,
    NO_CREDENTIALS_CHALLENGE,
    NOTES,
    TOKENS,
    WHOAMI,
    assert_invalid,
    bearer,
    mint_jwt,
)
from tokens_app import services
from tokens_app.authentication import quoted

pytestmark = pytest.mark.django_db


def parameters(challenge: str) -> dict[str, str]:
    """The auth-params of one ``Bearer`` challenge, unquoted as a standard parser does."""
    scheme, _space, rest = challenge.partition(" ")
    assert scheme == "Bearer"
    return parse_keqv_list(parse_http_list(rest))


def test_missing_credential_is_challenged_with_the_metadata_url(api):
    response = api.get(WHOAMI)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == NO_CREDENTIALS_CHALLENGE
    assert parameters(response["WWW-Authenticate"]) == {
        "realm": "api",
        "resource_metadata": f"http://testserver{PROTECTED_RESOURCE}",
    }


@pytest.mark.parametrize("credential", ["tka_malformed", "tka_" + "A" * 50, "not-even-a-token"])
def test_refused_api_token_is_challenged_with_the_metadata_url(api, credential):
    assert_invalid(api.get(NOTES, **bearer(credential)))


def test_revoked_api_token_is_challenged_with_the_metadata_url(api, alice, issue):
    issued = issue(alice, ["notes:read"])
    services.revoke_token(issued.token)
    assert_invalid(api.get(NOTES, **bearer(issued.plaintext)))


def test_refused_jwt_is_challenged_with_the_metadata_url(api, settings, alice, issue):
    use_algorithm(settings, "ES256")
    issued = issue(alice, ["notes:read"])
    token = mint_jwt(api, issued.plaintext)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_invalid(api.get(NOTES, **bearer(tampered)))
    services.revoke_token(issued.token)
    assert_invalid(api.get(NOTES, **bearer(token)))


def test_jwt_where_only_api_tokens_count_is_challenged_with_the_metadata_url(api, alice, issue):
    token = mint_jwt(api, issue(alice, ["tokens:read"]).plaintext)
    assert_invalid(api.get(TOKENS, **bearer(token)))


def test_metadata_url_follows_the_request_and_serves_the_document(api):
    response = api.get(WHOAMI, HTTP_HOST="localhost:8443", secure=True)
    url = parameters(response["WWW-Authenticate"])["resource_metadata"]
    assert url == f"https://localhost:8443{PROTECTED_RESOURCE}"
    document = api.get(PROTECTED_RESOURCE, HTTP_HOST="localhost:8443", secure=True).json()
    assert document["resource"] == "https://localhost:8443"


def test_invalid_challenge_keeps_rfc_6750_parameters_first(api):
    challenge = api.get(NOTES, **bearer("tka_malformed"))["WWW-Authenticate"]
    assert challenge == INVALID_CHALLENGE
    assert challenge.startswith('Bearer realm="api", error="invalid_token", resource_metadata="')


def test_insufficient_scope_challenge_is_unchanged(api, alice, issue):
    # A 403 is not a request for credentials: RFC 6750's parameters only, as before.
    reader = issue(alice, ["notes:read"]).plaintext
    response = api.post(NOTES, {"title": "t"}, format="json", **bearer(reader))
    assert response.status_code == 403
    assert "resource_metadata" not in response["WWW-Authenticate"]


@pytest.mark.urls("tests.discovery.urls_authorization_server_only")
def test_challenge_omits_resource_metadata_when_the_document_is_not_routed(api):
    response = api.get("/api/whoami/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.urls("tests.discovery.urls_resource_only")
def test_challenge_finds_the_document_wherever_and_however_it_is_routed(api):
    challenge = api.get("/api/whoami/")["WWW-Authenticate"]
    url = parameters(challenge)["resource_metadata"]
    assert url == f"http://testserver/meta{PROTECTED_RESOURCE}"
    assert api.get(url).status_code == 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [("api", '"api"'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ("", '""')],
)
def test_parameter_values_are_quoted_strings(value, expected):
    assert quoted(value) == expected
    assert parse_keqv_list(parse_http_list(f"x={quoted(value)}")) == {"x": value}
