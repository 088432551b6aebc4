"""RFC 8414 and RFC 9728 metadata: every member, what is left out, and the HTTP around them."""

import pytest
from django.test import Client

from tests.discovery.helpers import (
    AUTHORIZATION_SERVER,
    DEMO_SCOPES,
    DOCUMENTS,
    JWKS,
    PROTECTED_RESOURCE,
    revocation_members,
    use_algorithm,
)
from tests.helpers import ISSUER, bearer
from tests.jwt.helpers import configure
from tokens_app.services import discovery

pytestmark = pytest.mark.django_db

BASE = "http://testserver"
INTROSPECTION = {
    "introspection_endpoint": f"{BASE}/api/auth/introspect/",
    "introspection_endpoint_auth_methods_supported": [
        "client_secret_basic",
        "client_secret_post",
        "Bearer",
    ],
}


# --- RFC 8414 -----------------------------------------------------------------------------


def test_authorization_server_metadata_with_hs256(api):
    response = api.get(AUTHORIZATION_SERVER)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    # No jwks_uri: an HS256 JWT cannot be verified anywhere else.
    assert response.json() == {
        "issuer": ISSUER,
        "scopes_supported": DEMO_SCOPES,
        "response_types_supported": [],
        "grant_types_supported": [],
        **INTROSPECTION,
        **revocation_members(BASE),
    }


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_authorization_server_metadata_names_the_jwks(api, settings, algorithm):
    use_algorithm(settings, algorithm)
    document = api.get(AUTHORIZATION_SERVER).json()
    assert document == {
        "issuer": ISSUER,
        "jwks_uri": f"{BASE}{JWKS}",
        "scopes_supported": DEMO_SCOPES,
        "response_types_supported": [],
        "grant_types_supported": [],
        **INTROSPECTION,
        **revocation_members(BASE),
    }
    # No endpoint this server does not have: no authorization or OAuth token endpoint.
    assert not {"authorization_endpoint", "token_endpoint", "registration_endpoint"} & set(document)


def test_documents_follow_the_settings(api, settings):
    configure(
        settings,
        JWT_ISSUER="https://issuer.example",
        SCOPES={"b:read": "B.", "a:write": {"description": "A.", "implies": ["b:read"]}},
    )
    server = api.get(AUTHORIZATION_SERVER).json()
    resource = api.get(PROTECTED_RESOURCE).json()
    assert server["issuer"] == "https://issuer.example"
    assert resource["authorization_servers"] == ["https://issuer.example"]
    assert server["scopes_supported"] == resource["scopes_supported"] == ["a:write", "b:read"]


def test_no_declared_scope_leaves_scopes_supported_out(api, settings):
    configure(settings, SCOPES={})
    assert "scopes_supported" not in api.get(AUTHORIZATION_SERVER).json()
    assert "scopes_supported" not in api.get(PROTECTED_RESOURCE).json()


def test_urls_are_those_the_request_reached(api, settings):
    use_algorithm(settings, "ES256")
    answer = api.get(AUTHORIZATION_SERVER, HTTP_HOST="localhost:8443", secure=True)
    document = answer.json()
    assert document["jwks_uri"] == "https://localhost:8443/.well-known/jwks.json"
    assert document["introspection_endpoint"] == "https://localhost:8443/api/auth/introspect/"
    resource = api.get(PROTECTED_RESOURCE, HTTP_HOST="localhost:8443", secure=True).json()
    assert resource["resource"] == "https://localhost:8443"


def test_a_site_mounted_under_a_prefix_names_its_urls_with_it(api, settings):
    use_algorithm(settings, "RS256")
    resource = api.get(PROTECTED_RESOURCE, SCRIPT_NAME="/app").json()
    assert resource["resource"] == f"{BASE}/app"
    assert resource["jwks_uri"] == f"{BASE}/app{JWKS}"
    challenge = api.get("/api/whoami/", SCRIPT_NAME="/app")["WWW-Authenticate"]
    assert challenge.endswith(f'resource_metadata="{BASE}/app{PROTECTED_RESOURCE}"')
    # The same project at the root is not confused by it.
    assert api.get(PROTECTED_RESOURCE).json()["jwks_uri"] == f"{BASE}{JWKS}"


