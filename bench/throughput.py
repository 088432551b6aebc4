"""Throughput under gunicorn: ``python -m bench.throughput OUT.json`` (run by ``python -m bench``).

A fresh SQLite database, the bench settings, gunicorn with 2 sync workers on a loopback
port, and a bounded load generator: ``wrk`` when it is installed (Debian's package),
otherwise a small threaded Python client (which then limits what it can measure, and
says so). Each row runs a few seconds; rows are interleaved over several rounds.
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
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = ("floor", "authtoken", "apitoken")


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


def run_wrk(url: str, headers: dict[str, str], seconds: float, connections: int) -> float:
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
    if match is None:
        raise SystemExit(f"wrk printed no rate:\n{output}")
    return float(match[1])


def run_python(url: str, headers: dict[str, str], seconds: float, connections: int) -> float:
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
    return sum(done) / (time.monotonic() - started)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)
    generator = "wrk" if shutil.which("wrk") else "python"
    load = run_wrk if generator == "wrk" else run_python
    with tempfile.TemporaryDirectory(prefix="tokens-app-throughput-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'throughput.sqlite3'}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "BENCH_")) and key not in {"DATABASE_URL"}
        }
        env.update(DJANGO_SETTINGS_MODULE="bench.settings", BENCH_SMALL_URL=db)
        headers = prepare(env)
        port = free_port()
        gunicorn = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "bench.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(args.workers),
                "--no-control-socket",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, gunicorn)
            for row in ROWS:  # warm-up: every worker imports, connects, prepares
                load(f"http://127.0.0.1:{port}/{row}/", headers[row], 1, args.connections)
            rates: dict[str, list[float]] = {row: [] for row in ROWS}
            for number in range(args.rounds):
                order = ROWS[number % len(ROWS) :] + ROWS[: number % len(ROWS)]
                for row in order:
                    url = f"http://127.0.0.1:{port}/{row}/"
                    rates[row].append(load(url, headers[row], args.seconds, args.connections))
        finally:
            gunicorn.send_signal(signal.SIGTERM)
            gunicorn.wait(timeout=30)
    result = {
        "generator": generator,
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rows": {
            row: {"rates": values, "median": statistics.median(values)}
            for row, values in rates.items()
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
