"""The opt-in token cache: token rows and deny-list entries kept in process memory, dropped by push.

With ``TOKEN_CACHE`` off (the default) nothing here runs and every request reads its token
row (one query) and every JWT check reads the deny list (one cache round trip).

With it on, each process keeps a bounded :class:`Store` of what those reads returned — the
token-and-owner row by key id (never a secret: the presented secret is still verified
against the stored hash on every request) and deny-list entries by key — and a
:class:`Channel` listener thread that drops entries when something changes:

- Every change that can take power from a token publishes *tags* naming what changed:
  ``k:<key id>`` (the token: revoked, rotated, narrowed, changed, issued), ``o:<owner pk>``
  (its owner: saved or deleted, lost a permission) and ``j:<digest>`` (one JWT revoked).
  On PostgreSQL the tags go out by ``NOTIFY`` **inside the writer's transaction**, so they
  are delivered at commit and never for a rollback, and every writer sends them, whatever
  its own ``TOKEN_CACHE`` says. On Redis, which cannot join the transaction, twice: a
  *hold* before the commit (every process drops the entries and reads those rows from the
  database until released) and ``PUBLISH`` once it committed, which releases it; a lost
  release is ended by the TTL. The writing process also drops its own entries at commit.
- **Fail closed.** The listener pings itself through the channel about every 2.5th of
  ``TOKEN_CACHE_MAX_LAG_MS`` while requests use the store (on PostgreSQL, where a
  ``NOTIFY`` wakes every listener, they share one ping per interval). Messages arrive in
  order (PostgreSQL delivers notifications in commit order; Redis answers a subscriber's
  ``PING`` after every message published before it), so when a ping sent at *t* comes
  back, everything published before *t* has been applied. The store is used only while
  the last returned ping is younger than the maximum lag; otherwise — listener not
  started, disconnected, stalled, or behind — every request reads the database (and the
  deny-list cache) as if the cache were off. A (re)connection flushes the store.
- **No stale write-back.** A request notes the store's generation before it reads the
  database and keeps the row only if no invalidation was applied meanwhile (a seqlock), so
  a row read just before a revocation committed is never cached after its message.
- **TTL backstop.** Every entry is dropped ``TOKEN_CACHE_TTL`` after it was read (default
  60 s): the bound for writes that bypass the app (raw SQL, ``QuerySet.update`` on users,
  another application writing the tables).

The listener starts lazily in each process on its first request (after a pre-fork server
such as gunicorn has forked), as a daemon thread; requests never wait for it.
"""

import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.apps import apps
from django.db import connections, router, transaction
from django.db.models import signals

from tokens_app.conf import TokenSettings, token_settings

logger = logging.getLogger("tokens_app")

#: The PostgreSQL ``LISTEN`` channel (one per database); on Redis, whose pub/sub ignores
#: database numbers, the channel is this name and the database's (:func:`redis_channel`).
CHANNEL = "tokens_app_invalidate"
#: What :meth:`Store.get` returns for a key it does not hold (``None`` is a value: "no row").
MISSING: Any = object()
#: Drop everything: a tag of its own, for operators after raw SQL
#: (``SELECT pg_notify('tokens_app_invalidate', '*')``).
EVERYTHING = "*"
_PING = "p:"
#: Prefix of a tag announced before its change commits (the Redis channel's first phase).
HOLD = "+"
_PUBLISH_TIMEOUT = 1.0
#: The listener's name on the server: ``application_name`` in ``pg_stat_activity``, the
#: client name in Redis's ``CLIENT LIST`` (what an operator looks for, or kills).
LISTENER_NAME = "tokens_app-invalidation"
#: How long a dead-looking connection is kept before the listener reconnects.
_RECONNECT_AFTER_SILENCE = 5.0
_MAX_BACKOFF = 5.0
#: Pings in flight kept for matching (older ones cannot make the store fresh anyway).
_MAX_PENDING_PINGS = 64
#: Seconds without a request after which a process stops pinging (see Channel._in_use).
_IDLE_AFTER = 30.0


def token_tag(key_id: str) -> str:
    """The tag of one token's entries (its row, its deny-list entry)."""
    return f"k:{key_id}"


def owner_tag(owner_pk: Any) -> str:
    """The tag of every entry of one owner (their tokens' rows, their deny-list entry)."""
    return f"o:{owner_pk}"


def jti_tag(digest: str) -> str:
    """The tag of one JWT's deny-list entry (by the digest of its ``jti``)."""
    return f"j:{digest}"


