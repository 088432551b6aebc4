"""The JWT deny list: which JWTs of which API tokens (and owners) must be refused early.

A JWT is verified without SQL, so anything that takes power away from the API token
it was minted from must reach every process another way: the change writes an entry
here, for as long as any JWT it concerns could still be valid, and every JWT
verification reads it (one cache round trip). Four kinds of entry:

- the token was **revoked**: every JWT of its key id is refused;
- the token was **rotated**: JWTs minted by an older secret version are refused from
  the moment that secret stops (at once, or when the rotation grace ends);
- the token, or its owner, was **narrowed** (scopes, guardrails; the owner deactivated,
  demoted or deleted): every JWT minted up to that second is refused, so clients mint
  new ones that carry what is allowed now;
- one **JWT was revoked** (RFC 7009, by whoever holds it): that JWT alone is refused, by
  its ``jti``, until it expires.

The alias (``JWT_DENY_LIST_CACHE``) must be shared by every process: Redis in
production, a file-based cache on one host; it must never evict a live entry (a system
check says so). A cache that cannot be read fails closed. Writes happen under the
token's row lock (its revocation, rotation or update), so two writers of one key id
never race their read-modify-write.

With ``TOKEN_CACHE`` on, every write also publishes its tag (``tokens_app.invalidation``:
in the writer's transaction, after the entry is stored) and reads are answered from
process memory while the channel is fresh, so a JWT check costs no round trip.
"""

import hashlib
import logging
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.cache import caches

from tokens_app import invalidation
from tokens_app.conf import token_settings
from tokens_app.core import clock

logger = logging.getLogger("tokens_app")

_PREFIX = "tokens_app:jwt-deny:"
_OWNER_PREFIX = "tokens_app:jwt-deny-owner:"
_JTI_PREFIX = "tokens_app:jwt-deny-jti:"


class DenyListUnavailable(Exception):  # noqa: N818 — reads better at the raise sites
    """The deny-list cache could not be read: no JWT can be trusted until it can."""


def _lifetime_seconds() -> int:
    jwt = token_settings().jwt
    # As long as any JWT minted before the change could pass verification.
    return int(jwt.lifetime.total_seconds()) + jwt.leeway_seconds + 1


def _cache() -> Any:
    return caches[token_settings().jwt.deny_list_cache]


