"""The token lookup agrees with the ORM, in every lane, on every backend and user model.

The lanes: the prepared statement through the driver (nothing observes queries) or
through Django's cursor (something does), and ``TOKEN_LOOKUP = "orm"``.

This file also runs under ``tests/settings_custom_user.py`` (a UUID-keyed user model with
its own table and column names): the last test starts that run in a child process.
"""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Model
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext, isolate_apps, override_settings
from django.utils.dateparse import parse_datetime

from tests import live
from tokens_app import lookup, services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db

CUSTOM_USER = "custom_user.Person"


def make_owner(name: str, **fields: Any) -> Any:
    """A user of whatever model is configured (the custom one has no ``username``)."""
    user_model = get_user_model()
    value = f"{name}@example.com" if user_model.USERNAME_FIELD == "email" else name
    return user_model._default_manager.create(**{user_model.USERNAME_FIELD: value, **fields})


def values(instance: Model) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def orm_lookup(key_id: str) -> APIToken | None:
    return APIToken.objects.select_related("owner").filter(key_id=key_id).first()


@contextmanager
def observed() -> Iterator[CaptureQueriesContext]:
    """Queries observed as by django_assert_num_queries: the lookup takes Django's cursor."""
    with CaptureQueriesContext(connection) as context:
        yield context


@contextmanager
def unobserved() -> Iterator[None]:
    """Nothing observes queries: the lookup takes the driver's lane."""
    assert not connection.execute_wrappers
    assert not connection.queries_logged
    yield


@contextmanager
def orm_lane() -> Iterator[None]:
    """``TOKEN_LOOKUP = "orm"``: the queryset lane, the way back from the prepared one."""
    with override_settings(API_TOKENS={**settings.API_TOKENS, "TOKEN_LOOKUP": "orm"}):
        yield


LANES: dict[str, Callable[[], Any]] = {"driver": unobserved, "django": observed, "orm": orm_lane}


def make_case(case: str, clock: Any) -> str:
    """Issue a token in the state *case* names; return its key id (or an unknown one)."""
    owner = make_owner(f"owner-{case}", display_name="Ö Ünïcode") if _custom() else None
    owner = owner or make_owner(f"owner-{case}", first_name="Ö", last_name="Ünïcode")
    if case == "unknown":
        return tokenstring.generate_key_id()
    issued = services.issue_token(
        owner, name=f"t-{case}", scopes=["notes:read", "tokens:read"], description="d\nx"
    )
    token = issued.token
    if case == "revoked":
        services.revoke_token(token, reason="because")
    elif case == "expired":
        clock.advance(days=31)
    elif case == "inactive_owner":
        type(owner)._default_manager.filter(pk=owner.pk).update(is_active=False)
    elif case == "rotated":
        services.rotate_token(token, grace_seconds=3600)
    elif case == "used":
        services.authenticate_token(issued.plaintext, ip="2001:db8::1")
    return token.key_id


def _custom() -> bool:
    return settings.AUTH_USER_MODEL == CUSTOM_USER


CASES = ["valid", "revoked", "expired", "inactive_owner", "rotated", "used", "unknown"]


@pytest.mark.parametrize("lane", sorted(LANES))
@pytest.mark.parametrize("case", CASES)
def test_lookup_and_orm_agree(clock, case, lane):
    key_id = make_case(case, clock)
    expected = orm_lookup(key_id)
    with LANES[lane]():
        found = lookup.find_token_with_owner(key_id)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert values(found) == values(expected)
    assert values(found.owner) == values(expected.owner)
    assert type(found.owner) is get_user_model()
    assert (found._state.adding, found._state.db) == (False, expected._state.db)
    assert (found.owner._state.adding, found.owner._state.db) == (False, expected._state.db)
    assert found.status(clock.current) == expected.status(clock.current)


def test_owner_comes_loaded_and_the_token_is_a_saveable_instance(clock, django_assert_num_queries):
    key_id = make_case("valid", clock)
    found = lookup.find_token_with_owner(key_id)
    assert found is not None
    with django_assert_num_queries(0):
        assert found.owner.is_active
        assert found.effective_scopes == {"notes:read", "tokens:read"}
    found.name = "renamed"
    found.save(update_fields=["name"])
    assert APIToken.objects.get(key_id=key_id).name == "renamed"


@pytest.mark.parametrize("lane", sorted(LANES))
def test_lookup_is_one_statement_in_either_lane(clock, lane):
    key_id = make_case("valid", clock)
    statements: list[str] = []
    connection.ensure_connection()
    if connection.vendor != "sqlite":
        with LANES[lane](), observed() as context:
            lookup.find_token_with_owner(key_id)
        assert len(context.captured_queries) == 1
        return
    # SQLite reports every statement the driver runs, whichever lane sent it.
    connection.connection.set_trace_callback(statements.append)
    try:
        with LANES[lane]():
            lookup.find_token_with_owner(key_id)
    finally:
        connection.connection.set_trace_callback(None)
    # Django's query log renders parameters with SELECT QUOTE(...): that is the log, not us.
    statements = [s for s in statements if not s.startswith("SELECT QUOTE(")]
    assert len(statements) == 1
    assert statements[0].startswith("SELECT ")
    assert " INNER JOIN " in statements[0]


