"""``make bench``: measure, print the tables, check the budgets, write the report.

1. In-process rows on SQLite, and on PostgreSQL when ``DATABASE_URL`` points at one that
   answers: a child process per backend (``bench.inprocess``) on two fresh databases, a
   small and a large token table.
2. Throughput under gunicorn on PostgreSQL (SQLite without one), with a second server that
   has the token cache on, and the database load each puts on the server
   (``bench.throughput``).
3. Propagation of revocations to 4 gunicorn workers that cached the token, over PostgreSQL
   ``NOTIFY`` and Redis pub/sub, and with the cache off for comparison (``bench.propagation``).
4. ``bench/results/latest.json``, a markdown table on stdout, and, for a full run,
   ``docs/performance.md`` with ``docs/performance.png`` and ``docs/propagation.png``.

Exits non-zero when a budget is missed (a budget that needs PostgreSQL and has none is
missed too: the issue's budgets are set for the production profile). ``--quick`` is the
smoke run the test suite uses: tiny tables, one round, a few revokes, no throughput, no docs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import report

ROOT = Path(__file__).resolve().parent.parent


def pg_databases(base_url: str, *purposes: str) -> list[str]:
    """The bench databases: named after *base_url*'s, so two people's runs never collide.

    ``postgres://…/tokens_app`` and ``"small"`` give ``tokens_app_bench_small``.
    """
    name = urlsplit(base_url).path.lstrip("/") or "tokens_app"
    return [f"{name}_bench_{purpose}" for purpose in purposes]


@contextmanager
def postgres_databases(base_url: str, *purposes: str) -> Iterator[list[str]]:
    """Create (afresh) one database per *purpose* on *base_url*'s server; drop them after."""
    import psycopg

    parts = urlsplit(base_url)
    names = pg_databases(base_url, *purposes)
    with psycopg.connect(base_url, autocommit=True) as connection:
        for name in names:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield [urlunsplit(parts._replace(path=f"/{name}")) for name in names]
    finally:
        with psycopg.connect(base_url, autocommit=True) as connection:
            for name in names:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_for_bench(args: argparse.Namespace) -> str:
    """``DATABASE_URL`` if it names a PostgreSQL server that answers, else "" (and why)."""
    url = os.environ.get("DATABASE_URL", "")
    if args.no_postgresql or not url.startswith(("postgres://", "postgresql://")):
        print("(no PostgreSQL URL in DATABASE_URL: the PostgreSQL rows are left out)", flush=True)
        return ""
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=2).close()
    except Exception as exc:  # no driver, no server: the rows are left out, and the budgets say so
        print(f"(PostgreSQL at {url} unreachable: {exc}; its rows are left out)", flush=True)
        return ""
    return url


