"""Cache backends that never drop a live entry: for rate-limit counters and the JWT deny list.

Django's local-memory, file-based and database caches *cull*: once they hold
``MAX_ENTRIES`` (300 by default) entries, each write deletes a share of them, live or
not (local memory the least recently used third, files a random third). For a page
cache that is a fine trade. For security state it is a hole: anyone who can make the
application write entries (password attempts under other usernames, revocations of
their own tokens) can flush a blocked client's counters or a revoked token's deny-list
entry, and the attack works again. These two subclasses keep Django's storage and
locking, but when they would cull they delete only entries that have **expired**.

``MAX_ENTRIES`` therefore stops being a cap: it is where the local-memory backend first
looks for expired entries, and the file-based one ignores it (it sweeps on a clock).
``CULL_FREQUENCY`` is ignored by both (``0`` would clear every live entry).

What bounds memory and disk instead: a flood now costs space until its entries expire,
rather than erasing security state. Every entry the application writes has a timeout:
a rate-limit counter lives for its window plus a few seconds, and only attempts that are
counted create one (blocked traffic creates no counters), so the counters held at once
are at most about (client addresses + usernames tried) per window. A deny-list entry
lives for ``JWT_LIFETIME`` + leeway (a rotation entry: also the grace), written only by
authenticated revocations, rotations and changes, which the token quota and rate limits
bound. Expired entries are reclaimed: in memory when the store has doubled since the last
sweep (so at most about twice the live entries, plus ``MAX_ENTRIES``), on disk at most
``SWEEP_INTERVAL`` seconds after they expire. An entry stored with no timeout is kept
until it is deleted; nothing in tokens_app stores one. If the space is exhausted, writes
fail, and both the limiter and JWT verification fail closed on cache errors.
"""

import logging
import os
import pickle
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.files import locks
from django.core.files.move import file_move_safe

logger = logging.getLogger("tokens_app")

#: Seconds between sweeps of expired files, unless ``OPTIONS["SWEEP_INTERVAL"]`` says otherwise.
DEFAULT_SWEEP_INTERVAL = 60

#: Where the local-memory backend next looks for expired entries, per store name. Shared,
#: like Django's own stores, by the instances of every thread (one per thread and alias).
_sweep_thresholds: dict[str, list[int]] = {}


def _has_expired(expiry: float | None, now: float) -> bool:
    return expiry is not None and expiry <= now


class NonCullingLocMemCache(LocMemCache):
    """Django's local-memory cache, except that it never deletes a live entry to make room.

    One process's memory: fit for rate-limit counters of a single-process server
    (``make run``), never for state other processes must see. ``add`` and ``incr`` stay
    atomic under the store's lock, which is what django-ratelimit's counting relies on.
    """

    # LocMemCache's private state, which django-stubs leaves out.
    _cache: "OrderedDict[str, bytes]"
    _expire_info: dict[str, float | None]
    _lock: threading.Lock

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__(name, params)
        self._sweep_at = _sweep_thresholds.setdefault(name, [self._max_entries])

    def _cull(self) -> None:
        """Delete the expired entries, at most once each time the store doubles.

        LocMemCache calls this under its lock, on every write while the store holds
        ``MAX_ENTRIES`` or more. Sweeping every time would cost a full scan per write once
        the live entries outnumber ``MAX_ENTRIES``; doubling keeps it O(1) amortised.
        """
        if len(self._cache) < self._sweep_at[0]:
            return
        now = time.time()
        for key in [key for key, at in self._expire_info.items() if _has_expired(at, now)]:
            del self._cache[key]
            del self._expire_info[key]
        self._sweep_at[0] = max(self._max_entries, 2 * len(self._cache))

    def clear(self) -> None:
        """Delete every entry and start sweeping at ``MAX_ENTRIES`` again."""
        with self._lock:
            self._cache.clear()
            self._expire_info.clear()
            self._sweep_at[0] = self._max_entries


