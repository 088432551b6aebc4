"""openapi-python-client (issue 15): a client generated from the live schema works unmodified.

The generator runs once per module, as an integrator runs it: ``openapi-python-client
generate --url <server>/api/schema/``. The tests then drive the token API through the
generated functions and models only (no raw HTTP), authenticated with a token issued through
``services``; every answer must parse into the model the schema names for its status.
Before issue 15 the package did not import: every request body was listed under three media
types, and the generator emitted an undefined ``Unset`` for them.
"""

import importlib
import importlib.metadata
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tokens_app import services
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db(transaction=True)

#: The version README's "OpenAPI clients" names; pinned in pyproject.toml's dev extra.
GENERATOR_VERSION = "0.29.1"
PACKAGE = "tokens_app_client"
CONFIG = f"project_name_override: tokens-app-client\npackage_name_override: {PACKAGE}\n"
MANAGER_SCOPES = ["tokens:read", "tokens:write"]


def generate(schema_url: str, output: Path) -> str:
    """Run the generator's CLI on *schema_url* into *output*; return what it printed."""
    config = output.parent / "openapi-python-client.yaml"
    config.write_text(CONFIG)
    # Its post-hooks run ruff, which is installed beside this interpreter.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    command = [
        *(sys.executable, "-m", "openapi_python_client", "generate"),
        *("--url", schema_url, "--config", str(config), "--output-path", str(output)),
    ]
    result = subprocess.run(
        command,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed
    return printed


@pytest.fixture(scope="module")
def generated(
    live_server: Any, tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any
) -> Iterator[ModuleType]:
    """The generated package, imported from where the generator wrote it (once: it is slow)."""
    output = tmp_path_factory.mktemp("openapi-client") / "tokens-app-client"
    with django_db_blocker.unblock():  # the server's request cycle touches the connection
        printed = generate(f"{live_server.url}/api/schema/", output)
    assert "Warning" not in printed, printed  # every operation and model was generated
    sys.path.insert(0, str(output))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(output))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def operation(name: str) -> Any:
    """A generated operation module, such as ``tokens.tokens_create``."""
    return importlib.import_module(f"{PACKAGE}.api.{name}")


@pytest.fixture
def models(generated: ModuleType) -> Any:
    return importlib.import_module(f"{PACKAGE}.models")


@pytest.fixture
def connect(generated: ModuleType, live_server: Any) -> Iterator[Any]:
    """A factory: a generated ``AuthenticatedClient`` for the live server, given a token.

    Each is a context manager, as the generated README shows, closed when the test ends: a
    kept-alive connection would keep its server thread, and that thread's database
    connection, open.
    """
    with ExitStack() as clients:

        def _connect(plaintext: str) -> Any:
            client = generated.AuthenticatedClient(
                base_url=live_server.url, token=plaintext, raise_on_unexpected_status=True
            )
            return clients.enter_context(client)

        yield _connect


@pytest.fixture
def manager(alice: Any) -> services.IssuedToken:
    """Alice's token that manages her tokens, issued through the service."""
    return services.issue_token(alice, name="generated-client", scopes=MANAGER_SCOPES)


@pytest.fixture
def client(connect: Any, manager: services.IssuedToken) -> Any:
    return connect(manager.plaintext)


def create(client: Any, models: Any, name: str, **fields: Any) -> Any:
    """Create a token through the generated client; return the parsed ``IssuedToken``.

    A token may change only itself and the tokens it created: the client's own children
    are what it can patch, rotate and revoke.
    """
    body = models.CreateTokenRequest(name=name, scopes=["tokens:read"], **fields)
    return answer(
        operation("tokens.tokens_create").sync_detailed(client=client, body=body),
        HTTPStatus.CREATED,
        models.IssuedToken,
    )


def answer(response: Any, status: HTTPStatus, model: type | None) -> Any:
    """The parsed body of *response*, checked: its status and its generated model."""
    assert response.status_code == status, response.content
    if model is None:
        assert response.parsed is None
    else:
        assert isinstance(response.parsed, model), response.parsed
    return response.parsed


def test_generated_package_imports_every_module(generated: ModuleType) -> None:
    assert importlib.metadata.version("openapi-python-client") == GENERATOR_VERSION
    names = {module.name for module in pkgutil.walk_packages(generated.__path__, f"{PACKAGE}.")}
    for name in names:
        importlib.import_module(name)
    assert {
        f"{PACKAGE}.api.tokens.{name}"
        for name in [
            "tokens_create",
            "tokens_list",
            "tokens_retrieve",
            "tokens_partial_update",
            "tokens_rotate_create",
            "tokens_destroy",
            "tokens_current_retrieve",
            "tokens_current_destroy",
            "tokens_revoke_all_create",
        ]
    } <= names


