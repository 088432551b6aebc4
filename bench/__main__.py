"""``make bench``: measure, print the tables, check the budgets, write the report.

1. In-process rows on SQLite, and on PostgreSQL when ``DATABASE_URL`` points at one: a
   child process per backend (``bench.inprocess``) on two fresh databases, a small and a
   large token table.
2. Throughput under gunicorn on SQLite (``bench.throughput``).
3. ``bench/results/latest.json``, a markdown table on stdout, and, for a full run,
   ``docs/performance.md`` with ``docs/performance.png``.

Exits non-zero when a budget is missed. ``--quick`` is the smoke run the test suite
uses: tiny tables, one round, no throughput, no docs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import report

ROOT = Path(__file__).resolve().parent.parent


def pg_databases(base_url: str) -> tuple[str, str]:
    """The two bench databases: named after *base_url*'s, so two people's runs never collide.

    ``postgres://…/tokens_app`` gives ``tokens_app_bench_small`` and ``…_large``.
    """
    name = urlsplit(base_url).path.lstrip("/") or "tokens_app"
    return f"{name}_bench_small", f"{name}_bench_large"


def postgres_urls(base_url: str) -> tuple[str, str]:
    """Create (afresh) the two bench databases on *base_url*'s server; return their URLs."""
    import psycopg

    parts = urlsplit(base_url)
    with psycopg.connect(base_url, autocommit=True) as connection:
        for name in pg_databases(base_url):
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
    small, large = (urlunsplit(parts._replace(path=f"/{name}")) for name in pg_databases(base_url))
    return small, large


def drop_postgres(base_url: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as connection:
        for name in pg_databases(base_url):
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')


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


def run_throughput(out: Path, args: argparse.Namespace) -> Any:
    print(f"== throughput: gunicorn, 2 workers, {args.throughput_seconds}s a row", flush=True)
    command = [
        sys.executable, "-m", "bench.throughput", str(out),
        "--seconds", str(args.throughput_seconds), "--rounds", str(args.throughput_rounds),
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, env=child_env(), check=True)
    return json.loads(out.read_text(encoding="utf-8"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny, one round")
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--per-round", type=int, default=25)
    parser.add_argument("--argon2-rounds", type=int, default=8)
    parser.add_argument("--throughput-seconds", type=int, default=3)
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-postgresql", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.rounds, args.per_round = 10, 100, 1, 2
        args.argon2_rounds, args.no_throughput, args.docs = 1, True, None
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.redis_url = redis_for_bench()
    started = time.monotonic()
    backends = []
    with tempfile.TemporaryDirectory(prefix="tokens-app-bench-") as tmp:
        small = f"sqlite:///{Path(tmp) / 'small.sqlite3'}"
        large = f"sqlite:///{Path(tmp) / 'large.sqlite3'}"
        backends.append(run_backend("SQLite", small, large, Path(tmp) / "sqlite.json", args))
    database_url = os.environ.get("DATABASE_URL", "")
    if database_url.startswith(("postgres://", "postgresql://")) and not args.no_postgresql:
        small, large = postgres_urls(database_url)
        try:
            with tempfile.TemporaryDirectory(prefix="tokens-app-bench-") as tmp:
                out = Path(tmp) / "postgresql.json"
                backends.append(run_backend("PostgreSQL", small, large, out, args))
        finally:
            drop_postgres(database_url)
    throughput = None
    if not args.no_throughput:
        with tempfile.TemporaryDirectory(prefix="tokens-app-bench-") as tmp:
            throughput = run_throughput(Path(tmp) / "throughput.json", args)
    results = report.assemble(backends, throughput, quick=args.quick)
    results["duration_seconds"] = round(time.monotonic() - started)
    (args.out / ("quick.json" if args.quick else "latest.json")).write_text(
        json.dumps(results, indent=2), encoding="utf-8"
    )
    print(report.markdown(results))
    if args.docs is not None:
        report.write_docs(results, args.docs)
        print(f"Wrote {args.docs / 'performance.md'} and {args.docs / 'performance.png'}.")
    missed = [budget for budget in results["budgets"] if not budget["met"]]
    if missed and not args.quick:
        for budget in missed:
            print(f"BUDGET MISSED: {budget['name']} ({budget['backend']}): {budget['detail']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
