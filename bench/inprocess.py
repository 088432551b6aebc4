"""In-process benchmark of one database backend: ``python -m bench.inprocess OUT.json``.

Run by ``python -m bench`` in a child process per backend (Django's settings are per
process). ``BENCH_SMALL_URL`` and ``BENCH_LARGE_URL`` name two empty databases; this
fills them (10^3 and 10^6 tokens by default), then sends DRF requests through Django's
test client: the project's middleware, URL routing, DRF's view, the JSON renderer.
Rows are interleaved in every round, in a shuffled order, so drift hits them alike.
"""

import argparse
import importlib.util
import json
import os
import random
import statistics
import string
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections, transaction  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from bench.routing import selected  # noqa: E402
from tokens_app import lookup, services  # noqa: E402
from tokens_app.conf import token_settings  # noqa: E402
from tokens_app.core import hashing, tokenstring  # noqa: E402
from tokens_app.models import APIToken  # noqa: E402

ALIASES = {"small": "default", "large": "large"}
WRITE_PREFIXES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
FILLER_BATCH = 20_000
BASE62 = string.digits + string.ascii_letters


#: Whether the token cache (issue 16) is in this tree: its rows are left out until it is.
HAS_TOKEN_CACHE = importlib.util.find_spec("tokens_app.invalidation") is not None
#: The Django cache API a request path could call; each top-level call counts as one.
CACHE_METHODS = (
    "get", "get_many", "set", "set_many", "add", "incr", "decr", "delete", "delete_many",
    "has_key", "touch", "get_or_set",
)  # fmt: skip
#: How long a cached row waits for its process's listener to be caught up.
FRESH_TIMEOUT_SECONDS = 10.0


@dataclass
class Row:
    """One line of the table: a view, a credential, a database, and the settings it runs under."""

    name: str
    label: str
    path: str
    size: str
    headers: dict[str, str] = field(default_factory=dict)
    argon2: bool = False
    #: ``API_TOKENS`` keys this row overrides (hasher, lookup lane, deny list, token cache).
    overrides: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    samples: list[int] = field(default_factory=list)
    queries: float = 0.0
    writes: float = 0.0
    #: Calls into Django's cache API from the request thread, per request (every alias).
    cache_calls: float = 0.0
    #: Commands the request thread sent to Redis, per request (each one a round trip).
    redis_round_trips: float = 0.0

    @property
    def token_cache(self) -> str:
        return str(self.overrides.get("TOKEN_CACHE") or "")


def api_tokens(**overrides: Any) -> Any:
    return override_settings(API_TOKENS={**settings.API_TOKENS, **overrides})


def argon2_settings() -> Any:
    return api_tokens(HASHER="argon2")


def token_cache(kind: str) -> dict[str, Any]:
    """The ``API_TOKENS`` keys that turn the token cache on with channel *kind*."""
    if kind == "redis":
        url = settings.CACHES["redis"]["LOCATION"]
        return {"TOKEN_CACHE": "redis", "TOKEN_CACHE_REDIS_URL": url}
    return {"TOKEN_CACHE": kind}


@contextmanager
def on_database(alias: str) -> Iterator[None]:
    reset = selected.set(alias)
    try:
        yield
    finally:
        selected.reset(reset)


def key_ids(count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choices(BASE62, k=12))


def fill(alias: str, owner: Any, count: int) -> None:
    """Insert *count* filler tokens (never authenticated) with one raw statement per batch."""
    connection = connections[alias]
    fields = [f for f in APIToken._meta.concrete_fields if not f.primary_key]
    now = timezone.now()
    template = {
        "owner_id": owner.pk,
        "description": "",
        "secret_hash": "$hmac-sha256$k=00000000$" + "0" * 64,
        "previous_secret_hash": "",
        "previous_secret_valid_until": None,
        "scopes": ["notes:read"],
        "created_at": now,
        "created_by_id": None,
        "expires_at": now + timedelta(days=30),
        "revoked_at": None,
        "revoked_by_id": None,
        "revoke_reason": "",
        "last_used_at": None,
        "last_used_ip": None,
        "allowed_ips": [],
        "rate_limit": "",
        "parent_id": None,
        "ancestry": [],
        "secret_version": 1,
        "grace_of_version": None,
    }
    # Values as the fields would save them (JSON, datetimes), so any backend takes them.
    prepared = {
        f.attname: f.get_db_prep_save(template[f.attname], connection)
        for f in fields
        if f.attname in template
    }
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {quote(APIToken._meta.db_table)} ({columns}) VALUES ({marks})"
    ids = key_ids(count, seed=count)
    done = 0
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        while done < count:
            batch = []
            for number in range(done, min(done + FILLER_BATCH, count)):
                values = {**prepared, "name": f"filler-{number}", "key_id": next(ids)}
                batch.append([values[f.attname] for f in fields])
            cursor.executemany(sql, batch)
            done += len(batch)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {quote(APIToken._meta.db_table)}")