def test_create_then_list_and_get(client: Any, models: Any, manager: Any) -> None:
    created = create(client, models, "ci", description="made by a generated client")
    assert created.token.startswith("tka_")
    assert (created.name, created.scopes, created.status) == ("ci", ["tokens:read"], "active")
    assert isinstance(created.created_at, datetime)
    assert APIToken.objects.get(key_id=created.id).description == "made by a generated client"

    listed = answer(
        operation("tokens.tokens_list").sync_detailed(
            client=client, status=models.TokensListStatus.ACTIVE
        ),
        HTTPStatus.OK,
        models.PaginatedTokenList,
    )
    assert listed.count == 2
    assert all(isinstance(token, models.Token) for token in listed.results)
    assert {token.id for token in listed.results} == {created.id, manager.token.key_id}

    got = answer(
        operation("tokens.tokens_retrieve").sync_detailed(created.id, client=client),
        HTTPStatus.OK,
        models.Token,
    )
    assert (got.id, got.name, got.revoked_at) == (created.id, "ci", None)
    assert not hasattr(got, "token")  # the plaintext is in the create answer only


def test_patch_renames_and_describes(client: Any, models: Any) -> None:
    target = create(client, models, "target")
    body = models.PatchedUpdateTokenRequest(name="renamed", description="patched")
    patched = answer(
        operation("tokens.tokens_partial_update").sync_detailed(
            target.id, client=client, body=body
        ),
        HTTPStatus.OK,
        models.Token,
    )
    assert (patched.id, patched.name, patched.description) == (target.id, "renamed", "patched")
    stored = APIToken.objects.get(key_id=target.id)
    assert (stored.name, stored.description) == ("renamed", "patched")


def test_rotate_returns_a_new_secret_once(client: Any, connect: Any, models: Any) -> None:
    old = create(client, models, "rotated")
    rotated = answer(
        operation("tokens.tokens_rotate_create").sync_detailed(
            old.id, client=client, body=models.RotateTokenRequest(grace_seconds=0)
        ),
        HTTPStatus.OK,
        models.IssuedToken,
    )
    assert rotated.id == old.id
    assert rotated.token.startswith("tka_") and rotated.token != old.token

    current = operation("tokens.tokens_current_retrieve")
    new_client, old_client = connect(rotated.token), connect(old.token)
    assert (
        answer(current.sync_detailed(client=new_client), HTTPStatus.OK, models.Token).id == old.id
    )
    refused = answer(
        current.sync_detailed(client=old_client), HTTPStatus.UNAUTHORIZED, models.APIError
    )
    assert refused.detail == "Invalid token."


def test_delete_revokes(client: Any, connect: Any, models: Any) -> None:
    doomed = create(client, models, "doomed")
    deleted = operation("tokens.tokens_destroy").sync_detailed(doomed.id, client=client)
    answer(deleted, HTTPStatus.NO_CONTENT, None)

    revoked = answer(
        operation("tokens.tokens_retrieve").sync_detailed(doomed.id, client=client),
        HTTPStatus.OK,
        models.Token,
    )
    assert revoked.status == "revoked"
    assert isinstance(revoked.revoked_at, datetime)
    assert APIToken.objects.get(key_id=doomed.id).revoked_at is not None
    answer(
        operation("tokens.tokens_current_retrieve").sync_detailed(client=connect(doomed.token)),
        HTTPStatus.UNAUTHORIZED,
        models.APIError,
    )


def test_current_reads_the_calling_token(client: Any, models: Any, manager: Any) -> None:
    current = answer(
        operation("tokens.tokens_current_retrieve").sync_detailed(client=client),
        HTTPStatus.OK,
        models.Token,
    )
    assert current.id == manager.token.key_id
    assert (current.name, current.scopes) == ("generated-client", MANAGER_SCOPES)
    assert current.owner == "alice"


def test_error_answers_parse_into_their_models(
    client: Any, connect: Any, models: Any, alice: Any
) -> None:
    missing = answer(
        operation("tokens.tokens_retrieve").sync_detailed("nope", client=client),
        HTTPStatus.NOT_FOUND,
        models.APIError,
    )
    assert missing.detail == "Not found."

    reader = services.issue_token(alice, name="notes-only", scopes=["notes:read"])
    lacking = answer(
        operation("tokens.tokens_list").sync_detailed(client=connect(reader.plaintext)),
        HTTPStatus.FORBIDDEN,
        models.ScopeError,
    )
    assert lacking.required_scopes == ["tokens:read"]

    bad = models.CreateTokenRequest(name="bad", scopes=["no:such-scope"])
    invalid = answer(
        operation("tokens.tokens_create").sync_detailed(client=client, body=bad),
        HTTPStatus.BAD_REQUEST,
        models.TokensCreateResponse400,
    )
    assert "scopes" in invalid.additional_properties
    assert APIToken.objects.filter(name="bad").count() == 0


def test_introspection_sends_the_form_its_rfc_names(connect: Any, models: Any, alice: Any) -> None:
    # The one body that is not JSON: the generated function posts it as a form.
    caller = services.issue_token(alice, name="resource-server", scopes=["tokens:introspect"])
    subject = services.issue_token(alice, name="subject", scopes=["notes:read"])
    introspect = operation("auth.auth_introspect_create")
    client = connect(caller.plaintext)
    known = answer(
        introspect.sync_detailed(
            client=client, body=models.TokenIntrospectionRequest(token=subject.plaintext)
        ),
        HTTPStatus.OK,
        models.Introspection,
    )
    assert known.active is True
    assert known.scope == "notes:read"
    unknown = answer(
        introspect.sync_detailed(
            client=client, body=models.TokenIntrospectionRequest(token="tka_nope")
        ),
        HTTPStatus.OK,
        models.Introspection,
    )
    assert unknown.active is False
