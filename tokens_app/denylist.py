"""The JWT deny list: key ids of revoked API tokens, in a cache every process shares.

A JWT is verified without SQL, so revoking its parent API token must reach every
process another way: the revoke writes the parent's key id here, for as long as any JWT
minted from it could still be valid, and every JWT verification reads it (one cache
read). The alias (``JWT_DENY_LIST_CACHE``) must be shared by every process: Redis in
production, a file-based cache on one host. A cache that cannot be read fails closed.
"""

import logging

from django.core.cache import caches

from tokens_app.conf import token_settings

logger = logging.getLogger("tokens_app")

_PREFIX = "tokens_app:jwt-deny:"


class DenyListUnavailable(Exception):  # noqa: N818 — reads better at the raise sites
    """The deny-list cache could not be read: no JWT can be trusted until it can."""


def _ttl_seconds() -> int:
    jwt = token_settings().jwt
    # As long as any JWT minted before the revoke could pass verification.
    return int(jwt.lifetime.total_seconds()) + jwt.leeway_seconds + 1


def deny(key_id: str) -> bool:
    """Record *key_id* as revoked for JWT purposes; return whether the cache took it.

    Never raises: revoking the API token itself must not depend on the cache. A failed
    write is logged as an error (its JWTs then live until they expire, at most
    ``JWT_LIFETIME``, unless the cache is down, in which case every JWT is refused).
    """
    cache = caches[token_settings().jwt.deny_list_cache]
    try:
        cache.set(_PREFIX + key_id, 1, timeout=_ttl_seconds())
    except Exception as exc:  # the cache client's errors vary by backend
        logger.error(
            "JWT deny list unavailable: JWTs of revoked key id %s stay valid until they "
            "expire (%s)",
            key_id,
            type(exc).__name__,
            exc_info=exc,
        )
        return False
    return True


def is_denied(key_id: str) -> bool:
    """Return whether *key_id* was revoked; raise ``DenyListUnavailable`` if unreadable."""
    cache = caches[token_settings().jwt.deny_list_cache]
    try:
        return cache.get(_PREFIX + key_id) is not None
    except Exception as exc:  # the cache client's errors vary by backend
        logger.error("JWT deny list unreadable (%s)", type(exc).__name__, exc_info=exc)
        raise DenyListUnavailable from exc