def test_revocation_members_when_routed():
    document = discovery.authorization_server_metadata(
        discovery.Endpoints(revocation="https://api.example/api/auth/revoke/")
    )
    assert document["revocation_endpoint"] == "https://api.example/api/auth/revoke/"
    # Said explicitly: RFC 8414 reads an absent list as client_secret_basic.
    assert document["revocation_endpoint_auth_methods_supported"] == ["none"]
    assert "introspection_endpoint" not in document


# --- RFC 9728 -----------------------------------------------------------------------------


def test_protected_resource_metadata_with_hs256(api):
    response = api.get(PROTECTED_RESOURCE)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "resource": BASE,
        "authorization_servers": [ISSUER],
        "scopes_supported": DEMO_SCOPES,
        "bearer_methods_supported": ["header"],
    }


def test_protected_resource_metadata_names_the_jwks(api, settings):
    use_algorithm(settings, "RS256")
    assert api.get(PROTECTED_RESOURCE).json() == {
        "resource": BASE,
        "authorization_servers": [ISSUER],
        "jwks_uri": f"{BASE}{JWKS}",
        "scopes_supported": DEMO_SCOPES,
        "bearer_methods_supported": ["header"],
    }


# --- what the project does not route is not announced ------------------------------------


@pytest.mark.urls("tests.discovery.urls_authorization_server_only")
def test_unrouted_endpoints_are_left_out_of_rfc_8414(api, settings):
    use_algorithm(settings, "RS256")  # keys to publish, but no JWKS routed
    assert api.get(AUTHORIZATION_SERVER).json() == {
        "issuer": ISSUER,
        "scopes_supported": DEMO_SCOPES,
        "response_types_supported": [],
        "grant_types_supported": [],
    }


@pytest.mark.urls("tests.discovery.urls_resource_only")
def test_unrouted_endpoints_are_left_out_of_rfc_9728(api, settings):
    use_algorithm(settings, "RS256")
    # No RFC 8414 document to fetch: no authorization_servers; no JWKS: no jwks_uri.
    assert api.get(f"/meta{PROTECTED_RESOURCE}").json() == {
        "resource": BASE,
        "scopes_supported": DEMO_SCOPES,
        "bearer_methods_supported": ["header"],
    }


# --- HTTP: public, cacheable, GET and HEAD only --------------------------------------------


@pytest.mark.parametrize(
    ("path", "max_age"), [(AUTHORIZATION_SERVER, 3600), (PROTECTED_RESOURCE, 3600), (JWKS, 300)]
)
def test_documents_are_public_and_cacheable(api, path, max_age):
    response = api.get(path)
    assert response.status_code == 200
    assert response["Cache-Control"] == f"public, max-age={max_age}"
    assert response["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", DOCUMENTS)
def test_documents_never_read_credentials(api, path, alice, issue):
    plain = api.get(path).content
    # A bad token, or a good one, changes nothing: these views never authenticate.
    assert api.get(path, HTTP_AUTHORIZATION="Bearer tka_garbage").content == plain
    assert api.get(path, **bearer(issue(alice, ["notes:read"]).plaintext)).content == plain


@pytest.mark.parametrize("path", DOCUMENTS)
def test_head_answers_like_get_without_a_body(api, path):
    response = api.head(path)
    assert response.status_code == 200
    assert response.content == b""
    assert response["Cache-Control"].startswith("public, max-age=")


@pytest.mark.parametrize("path", DOCUMENTS)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_other_methods_are_405(path, method):
    # With CSRF enforced, as a browser posting would be: the answer is 405, not a CSRF 403.
    response = getattr(Client(enforce_csrf_checks=True), method)(path)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD, OPTIONS"
    assert "Cache-Control" not in response
