"""Throughput under gunicorn, and the load it puts on the database: ``python -m bench.throughput``.

Run by ``python -m bench``. ``BENCH_SMALL_URL`` names the database (PostgreSQL when the run has
one: the production profile; else a SQLite file); ``--token-cache postgresql`` adds a second
server with the token cache on. Each server is gunicorn with 2 sync workers on a loopback port,
loaded by ``wrk`` when it is installed (Debian's package), otherwise a small threaded Python
client (which then limits what it can measure, and says so). Each row runs a few seconds;
rows are interleaved over several rounds.

Database load (PostgreSQL only): for the API token with the cache off and on, a fresh server
is loaded for ``--load-seconds`` and stopped; the server's own count of transactions in the
bench database (``pg_stat_database``: in autocommit every statement is one) is read before
the server starts and after its connections have closed. A backend publishes those counters
when it exits (a long-lived one may hold them back for a long time, measured: PostgreSQL 15),
so the count is read only after every connection of the server is gone.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from http.client import HTTPConnection
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
#: As project/gunicorn_conf.py: a worker's heartbeat file on a disk can stall it for a
#: journal commit (measured here: 100-200 ms while PostgreSQL fsyncs), so it goes in memory.
SHARED_MEMORY = "/dev/shm"  # noqa: S108 — gunicorn's own advice for its heartbeat files
HEARTBEAT_IN_MEMORY = ["--worker-tmp-dir", SHARED_MEMORY] if os.path.isdir(SHARED_MEMORY) else []
#: Row name: (server, path). The cached row is the same view on the server with the cache on.
ROWS = {
    "floor": ("plain", "/floor/"),
    "authtoken": ("plain", "/authtoken/"),
    "apitoken": ("plain", "/apitoken/"),
    "apitoken-cached": ("cached", "/apitoken/"),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Migrate and create the credentials in a child (this process never imports Django)."""
    code = (
        "import json, django; django.setup()\n"
        "from django.core.management import call_command\n"
        "from django.contrib.auth import get_user_model\n"
        "from rest_framework.authtoken.models import Token\n"
        "from tokens_app import services\n"
        "call_command('migrate', verbosity=0)\n"
        "user = get_user_model().objects.create_user('bench', 'b@example.com', 'x')\n"
        "print(json.dumps({'authtoken': 'Token ' + Token.objects.create(user=user).key,\n"
        "  'apitoken': 'Bearer ' + services.issue_token(user, name='b', scopes=['notes:read'])"
        ".plaintext}))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    headers = json.loads(output.strip().splitlines()[-1])
    return {
        "floor": {},
        "authtoken": {"Authorization": headers["authtoken"]},
        "apitoken": {"Authorization": headers["apitoken"]},
        "apitoken-cached": {"Authorization": headers["apitoken"]},
    }


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("gunicorn exited early")
        try:
            connection = HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/floor/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("gunicorn did not start")


class Load(NamedTuple):
    """What one load run did: requests per second, and how many requests in all."""

    rate: float
    requests: int


def run_wrk(url: str, headers: dict[str, str], seconds: float, connections: int) -> Load:
    command = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx[1]} failed responses under load")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if match is None or total is None:
        raise SystemExit(f"wrk printed no rate:\n{output}")
    return Load(float(match[1]), int(total[1]))


def run_python(url: str, headers: dict[str, str], seconds: float, connections: int) -> Load:
    port = int(url.split(":")[2].split("/")[0])
    path = "/" + url.split("/", 3)[3]
    done = [0] * connections
    deadline = time.monotonic() + seconds

    def client(slot: int) -> None:
        while time.monotonic() < deadline:
            connection = HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", path, headers=headers)
            if connection.getresponse().status != 200:
                raise SystemExit(f"{path}: failed response under load")
            connection.close()
            done[slot] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Load(sum(done) / (time.monotonic() - started), sum(done))


LoadFunction = Callable[[str, dict[str, str], float, int], Load]


def server_env(base: dict[str, str], token_cache: str) -> dict[str, str]:
    env = dict(base)
    if token_cache:
        env["BENCH_TOKEN_CACHE"] = token_cache
    return env