def redis_for_bench() -> str:
    """A Redis URL for the Redis deny-list row, if one answers (else that row is left out)."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception:  # no package, no server: the row is skipped, and the table says so
        print(f"(no Redis at {url}: the Redis deny-list row is left out)", flush=True)
        return ""
    return url


def child_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "BENCH_", "API_TOKENS_"))
    }
    env.update(DJANGO_SETTINGS_MODULE="bench.settings", PYTHONPATH=str(ROOT), **extra)
    return env


def run_backend(name: str, small: str, large: str, out: Path, args: argparse.Namespace) -> Any:
    print(f"== {name}: {args.small:,} and {args.large:,} tokens, {args.rounds} rounds", flush=True)
    command = [
        sys.executable, "-m", "bench.inprocess", str(out),
        "--small", str(args.small), "--large", str(args.large),
        "--rounds", str(args.rounds), "--per-round", str(args.per_round),
        "--argon2-rounds", str(args.argon2_rounds),
    ]  # fmt: skip
    subprocess.run(
        command,
        cwd=ROOT,
        env=child_env(BENCH_SMALL_URL=small, BENCH_LARGE_URL=large, BENCH_REDIS_URL=args.redis_url),
        check=True,
    )
    return json.loads(out.read_text(encoding="utf-8"))


def run_throughput(database_url: str, out: Path, args: argparse.Namespace) -> Any:
    """Throughput (and, on PostgreSQL, database load) in a child, on a fresh database."""
    token_cache = "postgresql" if database_url else ""
    where = "PostgreSQL, cache off and on" if token_cache else "SQLite"
    print(f"== throughput: gunicorn, 2 workers, {where}, {args.throughput_seconds}s a row",
          flush=True)  # fmt: skip
    command = [
        sys.executable, "-m", "bench.throughput", str(out),
        "--seconds", str(args.throughput_seconds), "--rounds", str(args.throughput_rounds),
        "--token-cache", token_cache,
    ]  # fmt: skip
    with ExitStack() as stack:
        if database_url:
            (url,) = stack.enter_context(postgres_databases(database_url, "throughput"))
        else:
            url = f"sqlite:///{Path(stack.enter_context(tempfile.TemporaryDirectory())) / 't.db'}"
        env = child_env(BENCH_SMALL_URL=url, BENCH_REDIS_URL=args.redis_url)
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


def propagation_channels(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(channel, revokes) to measure: NOTIFY, Redis pub/sub when it answers, and no cache."""
    if args.quick:
        return [("postgresql", args.revokes)]
    channels = [("postgresql", args.revokes)]
    if args.redis_url:
        channels.append(("redis", args.revokes))
    return [*channels, ("off", max(10, args.revokes // 3))]


def run_propagation(database_url: str, tmp: Path, args: argparse.Namespace) -> list[Any]:
    """One propagation run per channel, each in a child process, on one fresh database."""
    runs = []
    purpose = "quick_propagation" if args.quick else "propagation"
    with postgres_databases(database_url, purpose) as (url,):
        for channel, revokes in propagation_channels(args):
            print(f"== propagation: {channel}, {args.workers} gunicorn workers, {revokes} "
                  "revokes", flush=True)  # fmt: skip
            out = tmp / f"propagation-{channel}.json"
            extra = {"BENCH_TOKEN_CACHE": channel} if channel != "off" else {}
            env = child_env(BENCH_SMALL_URL=url, BENCH_REDIS_URL=args.redis_url, **extra)
            command = [
                sys.executable, "-m", "bench.propagation", str(out),
                "--revokes", str(revokes), "--workers", str(args.workers),
            ]  # fmt: skip
            subprocess.run(command, cwd=ROOT, env=env, check=True)
            runs.append(json.loads(out.read_text(encoding="utf-8")))
    return runs


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny, one round")
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--per-round", type=int, default=25)
    parser.add_argument("--argon2-rounds", type=int, default=8)
    parser.add_argument("--throughput-seconds", type=int, default=2)
    parser.add_argument("--throughput-rounds", type=int, default=5)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--revokes", type=int, default=60, help="per propagation channel")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn's, for propagation")
    parser.add_argument("--no-postgresql", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.rounds, args.per_round = 10, 100, 1, 2
        args.argon2_rounds, args.no_throughput, args.docs = 1, True, None
        args.revokes = 3
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.redis_url = redis_for_bench()
    database_url = postgres_for_bench(args)
    started = time.monotonic()
    backends = []
    with tempfile.TemporaryDirectory(prefix="tokens-app-bench-") as tmp:
        small = f"sqlite:///{Path(tmp) / 'small.sqlite3'}"
        large = f"sqlite:///{Path(tmp) / 'large.sqlite3'}"
        backends.append(run_backend("SQLite", small, large, Path(tmp) / "sqlite.json", args))
        if database_url:
            sizes = ("quick_small", "quick_large") if args.quick else ("small", "large")
            with postgres_databases(database_url, *sizes) as (small, large):
                out = Path(tmp) / "postgresql.json"
                backends.append(run_backend("PostgreSQL", small, large, out, args))
        throughput = None
        if not args.no_throughput:
            throughput = run_throughput(database_url, Path(tmp) / "throughput.json", args)
        propagation = None
        if database_url:
            propagation = run_propagation(database_url, Path(tmp), args)
        else:
            print("(propagation left out: it needs PostgreSQL)", flush=True)
    results = report.assemble(backends, throughput, propagation, quick=args.quick)
    results["duration_seconds"] = round(time.monotonic() - started)
    (args.out / ("quick.json" if args.quick else "latest.json")).write_text(
        json.dumps(results, indent=2), encoding="utf-8"
    )
    print(report.markdown(results))
    if args.docs is not None:
        report.write_docs(results, args.docs)
        print(f"Wrote {args.docs / 'performance.md'} and its charts.")
    missed = [budget for budget in results["budgets"] if not budget["met"]]
    if missed and not args.quick:
        for budget in missed:
            print(f"BUDGET MISSED: {budget['name']} ({budget['backend']}): {budget['detail']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