def prepare(alias: str, size: int) -> dict[str, str]:
    """Migrate *alias*, create the bench user and its credentials; return the credentials."""
    with on_database(alias):
        call_command("migrate", database=alias, verbosity=0)
        user = (
            get_user_model()
            ._default_manager.db_manager(alias)
            .create_user("bench", "bench@example.com", "bench-pass")
        )
        credentials = {"authtoken": Token.objects.using(alias).create(user=user).key}
        issued = services.issue_token(user, name="bench", scopes=["notes:read"])
        credentials["apitoken"] = issued.plaintext
        credentials["jwt"] = services.mint_jwt(issued.token).access_token
        # The timing pair: what a prober sends, both with a valid checksum (so both are
        # queried). The unknown key id is the bench token's with its last character one
        # step back (forward in the index's upper half), so its lookup reads the bench
        # token's row, as the wrong secret's does: the same data, only the path differs.
        prefix, key_id = token_settings().prefix, issued.token.key_id
        step = -1 if key_id < lookup.MIDDLE_KEY_ID else 1
        last = tokenstring.BASE62[
            (tokenstring.BASE62.index(key_id[-1]) + step) % len(tokenstring.BASE62)
        ]
        credentials["wrong-secret"] = tokenstring.assemble(
            prefix, key_id, tokenstring.generate_secret()
        )
        credentials["unknown-key-id"] = tokenstring.assemble(
            prefix, key_id[:-1] + last, tokenstring.generate_secret()
        )
        with argon2_settings():
            credentials["argon2"] = services.issue_token(
                user, name="bench-argon2", scopes=["notes:read"]
            ).plaintext
        fill(alias, user, size - 2)
    return credentials


def rows_for(sizes: dict[str, int], credentials: dict[str, dict[str, str]]) -> list[Row]:
    postgresql = connections["default"].vendor == "postgresql"
    redis = "redis" in settings.CACHES
    rows = [
        Row("floor", "no authentication (floor)", "/floor/", "-"),
        Row("roundtrip", "no authentication, one SELECT 1", "/roundtrip/", "small"),
    ]
    if redis:
        rows.append(Row("cacheget", "no authentication, one Redis GET", "/cacheget/", "-"))
    small = credentials["small"]
    rows.append(
        Row(
            "authtoken",
            "DRF authtoken",
            "/authtoken/",
            "small",
            {"HTTP_AUTHORIZATION": f"Token {small['authtoken']}"},
        )
    )
    for size in sizes:
        bearer = {"HTTP_AUTHORIZATION": f"Bearer {credentials[size]['apitoken']}"}
        rows.append(Row(f"apitoken-{size}", "tokens_app, HMAC", "/apitoken/", size, bearer))
    orm = {"HTTP_AUTHORIZATION": f"Bearer {small['apitoken']}"}
    rows.append(Row("lookup-only", "tokens_app's lookup alone", "/lookup/", "small", orm))
    rows.append(
        Row(
            "apitoken-orm", "tokens_app, ORM lookup", "/apitoken/", "small", orm,
            overrides={"TOKEN_LOOKUP": "orm"},
        )
    )  # fmt: skip
    rows += cached_rows(orm, postgresql=postgresql, redis=redis)
    for name, label in (
        ("wrong-secret", "wrong secret (known key id)"),
        ("unknown-key-id", "unknown key id"),
    ):
        probe = {"HTTP_AUTHORIZATION": f"Bearer {small[name]}"}
        rows.append(Row(name, label, "/apitoken/", "small", probe, status=401))
    jwt = {"HTTP_AUTHORIZATION": f"Bearer {small['jwt']}"}
    rows.append(Row("jwt-locmem", "JWT, local-memory deny list", "/jwt/", "-", jwt))
    if redis:
        rows.append(
            Row("jwt-redis", "JWT, Redis deny list", "/jwt/", "-", jwt,
                overrides={"JWT_DENY_LIST_CACHE": "redis"})
        )  # fmt: skip
    rows += pushed_jwt_rows(jwt, postgresql=postgresql, redis=redis)
    argon2 = {"HTTP_AUTHORIZATION": f"Bearer {small['argon2']}"}
    rows.append(
        Row("argon2", "tokens_app, Argon2", "/apitoken/", "small", argon2, argon2=True,
            overrides={"HASHER": "argon2"})
    )  # fmt: skip
    return rows


