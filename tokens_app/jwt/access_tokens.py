"""Short-lived JWT access tokens (RFC 9068) minted from an API token, verified without SQL.

Minting needs an authenticated API token; the JWT carries the token's key id
(``client_id``), a subset of its scopes, and an expiry that never passes the token's.
Verification pins the algorithm from settings (never from the token), picks the key by
``kid``, checks ``typ``, ``iss``, ``aud``, ``exp``/``nbf`` with a small leeway and every
required claim, then asks the deny list whether the JWT itself or its parent token was
revoked.

The keys that sign and verify are ``signing_keys``'s.
"""

import base64
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from tokens_app.conf import cached_until_settings_change, token_settings
from tokens_app.core import clock, limits, tokenstring
from tokens_app.core.address import readable_networks
from tokens_app.core.limits import Budget
from tokens_app.core.rates import parse_rate
from tokens_app.jwt import denylist, signing_keys

TYPE = "at+jwt"
ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id")
#: The version of the API token's secret that minted the JWT (rotation retires them).
SECRET_VERSION_CLAIM = "secret_version"  # noqa: S105 — a claim name
#: ``[[key id, rate], ...]``: the budgets of the token's ancestors, which it shares.
SHARED_BUDGETS_CLAIM = "shared_rate_limits"
MAX_LENGTH = 8192


class InvalidJWT(Exception):  # noqa: N818 — reads better at the raise sites
    """The JWT is not acceptable; ``reason`` is for the server log only."""

    def __init__(self, reason: str, key_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id


# --- signing ------------------------------------------------------------------------------


def sign(claims: Mapping[str, Any]) -> str:
    """Encode and sign *claims* with the current signing key (``typ`` and ``kid`` set).

    What goes into the claims is ``services.jwts``'s to decide; this only signs them.
    """
    ring = signing_keys.keyring()
    headers = {"typ": TYPE, "kid": ring.signing_kid}
    return jwt.encode(dict(claims), ring.signing_key, algorithm=ring.algorithm, headers=headers)


# --- verifying ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JWTClaims:
    """A verified JWT, with the same scope interface as an ``APIToken`` (for ``HasScope``)."""

    claims: Mapping[str, Any]

    @property
    def key_id(self) -> str:
        return str(self.claims["client_id"])

    @property
    def scopes(self) -> list[str]:
        return sorted(set(str(self.claims["scope"]).split()))

    @property
    def effective_scopes(self) -> frozenset[str]:
        # Fixed at minting (a subset of what the token could do then); lives minutes.
        return frozenset(self.scopes)

    def has_scope(self, name: str) -> bool:
        return name in self.effective_scopes

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(int(self.claims["exp"]), tz=UTC)

    @property
    def allowed_ips(self) -> list[str]:
        """The parent token's IP allow-list at minting (``[]``: anywhere)."""
        return list(self.claims.get("allowed_ips", []))

    @property
    def rate_limit(self) -> str | None:
        """The parent token's rate at minting; its JWTs share the token's budget."""
        value = self.claims.get("rate_limit")
        return value if isinstance(value, str) and value else None

    @property
    def budgets(self) -> list[Budget]:
        """Every budget a request with this JWT counts against: its token's and its ancestors'."""
        own = [(self.key_id, self.rate_limit)] if self.rate_limit else []
        shared = [(str(k), str(r)) for k, r in self.claims.get(SHARED_BUDGETS_CLAIM, [])]
        return own + shared

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def owner_pk(self) -> Any:
        """The owner's primary key, as the user model's field reads it (checked by ``verify``)."""
        return _user_pk(self.claims["sub"])


def looks_like_jwt(value: str) -> bool:
    """Cheap shape test: three base64url segments. API tokens never contain a dot."""
    return value.count(".") == 2 and value.startswith("eyJ") and len(value) <= MAX_LENGTH


def _unverified_header(raw: str) -> dict[str, Any]:
    # Only to pick the key and refuse early; jwt.decode checks everything again. Parsed
    # here because PyJWT's get_unverified_header decodes the whole token to read it.
    segment = raw.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError):
        raise InvalidJWT("malformed header") from None
    if not isinstance(header, dict):
        raise InvalidJWT("malformed header")
    return header


def _user_pk(subject: Any) -> Any:
    if not isinstance(subject, str):
        raise ValidationError("sub")
    return get_user_model()._meta.pk.to_python(subject)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _check_times(claims: Mapping[str, Any], now: float) -> None:
    """Check ``exp``, ``nbf`` and ``iat`` on our clock (the tests' seam), with the leeway.

    A JWT claiming to live longer than ``JWT_LIFETIME`` was not minted here under the
    current settings: it is refused however far ahead its ``exp`` lies.
    """
    conf = token_settings().jwt
    exp, nbf, iat = claims["exp"], claims["nbf"], claims["iat"]
    if not (_is_int(exp) and _is_int(nbf) and _is_int(iat)):
        raise InvalidJWT("malformed time claims")
    leeway = conf.leeway_seconds
    if now >= exp + leeway:
        raise InvalidJWT("ExpiredSignatureError")
    if nbf > now + leeway or iat > now + leeway:
        raise InvalidJWT("ImmatureSignatureError")
    if exp - iat > conf.lifetime.total_seconds() + leeway:
        raise InvalidJWT("lifetime longer than JWT_LIFETIME")


