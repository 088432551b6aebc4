"""The async plain view under a real ASGI server: uvicorn, one event loop, concurrent requests.

The lookup runs in Django's thread-sensitive executor (``sync_to_async``), so requests
arriving together are all answered, each with its own credential's answer, and a
revocation committed by this process is refused by the server's next request.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import live
from tests.helpers import INVALID_CHALLENGE, NO_CREDENTIALS_CHALLENGE
from tokens_app import services

pytestmark = [pytest.mark.production_profile, pytest.mark.django_db(transaction=True)]

PATH = "/plain/async/whoami/"
CONCURRENT = 24


@pytest.fixture(scope="module")
def server(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[live.LiveServer]:
    log_dir = tmp_path_factory.mktemp("uvicorn")
    env = live.server_env(live.session_database_url(), live.session_redis_url())
    with live.uvicorn(env, log_dir) as running:
        yield running


def whoami(server: live.LiveServer, token: str | None) -> live.Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return server.request("GET", PATH, headers=headers)


def test_concurrent_requests_each_get_their_own_answer(server, django_user_model, issue):
    owners = [django_user_model.objects.create_user(f"user{n}") for n in range(4)]
    tokens = {owner.username: issue(owner).plaintext for owner in owners}
    asked = [name for name in tokens for _ in range(CONCURRENT // len(tokens))]
    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        answers = list(pool.map(lambda name: (name, whoami(server, tokens[name])), asked))
    assert [answer.status for _name, answer in answers] == [200] * len(asked)
    assert all(answer.json()["username"] == name for name, answer in answers)
    assert {answer.json()["credential"] for _name, answer in answers} == {"api_token"}


def test_refusals_are_the_bearer_answers(server):
    missing = whoami(server, None)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == NO_CREDENTIALS_CHALLENGE.replace(
        "http://testserver", f"http://127.0.0.1:{server.port}"
    )
    invalid = whoami(server, "tka_not_a_token")
    assert invalid.status == 401
    assert invalid.json() == {"detail": "Invalid token."}
    assert invalid.headers["WWW-Authenticate"] == INVALID_CHALLENGE.replace(
        "http://testserver", f"http://127.0.0.1:{server.port}"
    )


def test_a_revoked_token_is_refused_on_the_next_request(server, alice, issue):
    issued = issue(alice)
    assert whoami(server, issued.plaintext).status == 200
    services.revoke_token(issued.token)
    assert whoami(server, issued.plaintext).status == 401
