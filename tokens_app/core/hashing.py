"""Hash and verify token secrets through pwdlib.

Secrets are ~190 random bits, so a slow password hash buys nothing but latency:
the default is a keyed HMAC-SHA256 (a pwdlib hasher, below) under a server-side
key that is not ``SECRET_KEY`` itself. pwdlib's Argon2 hasher is an opt-in.
Stored values are self-describing (``$hmac-sha256$k=<key id>$<digest>``), so
``verify_and_update`` can migrate them when the hasher or the key changes.
"""

import hashlib
import hmac
from collections.abc import Sequence

from pwdlib import PasswordHash
from pwdlib.exceptions import PwdlibError
from pwdlib.hashers import HasherProtocol
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.base import ensure_bytes, ensure_str

from tokens_app.conf import cached_until_settings_change, token_settings

_HMAC_PREFIX = "$hmac-sha256$"


def derive_hash_key(secret_key: str) -> bytes:
    """Return the HMAC key derived from *secret_key*.

    Domain-separated, so the hash key is never ``SECRET_KEY`` itself.
    """
    return hmac.new(secret_key.encode(), b"tokens_app.hash-key.v1", hashlib.sha256).digest()


def hmac_keys(
    hash_key: str | None,
    old_hash_keys: Sequence[str],
    secret_key: str,
    secret_key_fallbacks: Sequence[str],
) -> tuple[bytes, tuple[bytes, ...]]:
    """Return the HMAC key that hashes and the older keys that still verify.

    Without *hash_key* (``HASH_KEY``) the key is derived from *secret_key*. Keys derived
    from the fallbacks (and from *secret_key* once a ``HASH_KEY`` is set) keep verifying,
    so rotating either never strands a token: ``verify_and_update`` moves each hash to
    the current key on its next use. Pure: ``conf`` validates the key strings and passes
    Django's secret keys in.
    """
    retired = ([] if hash_key is None else [secret_key]) + list(secret_key_fallbacks)
    old_keys = tuple(key.encode() for key in old_hash_keys)
    old_keys += tuple(derive_hash_key(secret) for secret in retired if secret)
    if hash_key is None:
        return derive_hash_key(secret_key), old_keys
    return hash_key.encode(), old_keys


def _key_id(key: bytes) -> str:
    # A short public fingerprint that names the key without revealing it.
    return hashlib.sha256(b"tokens_app.key-id" + key).hexdigest()[:8]


class HMACSHA256Hasher(HasherProtocol):
    """pwdlib hasher: HMAC-SHA256 under a server-side key, with key rotation.

    The first key hashes; every key verifies. A hash made under an older key
    "needs rehash", so ``PasswordHash.verify_and_update`` moves it to the current key.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("HMACSHA256Hasher needs at least one key")
        self._current_key_id = _key_id(keys[0])
        self._keys = {_key_id(key): key for key in reversed(keys)}
        self._keys[self._current_key_id] = keys[0]

    @classmethod
    def identify(cls, hash: str | bytes) -> bool:
        try:
            return ensure_str(hash).startswith(_HMAC_PREFIX)
        except UnicodeDecodeError:
            return False

    def _digest(self, key: bytes, password: str | bytes) -> str:
        return hmac.new(key, ensure_bytes(password), hashlib.sha256).hexdigest()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        # No salt: the input is already unique and random, and a salt would
        # only lengthen the stored value.
        key_id = self._current_key_id
        return f"{_HMAC_PREFIX}k={key_id}${self._digest(self._keys[key_id], password)}"

    def _split(self, hash: str | bytes) -> tuple[str, str] | None:
        try:
            text = ensure_str(hash)
        except UnicodeDecodeError:
            return None
        head, _, rest = text.partition(_HMAC_PREFIX)
        key_part, _, digest = rest.partition("$")
        if head or not key_part.startswith("k=") or not digest:
            return None
        return key_part[2:], digest

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        parts = self._split(hash)
        if parts is None or parts[0] not in self._keys:
            return False
        key_id, digest = parts
        # Bytes, because compare_digest refuses non-ASCII str from a corrupt stored value.
        expected = self._digest(self._keys[key_id], password).encode()
        return hmac.compare_digest(expected, digest.encode())

    def check_needs_rehash(self, hash: str | bytes) -> bool:
        parts = self._split(hash)
        return parts is None or parts[0] != self._current_key_id


@cached_until_settings_change
def password_hash() -> PasswordHash:
    """Return the configured ``PasswordHash``: current hasher first, the other still verifying."""
    conf = token_settings()
    hmac_hasher = HMACSHA256Hasher([conf.hash_key, *conf.old_hash_keys])
    argon2_hasher = Argon2Hasher(**conf.argon2_options)  # type: ignore[arg-type]
    if conf.hasher == "argon2":
        return PasswordHash((argon2_hasher, hmac_hasher))
    return PasswordHash((hmac_hasher, argon2_hasher))


def hash_secret(secret: str) -> str:
    """Return the stored form of *secret* under the current hasher."""
    return password_hash().hash(secret)


def verify_secret(secret: str, stored: str) -> tuple[bool, str | None]:
    """Return ``(matches, new_hash_or_None)``; never raise on a corrupt stored value."""
    try:
        return password_hash().verify_and_update(secret, stored)
    except (PwdlibError, TypeError, ValueError):
        # A stored value no hasher recognises (or, in pwdlib 0.4, one its hasher cannot
        # decode: HashVerificationError) is a rejection, never an error page.
        return False, None


@cached_until_settings_change
def _dummy_hash() -> str:
    # Made by the current hasher under the current key (or Argon2 parameters), so it has
    # the shape of a freshly issued token's hash and verifying it is the same work. No
    # presented secret can match it: secrets are base62, this one holds "." and "-".
    return hash_secret("tokens_app.dummy-secret")


def burn_verification_time(secret: str) -> None:
    """Verify *secret* against a dummy hash so unknown key ids cost what wrong secrets cost.

    The same pwdlib path as a wrong secret for a known key id: ``verify_and_update``,
    the current hasher's ``identify`` and ``verify``, no rehash (a mismatch never has one).
    ``tests/tokens/test_timing_paths.py`` compares the two call by call.
    """
    verify_secret(secret, _dummy_hash())
