"""The token string: generate, parse and checksum. Pure Python, no Django.

A token reads ``<prefix>_<key id><secret><checksum>``; everything after the
underscore is base62. The key id is the token's public name (stored, shown,
used in URLs); the secret is never stored; the checksum (CRC32 of key id and
secret) lets :func:`parse` reject typos and garbage before any database query,
and lets secret scanners recognise a leaked token offline.
"""

import functools
import hmac
import re
import secrets
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: Length of the public key id: 62**12 ≈ 2**71, random, so ids are neither
#: sequential nor guessable, and collisions are vanishingly rare (and retried).
KEY_ID_LENGTH = 12
#: Length of the secret: 62**32 ≈ 2**190 bits of entropy from ``secrets``.
SECRET_LENGTH = 32
#: CRC32 fits in six base62 digits (62**6 > 2**32).
CHECKSUM_LENGTH = 6
BODY_LENGTH = KEY_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
#: Longest prefix accepted by the settings; bounds every valid token's length.
MAX_PREFIX_LENGTH = 16
MAX_TOKEN_LENGTH = MAX_PREFIX_LENGTH + 1 + BODY_LENGTH

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,15}$")
_BODY_PATTERN = re.compile(rf"^[0-9A-Za-z]{{{BODY_LENGTH}}}$")
_KEY_ID_PATTERN = re.compile(rf"^[0-9A-Za-z]{{{KEY_ID_LENGTH}}}$")


@dataclass(frozen=True)
class ParsedToken:
    """The two parts of a well-formed token; ``secret`` is kept out of ``repr``."""

    key_id: str
    secret: str = field(repr=False)


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def _encode_base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def checksum(key_id: str, secret: str) -> str:
    """Return the six-character base62 CRC32 of ``key_id + secret``."""
    return _encode_base62(zlib.crc32((key_id + secret).encode("ascii")), CHECKSUM_LENGTH)


def generate_key_id() -> str:
    """Return a fresh random key id."""
    return _random_base62(KEY_ID_LENGTH)


def generate_secret() -> str:
    """Return a fresh random secret (about 190 bits)."""
    return _random_base62(SECRET_LENGTH)


def assemble(prefix: str, key_id: str, secret: str) -> str:
    """Return the full token string for the given parts."""
    return f"{prefix}_{key_id}{secret}{checksum(key_id, secret)}"


def is_valid_key_id(value: str) -> bool:
    """Return whether *value* has the shape of a key id (no database involved)."""
    return isinstance(value, str) and bool(_KEY_ID_PATTERN.fullmatch(value))


def parse(value: str, prefix: str) -> ParsedToken | None:
    """Return the parts of *value* if it is a well-formed token for *prefix*, else ``None``.

    Length is checked first so an oversized header costs nothing; the checksum
    is compared in constant time out of habit, although it is not secret.
    """
    if not isinstance(value, str) or len(value) != len(prefix) + 1 + BODY_LENGTH:
        return None
    head, underscore, body = value.partition("_")
    if not underscore or head != prefix or not _BODY_PATTERN.fullmatch(body):
        return None
    key_id = body[:KEY_ID_LENGTH]
    secret = body[KEY_ID_LENGTH : KEY_ID_LENGTH + SECRET_LENGTH]
    given = body[KEY_ID_LENGTH + SECRET_LENGTH :]
    if not hmac.compare_digest(given, checksum(key_id, secret)):
        return None
    return ParsedToken(key_id=key_id, secret=secret)


# Where a token may start: not inside a longer run of base62 or ``_`` (another prefix
# that ends in ours, say ``mytka_``; the checksum does not cover the prefix, so only
# this boundary tells them apart). A percent-escape (``%3Dtka_``, a URL inside a URL)
# or a backslash escape (``\ntka_`` in a JSON or Python string literal) ends in a
# letter or digit but is punctuation in disguise, so a token may start right after one.
_START_BOUNDARY = (
    r"(?:(?<![0-9A-Za-z_])|(?<=%[0-9A-Fa-f]{2})|(?<=\\[nrt])"
    r"|(?<=\\x[0-9A-Fa-f]{2})|(?<=\\u[0-9A-Fa-f]{4}))"
)


@functools.lru_cache(maxsize=8)
def _token_pattern(prefix: str) -> re.Pattern[str]:
    # The body holds no ``_``, so only base62 after it would make it a longer token.
    return re.compile(
        rf"{_START_BOUNDARY}{re.escape(prefix)}_[0-9A-Za-z]{{{BODY_LENGTH}}}(?![0-9A-Za-z])"
    )


def find_tokens(text: str, prefix: str) -> Iterator[tuple[int, ParsedToken]]:
    """Yield ``(offset, parts)`` for every token for *prefix* that appears in *text*.

    For secret scanning: a candidate must have the exact shape (prefix, ``_``, 50
    base62 characters) standing on its own, and then a valid checksum. The checksum
    is what makes this safe to run over anything: a random look-alike passes it once
    in 62**6 (about 5.7e10) tries, so a finding is, in practice, a real token of this
    format, and no database is needed to say so. The secret is in the parts yielded;
    callers keep only the key id.
    """
    for match in _token_pattern(prefix).finditer(text):
        parsed = parse(match.group(), prefix)
        if parsed is not None:
            yield match.start(), parsed