class NonCullingFileBasedCache(FileBasedCache):
    """Django's file-based cache, except that it never deletes a live entry.

    Shared by every process on the host (the JWT deny list of ``make run``: the server,
    ``manage.py revoke_token`` and the admin). Writes (``set``, ``add``, ``incr``,
    ``touch``) hold an exclusive lock on the directory's lock file, so ``add`` and
    ``incr`` are atomic across threads and processes and ``incr`` keeps the entry's
    expiry (Django's file cache reset it to the default timeout). Reads take no lock:
    files are replaced by rename, so a reader sees the old entry or the new one.

    Reads never delete, unlike Django's: between a reader finding an expired file and
    deleting it, another process could rename a fresh entry into that path, and the
    delete would lose it. Expired files are deleted by a sweep instead, under the write
    lock, at most once per ``SWEEP_INTERVAL`` seconds (default 60) across all processes:
    the first write after the interval runs it. A sweep reads the header of every file,
    so it costs about 10 µs a file, during which writers wait; readers do not.
    """

    _dir: str

    if TYPE_CHECKING:  # FileBasedCache's private helpers, which django-stubs leaves out.

        def _createdir(self) -> None: ...
        def _key_to_file(self, key: Any, version: int | None = None) -> str: ...
        def _delete(self, fname: str) -> bool: ...
        def _list_cache_files(self) -> list[str]: ...

    lock_name = "lock"
    swept_name = "swept"

    def __init__(self, dir: str, params: dict[str, Any]) -> None:
        super().__init__(dir, params)
        interval = params.get("OPTIONS", {}).get("SWEEP_INTERVAL", DEFAULT_SWEEP_INTERVAL)
        self._sweep_interval = float(interval)

    # --- writes: under the lock ----------------------------------------------------------

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Store *value*; never culls."""
        fname = self._key_to_file(key, version)
        with self._locked():
            self._write(fname, self.get_backend_timeout(timeout), value)
        self._sweep_if_due()

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Store *value* unless a live entry exists; atomic across processes."""
        fname = self._key_to_file(key, version)
        with self._locked():
            if self._read(fname) is not None:
                return False
            self._write(fname, self.get_backend_timeout(timeout), value)
        self._sweep_if_due()
        return True

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add *delta* to a live entry, keeping its expiry; atomic across processes."""
        fname = self._key_to_file(key, version)
        with self._locked():
            entry = self._read(fname)
            if entry is None:
                raise ValueError(f"Key '{key}' not found")
            expiry, value = entry
            new_value = value + delta
            self._write(fname, expiry, new_value)
        return new_value

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give a live entry a new timeout."""
        fname = self._key_to_file(key, version)
        with self._locked():
            entry = self._read(fname)
            if entry is None:
                return False
            self._write(fname, self.get_backend_timeout(timeout), entry[1])
        return True

    def _cull(self) -> None:
        """Delete expired entries only (Django's version deletes a random third of all)."""
        self.sweep()

    def sweep(self, *, only_if_due: bool = False) -> int:
        """Delete every expired entry; return how many.

        With *only_if_due*, do nothing if another process swept less than
        ``SWEEP_INTERVAL`` seconds ago (checked again under the lock, so two processes
        that both found a sweep due do not both run it).
        """
        removed = 0
        with self._locked():
            if only_if_due and not self._sweep_due():
                return 0
            self._mark_swept()
            now = time.time()
            for fname in self._list_cache_files():
                try:
                    with open(fname, "rb") as f:
                        expired = _has_expired(self._expiry(f), now)
                except FileNotFoundError:  # deleted by another process meanwhile
                    continue
                if expired and self._delete(fname):
                    removed += 1
        return removed

    # --- reads: no lock, no delete -------------------------------------------------------

    def _is_expired(self, f: Any) -> bool:
        # Django's deletes the file here; see the class docstring for why this one does not.
        return _has_expired(self._expiry(f), time.time())

    # --- helpers -------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._createdir()  # the directory can be deleted at any time
        with open(os.path.join(self._dir, self.lock_name), "ab") as lock_file:
            locks.lock(lock_file, locks.LOCK_EX)
            try:
                yield
            finally:
                locks.unlock(lock_file)

    @staticmethod
    def _expiry(f: Any) -> float | None:
        try:
            expiry: float | None = pickle.load(f)  # noqa: S301 — our own files, mode 0700
        except EOFError:
            return 0  # an empty file counts as expired, as in Django
        return expiry

    def _read(self, fname: str) -> tuple[float | None, Any] | None:
        """Return ``(expiry, value)`` of the live entry in *fname*, else ``None``."""
        try:
            with open(fname, "rb") as f:
                expiry = self._expiry(f)
                if _has_expired(expiry, time.time()):
                    return None
                return expiry, pickle.loads(zlib.decompress(f.read()))  # noqa: S301
        except FileNotFoundError:
            return None

    def _write(self, fname: str, expiry: float | None, value: Any) -> None:
        fd, tmp_path = tempfile.mkstemp(dir=self._dir)
        renamed = False
        try:
            with open(fd, "wb") as f:
                f.write(pickle.dumps(expiry, self.pickle_protocol))
                f.write(zlib.compress(pickle.dumps(value, self.pickle_protocol)))
            file_move_safe(tmp_path, fname, allow_overwrite=True)
            renamed = True
        finally:
            if not renamed:
                os.remove(tmp_path)

    def _swept_path(self) -> str:
        return os.path.join(self._dir, self.swept_name)

    def _mark_swept(self) -> None:
        with open(self._swept_path(), "ab"):
            pass
        os.utime(self._swept_path())

    def _sweep_due(self) -> bool:
        try:
            last = os.stat(self._swept_path()).st_mtime
        except FileNotFoundError:
            last = 0.0
        return time.time() - last >= self._sweep_interval

    def _sweep_if_due(self) -> None:
        """Sweep when no process has for ``SWEEP_INTERVAL`` seconds: one ``stat`` per write.

        The write before it has succeeded: a failed sweep only delays reclaiming space,
        so it is logged, not raised into the caller (which would report a lost write).
        """
        if not self._sweep_due():
            return
        try:
            self.sweep(only_if_due=True)
        except OSError as exc:
            logger.warning("Cache sweep of expired files failed (%s)", type(exc).__name__)
