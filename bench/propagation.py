"""Propagation: how long a revoked token still works in a gunicorn worker that had cached it.

``python -m bench.propagation OUT.json --revokes 60 --workers 4`` (run by ``python -m bench``
in a child process, with ``BENCH_SMALL_URL`` naming an empty PostgreSQL database and
``BENCH_TOKEN_CACHE`` the channel under test, or nothing for the uncached baseline).

gunicorn serves the bench project with *workers* sync workers. One poller thread per worker
sends the current token, on a new connection each time (sync workers close every one), to
``/worker/``, whose answer names the worker (``X-Worker-Pid``) and the SQL queries it made
(``X-Queries``). Then, for each of ``--revokes`` tokens:

1. issue it, and poll until every worker has answered it **from its cache** (a 200 with
   0 queries): the worker holds the row, so only the pushed invalidation can stop it;
2. revoke it in this process (``services.revoke_token`` in a transaction: another process
   than every worker), noting the clock just before the ``COMMIT`` is sent and when it
   returned (the revocation committed);
3. poll until every worker has refused it: the time from the commit to the arrival of a
   worker's first 401 is that worker's propagation time. It includes the delivery, the
   worker's queueing and the poll interval, so it is an upper bound. The same time counted
   from the ``COMMIT`` being sent is kept too: it adds the commit's own cost (its fsync,
   which on a busy disk took up to ~130 ms here), which is no propagation but is what a
   caller waiting on ``revoke_token`` sees.

Every worker pid gunicorn's master has must refuse every token (else the run fails), and a
worker that accepts a token again after refusing it is counted (a flap: must be 0). The
latest request sent after the commit that a worker still let in gives a lower bound.

The pollers send back to back by default (``--interval-ms`` paces them): the 2-core machine
is then saturated, which is the harder case for the listener threads, and the polls are
dense enough (about 2 ms apart per worker) not to hide the tail. ``--answers`` writes every
poll with the worker's own clock (``X-Handled``: CLOCK_MONOTONIC is one clock for the host)
for diagnosis.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections, transaction  # noqa: E402

from bench.throughput import HEARTBEAT_IN_MEMORY, free_port  # noqa: E402
from tokens_app import services  # noqa: E402
from tokens_app.models import APIToken  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: How long every worker gets to answer a fresh token from its cache, and to refuse it.
WARM_TIMEOUT_SECONDS = 15.0
REFUSAL_TIMEOUT_SECONDS = 5.0
#: After the last worker refused: keep polling this long to catch a worker accepting again.
SETTLE_SECONDS = 0.02
#: How often the main thread looks at the answers (the pollers stamp them themselves).
CHECK_INTERVAL_SECONDS = 0.002


@dataclass(frozen=True)
class Answer:
    """One poll: which token, when sent and received (monotonic), who answered, and how."""

    token: int
    sent: float
    received: float
    pid: int
    status: int
    queries: int
    #: The worker's own clock when it began and finished the request (same clock).
    handled: tuple[float, float] = (0.0, 0.0)


class Pollers:
    """Threads that keep sending the current token to the server, one connection a request."""

    def __init__(self, port: int, count: int, interval: float) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.current = -1
        self.requests: dict[int, bytes] = {}
        self.answers: list[Answer] = []  # appended by the threads (atomic under the GIL)
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.poll, daemon=True) for _ in range(count)]

    def use(self, index: int, token: str) -> None:
        """Poll with *token* (number *index*) from now on."""
        self.requests[index] = (
            f"GET /worker/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.current = index

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def poll(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            index = self.current
            if index < 0:
                time.sleep(0.01)
                continue
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            next_at = time.monotonic() + self.interval
            try:
                self.answers.append(self.fetch(index))
            except OSError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.01)

    def fetch(self, index: int) -> Answer:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            sent = time.monotonic()
            connection.sendall(self.requests[index])
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                head += chunk
            received = time.monotonic()
        return parse(index, sent, received, head)


def parse(index: int, sent: float, received: float, raw: bytes) -> Answer:
    """Read the status line and the two bench headers of a raw HTTP response."""
    lines = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _colon, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(lines[0].split()[1])
    pid = int(headers.get("x-worker-pid", "0"))
    began, _space, ended = headers.get("x-handled", "0 0").partition(" ")
    queries = int(headers.get("x-queries", "-1"))
    return Answer(index, sent, received, pid, status, queries, (float(began), float(ended)))


def worker_pids(master: int) -> set[int]:
    """The pids whose parent is gunicorn's master: its workers, read from /proc."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            pids.add(int(entry.name))
    return pids


