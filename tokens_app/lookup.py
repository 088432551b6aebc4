"""The request path's one query: a token and its owner by key id, without the ORM's query building.

``APIToken.objects.select_related("owner").get(key_id=...)`` spends hundreds of
microseconds of Python building, compiling and quoting the same SQL on every request;
the database then answers in tens. Here the statement (one for each half of the key
space, see ``TokenLookup``) is written once per database alias from model metadata
(table and column names quoted by that connection, the configured user model, every
concrete field of both), and each row is materialised the way the ORM would: the
connection's and the fields' converters, then ``Model.from_db``. So ``request.user``
is a complete user instance and ``request.auth`` a complete token, with its owner
cached as ``select_related`` would leave it.

An unknown key id costs what a known one does: the statement reads the nearest token in
index order, which is built like any other and then dropped because its key id is not the
one asked for. So the answer time does not tell an attacker which key ids exist.

On SQLite and PostgreSQL (psycopg 3) the statement goes straight to the driver when
nothing observes queries: on PostgreSQL as a server-side prepared statement, so the
server does not parse and plan the join on every request either (``PREPARED_STATEMENTS``
turns that off for poolers that lose them), on SQLite through the driver's statement
cache. Errors are still wrapped as Django's, so a fault is a ``DatabaseError`` (a 503).
When queries are observed (``DEBUG``, ``django_assert_num_queries``, an execute wrapper
such as an APM's), Django's own cursor runs the same statement, so they see it.

``tests/tokens/test_lookup.py`` checks that this and the ORM agree, on SQLite and PostgreSQL
and with a custom user model.
"""

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import signals
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.utils.dateparse import parse_datetime

from tokens_app import invalidation
from tokens_app.conf import ORM_LOOKUP, cached_until_settings_change, token_settings
from tokens_app.core import tokenstring
from tokens_app.models import APIToken