def _entry(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {"revoked": True} if value is not None else {}


def _update(key: str, change: dict[str, Any], until: float, what: str, tag: str) -> bool:
    """Merge *change* into the entry at *key*, kept until *until* at least; never raise.

    Revoking or rotating the API token itself must not depend on the cache. A failed
    write is logged as an error: the JWTs concerned then live until they expire (at most
    ``JWT_LIFETIME``), unless the cache is down, in which case every JWT is refused.
    *tag* is published whatever the outcome: what the change concerns dropped from memory.
    """
    try:
        return _store(key, change, until, what)
    finally:
        invalidation.publish(tag)


def _store(key: str, change: dict[str, Any], until: float, what: str) -> bool:
    cache = _cache()
    now = clock.now().timestamp()
    try:
        entry = _entry(cache.get(key))
        merged = {**entry, "until": max(float(entry.get("until", 0)), until)}
        if change.get("revoked"):
            merged["revoked"] = True
        if "minted_until" in change:
            merged["minted_until"] = max(int(entry.get("minted_until", 0)), change["minted_until"])
        if "retired" in change:
            merged["retired"] = _compact([*entry.get("retired", []), *change["retired"]], now)
        cache.set(key, merged, timeout=max(1, math.ceil(merged["until"] - now)))
    except Exception as exc:  # the cache client's errors vary by backend
        logger.error(
            "JWT deny list unavailable: JWTs of %s stay valid until they expire (%s)",
            what,
            type(exc).__name__,
            exc_info=exc,
        )
        return False
    return True


def _compact(retired: Iterable[Any], now: float) -> list[list[float]]:
    """Keep the retirements that can still refuse something, without redundant ones."""
    pairs = sorted({(int(below), float(at)) for below, at in retired}, key=lambda p: (p[1], -p[0]))
    kept: list[list[float]] = []
    for below, at in pairs:
        # A retirement already in force no later, for as many versions, makes this one moot.
        if not any(other_below >= below and other_at <= at for other_below, other_at in kept):
            kept.append([below, at])
    in_force = [pair for pair in kept if pair[1] <= now]
    # Of those in force, only the widest matters; pending ones stay until they start.
    widest = [max(in_force, key=lambda pair: pair[0])] if in_force else []
    return widest + [pair for pair in kept if pair[1] > now]


def deny(key_id: str) -> bool:
    """Refuse every JWT of the API token *key_id* (it was revoked); return whether stored."""
    until = clock.now().timestamp() + _lifetime_seconds()
    return _update(
        _PREFIX + key_id, {"revoked": True}, until, f"revoked key id {key_id}", _tag(key_id)
    )


def retire_versions(key_id: str, retirements: Iterable[tuple[int, datetime]]) -> bool:
    """For each ``(below, at)``: from *at* on, refuse JWTs minted by secret versions < *below*."""
    pairs = [(below, at.timestamp()) for below, at in retirements]
    until = max(at for _below, at in pairs) + _lifetime_seconds()
    return _update(
        _PREFIX + key_id, {"retired": pairs}, until, f"rotated key id {key_id}", _tag(key_id)
    )


def refuse_minted_until(key_id: str, moment: datetime) -> bool:
    """Refuse the JWTs of *key_id* minted up to *moment* (the token was narrowed)."""
    change = {"minted_until": math.floor(moment.timestamp())}
    until = moment.timestamp() + _lifetime_seconds()
    return _update(_PREFIX + key_id, change, until, f"narrowed key id {key_id}", _tag(key_id))


def refuse_owner_minted_until(owner_pk: Any, moment: datetime) -> bool:
    """Refuse every JWT of owner *owner_pk* minted up to *moment* (the owner lost power)."""
    change = {"minted_until": math.floor(moment.timestamp())}
    until = moment.timestamp() + _lifetime_seconds()
    tag = invalidation.owner_tag(owner_pk)
    return _update(_OWNER_PREFIX + str(owner_pk), change, until, f"owner pk={owner_pk}", tag)


def _tag(key_id: str) -> str:
    return invalidation.token_tag(key_id)


def _jti_digest(jti: str) -> str:
    # Hashed: a fixed-length key of safe characters for every cache backend, whatever
    # the claim holds (only this server's keys sign it, but memcached refuses spaces).
    return hashlib.sha256(jti.encode()).hexdigest()


def _jti_key(jti: str) -> str:
    return _JTI_PREFIX + _jti_digest(jti)


def deny_jwt(jti: str, expires_at: int) -> bool:
    """Refuse the one JWT *jti* (expiring at the epoch *expires_at*); return whether stored.

    The entry lives as long as that JWT could pass verification (its ``exp`` plus the
    leeway), and no longer. Never raises: the caller decides what a failed write means.
    """
    now = clock.now().timestamp()
    timeout = max(1, math.ceil(expires_at + token_settings().jwt.leeway_seconds + 1 - now))
    try:
        _cache().set(_jti_key(jti), True, timeout=timeout)
    except Exception as exc:  # the cache client's errors vary by backend
        logger.error(
            "JWT deny list unavailable: a JWT could not be revoked (%s)",
            type(exc).__name__,
            exc_info=exc,
        )
        return False
    finally:
        invalidation.publish(invalidation.jti_tag(_jti_digest(jti)))
    return True


def _refusal(entry: dict[str, Any], issued_at: int, secret_version: int, now: float) -> str | None:
    if entry.get("revoked"):
        return "parent token revoked"
    if issued_at <= int(entry.get("minted_until", -1)):
        return "minted before a narrowing"
    for below, at in entry.get("retired", []):
        if at <= now and secret_version < below:
            return "minted by a rotated secret"
    return None


def refusal(
    key_id: str, owner_pk: Any, issued_at: int, secret_version: int, jti: str | None = None
) -> str | None:
    """Return why a JWT of *key_id* and owner *owner_pk* must be refused, or ``None``.

    One cache round trip (``get_many``), the JWT's own entry (*jti*) included. Raise
    ``DenyListUnavailable`` if unreadable.
    """
    keys = [_PREFIX + key_id, _OWNER_PREFIX + str(owner_pk)]
    tags = {keys[0]: _tag(key_id), keys[1]: invalidation.owner_tag(owner_pk)}
    jti_key = None
    if jti is not None:
        digest = _jti_digest(jti)
        jti_key = _JTI_PREFIX + digest
        tags[jti_key] = invalidation.jti_tag(digest)
    found = _read(tags)
    if jti_key in found:
        return "JWT revoked"
    now = clock.now().timestamp()
    for key in keys:
        if key in found:
            reason = _refusal(_entry(found[key]), issued_at, secret_version, now)
            if reason:
                return reason
    return None


#: What the process remembers for a key the cache does not hold.
_ABSENT: Any = object()


def _read(tags: dict[str, str]) -> dict[str, Any]:
    """Return the entries at the keys of *tags* (key -> its invalidation tag).

    From process memory while the token cache's channel is fresh, what is not there by
    one ``get_many`` (then remembered, absence included); from the cache alone otherwise.
    """
    channel = invalidation.channel()
    ticket = channel.ticket() if channel is not None else None
    if channel is None or ticket is None:
        return _get_many(list(tags))
    found: dict[str, Any] = {}
    missing = []
    for key in tags:
        value = channel.store.get(("deny", key))
        if value is invalidation.MISSING:
            missing.append(key)
        elif value is not _ABSENT:
            found[key] = value
    if missing:
        fetched = _get_many(missing)
        for key in missing:
            value = fetched.get(key, _ABSENT)
            channel.store.put(("deny", key), value, [tags[key]], ticket)
        found.update(fetched)
    return found


def _get_many(keys: list[str]) -> dict[str, Any]:
    try:
        return dict(_cache().get_many(keys))
    except Exception as exc:  # the cache client's errors vary by backend
        logger.error("JWT deny list unreadable (%s)", type(exc).__name__, exc_info=exc)
        raise DenyListUnavailable from exc


def is_denied(key_id: str) -> bool:
    """Return whether every JWT of *key_id* is refused (revoked); raise if unreadable."""
    try:
        value = _cache().get(_PREFIX + key_id)
    except Exception as exc:  # the cache client's errors vary by backend
        logger.error("JWT deny list unreadable (%s)", type(exc).__name__, exc_info=exc)
        raise DenyListUnavailable from exc
    return bool(_entry(value).get("revoked"))
