"""The benchmark harness still runs: one quick round (``make bench`` itself is not a test).

It measures nothing worth reading; it keeps ``bench/`` from rotting, and checks what
holds at any size: the uncached request path's one query and no writes, the token cache's
and the pushed deny list's none (no query, no cache round trip) in steady state, and, on
PostgreSQL, a few revocations reaching every gunicorn worker that had the token cached.
"""

import json
import os

from tests import live
from tests.helpers import is_production_profile

ONE_QUERY = {"apitoken-small", "apitoken-large", "apitoken-orm", "argon2", "wrong-secret",
             "unknown-key-id"}  # fmt: skip
#: Rows that must make no query, no write, no cache call and no Redis round trip.
QUIET = {"floor", "jwt-pushed", "apitoken-cached", "apitoken-cached-redis"}


def run_quick(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "COV_"))}
    if not is_production_profile():
        env.pop("DATABASE_URL", None)  # the embedded run benches SQLite only
    result = live.run_python("-m", "bench", "--quick", "--out", str(tmp_path), env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads((tmp_path / "quick.json").read_text())


def traffic(row):
    return (row["queries"], row["writes"], row["cache_calls"], row["redis_round_trips"])


def check_backend(backend):
    rows = {row["name"]: row for row in backend["rows"]}
    expected = {"floor", "roundtrip", "authtoken", "apitoken-small", "apitoken-large"}
    assert expected | ONE_QUERY | {"jwt-locmem"} <= set(rows)
    redis = "cacheget" in rows  # the Redis rows only when a Redis answers
    if backend["backend"] == "postgresql":
        assert {"apitoken-cached", "jwt-pushed"} <= set(rows)
    if redis:
        assert {"jwt-redis", "apitoken-cached-redis", "jwt-pushed"} <= set(rows)
        assert traffic(rows["cacheget"]) == (0, 0, 1, 1)
        assert traffic(rows["jwt-redis"]) == (0, 0, 1, 1)
    for name in ONE_QUERY:
        assert (rows[name]["queries"], rows[name]["writes"]) == (1, 0), name
    for name in QUIET & set(rows):
        assert traffic(rows[name]) == (0, 0, 0, 0), name


def test_bench_quick_run_reports_every_row(tmp_path):
    result, results = run_quick(tmp_path)
    servers = [backend["server"] for backend in results["backends"]]
    assert servers[0].startswith("SQLite")
    if is_production_profile():
        assert servers[1].startswith("PostgreSQL")
    for backend in results["backends"]:
        check_backend(backend)
    names = {budget["name"] for budget in results["budgets"]}
    assert "1 query, 0 writes per request" in names
    assert "unknown key id / wrong secret (timing)" in names
    assert "| tokens_app, default hasher |" in result.stdout
    assert "## The prepared lookup against the ORM" in result.stdout
    if is_production_profile():
        (run,) = results["propagation"]
        assert run["channel"] == "postgresql"
        assert run["summary"]["missing"] == run["summary"]["flaps"] == 0
        for revoke in run["revokes"]:  # every worker refused every revoked token
            assert {int(pid) for pid in revoke["latencies_ms"]} == set(run["pids"])
    else:
        assert results["propagation"] is None
        assert "propagation left out: it needs PostgreSQL" in result.stdout