Converter = Callable[[Any, Any, Any], Any]
#: Runs the statement on the driver's own connection: (driver connection, key id) -> row.
DriverRunner = Callable[[Any, str], Sequence[Any] | None]
_ONLY_WHEN_ASKED = 2**31 - 1  # a prepare threshold no query count reaches
#: Key ids below this are looked up towards the end of the index, the others towards its
#: start (see TokenLookup). Base62's middle character, in code point order: the order of
#: SQLite's BINARY and PostgreSQL's "C" collations. Another collation only shifts where
#: the halves meet; an exact match is found either way.
MIDDLE_KEY_ID = tokenstring.BASE62[len(tokenstring.BASE62) // 2]


@dataclass(frozen=True)
class _Part:
    """The columns of one model in the joined row, and how to turn them into an instance."""

    model: type[models.Model]
    attnames: tuple[str, ...]
    start: int
    stop: int
    #: (position in the row, converters, the column expression they expect), as the ORM's.
    converters: tuple[tuple[int, tuple[Converter, ...], Any], ...]
    #: The same for the row the driver lane reads (see _sqlite_datetime).
    driver_converters: tuple[tuple[int, tuple[Converter, ...], Any], ...]
    #: Whether instances can be built without Model.from_db (see _is_plain).
    plain: bool


def _part(model: type[models.Model], start: int, alias: str) -> tuple[_Part, list[str], list[str]]:
    """Return the part, its columns for Django's lane, and its columns for the driver lane."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    table = model._meta.db_table
    fields = list(model._meta.concrete_fields)
    columns, driver_columns, converters, driver_converters = [], [], [], []
    for offset, field in enumerate(fields):
        column = f"{quote(table)}.{quote(field.column)}"
        columns.append(column)
        expression = field.get_col(table)
        found = connection.ops.get_db_converters(expression) + expression.get_db_converters(
            connection
        )
        if found:
            converters.append((start + offset, tuple(found), expression))
        if connection.vendor == "sqlite" and field.get_internal_type() == "DateTimeField":
            # Unary + is a no-op that drops the declared type: the driver then hands over
            # the stored text, which _sqlite_datetime parses in C instead of a regex.
            driver_columns.append(f"+{column}")
            driver_converters.append((start + offset, (_sqlite_datetime,), expression))
        else:
            driver_columns.append(column)
            if found:
                driver_converters.append((start + offset, tuple(found), expression))
    part = _Part(
        model=model,
        attnames=tuple(field.attname for field in fields),
        start=start,
        stop=start + len(fields),
        converters=tuple(converters),
        driver_converters=tuple(driver_converters),
        plain=_is_plain(model),
    )
    return part, columns, driver_columns


def _sqlite_datetime(value: Any, expression: Any, connection: Any) -> Any:
    """What SQLite's ``datetime`` converter and Django's then do, for stored text.

    Django stores an aware datetime in SQLite as naive text in the connection's time
    zone, reads it back with a regex parser, then makes it aware. ``fromisoformat``
    parses the same text in C; anything it cannot read goes to Django's parser.
    """
    if value is None:
        return None
    parsed: datetime | None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = parse_datetime(value)
    timezone = connection.timezone  # None without USE_TZ
    if timezone is not None and parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone)
    return parsed


class TokenLookup:
    """The prepared token-and-owner SELECT for one database alias."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        quote = connections[alias].ops.quote_name
        owner_field = APIToken._meta.get_field("owner")
        assert isinstance(owner_field, models.ForeignKey)  # noqa: S101 — the model says so
        self._owner_field = owner_field
        user_model = get_user_model()
        self.token_part, token_columns, token_driver = _part(APIToken, 0, alias)
        owner_start = self.token_part.stop
        self.owner_part, owner_columns, owner_driver = _part(user_model, owner_start, alias)
        token_table = quote(APIToken._meta.db_table)
        owner_table = quote(user_model._meta.db_table)
        key_id_column = quote(APIToken._meta.get_field("key_id").column)
        join_left = f"{token_table}.{quote(owner_field.column)}"
        join_right = f"{owner_table}.{quote(owner_field.target_field.column)}"
        on = f"INNER JOIN {owner_table} ON ({join_left} = {join_right})"
        # Every name is quoted by the connection; the key id is the one bound parameter.
        # Not "key_id = %s" but the first token at the key id or past it in index order,
        # reading towards the middle of the key space: so a miss reads, sends and
        # materialises a row as a hit does (see fetch). A miss reads no row only when all
        # key ids lie between it and the nearer end of the key space (odds 2 × 2**-n for n
        # random key ids: a table of a few tokens). Still one index descent and no other
        # plan node: a fallback branch or a MAX() subquery would cost every request their
        # executor setup (~20 µs on PostgreSQL).
        key_id = f"{token_table}.{key_id_column}"
        connection = connections[alias]
        first = connection.ops.limit_offset_sql(0, 1)  # LIMIT 1, or Oracle's FETCH FIRST
        select, driver_select = (
            ", ".join(token_columns + owner_columns),
            ", ".join(token_driver + owner_driver),
        )
        token_select = ", ".join(token_columns)
        sql: dict[bool, str] = {}
        driver_sql: dict[bool, str] = {}
        for towards_end, (compare, order) in ((True, (">=", "")), (False, ("<=", " DESC"))):
            where = f"WHERE {key_id} {compare} %s ORDER BY {key_id}{order} {first}"
            if connection.vendor == "sqlite":
                source = f"{token_table} {on} {where}"
            else:
                # The limit inside, on the token alone: PostgreSQL plans the join of a
                # range as many rows and adds a Memoize node whose cache, sized for
                # every owner, costs more than the whole query (~150 µs a request).
                token_only = f"SELECT {token_select} FROM {token_table} {where}"  # noqa: S608
                source = f"({token_only}) {token_table} {on}"
            sql[towards_end] = f"SELECT {select} FROM {source}"  # noqa: S608
            driver_sql[towards_end] = f"SELECT {driver_select} FROM {source}"  # noqa: S608
        #: The statement for key ids in the first half of the key space (towards its end).
        self.sql = sql[True]
        #: The statement for key ids in the second half (towards its start).
        self.sql_descending = sql[False]
        self._sql = sql
        self._driver_runners = {
            towards_end: _driver_runner(connection, driver_sql[towards_end])
            for towards_end in (True, False)
        }
        self._key_id_position = self.token_part.start + self.token_part.attnames.index("key_id")
        owner_id = owner_field.attname
        self._owner_pk_position = self.token_part.start + self.token_part.attnames.index(owner_id)

    def _row(self, connection: BaseDatabaseWrapper, key_id: str) -> tuple[Any, bool]:
        """Return the row (or ``None``) and whether the driver lane read it."""
        towards_end = key_id < MIDDLE_KEY_ID
        runner = self._driver_runners[towards_end]
        observed = connection.execute_wrappers or connection.queries_logged
        if runner is None or observed:
            with connection.cursor() as cursor:
                cursor.execute(self._sql[towards_end], [key_id])
                return cursor.fetchone(), False
        # What connection.cursor() and CursorWrapper.execute() check, minus their layers.
        connection.close_if_health_check_failed()
        connection.ensure_connection()
        connection.validate_thread_sharing()
        connection.validate_no_broken_transaction()
        with connection.wrap_database_errors:
            return runner(connection.connection, key_id), True

    def fetch(self, key_id: str) -> APIToken | None:
        """Return the token with *key_id*, its owner loaded, or ``None``: one query.

        The row read is the token's or, for an unknown key id, its neighbour's in index
        order; either is converted and materialised, and only then compared, so a miss
        costs what a hit costs (the server's work, the row on the wire, the converters,
        the instances) and the answer time does not tell which key ids exist. Nothing
        of a neighbour leaves this method. Only an empty table reads no row.
        """
        return self.answer(self.nearest_row(key_id), key_id)

    def nearest_row(self, key_id: str) -> list[Any] | None:
        """The converted row of *key_id*'s token or of its neighbour (``None``: empty table)."""
        connection = connections[self.alias]
        row, by_driver = self._row(connection, key_id)
        if row is None:
            return None
        values = list(row)
        for part in (self.token_part, self.owner_part):
            lane = part.driver_converters if by_driver else part.converters
            for position, converters, expression in lane:
                for convert in converters:
                    values[position] = convert(values[position], expression, connection)
        return values

    def row_of(self, token: APIToken) -> list[Any]:
        """The converted row :meth:`nearest_row` would read for *token* (the ORM lane's)."""
        owner = self._owner_field.get_cached_value(token)
        return [token.__dict__[name] for name in self.token_part.attnames] + [
            owner.__dict__[name] for name in self.owner_part.attnames
        ]

    def answer(self, values: Sequence[Any] | None, key_id: str) -> APIToken | None:
        """Build the token and owner of a converted row; ``None`` unless it is *key_id*'s.

        Both are built before the comparison, for a neighbour too (see :meth:`fetch`).
        """
        if values is None:
            return None
        token = _materialise(self.token_part, values, self.alias)
        owner = _materialise(self.owner_part, values, self.alias)
        self._owner_field.set_cached_value(token, owner)
        # Exact comparison in Python: a case-insensitive collation may sort "aB" next to
        # "Ab", and only the token whose key id is exactly the one asked for is an answer.
        if values[self._key_id_position] != key_id:
            return None
        return cast(APIToken, token)

    def key_id_of(self, values: Sequence[Any]) -> str:
        """The key id in a converted row."""
        return str(values[self._key_id_position])

    def owner_pk(self, values: Sequence[Any]) -> Any:
        """The owner's primary key in a converted row."""
        return values[self._owner_pk_position]


def _driver_runner(connection: BaseDatabaseWrapper, sql: str) -> DriverRunner | None:
    """The direct lane for *connection*'s driver, or ``None`` to always use Django's cursor."""
    if connection.vendor == "sqlite":
        qmark_sql = sql.replace("%s", "?")  # what Django's SQLite cursor would convert

        def run_sqlite(driver: Any, key_id: str) -> Sequence[Any] | None:
            return driver.execute(qmark_sql, (key_id,)).fetchone()  # type: ignore[no-any-return]

        return run_sqlite
    if connection.vendor == "postgresql" and _is_psycopg3():
        import psycopg

        prepare = token_settings().prepared_statements

        def run_postgresql(driver: Any, key_id: str) -> Sequence[Any] | None:
            # Django's cursors bind on the client, which cannot be prepared; this one binds
            # on the server, and prepare=True keeps the plan for the connection's life.
            with psycopg.Cursor(driver) as cursor:
                if not prepare or driver.prepare_threshold is not None:
                    cursor.execute(sql, (key_id,), prepare=prepare)
                    return cursor.fetchone()
                # Django turns preparing off for the whole connection (threshold None).
                # Turn it on for this statement only: with a threshold nothing reaches,
                # psycopg prepares what asks for it (prepare=True) and nothing else.
                driver.prepare_threshold = _ONLY_WHEN_ASKED
                try:
                    cursor.execute(sql, (key_id,), prepare=True)
                finally:
                    driver.prepare_threshold = None
                return cursor.fetchone()

        return run_postgresql
    return None


def _is_psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def _materialise(part: _Part, values: Sequence[Any], alias: str) -> Any:
    model = part.model
    # Receivers may be connected at any time, so they are looked for on every row.
    observed = signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model)
    if observed or not part.plain:
        return model.from_db(alias, list(part.attnames), values[part.start : part.stop])
    # What from_db -> __init__ leave behind for a row of every concrete field, without
    # their generic argument handling (see _is_plain for when that is the same thing).
    instance = model.__new__(model)
    instance.__dict__.update(zip(part.attnames, values[part.start : part.stop], strict=True))
    state = instance._state = ModelState()
    state.adding, state.db = False, alias
    return instance


