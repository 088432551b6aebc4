"""Real processes for the multi-process and fault tests: gunicorn (or uvicorn) on a loopback port.

The server runs the test settings with ``DEBUG`` off, as ``make serve`` would, against
whatever database and cache URLs a test gives it: the test database and Redis for the
multi-process tests, dead ports for the fault tests.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.05
START_TIMEOUT_SECONDS = 30
#: gunicorn's access log, with the worker's pid first (as ``<pid>``): who served what.
ACCESS_LOG_FORMAT = '%(p)s "%(r)s" %(s)s'


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class LiveServer:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    workers: int
    pids: set[int] = field(default_factory=set)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        payload: Any = None,
        timeout: float = 15,
    ) -> Answer:
        """Send one request on a new connection (gunicorn's sync workers close each one)."""
        body = None if payload is None else json.dumps(payload).encode()
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/json"
        conn = HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        """Wait until the log holds *text*: gunicorn logs a request after answering it."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never reached the server log")
            time.sleep(POLL_SECONDS)

    def serving_pids(self, path: str, *, requests: int, timeout: float = 10) -> set[int]:
        """Pids of the workers that served *path*, once *requests* of them are logged.

        gunicorn writes the access line after the response, so the last ones may lag.
        """
        pattern = re.compile(rf'^<(\d+)> "\w+ {re.escape(path)}\S* HTTP', re.MULTILINE)
        deadline = time.monotonic() + timeout
        while len(found := pattern.findall(self.log_text())) < requests:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {requests} requests for {path} logged")
            time.sleep(POLL_SECONDS)
        return {int(pid) for pid in found}


def wait_until(
    condition: Callable[[], bool], what: str, *, timeout: float, poll: float = POLL_SECONDS
) -> None:
    """Poll *condition* every *poll* seconds until it holds; fail, never hang, after *timeout*.

    What a test waits for across processes (another worker, a committed revoke) has no
    clock to move: it polls the condition itself, with a deadline, never a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def free_port() -> int:
    """A loopback port nobody listens on (so connecting to it is refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def session_database_url() -> str:
    """The URL of the database this test session uses (pytest-django's ``test_...``)."""
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def session_redis_url() -> str:
    return str(settings.CACHES["default"]["LOCATION"])


def server_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    """Environment for a server process: production settings over the given services."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "API_TOKENS_")) and key not in {"REDIS_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DJANGO_DEBUG="0",
        # The same key as this process: tokens issued here verify there (hash key derivation).
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        DATABASE_URL=database_url,
        PYTHONUNBUFFERED="1",
        # The "shared" file cache of this test run (the JWT deny list), unless a test
        # gives a directory of its own.
        DJANGO_CACHE_DIR=os.environ["DJANGO_CACHE_DIR"],
    )
    env.update(extra)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def run_python(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | bytes | None = None,
    timeout: int = 120,
    check: bool = False,
    **streams: Any,
) -> subprocess.CompletedProcess[Any]:
    """Run this interpreter with *args* from the repository root, as a child process.

    Output is captured (as text, or bytes when *stdin* is bytes) unless *streams* say
    where ``stdout``/``stderr`` go. The one way tests start ``manage.py``, ``-m pytest``,
    ``-m bench`` or a script: same root, same interpreter, a bounded wait.
    """
    captured = {} if streams else {"capture_output": True}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=None if env is None else dict(env),
        input=stdin,
        text=not isinstance(stdin, bytes),
        timeout=timeout,
        check=check,
        **captured,
        **streams,
    )


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``manage.py`` in a process of its own with *env*; return its stdout, or fail."""
    result = run_python("manage.py", *args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _wait_until_ready(server: LiveServer, booted: str = "Booting worker with pid") -> None:
    """Wait until *booted* is logged once per worker and ``/health/`` answers."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{server.log_text()}")
        if server.log_text().count(booted) >= server.workers:
            try:
                if server.request("GET", "/health/", timeout=2).status == 200:
                    return
            except OSError:
                pass
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"the server did not become ready:\n{server.log_text()}")


@contextmanager
def _serving(
    command: list[str], env: dict[str, str], log: Path, port: int, workers: int, booted: str
) -> Iterator[LiveServer]:
    """Run *command* until the block ends (SIGTERM, then SIGKILL after 15 s)."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    server = LiveServer(port=port, process=process, log=log, workers=workers)
    try:
        _wait_until_ready(server, booted)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def gunicorn(
    env: dict[str, str], log_dir: Path, *, workers: int = 2, app: str | None = None
) -> Iterator[LiveServer]:
    """Run ``project.wsgi`` (or the WSGI *app* named) under gunicorn until the block ends."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(ROOT / "project" / "gunicorn_conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--access-logformat",
        ACCESS_LOG_FORMAT,
        # An application named here wins over the configuration's wsgi_app.
        *([app] if app else []),
    ]
    log = log_dir / f"gunicorn-{port}.log"
    with _serving(command, env, log, port, workers, "Booting worker with pid") as server:
        yield server


@contextmanager
def uvicorn(env: dict[str, str], log_dir: Path) -> Iterator[LiveServer]:
    """Run ``project.asgi`` under uvicorn (one process, one event loop) until the block ends."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "project.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    log = log_dir / f"uvicorn-{port}.log"
    with _serving(command, env, log, port, 1, "Application startup complete") as server:
        yield server