def cached_rows(bearer: dict[str, str], *, postgresql: bool, redis: bool) -> list[Row]:
    """The API token with the token cache on: NOTIFY on PostgreSQL, pub/sub where Redis is."""
    if not HAS_TOKEN_CACHE:
        return []
    rows = []
    if postgresql:
        rows.append(
            Row("apitoken-cached", "tokens_app, token cache (NOTIFY)", "/apitoken/", "small",
                bearer, overrides=token_cache("postgresql"))
        )  # fmt: skip
    if redis:
        rows.append(
            Row("apitoken-cached-redis", "tokens_app, token cache (Redis pub/sub)", "/apitoken/",
                "small", bearer, overrides=token_cache("redis"))
        )  # fmt: skip
    return rows


def pushed_jwt_rows(bearer: dict[str, str], *, postgresql: bool, redis: bool) -> list[Row]:
    """The JWT with its deny list answered from memory, kept fresh by the token cache's channel.

    The deny list itself stays where production keeps it (Redis, when one answers), so the
    round-trip count shows the memo, not a local cache, answering.
    """
    if not HAS_TOKEN_CACHE or not (postgresql or redis):
        return []
    overrides = token_cache("postgresql" if postgresql else "redis")
    overrides["JWT_DENY_LIST_CACHE"] = "redis" if redis else "shared"
    return [Row("jwt-pushed", "JWT, pushed deny list", "/jwt/", "-", bearer, overrides=overrides)]


def send(client: Client, row: Row) -> int:
    started = time.perf_counter_ns()
    response = client.get(row.path, **row.headers)
    elapsed = time.perf_counter_ns() - started
    if response.status_code != row.status:
        raise SystemExit(f"{row.name}: HTTP {response.status_code} {response.content[:200]!r}")
    return elapsed


def context_for(row: Row) -> Any:
    return api_tokens(**row.overrides) if row.overrides else nullcontext()


def prime(client: Client, row: Row) -> None:
    """Bring a cached row to its steady state: the listener caught up, the token cached.

    Entering the row's settings may restart this process's channel (and empty its store);
    until the listener is fresh the cache is bypassed, which is correct but not this row.
    """
    if not row.token_cache:
        return
    from tokens_app import invalidation

    channel = invalidation.channel()
    if channel is None or not channel.wait_fresh(FRESH_TIMEOUT_SECONDS):
        raise SystemExit(f"{row.name}: the token cache's listener never caught up")
    send(client, row)


@contextmanager
def running(client: Client, row: Row) -> Iterator[None]:
    """Select the row's database and settings, and bring it to its steady state."""
    with on_database(ALIASES.get(row.size, "default")), context_for(row):
        prime(client, row)
        yield


def measure(rows: list[Row], rounds: int, per_round: int, argon2_rounds: int, seed: int) -> None:
    client = Client()
    rng = random.Random(seed)
    for row in rows:  # warm-up: connections, prepared statements, imports, caches
        with running(client, row):
            for _ in range(1 if row.argon2 else 50):
                send(client, row)
    for number in range(rounds):
        order = rows[:]
        rng.shuffle(order)
        for row in order:
            if row.argon2 and number >= argon2_rounds:
                continue
            with running(client, row):
                count = 1 if row.argon2 else per_round
                row.samples.extend(send(client, row) for _ in range(count))


@contextmanager
def counting_cache_calls() -> Iterator[list[int]]:
    """Count this thread's cache traffic: ``[Django cache API calls, Redis commands sent]``.

    Django-level calls are counted on every configured alias (a local-memory read is no
    round trip, but it is a cache read the memo should have made unnecessary); Redis
    commands at the socket (``send_packed_command``: one per command or pipeline), so
    nothing a cache backend batches or hides escapes. Other threads (the token cache's
    listener pinging its channel) are not the request path and are not counted.
    """
    counts = [0, 0]
    me = threading.get_ident()
    depth = [0]

    def counting(original: Callable[..., Any], slot: int) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != me:
                return original(*args, **kwargs)
            if slot == 1 or depth[0] == 0:
                counts[slot] += 1
            depth[0] += slot == 0
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= slot == 0

        return call

    patched = []
    for alias in settings.CACHES:
        cache = caches[alias]
        for name in CACHE_METHODS:
            setattr(cache, name, counting(getattr(cache, name), 0))
            patched.append((cache, name))
    connection_class: Any = None
    if "redis" in settings.CACHES:
        from redis.connection import AbstractConnection

        connection_class = AbstractConnection
        original_send = connection_class.send_packed_command
        sender = counting(original_send, 1)
        connection_class.send_packed_command = lambda self, *a, **k: sender(self, *a, **k)
    try:
        yield counts
    finally:
        for cache, name in patched:
            delattr(cache, name)
        if connection_class is not None:
            connection_class.send_packed_command = original_send