def _is_plain(model: type[models.Model]) -> bool:
    """Whether setting ``__dict__`` builds the same instance as ``Model.from_db``.

    True when nothing could act during construction: ``from_db`` and ``__init__`` are
    Django's own and every concrete field's attribute is Django's plain deferred-loading
    descriptor (a field with its own descriptor, such as a file field, may transform
    what is assigned). ``pre_init``/``post_init`` receivers are checked per row.
    """
    if model.from_db.__func__ is not models.Model.from_db.__func__:  # type: ignore[attr-defined]
        return False
    if model.__init__ is not models.Model.__init__:
        return False
    return all(
        type(inspect.getattr_static(model, field.attname, None)) in _PLAIN_DESCRIPTORS
        for field in model._meta.concrete_fields
    )


# A foreign key's id descriptor only also drops a cached related object, and a new
# instance has none.
_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


@cached_until_settings_change
def token_lookup(alias: str) -> TokenLookup:
    """The lookup for *alias*, prepared on first use (and again if the user model changes)."""
    return TokenLookup(alias)


def find_token_with_owner(key_id: str) -> APIToken | None:
    """Return the token with *key_id* and its owner, from the database the router picks.

    ``TOKEN_LOOKUP = "orm"`` reads it through the ORM instead of the prepared statement:
    the way back if a future Django changes an internal this module relies on.

    With ``TOKEN_CACHE`` on, a token's row is kept in process memory once read, until an
    invalidation or the TTL drops it (``tokens_app.invalidation``); such a token comes back
    with ``from_token_cache`` set. Only rows of existing tokens are kept: an unknown key id
    reads the database every time, so a flood of them cannot fill the store, and a probe
    with a wrong secret reads it too (``services.credentials``), so the answer time does not
    tell a key id in use from an unknown one. Rows are read from the database token writes
    go to (a replica could hand back a row older than the change that dropped it).
    """
    channel = invalidation.channel()
    ticket = channel.ticket() if channel is not None else None
    if channel is None or ticket is None:
        return _read(router.db_for_read(APIToken), key_id)
    alias = router.db_for_write(APIToken)
    lookup = token_lookup(alias)
    key = ("token", alias, key_id)
    values = channel.store.get(key)
    if values is not invalidation.MISSING:
        token = lookup.answer(_thawed(values), key_id)
        if token is not None:
            token.from_token_cache = True
        return token
    values = _read_row(alias, key_id)
    if values is not None and lookup.key_id_of(values) == key_id:
        tags = (invalidation.token_tag(key_id), invalidation.owner_tag(lookup.owner_pk(values)))
        channel.store.put(key, values, tags, ticket)
        values = _thawed(values)
    return lookup.answer(values, key_id)


