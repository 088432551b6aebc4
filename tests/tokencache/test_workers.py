"""Every gunicorn worker refuses what lost its power, once each served it from its own store.

The example project runs under gunicorn with 4 sync workers and the token cache on
(``DJANGO_TOKEN_CACHE``), over PostgreSQL NOTIFY and over Redis pub/sub, against this
session's database. Each worker answers who it is and how many queries it made
(``tests/tokencache/wsgi.py``). For each change that takes power from a token, the test
first polls until every worker has served the token with no query (its row is in that
worker's store), then makes the change in another process (``manage.py revoke_token``,
or this test process through the services, committed), then polls every worker until it
refuses; and no worker accepts the token again after it first refused it.

Production profile only: the workers must share the test database with this process.
Not timed: the waits are generous bounds; the time each worker took is in the messages.
"""

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests import live
from tests.helpers import WHOAMI
from tests.tokencache.helpers import CHANNELS
from tokens_app import services
from tokens_app.invalidation import Channel

pytestmark = [pytest.mark.production_profile, pytest.mark.django_db(transaction=True)]

WORKERS = 4
APP = "tests.tokencache.wsgi:application"
CLIENTS = 8  # more than workers: a busy sync worker cannot take them all
WAIT_SECONDS = 15
NOTE = "/api/notes/0/"  # DELETE needs notes:write: 404 (no such note) when allowed, else 403


@dataclass(frozen=True)
class Probe:
    pid: int
    number: int  # the how-many-th request of its worker
    status: int
    queries: int
    at: float  # when the answer arrived (monotonic)


@dataclass
class Deployment:
    kind: str
    server: live.LiveServer
    pids: frozenset[int]

    def probe(self, plaintext: str, method: str = "GET", path: str = WHOAMI) -> Probe:
        answer = self.server.request(method, path, headers={"Authorization": f"Bearer {plaintext}"})
        return Probe(
            pid=int(answer.headers["X-Worker-Pid"]),
            number=int(answer.headers["X-Worker-Request"]),
            status=answer.status,
            queries=int(answer.headers["X-Queries"]),
            at=time.monotonic(),
        )

    def until_every_worker(
        self,
        plaintext: str,
        done: Callable[[Probe], bool],
        what: str,
        *,
        method: str = "GET",
        path: str = WHOAMI,
    ) -> list[Probe]:
        """Probe from several clients until each worker gave an answer that is *done*."""
        probes: list[Probe] = []
        lock = threading.Lock()
        deadline = time.monotonic() + WAIT_SECONDS

        def finished() -> bool:
            with lock:
                return {p.pid for p in probes if done(p)} >= self.pids

        def client() -> None:
            while not finished() and time.monotonic() < deadline:
                probe = self.probe(plaintext, method, path)
                with lock:
                    probes.append(probe)

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            for future in [pool.submit(client) for _ in range(CLIENTS)]:
                future.result()
        if not finished():
            missing = self.pids - {p.pid for p in probes if done(p)}
            raise AssertionError(f"timed out waiting for {what}: workers {sorted(missing)} never")
        return probes


def booted_pids(server: live.LiveServer) -> frozenset[int]:
    return frozenset(
        int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", server.log_text())
    )


