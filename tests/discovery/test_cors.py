"""CORS in the example project: the API for listed origins only, the public documents for all."""

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from project.settings import env_origins
from tests.discovery.helpers import DOCUMENTS
from tests.helpers import NOTES, ROOT, WHOAMI, bearer

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"
OTHER = "https://evil.example"


def preflight(api, path, origin, method="POST", headers="authorization, content-type"):
    return api.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS=headers,
    )


def cors_headers(response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-")}


@pytest.fixture
def app_origin(settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]


# --- the API: listed origins, bearer tokens, no cookies -----------------------------------


@pytest.mark.parametrize("path", [NOTES, WHOAMI, "/api/tokens/", "/api/auth/jwt/"])
def test_preflight_from_a_listed_origin_needs_no_credential(api, app_origin, path):
    response = preflight(api, path, APP)
    assert response.status_code == 200  # not DRF's 401: the middleware answers first
    headers = cors_headers(response)
    assert headers["access-control-allow-origin"] == APP
    allowed = {h.strip() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in headers
    assert "WWW-Authenticate" not in response


def test_preflight_from_another_origin_gets_no_cors_headers(api, app_origin):
    response = preflight(api, NOTES, OTHER)
    assert response.status_code == 200
    assert cors_headers(response) == {}


def test_no_origin_listed_means_no_cors_at_all(api, settings):
    assert settings.CORS_ALLOWED_ORIGINS == []  # the default: DJANGO_CORS_ALLOWED_ORIGINS unset
    assert cors_headers(preflight(api, NOTES, APP)) == {}
    assert cors_headers(api.get(NOTES, HTTP_ORIGIN=APP)) == {}


def test_listed_origin_reads_answers_and_challenges(api, app_origin, alice, issue):
    token = issue(alice, ["notes:read"]).plaintext
    answer = api.get(NOTES, HTTP_ORIGIN=APP, **bearer(token))
    assert answer.status_code == 200
    assert answer["Access-Control-Allow-Origin"] == APP
    assert "origin" in answer["Vary"].lower()
    refused = api.get(NOTES, HTTP_ORIGIN=APP)
    assert refused.status_code == 401
    assert refused["Access-Control-Allow-Origin"] == APP
    # The page may read why, and where the metadata is (RFC 9728 §5.1).
    exposed = {h.strip() for h in refused["Access-Control-Expose-Headers"].split(",")}
    assert {"www-authenticate", "retry-after"} <= exposed


def test_other_origin_gets_no_cors_headers_on_answers(api, app_origin, alice, issue):
    token = issue(alice, ["notes:read"]).plaintext
    answer = api.get(NOTES, HTTP_ORIGIN=OTHER, **bearer(token))
    assert answer.status_code == 200  # the server answers; the browser withholds it
    assert cors_headers(answer) == {}


def test_cors_is_for_the_api_only(client, app_origin):
    assert cors_headers(client.options("/admin/login/", HTTP_ORIGIN=APP)) == {}
    assert cors_headers(client.get("/health/", HTTP_ORIGIN=APP)) == {}


# --- the public documents: any origin, `*` --------------------------------------------------


@pytest.mark.parametrize("path", DOCUMENTS)
@pytest.mark.parametrize("origin", [APP, OTHER, None])
def test_public_documents_answer_any_origin_with_a_star(api, app_origin, path, origin):
    extra = {"HTTP_ORIGIN": origin} if origin else {}
    response = api.get(path, **extra)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "access-control-allow-credentials" not in cors_headers(response)


@pytest.mark.parametrize("path", DOCUMENTS)
def test_public_documents_answer_preflights(api, path):
    response = preflight(api, path, OTHER, method="GET", headers="mcp-protocol-version")
    assert response.status_code == 204
    assert cors_headers(response) == {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "GET, HEAD",
        "access-control-allow-headers": "*",
        "access-control-max-age": "86400",
    }


# --- DJANGO_CORS_ALLOWED_ORIGINS -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", []),
        (" , ", []),
        (APP, [APP]),
        (
            "http://localhost:3000, https://x.example",
            ["http://localhost:3000", "https://x.example"],
        ),
        ("HTTPS://App.Example.COM:443", [APP]),  # as browsers send it
        ("http://127.0.0.1:80", ["http://127.0.0.1"]),
        ("https://[::1]:8443", ["https://[::1]:8443"]),
    ],
)
def test_origins_are_read_as_browsers_send_them(monkeypatch, value, origins):
    monkeypatch.setenv("DJANGO_CORS_ALLOWED_ORIGINS", value)
    assert env_origins("DJANGO_CORS_ALLOWED_ORIGINS") == origins


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "null",
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://*.example.com",
        "https://user@app.example.com",
        "ftp://app.example.com",
        "https://app.example.com:0",
        "https://app.example.com:65536",
        f"{APP}, https://bad/",
    ],
)
def test_a_value_that_is_not_an_origin_is_refused(monkeypatch, value):
    monkeypatch.setenv("DJANGO_CORS_ALLOWED_ORIGINS", value)
    with pytest.raises(ImproperlyConfigured, match="DJANGO_CORS_ALLOWED_ORIGINS must list origins"):
        env_origins("DJANGO_CORS_ALLOWED_ORIGINS")


def test_the_project_refuses_to_start_with_a_bad_origin():
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "project.settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**env, "DJANGO_CORS_ALLOWED_ORIGINS": "https://app.example.com/"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DJANGO_CORS_ALLOWED_ORIGINS must list origins" in result.stderr
    assert "'https://app.example.com/'" in result.stderr