def _well_formed_budgets(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= limits.MAX_LINEAGE_DEPTH + 1
        and all(
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and tokenstring.is_valid_key_id(entry[0])
            and parse_rate(entry[1]) is not None
            for entry in value
        )
    )


def _check_claims(claims: Mapping[str, Any]) -> None:
    """Refuse a signed JWT whose claims this server would never have written.

    Only our own keys sign what reaches here, but a malformed claim must still be a
    401, never a 500 or a 503 (a ``0/s`` rate would break the limiter).
    """
    client_id = claims.get("client_id")
    if not isinstance(client_id, str) or not tokenstring.is_valid_key_id(client_id):
        raise InvalidJWT("malformed client_id")
    if not isinstance(claims.get("scope"), str) or not isinstance(claims.get("jti"), str):
        raise InvalidJWT("malformed claims", client_id)
    if not isinstance(claims.get("username", ""), str):
        raise InvalidJWT("malformed username", client_id)
    try:
        _user_pk(claims.get("sub"))
    except (ValidationError, TypeError, ValueError):
        raise InvalidJWT("malformed sub", client_id) from None
    version = claims.get(SECRET_VERSION_CLAIM, 0)
    if not _is_int(version) or version < 0:
        raise InvalidJWT("malformed secret_version", client_id)
    if "allowed_ips" in claims and not readable_networks(claims["allowed_ips"]):
        raise InvalidJWT("malformed allowed_ips", client_id)
    if "rate_limit" in claims and parse_rate(claims["rate_limit"]) is None:
        raise InvalidJWT("malformed rate_limit", client_id)
    if SHARED_BUDGETS_CLAIM in claims and not _well_formed_budgets(claims[SHARED_BUDGETS_CLAIM]):
        raise InvalidJWT("malformed shared_rate_limits", client_id)


def verify(raw: str, *, any_audience: bool = False) -> JWTClaims:
    """Return the claims of the acceptable JWT *raw*; raise ``InvalidJWT`` otherwise.

    The audience must be this API's (the first of ``JWT_AUDIENCES``): the others are for
    services that verify JWTs themselves. Introspection, which answers for those
    services, accepts any of them (*any_audience*). Raise
    ``denylist.DenyListUnavailable`` when revocations cannot be checked.

    With ``TOKEN_CACHE`` on, a JWT whose signature and claims were verified once in this
    process is remembered by its exact string (:class:`VerifiedJWTs`): then only its times
    and the deny list are checked again, which is all that can change for it.
    """
    if not looks_like_jwt(raw):
        raise InvalidJWT("malformed")
    memo = verified_jwts()
    claims = memo.get(raw, any_audience) if memo is not None else None
    if claims is None:
        claims = _verified_claims(raw, any_audience)
        if memo is not None:
            memo.put(raw, any_audience, claims)
    else:
        _check_times(claims, clock.now().timestamp())
    refused = denylist.refusal(
        claims["client_id"],
        _user_pk(claims["sub"]),
        claims["iat"],
        claims.get(SECRET_VERSION_CLAIM, 0),
        claims["jti"],
    )
    if refused:
        raise InvalidJWT(refused, claims["client_id"])
    return JWTClaims(dict(claims))


def _verified_claims(raw: str, any_audience: bool) -> dict[str, Any]:
    """The claims of *raw* once its signature, header, times and claims have been checked."""
    conf = token_settings().jwt
    ring = signing_keys.keyring()
    header = _unverified_header(raw)
    if header.get("alg") != ring.algorithm:
        raise InvalidJWT("algorithm not allowed")
    if str(header.get("typ", "")).lower() not in ACCEPTED_TYPES:
        raise InvalidJWT("wrong typ")
    entry = ring.verification.get(str(header.get("kid", "")))
    if entry is None:
        raise InvalidJWT("unknown kid")
    try:
        claims: dict[str, Any] = jwt.decode(
            raw,
            entry.key,
            algorithms=[ring.algorithm],
            audience=list(conf.audiences) if any_audience else conf.audiences[0],
            issuer=conf.issuer,
            # Times are checked below against tokens_app's clock, with the same leeway.
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as error:
        raise InvalidJWT(type(error).__name__) from None
    _check_times(claims, clock.now().timestamp())
    _check_claims(claims)
    return claims


class VerifiedJWTs:
    """The JWTs this process verified, by exact string: a bounded, least-recently-used map.

    Safe to keep: a JWT's signature binds every claim, and the keys that verify it change
    only with the settings (which replace this map). Times and the deny list are checked
    on every use. Only JWTs that verified are kept, so strings an attacker makes up never
    enter; what a flood of valid ones can cost is ``TOKEN_CACHE_SIZE`` entries.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, bool], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, raw: str, any_audience: bool) -> dict[str, Any] | None:
        with self._lock:
            claims = self._entries.get((raw, any_audience))
            if claims is not None:
                self._entries.move_to_end((raw, any_audience))
            return claims

    def put(self, raw: str, any_audience: bool, claims: dict[str, Any]) -> None:
        with self._lock:
            self._entries[(raw, any_audience)] = dict(claims)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


@cached_until_settings_change
def _verified_jwts(size: int) -> VerifiedJWTs:
    return VerifiedJWTs(size)


def verified_jwts() -> VerifiedJWTs | None:
    """This process's verified JWTs while ``TOKEN_CACHE`` is on, else ``None``."""
    conf = token_settings()
    return _verified_jwts(conf.token_cache_size) if conf.token_cache is not None else None