@pytest.fixture(scope="module", params=CHANNELS)
def deployment(
    request: pytest.FixtureRequest, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    kind = str(request.param)
    log_dir = tmp_path_factory.mktemp(f"gunicorn-{kind}")
    static_root = log_dir / "static"
    static_root.mkdir()
    env = live.server_env(
        live.session_database_url(),
        live.session_redis_url(),
        DJANGO_STATIC_ROOT=str(static_root),
        DJANGO_TOKEN_CACHE=kind,
    )
    with live.gunicorn(env, log_dir, workers=WORKERS, app=APP) as server:
        pids = booted_pids(server)
        assert len(pids) == WORKERS, server.log_text()
        yield Deployment(kind, server, pids)


@pytest.fixture
def here(deployment: Deployment, cache_on: Any) -> Channel:
    """This process, configured as the deployment's other processes are (it publishes)."""
    return cache_on(deployment.kind, redis_url=live.session_redis_url())  # type: ignore[no-any-return]


def served_from_every_store(
    deployment: Deployment,
    plaintext: str,
    *,
    method: str = "GET",
    path: str = WHOAMI,
    status: int = 200,
    queries: int = 0,
) -> None:
    """Poll until every worker answered *status* making only the view's *queries*.

    With the token's own row read from the worker's store: no query for it.
    """
    deployment.until_every_worker(
        plaintext,
        lambda p: p.status == status and p.queries == queries,
        f"every worker to answer {status} with the token from its store",
        method=method,
        path=path,
    )


def refused_by_every_worker(
    deployment: Deployment,
    plaintext: str,
    changed_at: float,
    *,
    refused: int = 401,
    accepted: int = 200,
    method: str = "GET",
    path: str = WHOAMI,
) -> dict[int, float]:
    """Poll until every worker refuses; no worker accepts again once it refused.

    Return the seconds from *changed_at* (when the change had committed) to each worker's
    first refusal seen: an upper bound of its propagation, the poll included.
    """
    probes = deployment.until_every_worker(
        plaintext, lambda p: p.status == refused, "every worker to refuse", method=method, path=path
    )
    assert {p.status for p in probes} <= {refused, accepted}, probes
    lags = {}
    for pid in deployment.pids:
        served = sorted((p for p in probes if p.pid == pid), key=lambda p: p.number)
        first = next(i for i, p in enumerate(served) if p.status == refused)
        again = [p for p in served[first:] if p.status != refused]
        assert again == [], f"worker {pid} accepted the token again after refusing it: {again}"
        lags[pid] = round(served[first].at - changed_at, 3)
    return lags


def test_a_token_revoked_by_another_process_is_refused_by_every_worker(
    deployment, here, alice, issue
):
    issued = issue(alice)
    served_from_every_store(deployment, issued.plaintext)
    env = live.server_env(
        live.session_database_url(), live.session_redis_url(), DJANGO_TOKEN_CACHE=deployment.kind
    )
    live.manage(env, "revoke_token", issued.token.key_id, "--reason", "another process")
    lags = refused_by_every_worker(deployment, issued.plaintext, time.monotonic())
    print(f"{deployment.kind}: revoked, refused after {lags}")


def test_a_rotated_out_secret_is_refused_by_every_worker_and_the_new_one_works(
    deployment, here, alice, issue
):
    old = issue(alice)
    served_from_every_store(deployment, old.plaintext)
    new = services.rotate_token(old.token, grace_seconds=0)
    lags = refused_by_every_worker(deployment, old.plaintext, time.monotonic())
    print(f"{deployment.kind}: rotated, old secret refused after {lags}")
    served_from_every_store(deployment, new.plaintext)


def test_a_narrowed_scope_is_refused_by_every_worker(deployment, here, alice, superuser, issue):
    issued = issue(alice, ["notes:write"])
    served_from_every_store(deployment, issued.plaintext)
    # Allowed, then the note looked for (its one query): the token's row is not read.
    served_from_every_store(
        deployment, issued.plaintext, method="DELETE", path=NOTE, status=404, queries=1
    )
    services.update_token(
        issued.token, caller=services.Caller(user=superuser), scopes=["notes:read"]
    )
    lags = refused_by_every_worker(
        deployment,
        issued.plaintext,
        time.monotonic(),
        refused=403,
        accepted=404,
        method="DELETE",
        path=NOTE,
    )
    print(f"{deployment.kind}: narrowed, notes:write refused after {lags}")
    served_from_every_store(deployment, issued.plaintext)  # notes:read still works


def test_a_deactivated_owner_is_refused_by_every_worker(deployment, here, bob, issue):
    issued = issue(bob)
    served_from_every_store(deployment, issued.plaintext)
    bob.is_active = False
    bob.save()
    lags = refused_by_every_worker(deployment, issued.plaintext, time.monotonic())
    print(f"{deployment.kind}: owner deactivated, refused after {lags}")
