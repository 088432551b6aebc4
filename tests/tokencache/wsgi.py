"""The example project under gunicorn, telling each answer's worker and its query count.

For ``test_workers.py`` only. Every response carries ``X-Worker-Pid`` (who served it),
``X-Worker-Request`` (the how-many-th request of that worker: the order it served them)
and ``X-Queries`` (the statements it sent the token database, counted by an execute
wrapper). An execute wrapper makes the token lookup take Django's cursor instead of the
driver lane (``tokens_app.lookup``): the same statement, seen.
"""

import itertools
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connections

from project.wsgi import application as project_application
from tokens_app.models import token_database

_served = itertools.count(1)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    queries = 0
    number = next(_served)

    def count(execute: Callable[..., Any], *args: Any) -> Any:
        nonlocal queries
        queries += 1
        return execute(*args)

    def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        # Django starts the response once the view has run: every query is counted by now.
        headers = [
            *headers,
            ("X-Worker-Pid", str(os.getpid())),
            ("X-Worker-Request", str(number)),
            ("X-Queries", str(queries)),
        ]
        return start_response(status, headers, *exc_info)

    with connections[token_database()].execute_wrapper(count):
        return project_application(environ, start)