def test_sql_is_built_from_the_models_metadata():
    token_table = APIToken._meta.db_table
    user_model = get_user_model()
    prepared = lookup.token_lookup("default")
    quote = connection.ops.quote_name
    for sql in (prepared.sql, prepared.sql_descending):
        # On PostgreSQL the token side is a subquery aliased as the table (see lookup.py).
        assert f"{quote(token_table)} INNER JOIN {quote(user_model._meta.db_table)}" in sql
        for field in user_model._meta.concrete_fields:
            assert f"{quote(user_model._meta.db_table)}.{quote(field.column)}" in sql
        assert sql.count("%s") == 1


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.parametrize("prepared", [True, False])
def test_postgresql_lookup_is_a_prepared_statement_unless_turned_off(clock, settings, prepared):
    settings.API_TOKENS = {**settings.API_TOKENS, "PREPARED_STATEMENTS": prepared}
    key_id = make_case("valid", clock)
    expected = values(orm_lookup(key_id))  # type: ignore[arg-type]
    with unobserved():
        found = lookup.find_token_with_owner(key_id)
        again = lookup.find_token_with_owner(key_id)
    assert values(found) == values(again) == expected  # type: ignore[arg-type]
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    ours = [s for s in statements if APIToken._meta.db_table in s]
    assert len(ours) == (1 if prepared else 0)
    # Preparing is switched on for this statement only: Django's setting is left as it was.
    assert connection.connection.prepare_threshold is None


@pytest.mark.parametrize("lane", sorted(LANES))
def test_database_errors_arrive_as_djangos(clock, lane):
    key_id = make_case("valid", clock)
    table = connection.ops.quote_name(APIToken._meta.db_table)
    with pytest.raises(DatabaseError) as raised, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} RENAME TO tokens_app_gone")
        with LANES[lane]():
            lookup.find_token_with_owner(key_id)
    assert type(raised.value).__module__ == "django.db.utils"
    assert raised.value.__cause__ is not None  # the driver's own error, kept for the log
    assert lookup.find_token_with_owner(key_id) is not None  # rolled back: all is well


def test_init_signal_receivers_see_the_instances_the_lookup_builds(clock):
    key_id = make_case("valid", clock)
    lookup.find_token_with_owner(key_id)  # prepared before anybody listens
    seen: list[Model] = []

    def record(sender: Any, instance: Model, **kwargs: Any) -> None:
        seen.append(instance)

    post_init.connect(record, sender=APIToken)
    post_init.connect(record, sender=get_user_model())
    try:
        found = lookup.find_token_with_owner(key_id)
    finally:
        post_init.disconnect(record, sender=APIToken)
        post_init.disconnect(record, sender=get_user_model())
    assert found is not None
    assert seen == [found, found.owner]
    assert values(found) == values(orm_lookup(key_id))  # type: ignore[arg-type]


@isolate_apps("tokens_app")
def test_models_with_their_own_construction_are_built_by_from_db():
    class Plain(models.Model):  # noqa: DJ008 — never shown anywhere
        name = models.CharField(max_length=10)
        owner = models.ForeignKey("auth.Group", on_delete=models.CASCADE)

        class Meta:
            app_label = "tokens_app"

    class OwnFromDb(models.Model):  # noqa: DJ008
        class Meta:
            app_label = "tokens_app"

        @classmethod
        def from_db(cls, db: Any, field_names: Any, values: Any) -> Any:
            return super().from_db(db, field_names, values)

    class OwnInit(models.Model):  # noqa: DJ008
        class Meta:
            app_label = "tokens_app"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    class WithFile(models.Model):  # noqa: DJ008
        attachment = models.FileField()  # its descriptor wraps what is assigned

        class Meta:
            app_label = "tokens_app"

    assert lookup._is_plain(Plain) is True
    for model in (OwnFromDb, OwnInit, WithFile):
        assert lookup._is_plain(model) is False, model.__name__


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2030-01-02 03:04:05.000006", datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
        ("2030-01-02 03:04:05", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2030-01-02 3:4", datetime(2030, 1, 2, 3, 4, tzinfo=UTC)),  # Django's parser only
        ("2030-01-02T03:04:05+01:00", datetime(2030, 1, 2, 2, 4, 5, tzinfo=UTC)),
        (None, None),
    ],
)
def test_sqlite_driver_lane_reads_stored_datetimes_as_django_does(stored, expected):
    ours = lookup._sqlite_datetime(stored, None, connection)
    assert ours == expected
    if stored is not None and connection.vendor == "sqlite":
        from django.db.models import DateTimeField

        field = DateTimeField()
        django_reads = connection.ops.convert_datetimefield_value(
            parse_datetime(stored), field, connection
        )
        assert ours == django_reads


def test_prepared_lookups_are_rebuilt_when_the_user_model_setting_changes(settings):
    first = lookup.token_lookup("default")
    assert lookup.token_lookup("default") is first
    settings.AUTH_USER_MODEL = settings.AUTH_USER_MODEL  # setting_changed fires
    assert lookup.token_lookup("default") is not first


@pytest.mark.skipif(
    "settings.AUTH_USER_MODEL == 'custom_user.Person'", reason="already the custom-user run"
)
def test_the_same_tests_pass_with_a_custom_user_model():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_custom_user"}
    env.pop("COV_CORE_SOURCE", None)  # the child is not part of this run's coverage
    result = live.run_python(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        __file__,
        "--ds=tests.settings_custom_user",
        "--no-cov",
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert " failed" not in result.stdout


def test_the_orm_lane_reads_the_nearest_row_for_an_unknown_key_id(clock):
    # The timing property of item 10 holds in the ORM lane too: a miss reads a row.
    make_case("valid", clock)
    unknown = tokenstring.generate_key_id()
    with orm_lane(), observed() as context:
        assert lookup.find_token_with_owner(unknown) is None
    (query,) = context.captured_queries
    assert "ORDER BY" in query["sql"] and "LIMIT 1" in query["sql"]