def _thawed(values: Sequence[Any]) -> list[Any]:
    """A copy of a stored row whose lists and dicts (scopes, networks...) are the caller's own.

    A request may change its ``request.auth`` in place; the next request must not see it.
    """
    return [_own(value) if type(value) in _CONTAINERS else value for value in values]


_CONTAINERS = (list, dict)


def _own(value: Any) -> Any:
    """A copy of the JSON value *value* sharing nothing mutable (``copy.deepcopy``, faster)."""
    if type(value) is list:
        return [_own(item) for item in value]
    if type(value) is dict:
        return {key: _own(item) for key, item in value.items()}
    return value


def find_current_token(key_id: str) -> APIToken | None:
    """Return the token with *key_id* and its owner as the token database has them now."""
    return _read(router.db_for_write(APIToken), key_id)


def forget_token(key_id: str) -> None:
    """Drop this process's cached row of *key_id* (it wrote the row: its stamp, its hash)."""
    invalidation.forget(invalidation.token_tag(key_id))


def _read(alias: str, key_id: str) -> APIToken | None:
    if token_settings().token_lookup == ORM_LOOKUP:
        return orm_fetch(alias, key_id)
    return token_lookup(alias).fetch(key_id)


def _read_row(alias: str, key_id: str) -> list[Any] | None:
    """The converted row of *key_id* or its neighbour, by the configured lane."""
    lookup = token_lookup(alias)
    if token_settings().token_lookup != ORM_LOOKUP:
        return lookup.nearest_row(key_id)
    nearest = _orm_nearest(alias, key_id)
    return lookup.row_of(nearest) if nearest is not None else None


def orm_fetch(alias: str, key_id: str) -> APIToken | None:
    """The ORM lane: the same nearest-row read as :meth:`TokenLookup.fetch`, built by Django.

    A miss still reads, converts and builds its neighbour before comparing, so the two
    lanes keep the same timing property (see the module docstring).
    """
    token = _orm_nearest(alias, key_id)
    return token if token is not None and token.key_id == key_id else None


def _orm_nearest(alias: str, key_id: str) -> APIToken | None:
    tokens = APIToken.objects.using(alias).select_related("owner")
    if key_id < MIDDLE_KEY_ID:
        nearest = tokens.filter(key_id__gte=key_id).order_by("key_id")
    else:
        nearest = tokens.filter(key_id__lte=key_id).order_by("-key_id")
    return nearest.first()
