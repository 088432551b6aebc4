"""OpenAPI: the generated schema, the docs UI, and schemathesis against the live schema."""

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.conf import settings
from django.core.cache import caches
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from project.notes.models import Note
from tokens_app import services
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db

DEMO_SCOPES = ["notes:read", "notes:write", "tokens:read", "tokens:write", "tokens:introspect"]
MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _clear_caches() -> None:
    # Rate-limit counters live in the cache; fuzzing must not leave them to other tests.
    for alias in settings.CACHES:
        caches[alias].clear()


@pytest.fixture
def schema_doc(api: APIClient) -> dict[str, Any]:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operation(schema_doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    found: dict[str, Any] = schema_doc["paths"][path][method]
    return found


def test_spectacular_validate_fail_on_warn_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "openapi: 3" in out.read_text()


def test_schema_declares_bearer_security_scheme(schema_doc: dict[str, Any]) -> None:
    scheme = schema_doc["components"]["securitySchemes"]["apiToken"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"].startswith("tka_")


@pytest.mark.parametrize(
    ("path", "method", "scopes"),
    [
        ("/api/notes/", "get", ["notes:read"]),
        ("/api/notes/", "post", ["notes:write"]),
        ("/api/notes/{id}/", "delete", ["notes:write"]),
        ("/api/tokens/", "get", ["tokens:read"]),
        ("/api/tokens/", "post", ["tokens:write"]),
        ("/api/tokens/{key_id}/", "get", ["tokens:read"]),
        ("/api/tokens/{key_id}/", "patch", ["tokens:write"]),
        ("/api/tokens/{key_id}/", "delete", ["tokens:write"]),
        ("/api/tokens/{key_id}/rotate/", "post", ["tokens:write"]),
        ("/api/tokens/current/", "get", ["tokens:read"]),
    ],
)
def test_operation_lists_its_required_scopes(
    schema_doc: dict[str, Any], path: str, method: str, scopes: list[str]
) -> None:
    found = operation(schema_doc, path, method)
    assert found["x-required-scopes"] == scopes
    # Issue 15: the standard security requirement carries them too (OpenAPI 3.1).
    assert {"apiToken": scopes} in found["security"]
    assert all(f"`{scope}`" in found["description"] for scope in scopes)


def test_self_revoke_needs_no_scope(schema_doc: dict[str, Any]) -> None:
    found = operation(schema_doc, "/api/tokens/current/", "delete")
    assert "x-required-scopes" not in found
    assert {"apiToken": []} in found["security"]


def test_password_exchange_is_public_and_documents_429(schema_doc: dict[str, Any]) -> None:
    found = operation(schema_doc, "/api/auth/token/", "post")
    assert {} in found["security"]
    assert {"201", "400", "429"} <= set(found["responses"])
    assert "Retry-After" in found["responses"]["429"]["headers"]


def test_create_token_documents_request_and_plaintext_response(
    schema_doc: dict[str, Any],
) -> None:
    found = operation(schema_doc, "/api/tokens/", "post")
    request_ref = found["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    response_ref = found["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert request_ref.endswith("/CreateTokenRequest")
    assert response_ref.endswith("/IssuedToken")
    assert "token" in schema_doc["components"]["schemas"]["IssuedToken"]["properties"]


def test_docs_ui_renders_without_external_urls(api: APIClient) -> None:
    response = api.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "/static/drf_spectacular_sidecar/" in html
    assert not re.search(r"(src|href)=\"https?://", html)
    assert "cdn" not in html.lower()


# --- schemathesis: every operation of the live schema, with a valid token -------------------


@pytest.fixture
def wsgi_app() -> Iterator[WSGIHandler]:
    # As Django's test client does: keep the test transaction's connection across requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    _clear_caches()
    try:
        yield WSGIHandler()
    finally:
        _clear_caches()
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def live_schema(wsgi_app: WSGIHandler) -> Any:
    return schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app)


class TokenPool:
    """Hand out a usable token; issue another only once the fuzzer revoked it.

    ``DELETE /api/tokens/current/`` revokes the very token it is called with.
    """

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.issued = 0
        self.token: APIToken | None = None
        self.plaintext = ""

    def current(self) -> str:
        if self.token is None or not APIToken.objects.get(pk=self.token.pk).is_usable():
            # Make room under the per-user quota the fuzzer's own POSTs may have filled.
            services.revoke_tokens(APIToken.objects.for_owner(self.owner).usable())
            self.issued += 1
            issued = services.issue_token(
                self.owner, name=f"fuzz-{self.issued}", scopes=DEMO_SCOPES
            )
            self.token, self.plaintext = issued.token, issued.plaintext
        return self.plaintext


def strategy(operation: Any, mode: GenerationMode, known: dict[str, str]) -> Any:
    """Return cases for *operation*; positive ones also hit ids that exist (not only 404s)."""
    generated = operation.as_strategy(generation_mode=mode)
    names = set(re.findall(r"{(\w+)}", operation.path))
    if mode is not GenerationMode.POSITIVE or not names or not names <= known.keys():
        return generated
    existing = {name: known[name] for name in names}
    return st.one_of(
        generated, operation.as_strategy(generation_mode=mode, path_parameters=existing)
    )


def fuzz(operation: Any, mode: GenerationMode, tokens: TokenPool, known: dict[str, str]) -> None:
    """Run *operation* with bounded, reproducible examples; raise on the first failing check."""

    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy(operation, mode, known))
    def run(case: Any) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {tokens.current()}"}, checks=CHECKS
        )

    run()


# pytest-schemathesis' lazy fixture loader does not support pytest 9 yet: iterate ourselves.
def test_api_conforms_to_its_schema(live_schema: Any, alice: Any) -> None:
    tokens = TokenPool(alice)
    note = Note.objects.create(owner=alice, title="fuzzed", body="")
    target = services.issue_token(alice, name="fuzz-target", scopes=["notes:read"]).token
    known = {"id": str(note.pk), "key_id": target.key_id}
    failures: list[str] = []
    operations = [result.ok() for result in live_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation, mode in itertools.product(operations, GenerationMode):
        try:
            fuzz(operation, mode, tokens, known)
        except (Exception, FailureGroup) as error:  # collect every operation's failures
            failures.append(f"{operation.label} [{mode.value}]: {error}")
    assert not failures, "\n\n".join(failures)
