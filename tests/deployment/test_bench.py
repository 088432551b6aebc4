"""The benchmark harness still runs: one quick round (``make bench`` itself is not a test).

It measures nothing worth reading; it keeps ``bench/`` from rotting, and checks what
holds at any size: the request path's one query and no writes.
"""

import json
import os

from tests import live
from tests.helpers import is_production_profile


def test_bench_quick_run_reports_every_row(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "COV_"))}
    if not is_production_profile():
        env.pop("DATABASE_URL", None)  # the embedded run benches SQLite only
    result = live.run_python("-m", "bench", "--quick", "--out", str(tmp_path), env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    servers = [backend["server"] for backend in results["backends"]]
    assert servers[0].startswith("SQLite")
    if is_production_profile():
        assert servers[1].startswith("PostgreSQL")
    for backend in results["backends"]:
        rows = {row["name"]: row for row in backend["rows"]}
        expected = {"floor", "roundtrip", "authtoken", "apitoken-small", "apitoken-large"}
        timing_pair = {"wrong-secret", "unknown-key-id"}  # refused: 401s, one query each
        assert expected | timing_pair | {"argon2", "jwt-locmem", "apitoken-orm"} <= set(rows)
        for name in ("apitoken-small", "apitoken-large", "apitoken-orm", "argon2", *timing_pair):
            assert (rows[name]["queries"], rows[name]["writes"]) == (1, 0), name
        for name in ("floor", "jwt-locmem", "jwt-redis"):
            if name in rows:  # the Redis row only when a Redis answers
                assert (rows[name]["queries"], rows[name]["writes"]) == (0, 0), name
    names = {budget["name"] for budget in results["budgets"]}
    assert "1 query, 0 writes per request" in names
    assert "unknown key id / wrong secret (timing)" in names
    assert "| tokens_app, default hasher |" in result.stdout
    assert "## The prepared lookup against the ORM" in result.stdout
