"""Send every query to the database the harness selected (small or large token table)."""

from contextvars import ContextVar
from typing import Any

selected: ContextVar[str] = ContextVar("bench_database", default="default")


class SelectedDatabaseRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        return selected.get()

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return selected.get()

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return True