class Store:
    """A bounded, least-recently-used map with a time to live, entries tagged for dropping.

    ``generation`` grows with every drop: a reader notes it before reading the source and
    :meth:`put` refuses the value if it changed, so nothing read before an invalidation
    is stored after it.
    """

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self.generation = 0
        #: Answers given and not given (absent or expired), for operators and tests.
        self.hits = self.misses = 0
        self._entries: OrderedDict[Any, tuple[Any, float, tuple[str, ...]]] = OrderedDict()
        self._keys_by_tag: dict[str, set[Any]] = {}
        #: Tags whose entries are not stored again until released or the moment given.
        self._held: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Any) -> Any:
        """Return the value stored at *key*, or :data:`MISSING` (absent or past its TTL)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return MISSING
            if entry[1] <= time.monotonic():
                self._remove(key)
                self.misses += 1
                return MISSING
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Any, value: Any, tags: Iterable[str], generation: int) -> bool:
        """Store *value* unless an invalidation came after *generation*; return whether stored."""
        tags = tuple(tags)
        with self._lock:
            if generation != self.generation or self._is_held(tags):
                return False
            if key in self._entries:
                self._remove(key)
            self._entries[key] = (value, time.monotonic() + self.ttl, tags)
            for tag in tags:
                self._keys_by_tag.setdefault(tag, set()).add(key)
            while len(self._entries) > self.size:
                self._remove(next(iter(self._entries)))
            return True

    def drop(self, tags: Iterable[str]) -> None:
        """Drop the entries carrying any of *tags* (``EVERYTHING``: all), releasing their holds."""
        with self._lock:
            self.generation += 1
            for tag in tags:
                self._held.pop(tag, None)
                if tag == EVERYTHING:
                    self._entries.clear()
                    self._keys_by_tag.clear()
                    self._held.clear()
                    return
                for key in self._keys_by_tag.pop(tag, ()):
                    self._remove(key)

    def hold(self, tags: Iterable[str]) -> None:
        """Drop the entries of *tags* and store none of them again until :meth:`drop` or the TTL.

        For a change announced before it commits (the Redis channel): until its commit is
        announced too, those rows are read from the source on every request.
        """
        tags = tuple(tags)
        self.drop(tags)
        with self._lock:
            until = time.monotonic() + self.ttl
            for tag in tags:
                self._held[tag] = until

    def _is_held(self, tags: tuple[str, ...]) -> bool:
        if not self._held:
            return False
        now = time.monotonic()
        for tag in [tag for tag, until in self._held.items() if until <= now]:
            del self._held[tag]
        return any(tag in self._held for tag in tags)

    def clear(self) -> None:
        """Drop everything."""
        self.drop([EVERYTHING])

    def _remove(self, key: Any) -> None:
        _value, _expiry, tags = self._entries.pop(key)
        for tag in tags:
            keys = self._keys_by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_by_tag[tag]


class Channel:
    """One process's store and the listener thread that keeps it true (see the module doc)."""

    def __init__(self, settings: TokenSettings) -> None:
        self.settings = settings
        self.kind = settings.token_cache
        self.max_lag = settings.token_cache_max_lag_ms / 1000
        #: A ping is due this often (times 1 to 1.25, at random) while the store is in use:
        #: a returned one is then never older than the maximum lag, with room to spare.
        self.ping_interval = self.max_lag / 2.5
        self.store = Store(settings.token_cache_size, settings.token_cache_ttl.total_seconds())
        self._confirmed_at = float("-inf")
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._start_lock = threading.Lock()
        #: Freshness needs a ping sent at or after this moment (see :meth:`ticket`).
        self._needs_ping_since = float("-inf")
        #: When a request last asked for the store, and since when the listener pings.
        self._asked_at = float("-inf")
        self._pinging_since = float("-inf")
        self._ident = f"{os.getpid()}-{id(self):x}"
        self._publisher: Any = None
        self._redis_channel = (
            redis_channel(settings.token_cache_redis_url or "") if self.kind == "redis" else ""
        )

    # --- the request path -------------------------------------------------------------

    def ticket(self) -> int | None:
        """Return the store's generation if the store may be used now, else ``None``.

        Starts the listener on first use. ``None`` (read the source instead) while the
        listener has not confirmed, within the maximum lag, that it has applied every
        invalidation published so far.
        """
        if self._thread is None:
            self._start()
        now = time.monotonic()
        self._asked_at = now
        if now - self._confirmed_at > self.max_lag:
            # Found behind: only a ping sent from now on proves it caught up. (An older one
            # coming back late could otherwise make it fresh just ahead of a message it
            # still has to apply, and a token refused a moment ago would pass once more.)
            if self._needs_ping_since < now:
                self._needs_ping_since = now
            return None
        return self.store.generation

    def fresh(self) -> bool:
        """Whether requests are answered from the store right now."""
        return self.ticket() is not None

    def wait_fresh(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the store to be usable (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while not self.fresh():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # --- publishing ---------------------------------------------------------------------

    def publish(self, tags: Iterable[str]) -> None:
        """Announce that what *tags* name changed: every process drops those entries.

        PostgreSQL: ``NOTIFY`` on the token database, in the current transaction (sent at
        its commit, dropped by its rollback); a failure is the writer's failure. Redis, which
        cannot take part in the transaction: twice. Before the commit, a *hold* (``+tag``):
        every process drops the entries and reads those rows from the database until the
        second message, ``PUBLISH`` after the commit, or the TTL; so a commit is never
        served stale while Django runs the transaction's other ``on_commit`` callbacks. A
        failed publish is logged (listeners then time out on their pings, or the TTL ends it).
        """
        tags = tuple(dict.fromkeys(tags))
        if not tags:
            return
        alias = _token_database()
        payload = " ".join(tags)
        if self.kind == "postgresql":
            notify(alias, payload)
        else:
            self.store.hold(tags)
            self._publish_redis(" ".join(HOLD + tag for tag in tags))
            transaction.on_commit(lambda: self._publish_redis(payload), using=alias, robust=True)
        transaction.on_commit(lambda: self.store.drop(tags), using=alias, robust=True)

    def _publish_redis(self, payload: str) -> None:
        try:
            if self._publisher is None:
                import redis

                self._publisher = redis.Redis.from_url(
                    self.settings.token_cache_redis_url or "",
                    socket_timeout=_PUBLISH_TIMEOUT,
                    socket_connect_timeout=_PUBLISH_TIMEOUT,
                )
            self._publisher.publish(self._redis_channel, payload)
        except Exception as exc:  # the client's errors vary
            logger.error(
                "token cache: could not publish an invalidation (%s); other processes keep "
                "their entries until TOKEN_CACHE_TTL unless their listener is down too",
                type(exc).__name__,
                exc_info=exc,
            )

    # --- the listener -------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="tokens_app-invalidation", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the listener (within one ping interval) and stop using the store."""
        self._stopped.set()
        self._lost()

    def _run(self) -> None:
        backoff = 0.05
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                if self.kind == "postgresql":
                    self._listen_postgresql()
                else:
                    self._listen_redis()
            except Exception as exc:  # any fault of the connection: bypass, then reconnect
                if self._stopped.is_set():
                    return  # stopped (settings changed): its own faults no longer matter
                logger.warning(
                    "token cache listener disconnected (%s); requests read the database",
                    type(exc).__name__,
                    exc_info=exc,
                )
            self._lost()
            if time.monotonic() - started > _RECONNECT_AFTER_SILENCE:
                backoff = 0.05
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _caught_up(self, since: float) -> None:
        """The subscription is live since *since*: flush, then trust the store again."""
        self.store.clear()
        self._needs_ping_since = since  # everything published since is heard, nothing is held
        self._confirmed_at = since

    def _lost(self) -> None:
        self._confirmed_at = float("-inf")
        self.store.clear()

    def _receive(self, payload: str, pings: dict[str, float] | None) -> bool:
        """Apply one message: a ping (if *pings* are counted here), holds, drops.

        Return whether it was a ping. On PostgreSQL any listener's ping counts: it carries
        the wall-clock time it was sent, and everything committed before that was queued
        ahead of it (so the processes of a host share one ping per interval, instead of each
        waking every other with its own). Clocks of other hosts must agree within a few
        milliseconds (NTP): a clock that is ahead makes this one think itself that much
        fresher.
        """
        if payload.startswith(_PING):
            if pings is not None and not self._pong(payload, pings):
                self._shared_pong(payload)
            return True
        tags = payload.split()
        held = [tag[len(HOLD) :] for tag in tags if tag.startswith(HOLD)]
        dropped = [tag for tag in tags if not tag.startswith(HOLD)]
        if held:
            self.store.hold(held)
        if dropped:
            self.store.drop(dropped)
        return False

    def _pong(self, name: str, pings: dict[str, float]) -> bool:
        """Count a ping of this listener's own that came back; return whether it was one."""
        sent = pings.pop(name, None)
        if sent is None:
            return False
        for older in [p for p, at in pings.items() if at <= sent]:
            del pings[older]
        self._confirm(sent)
        return True

    def _shared_pong(self, name: str) -> None:
        """Count another listener's ping (PostgreSQL), by the wall-clock time it carries."""
        try:
            sent_wall = float(name[len(_PING) :].split(":", 1)[0])
        except ValueError:
            return
        self._confirm(time.monotonic() - max(0.0, time.time() - sent_wall))

    def _confirm(self, sent: float) -> None:
        if sent >= self._needs_ping_since:
            self._confirmed_at = max(self._confirmed_at, sent)

    def _next_ping(self, pings: dict[str, float], sequence: int) -> str:
        # The wall-clock time first, for other listeners (_shared_pong); the sequence for ours.
        name = f"{_PING}{time.time():.6f}:{self._ident}:{sequence}"
        pings[name] = time.monotonic()
        while len(pings) > _MAX_PENDING_PINGS:
            del pings[next(iter(pings))]
        return name

    def _ping_due_after(self) -> float:
        return self.ping_interval * random.uniform(1.0, 1.25)  # noqa: S311 — jitter only

    def _in_use(self, now: float) -> bool:
        """Whether requests asked for the store lately: an idle process does not ping.

        Its store then goes stale after the maximum lag (requests read the database); the
        first request marks it in use again and the next ping, at most an interval later,
        makes it fresh. Messages are applied all along.
        """
        in_use = now - self._asked_at < _IDLE_AFTER
        if in_use and self._pinging_since == float("-inf"):
            self._pinging_since = now
        elif not in_use:
            self._pinging_since = float("-inf")
        return in_use

    def _check_alive(self) -> None:
        """Reconnect when pings have gone unanswered for a while (a dead, silent connection)."""
        now = time.monotonic()
        if not self._in_use(now):
            return
        heard = max(self._confirmed_at, self._pinging_since)
        if now - heard > max(_RECONNECT_AFTER_SILENCE, 10 * self.max_lag):
            raise ConnectionError("no ping came back")

    def _listen_postgresql(self) -> None:
        import psycopg

        params = connections[_token_database()].get_connection_params()
        params["application_name"] = LISTENER_NAME
        with psycopg.connect(**params, autocommit=True) as connection:
            since = time.monotonic()
            connection.execute(f"LISTEN {CHANNEL}")
            self._caught_up(since)
            pings: dict[str, float] = {}
            due = time.monotonic()
            for sequence in _counter():
                if self._stopped.is_set():
                    return
                now = time.monotonic()
                if now >= due and self._in_use(now):
                    ping = self._next_ping(pings, sequence)
                    connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, ping))
                    due = now + self._ping_due_after()
                wait = min(self.ping_interval, max(due - time.monotonic(), 0.001))
                for notification in connection.notifies(timeout=wait):
                    if self._receive(notification.payload, pings):
                        # Anyone's ping will do for this interval: ours can wait.
                        due = max(due, time.monotonic() + self._ping_due_after())
                self._check_alive()

    def _listen_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(
            self.settings.token_cache_redis_url or "",
            socket_connect_timeout=max(self.max_lag, 1.0),
            client_name=LISTENER_NAME,
        )
        pubsub = client.pubsub()
        try:
            since = time.monotonic()
            pubsub.subscribe(self._redis_channel)
            if not self._await_subscription(pubsub):
                raise ConnectionError("the subscription was not confirmed")
            self._caught_up(since)
            pings: dict[str, float] = {}
            for sequence in _counter():
                if self._stopped.is_set():
                    return
                # A PING's PONG comes back to this connection alone: nothing to share.
                if self._in_use(time.monotonic()):
                    pubsub.ping(self._next_ping(pings, sequence))
                deadline = time.monotonic() + self._ping_due_after()
                while (remaining := deadline - time.monotonic()) > 0:
                    message = pubsub.get_message(timeout=remaining)
                    if message is not None:
                        self._receive_redis(message, pings)
                self._check_alive()
        finally:
            pubsub.close()
            client.close()

    def _await_subscription(self, pubsub: Any) -> bool:
        deadline = time.monotonic() + max(self.max_lag, 1.0)
        while (remaining := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "subscribe":
                return True
        return False

    def _receive_redis(self, message: dict[str, Any], pings: dict[str, float]) -> None:
        data = message["data"]
        text = data.decode() if isinstance(data, bytes) else str(data)
        if message["type"] == "pong":
            self._pong(text, pings)
        elif message["type"] == "message":
            # Only the server's PONG proves a ping came back: a published "ping" is anyone's.
            self._receive(text, None)


def redis_channel(url: str) -> str:
    """The Redis channel of the database *url* names: deployments on one server keep apart."""
    from redis.connection import parse_url

    database = parse_url(url).get("db", 0)  # type: ignore[no-untyped-call]
    return f"{CHANNEL}:{database}"


def _counter() -> Iterable[int]:
    sequence = 0
    while True:
        sequence += 1
        yield sequence


def _token_database() -> str:
    # By the app registry, not an import: the models sit a layer above this module.
    return router.db_for_write(apps.get_model("tokens_app", "APIToken"))


_current: Channel | None = None
_current_lock = threading.Lock()


def channel() -> Channel | None:
    """The process's channel, or ``None`` while ``TOKEN_CACHE`` is off."""
    settings = token_settings()
    current = _current
    if settings.token_cache is None:
        if current is not None:
            _replace(None)
        return None
    if current is not None and current.settings is settings:
        return current
    return _replace(Channel(settings))


def _replace(new: Channel | None) -> Channel | None:
    """Install *new* as the process's channel, stopping the one it replaces."""
    global _current
    with _current_lock:
        old, _current = _current, new
    if old is not None:
        old.stop()
    return new


def store() -> Store | None:
    """The process's store, or ``None`` while ``TOKEN_CACHE`` is off."""
    current = channel()
    return current.store if current is not None else None


def publish(*tags: str) -> None:
    """Announce changes to what *tags* name (see :meth:`Channel.publish`).

    On a PostgreSQL token database this notifies **whatever this process's** ``TOKEN_CACHE``
    says: a shell, a cron job or an admin host set up without the cache still reaches the
    workers that have it (one ``pg_notify`` per change; nothing listens without them). The
    Redis channel is known only to processes configured with it.
    """
    if _quiet.get():
        return
    current = channel()
    if current is not None:
        current.publish(tags)
        return
    alias = _token_database()
    if connections[alias].vendor == "postgresql":
        notify(alias, " ".join(dict.fromkeys(tags)))


def notify(alias: str, payload: str) -> None:
    """``NOTIFY`` *payload* on the database *alias*, in its current transaction."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])


@contextmanager
def quiet() -> Iterator[None]:
    """Publish nothing inside: for writes whose rows every cached copy already judges right.

    Pruning deletes tokens that ended (expired or revoked) long ago: a cached copy says so.
    """
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


_quiet: ContextVar[bool] = ContextVar("tokens_app_invalidation_quiet", default=False)


def forget(*tags: str) -> None:
    """Drop this process's entries for *tags* (a change only this process needs to see)."""
    current = channel()
    if current is not None:
        current.store.drop(tags)


def _after_fork_in_child() -> None:
    # A forked worker inherits its parent's store and no thread: start afresh.
    global _current
    _current = None


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the ORM's own writes ---------------------------------------------------------------

#: User fields whose change alone is not worth an invalidation (a login's stamp).
_UNWATCHED_USER_FIELDS = frozenset({"last_login"})


def _token_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    if not kwargs.get("raw"):
        publish(token_tag(instance.key_id))


def _user_saved(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if kwargs.get("raw") or instance.pk is None:
        return
    if update_fields is not None and set(update_fields) <= _UNWATCHED_USER_FIELDS:
        return
    publish(owner_tag(instance.pk))


def connect(user_model: Any) -> None:
    """Publish every ORM save or delete of a token or a user.

    Called from ``AppConfig.ready``. (A receiver makes ``QuerySet.delete()`` load the rows
    it deletes: pruning pays one ``SELECT`` per batch, and publishes nothing, see
    :func:`quiet`.)

    After the write (``post_save``, ``post_delete``): in autocommit mode a message sent
    before the write committed could be applied while the old row can still be read, and
    that row would be cached again.
    """
    token_model = apps.get_model("tokens_app", "APIToken")
    receivers: list[tuple[Any, Callable[..., None], Any, str]] = [
        (signals.post_save, _token_saved, token_model, "token-saved"),
        (signals.post_delete, _token_saved, token_model, "token-deleted"),
        (signals.post_save, _user_saved, user_model, "owner-saved"),
        (signals.post_delete, _user_saved, user_model, "owner-deleted"),
    ]
    for signal, function, sender, name in receivers:
        signal.connect(function, sender=sender, dispatch_uid=f"tokens_app.invalidation-{name}")
