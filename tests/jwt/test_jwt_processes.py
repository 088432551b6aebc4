"""JWTs across processes, on the embedded default: a real server, real commands, RS256.

The server (gunicorn, 2 workers) and every ``manage.py`` command share a SQLite file and
the file-based "shared" cache: revoking with ``manage.py revoke_token`` in another
process refuses the token's JWTs within a second. The runnable verifier in
``examples/verify_jwt.py`` checks a JWT against the server's JWKS, without Django.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import live
from tests.helpers import ISSUER, ROOT


def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Embedded:
    """A server and its commands on one SQLite file and one cache directory."""

    def __init__(self, base: Path) -> None:
        self.env = live.server_env(
            f"sqlite:///{base / 'db.sqlite3'}",
            None,
            DJANGO_CACHE_DIR=str(base / "cache"),
            DJANGO_STATIC_ROOT=str(base),
            API_TOKENS_JWT_ALGORITHM="RS256",
            API_TOKENS_JWT_SIGNING_KEY=rsa_pem(),
            DJANGO_DEBUG="1",  # the embedded default (`make run`): one host, no Redis
        )
        self.base = base
        self.server: live.LiveServer | None = None

    def manage(self, *args: str) -> str:
        return live.manage(self.env, *args)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    setup = Embedded(tmp_path_factory.mktemp("embedded-jwt"))
    setup.manage("migrate", "--noinput")
    setup.manage("loaddata", str(ROOT / "fixtures" / "demo.json"))
    with live.gunicorn(setup.env, setup.base, workers=2) as server:
        setup.server = server
        yield setup


def mint_over_http(server: live.LiveServer, api_token: str, **body: str) -> str:
    answer = server.request(
        "POST", "/api/auth/jwt/", headers={"Authorization": f"Bearer {api_token}"}, payload=body
    )
    assert answer.status == 200, answer.body
    assert answer.headers["Cache-Control"] == "no-store"
    return str(answer.json()["access_token"])


def whoami(server: live.LiveServer, credential: str) -> int:
    headers = {"Authorization": f"Bearer {credential}"}
    return server.request("GET", "/api/whoami/", headers=headers).status


def test_revoke_command_in_another_process_refuses_jwts_within_a_second(embedded):
    server = embedded.server
    assert server is not None
    token = embedded.manage(
        "issue_token", "alice", "--name", "jwt-parent", "--scopes", "notes:read"
    )
    key_id = token[4:16]
    access = mint_over_http(server, token)
    assert whoami(server, access) == 200
    embedded.manage("revoke_token", key_id, "--reason", "leaked")
    live.wait_until(
        lambda: whoami(server, access) == 401,
        "the revoked JWT to be refused (it must be within a second)",
        timeout=1,
        poll=0.02,
    )
    # Every worker refuses it, not just the one that happened to answer.
    assert {whoami(server, access) for _ in range(8)} == {401}


def run_verifier(*args: str) -> subprocess.CompletedProcess[str]:
    return live.run_python(str(ROOT / "examples" / "verify_jwt.py"), *args, timeout=60)


def test_example_verifier_accepts_a_real_jwt_and_refuses_a_forged_one(embedded):
    server = embedded.server
    assert server is not None
    token = embedded.manage("issue_token", "bob", "--name", "verifier", "--scopes", "notes:read")
    access = mint_over_http(server, token, scope="notes:read")
    jwks = f"http://127.0.0.1:{server.port}/.well-known/jwks.json"
    common = ["--jwks-url", jwks, "--issuer", ISSUER, "--audience", "api"]
    good = run_verifier(access, *common, "--scope", "notes:read")
    assert good.returncode == 0, good.stderr
    assert '"client_id": "' + token[4:16] + '"' in good.stdout
    head, payload, signature = access.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    bad = run_verifier(forged, *common)
    assert bad.returncode == 1
    assert bad.stderr.startswith("invalid:")
    wrong_audience = run_verifier(access, "--jwks-url", jwks, "--issuer", ISSUER, "--audience", "x")
    assert wrong_audience.returncode == 1
    missing_scope = run_verifier(access, *common, "--scope", "notes:write")
    assert missing_scope.returncode == 1
    assert "missing scope notes:write" in missing_scope.stderr