@contextmanager
def gunicorn(env: dict[str, str], workers: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A gunicorn of the bench project on a free loopback port, stopped (and waited for) after."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "bench.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "--no-control-socket", "--log-level", "warning", *HEARTBEAT_IN_MEMORY,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(port, process)
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def rows_on(token_cache: str) -> dict[str, tuple[str, str]]:
    return {name: row for name, row in ROWS.items() if token_cache or row[0] != "cached"}


def interleaved(
    ports: dict[str, int], headers: dict[str, dict[str, str]], args: argparse.Namespace,
    load: LoadFunction,
) -> dict[str, list[float]]:  # fmt: skip
    """Requests per second of every row, round after round, each round in a rotated order."""
    rows = rows_on(args.token_cache)
    names = list(rows)
    url = {name: f"http://127.0.0.1:{ports[server]}{path}" for name, (server, path) in rows.items()}
    for name in names:  # warm-up: every worker imports, connects, prepares, caches
        load(url[name], headers[name], 1, args.connections)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for number in range(args.rounds):
        for name in names[number % len(names) :] + names[: number % len(names)]:
            rates[name].append(load(url[name], headers[name], args.seconds, args.connections).rate)
    return rates


def transactions(database_url: str) -> int:
    """The server's count of committed and rolled-back transactions in *database_url*'s database."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        deadline = time.monotonic() + 30
        while connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
        ).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise SystemExit(f"database load: connections to {name} never closed")
            time.sleep(0.05)
        time.sleep(0.2)  # a backend flushes its counters on its way out
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", [name]
        ).fetchone()
    return int(row[0]) if row else 0


def database_load(
    env: dict[str, str], headers: dict[str, dict[str, str]], args: argparse.Namespace,
    load: LoadFunction,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Transactions the server counted while a fresh gunicorn served the API token row."""
    url = env["BENCH_SMALL_URL"]
    results = {}
    for name, token_cache in (("apitoken", ""), ("apitoken-cached", args.token_cache)):
        if name not in rows_on(args.token_cache):
            continue
        before = transactions(url)
        started = time.monotonic()
        with gunicorn(server_env(env, token_cache), args.workers) as (port, _process):
            done = load(f"http://127.0.0.1:{port}/apitoken/", headers[name], args.load_seconds,
                        args.connections)  # fmt: skip
        lifetime = time.monotonic() - started
        counted = transactions(url) - before
        results[name] = {
            "requests": done.requests,
            "rate": done.rate,
            "load_seconds": args.load_seconds,
            "server_seconds": round(lifetime, 2),
            "transactions": counted,
            "per_request": counted / done.requests,
            "per_second": counted / args.load_seconds,
        }
    return results


def idle_transactions(
    env: dict[str, str], header: dict[str, str], args: argparse.Namespace, load: LoadFunction,
    workers: int, idle: float,
) -> int:  # fmt: skip
    """Transactions of a fresh cached server: 1 s of load (starts every listener), *idle* s idle."""
    url = env["BENCH_SMALL_URL"]
    before = transactions(url)
    with gunicorn(server_env(env, args.token_cache), workers) as (port, _process):
        load(f"http://127.0.0.1:{port}/apitoken/", header, 1, 2 * workers)
        time.sleep(idle)
    return transactions(url) - before


def listener_overhead(
    env: dict[str, str], headers: dict[str, dict[str, str]], args: argparse.Namespace,
    load: LoadFunction, workers: int,
) -> dict[str, float]:  # fmt: skip
    """What the listeners alone cost the server per second: two idle spans, the difference.

    Each ping is a transaction of its sender, and each wake-up of a listening backend to
    read the notification queue is one more (PostgreSQL reads it in a transaction); a
    ``NOTIFY`` wakes every listening backend of the database, whatever the channel, so
    the count grows with the square of the processes: run with two sizes to show it.
    """
    short, long = 1.0, 1.0 + args.load_seconds
    header = headers["apitoken-cached"]
    counted = [idle_transactions(env, header, args, load, workers, idle) for idle in (short, long)]
    return {
        "workers": workers,
        "idle_seconds": args.load_seconds,
        "transactions": counted[1] - counted[0],
        "per_second": (counted[1] - counted[0]) / args.load_seconds,
        "per_worker_per_second": (counted[1] - counted[0]) / args.load_seconds / workers,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--token-cache", default="", help="channel of the cached server")
    parser.add_argument("--load-seconds", type=int, default=5)
    args = parser.parse_args(argv)
    generator = "wrk" if shutil.which("wrk") else "python"
    load = run_wrk if generator == "wrk" else run_python
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DJANGO_") and key not in {"DATABASE_URL", "BENCH_TOKEN_CACHE"}
    }
    env.update(DJANGO_SETTINGS_MODULE="bench.settings")
    postgresql = env["BENCH_SMALL_URL"].startswith(("postgres://", "postgresql://"))
    headers = prepare(env)
    with ExitStack() as servers:
        ports = {"plain": servers.enter_context(gunicorn(env, args.workers))[0]}
        if args.token_cache:
            cached = gunicorn(server_env(env, args.token_cache), args.workers)
            ports["cached"] = servers.enter_context(cached)[0]
        rates = interleaved(ports, headers, args, load)
    result = {
        "generator": generator,
        "database": "PostgreSQL" if postgresql else "SQLite",
        "token_cache": args.token_cache,
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rows": {
            row: {"rates": values, "median": statistics.median(values)}
            for row, values in rates.items()
        },
        "database_load": database_load(env, headers, args, load) if postgresql else None,
        "listener_overhead": [
            listener_overhead(env, headers, args, load, workers)
            for workers in (args.workers, 2 * args.workers)
            if postgresql and args.token_cache
        ],
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
