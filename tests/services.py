"""Are the production profile's services (PostgreSQL, Redis) reachable? For make and for tests.

``python -m tests.services DATABASE_URL REDIS_URL`` prints one line per service and exits
non-zero when one cannot be reached, so ``make test-production`` can skip with the reason
on a developer's machine and fail under CI.
"""

import sys
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 3


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def postgres_problem(url: str) -> str | None:
    """Return why PostgreSQL at *url* cannot be used, or ``None`` when it answers."""
    try:
        import psycopg
    except ImportError:
        return "the psycopg package is not installed"
    parts = urlsplit(url)
    try:
        with psycopg.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password or None,
            dbname=parts.path.lstrip("/") or "postgres",
            connect_timeout=TIMEOUT_SECONDS,
        ) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {parts.hostname}:{parts.port or 5432} unreachable ({_line(exc)})"
    return None


def redis_problem(url: str) -> str | None:
    """Return why Redis at *url* cannot be used, or ``None`` when it answers."""
    try:
        import redis
    except ImportError:
        return "the redis package is not installed"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT_SECONDS).ping()
    except redis.RedisError as exc:
        return f"Redis at {urlsplit(url).netloc} unreachable ({_line(exc)})"
    return None


def main(database_url: str, redis_url: str) -> int:
    problems = [p for p in (postgres_problem(database_url), redis_problem(redis_url)) if p]
    for problem in problems:
        print(f"production profile: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