def count_statements(rows: list[Row], requests: int) -> None:
    """Statements, writes and cache traffic per request in steady state (after the rounds)."""
    client = Client()
    for row in rows:
        alias = ALIASES.get(row.size, "default")
        seen: list[str] = []

        def record(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
            seen.append(sql)  # noqa: B023 — used before the loop moves on
            return execute(sql, *args)

        with (
            running(client, row),
            connections[alias].execute_wrapper(record),
            counting_cache_calls() as cache_counts,
        ):
            for _ in range(requests):
                send(client, row)
        row.queries = len(seen) / requests
        row.writes = sum(s.lstrip().upper().startswith(WRITE_PREFIXES) for s in seen) / requests
        row.cache_calls = cache_counts[0] / requests
        row.redis_round_trips = cache_counts[1] / requests


def hasher_costs(repeat: int) -> dict[str, float]:
    """Median µs to verify one secret: the default hasher, and Argon2 (pwdlib's defaults)."""
    secret = "A" * 32
    costs = {}
    for name, context, times in (
        ("hmac-sha256", nullcontext(), repeat * 200),
        ("argon2", argon2_settings(), max(repeat, 3)),
    ):
        with context:
            stored = hashing.hash_secret(secret)
            hashing.verify_secret(secret, stored)
            samples = []
            for _ in range(times):
                started = time.perf_counter_ns()
                hashing.verify_secret(secret, stored)
                samples.append(time.perf_counter_ns() - started)
        costs[name] = statistics.median(samples) / 1000
    return costs


def median_us(call: Callable[[], Any], times: int) -> float:
    for _ in range(min(times, 200)):  # warm-up
        call()
    samples = []
    for _ in range(times):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def jwt_costs(rows: list[Row], jwt: str, times: int) -> dict[str, float]:
    """Median µs of the JWT check alone, outside a request: what the JWT rows are made of.

    ``verify`` is tokens_app's whole check (signature, claims, deny list), under the pushed
    row's settings when there is one (the deny list then answered from memory); ``decode``
    is PyJWT's parsing and claim decoding alone, without the signature.
    """
    import jwt as pyjwt

    from tokens_app.jwt import access_tokens

    pushed = next((row for row in rows if row.name == "jwt-pushed"), None)
    with context_for(pushed) if pushed else nullcontext():
        if pushed:
            prime(Client(), pushed)
        unverified = {"verify_signature": False}
        return {
            "verify": median_us(lambda: access_tokens.verify(jwt), times),
            "decode": median_us(lambda: pyjwt.decode(jwt, options=unverified), times),
        }


def percentile(samples: list[int], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000


def halves(row: Row, per_round: int) -> list[float]:
    """Median µs of the even rounds and of the odd ones: the row against itself (noise)."""
    size = 1 if row.argon2 else per_round
    rounds = [row.samples[i : i + size] for i in range(0, len(row.samples), size)]
    even = [sample for chunk in rounds[0::2] for sample in chunk]
    odd = [sample for chunk in rounds[1::2] for sample in chunk] or even
    return [statistics.median(even) / 1000, statistics.median(odd) / 1000]


def server_version() -> str:
    connection = connections["default"]
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        return f"PostgreSQL {connection.pg_version // 10000}.{connection.pg_version % 10000}"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=25)
    parser.add_argument("--argon2-rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=20261123)
    args = parser.parse_args(argv)
    sizes = {"small": args.small, "large": args.large}
    started = time.monotonic()
    credentials = {size: prepare(ALIASES[size], count) for size, count in sizes.items()}
    setup_seconds = time.monotonic() - started
    rows = rows_for(sizes, credentials)
    measure(rows, args.rounds, args.per_round, args.argon2_rounds, args.seed)
    count_statements(rows, requests=20)
    result = {
        "backend": connections["default"].vendor,
        "server": server_version(),
        "sizes": sizes,
        "setup_seconds": round(setup_seconds, 1),
        "rounds": args.rounds,
        "per_round": args.per_round,
        "hashers_us": hasher_costs(repeat=5),
        "jwt_us": jwt_costs(rows, credentials["small"]["jwt"], times=2000),
        "last_used_interval": str(token_settings().last_used_interval),
        "rows": [
            {
                **{k: v for k, v in asdict(row).items() if k not in {"samples", "headers"}},
                "count": len(row.samples),
                "median_us": statistics.median(row.samples) / 1000,
                "p90_us": percentile(row.samples, 0.9),
                "halves_us": halves(row, args.per_round),
            }
            for row in rows
        ],
    }
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