def start_gunicorn(port: int, workers: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "gunicorn", "bench.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "--no-control-socket", "--log-level", "warning", *HEARTBEAT_IN_MEMORY,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL)


def wait_for_workers(master: subprocess.Popen[bytes], workers: int) -> set[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if master.poll() is not None:
            raise SystemExit("propagation: gunicorn exited early")
        pids = worker_pids(master.pid)
        if len(pids) == workers:
            return pids
        time.sleep(0.05)
    raise SystemExit(f"propagation: gunicorn did not start {workers} workers")


class Run:
    """One server, its pollers, and the revokes timed against them."""

    def __init__(self, pollers: Pollers, pids: set[int], user: Any, *, cached: bool) -> None:
        self.pollers = pollers
        self.pids = pids
        self.user = user
        self.cached = cached
        self.seen = 0  # answers already read
        self.marks: list[tuple[int, float, float]] = []  # (token, before commit, after)

    def new_answers(self) -> list[Answer]:
        answers = self.pollers.answers[self.seen :]
        self.seen += len(answers)
        return answers

    def warm(self, index: int) -> float:
        """Poll *index* until every worker answered it from its cache; return the seconds taken."""
        started = time.monotonic()
        ready: set[int] = set()
        while ready != self.pids:
            if time.monotonic() - started > WARM_TIMEOUT_SECONDS:
                missing = sorted(self.pids - ready)
                raise SystemExit(f"propagation: token {index} never served from cache by {missing}")
            for answer in self.new_answers():
                if answer.token != index or answer.status != 200:
                    continue
                if answer.queries == 0 or not self.cached:
                    ready.add(answer.pid)
            time.sleep(CHECK_INTERVAL_SECONDS)
        return time.monotonic() - started

    def revoke(self, token: APIToken) -> tuple[float, float]:
        """Revoke *token* in a transaction; return the clock before and after its COMMIT."""
        self.began = time.monotonic()
        with transaction.atomic():
            services.revoke_token(token, reason="propagation bench")
            before = time.monotonic()
        return before, time.monotonic()

    def one(self, index: int) -> dict[str, Any]:
        issued = services.issue_token(self.user, name=f"propagation-{index}", scopes=["notes:read"])
        self.pollers.use(index, issued.plaintext)
        warm_seconds = self.warm(index)
        before, committed = self.revoke(issued.token)
        self.marks.append((index, before, committed))
        refused: dict[int, float] = {}
        accepted: dict[int, float] = {}  # the latest request sent after the commit, still let in
        stale = early = flaps = 0
        deadline = before + REFUSAL_TIMEOUT_SECONDS
        settle_until = float("inf")
        while time.monotonic() < min(deadline, settle_until):
            for answer in self.new_answers():
                if answer.token != index:
                    continue
                if answer.status == 401:
                    early += answer.received < before
                    refused.setdefault(answer.pid, answer.received)
                elif answer.status == 200 and answer.sent > committed:
                    if answer.pid in refused and answer.sent > refused[answer.pid]:
                        flaps += 1
                    else:
                        stale += 1
                        accepted[answer.pid] = max(accepted.get(answer.pid, 0.0), answer.sent)
            if set(refused) >= self.pids and settle_until == float("inf"):
                settle_until = time.monotonic() + SETTLE_SECONDS
            time.sleep(CHECK_INTERVAL_SECONDS)
        return {
            "latencies_ms": {str(pid): (at - committed) * 1000 for pid, at in refused.items()},
            "from_sent_ms": {str(pid): (at - before) * 1000 for pid, at in refused.items()},
            # A lower bound per worker: a request sent this long after the commit was let in.
            "accepted_ms": {str(pid): (at - committed) * 1000 for pid, at in accepted.items()},
            "missing": sorted(self.pids - set(refused)),
            "commit_ms": (committed - before) * 1000,
            "transaction_ms": (before - self.began) * 1000,
            "warm_ms": warm_seconds * 1000,
            "stale_accepts": stale,
            "early_refusals": early,
            "flaps": flaps,
        }


def resolution_ms(answers: list[Answer]) -> float:
    """Median gap between two answers of the same worker: the poll's time resolution."""
    last: dict[int, float] = {}
    gaps = []
    for answer in sorted(answers, key=lambda a: a.received):
        if answer.pid in last:
            gaps.append(answer.received - last[answer.pid])
        last[answer.pid] = answer.received
    return statistics.median(gaps) * 1000 if gaps else 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(revokes: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [ms for revoke in revokes for ms in revoke["latencies_ms"].values()]
    missing = sum(len(revoke["missing"]) for revoke in revokes)
    values = {
        "refusals": len(latencies),
        "missing": missing,
        "stale_accepts": sum(revoke["stale_accepts"] for revoke in revokes),
        "early_refusals": sum(revoke["early_refusals"] for revoke in revokes),
        "flaps": sum(revoke["flaps"] for revoke in revokes),
        "commit_ms_median": statistics.median(revoke["commit_ms"] for revoke in revokes),
    }
    accepted = [
        revoke["accepted_ms"].get(pid, 0.0) for revoke in revokes for pid in revoke["latencies_ms"]
    ]
    if accepted:
        values.update(accepted_p99_ms=percentile(accepted, 0.99), accepted_max_ms=max(accepted))
    from_sent = [ms for revoke in revokes for ms in revoke.get("from_sent_ms", {}).values()]
    if from_sent:
        values.update(from_sent_p99_ms=percentile(from_sent, 0.99), from_sent_max_ms=max(from_sent))
    if latencies:
        values.update(
            p50_ms=percentile(latencies, 0.5),
            p90_ms=percentile(latencies, 0.9),
            p99_ms=percentile(latencies, 0.99),
            max_ms=max(latencies),
            mean_ms=statistics.fmean(latencies),
        )
    return values


def prepare() -> Any:
    call_command("migrate", verbosity=0)
    model = get_user_model()
    user = model._default_manager.filter(username="propagation").first()
    return user or model._default_manager.create_user("propagation", "p@example.com", "x")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--revokes", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pollers", type=int, default=0, help="default: one per worker")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="between one poller's sends")
    parser.add_argument("--answers", type=Path, help="also write every poll here (diagnosis)")
    args = parser.parse_args(argv)
    channel = settings.API_TOKENS.get("TOKEN_CACHE") or ""
    user = prepare()
    connections.close_all()  # gunicorn's workers open their own
    port = free_port()
    master = start_gunicorn(port, args.workers)
    pollers = Pollers(port, args.pollers or args.workers, args.interval_ms / 1000)
    try:
        pids = wait_for_workers(master, args.workers)
        pollers.start()
        run = Run(pollers, pids, user, cached=bool(channel))
        revokes = [run.one(index) for index in range(args.revokes)]
        pids_after = worker_pids(master.pid)
        marks = run.marks
    finally:
        pollers.stop()
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=30)
    if pids_after != pids:
        raise SystemExit(f"propagation: workers changed during the run ({pids} -> {pids_after})")
    result = {
        "channel": channel or "off",
        "workers": args.workers,
        "pollers": pollers.count,
        "interval_ms": args.interval_ms,
        "pids": sorted(pids),
        "revokes": revokes,
        "resolution_ms": resolution_ms(pollers.answers),
        "answers": len(pollers.answers),
        "poll_errors": pollers.errors[:5],
        "summary": summary(revokes),
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.answers:
        rows = [list(astuple(answer)) for answer in pollers.answers]
        args.answers.write_text(json.dumps({"marks": marks, "answers": rows}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
