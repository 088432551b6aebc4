"""Checking credentials: API tokens on every request, passwords on the exchange endpoint."""

import logging
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth import authenticate as django_authenticate
from django.db.models import Q
from django.http import HttpRequest
from django_ratelimit.core import get_usage

from tokens_app.conf import token_settings
from tokens_app.core import clock, hashing, limits, tokenstring
from tokens_app.core.address import client_ip, client_network, ip_allowed
from tokens_app.lookup import find_current_token, find_token_with_owner, forget_token
from tokens_app.models import APIToken, TokenStatus

logger = logging.getLogger("tokens_app")


class InvalidToken(Exception):  # noqa: N818 — reads better at the raise sites
    """Authentication failed. ``reason`` is for the server log only, never for the client."""

    def __init__(self, reason: str, key_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id


def _touch_last_used(token: APIToken, now: datetime, ip: str | None) -> None:
    interval = token_settings().last_used_interval
    if token.last_used_at is not None and now - token.last_used_at < interval:
        return
    # Conditional, so concurrent requests write at most once per interval.
    APIToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - interval)
    ).update(last_used_at=now, last_used_ip=ip)
    token.last_used_at, token.last_used_ip = now, ip
    forget_token(token.key_id)  # a cached row would ask for the stamp again on every request


def _in_rotation_grace(token: APIToken, now: datetime) -> bool:
    until = token.previous_secret_valid_until
    return bool(token.previous_secret_hash) and until is not None and now < until


def _verify(token: APIToken, secret: str, now: datetime) -> tuple[bool, str | None]:
    """Whether *secret* is *token*'s (current, or previous in a grace); the upgraded hash."""
    matches, upgraded = hashing.verify_secret(secret, token.secret_hash)
    if not matches:
        # A second verification after every mismatch (the dummy hash outside a grace), so a
        # wrong secret costs the same in a grace or not, and as much as an unknown key id.
        if _in_rotation_grace(token, now):
            matches, upgraded = hashing.verify_secret(secret, token.previous_secret_hash)
            upgraded = None  # the previous hash is retired, never upgraded
            if matches:  # what this credential may still do: services.authority (GRACE)
                token.presented_grace_until = token.previous_secret_valid_until
        else:
            hashing.burn_verification_time(secret)
    return matches, upgraded


_SECRET_FIELDS = ("secret_hash", "previous_secret_hash", "previous_secret_valid_until")


def _verify_current(
    cached: APIToken, secret: str, now: datetime
) -> tuple[APIToken, bool, str | None]:
    """After a mismatch against a cached row: the database's row, and the verdict on it.

    A wrong secret reads the database as it does without the cache (so a probe of a key
    id in use costs what a probe of an unknown one does) and gets the same verdict unless
    the row's secrets changed meanwhile: only then is it verified again.
    """
    current = find_current_token(cached.key_id)
    if current is None:
        raise InvalidToken("unknown key id", cached.key_id)
    if all(getattr(current, name) == getattr(cached, name) for name in _SECRET_FIELDS):
        return current, False, None
    return (current, *_verify(current, secret, now))


def authenticate_token(
    raw: str, *, ip: str | None = None, touch: bool = True, check_address: bool = True
) -> APIToken:
    """Return the usable token named by the credential *raw*, or raise ``InvalidToken``.

    Malformed input fails before any query; a well-formed one costs one query
    (token joined with owner). Unknown ids run a dummy verification so they
    cost what a wrong secret costs. A token with an IP allow-list works only
    from *ip* within it (the same failure as any other); only introspection, which
    answers for another server and reports the list, passes ``check_address=False``.
    Besides the rare hash upgrade, the only write is the ``last_used`` stamp, at most
    once per configured interval.
    """
    parsed = tokenstring.parse(raw, token_settings().prefix)
    if parsed is None:
        raise InvalidToken("malformed")
    # One prepared query, no ORM query building (tokens_app.lookup says why).
    token = find_token_with_owner(parsed.key_id)
    if token is None:
        # The lookup read and built a row even so (tokens_app.lookup); here, the rest of
        # a wrong secret's work: the clock read and two verifications by the same hasher.
        clock.now()
        hashing.burn_verification_time(parsed.secret)
        hashing.burn_verification_time(parsed.secret)
        raise InvalidToken("unknown key id", parsed.key_id)
    now = clock.now()
    matches, upgraded = _verify(token, parsed.secret, now)
    if not matches and token.from_token_cache:
        token, matches, upgraded = _verify_current(token, parsed.secret, now)
    if not matches:
        raise InvalidToken("wrong secret", token.key_id)
    status = token.status(now)
    if status is not TokenStatus.ACTIVE:
        raise InvalidToken(status.value, token.key_id)
    if check_address and not ip_allowed(ip, token.allowed_ips):
        raise InvalidToken("address not allowed", token.key_id)
    if upgraded:
        APIToken.objects.filter(pk=token.pk, secret_hash=token.secret_hash).update(
            secret_hash=upgraded
        )
        token.secret_hash = upgraded
        forget_token(token.key_id)
    if touch:  # introspection looks at a token without using it
        _touch_last_used(token, now, ip)
    return token


def authenticate_client(client_id: str, client_secret: str, *, ip: str | None) -> APIToken:
    """Return the API token that authenticates as an OAuth client, or raise ``InvalidToken``.

    RFC 6749 client authentication (``client_secret_basic``, ``client_secret_post``) for
    the introspection and revocation endpoints: the client is an API token, its
    ``client_id`` the token's key id and its ``client_secret`` the whole token string.
    The secret is checked exactly as a Bearer token is (:func:`authenticate_token`: the
    same cost, IP allow-list and ``last_used`` stamp); only then is *client_id* compared,
    so a key id, which is public, proves nothing alone and a mismatch costs what a wrong
    secret costs.
    """
    token = authenticate_token(client_secret, ip=ip)
    if client_id != token.key_id:
        raise InvalidToken("client_id is not the key id of the client_secret", token.key_id)
    return token


# --- password exchange ------------------------------------------------------------------

PASSWORD_RATE_GROUP = "tokens_app.password-exchange"  # noqa: S105 — a cache key prefix


class TooManyAttempts(Exception):  # noqa: N818 — reads better at the raise sites
    """Attempts (passwords, or one token's requests) over their rate; ``retry_after`` in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class RateLimiterUnavailable(Exception):  # noqa: N818 — reads better at the raise sites
    """The rate-limit cache could not count, and the policy is to fail closed."""


def _normalised_username(username: str) -> str:
    # NFKC as Django's login form applies it (there "staff" in mathematical bold letters
    # logs in as "staff"), then caseless: every spelling that can reach one account
    # spends that account's budget.
    folded = unicodedata.normalize("NFKC", username).casefold()
    return unicodedata.normalize("NFKC", folded).strip()


def _usage(request: HttpRequest, group: str, key: Any, rate: str) -> dict[str, Any] | None:
    """Count one hit in *group*; return django-ratelimit's usage, ``None`` if not counted.

    A cache that cannot count (unreachable Redis, or django-ratelimit's own
    "count failed" answer) is a fault, not a verdict on the client: with the
    default policy it raises ``RateLimiterUnavailable`` (a 503), never a 429 and
    never a pass; ``RATELIMIT_FAIL_OPEN = True`` lets the attempt through instead.
    """
    fail_open = token_settings().rate_limit_fail_open
    try:
        usage: dict[str, Any] | None = get_usage(
            request, group=group, key=key, rate=rate, increment=True
        )
    except Exception as exc:  # the cache client's errors vary by backend
        logger.error("Rate-limit cache unavailable (%s)", type(exc).__name__, exc_info=exc)
        usage = None if fail_open else {"count": 0, "limit": 0, "should_limit": True}
    if usage is not None and usage["limit"] == 0 and not fail_open:
        raise RateLimiterUnavailable
    return usage


def count_password_attempt(request: HttpRequest, username: str) -> None:
    """Count one password attempt per client IP and per username; raise when over the rate.

    Every attempt counts, right password or not, so guessing cannot be told
    apart from use. Over the rate raises ``TooManyAttempts``; a cache that
    cannot count raises ``RateLimiterUnavailable`` (fail closed, see ``_usage``).
    Callers: the password exchange and ``tokens_app.login`` (admin login and
    password change), so all of them spend one budget.

    The address is counted first, and an address over its rate counts nothing
    else: a blocked client's flood of new usernames creates no new counters, so
    it cannot push the counters that block it (its own, its victim's) out of a
    cache that evicts when full (issue 13, item 6).
    """
    rate = token_settings().password_exchange_rate
    counters = (
        ("ip", _client_key),
        ("user", lambda group, req: _normalised_username(username)),
    )
    for name, key in counters:
        usage = _usage(request, f"{PASSWORD_RATE_GROUP}.{name}", key, rate)
        if usage is not None and usage["should_limit"]:
            logger.warning("Password exchange rate exceeded (ip %s)", client_ip(request) or "-")
            raise TooManyAttempts(max(int(usage["time_left"]), 1))


def check_user_password(request: HttpRequest, username: str, password: str) -> Any:
    """Return the active user with these credentials, or ``None``.

    Django's backends run the password hasher for unknown and inactive users
    too, so the answer time does not tell who exists.
    """
    user = django_authenticate(request, username=username, password=password)
    return user if user is not None and getattr(user, "is_active", False) else None


# --- revocation endpoint ----------------------------------------------------------------

REVOCATION_RATE_GROUP = "tokens_app.revocation"


def count_revocation_attempt(request: HttpRequest) -> None:
    """Count one request to the RFC 7009 revocation endpoint per client IP; raise when over.

    Every request counts, before its body is read or its client authenticated: the
    endpoint is public, answers the same whether a token existed or not, and each
    request costs a secret verification, so a flood is refused before any of that.
    Over ``REVOCATION_RATE`` raises ``TooManyAttempts``; a cache that cannot count
    raises ``RateLimiterUnavailable`` (fail closed, see ``_usage``).
    """
    rate = token_settings().revocation_rate
    usage = _usage(request, REVOCATION_RATE_GROUP, _client_key, rate)
    if usage is not None and usage["should_limit"]:
        logger.warning("Revocation rate exceeded (ip %s)", client_ip(request) or "-")
        raise TooManyAttempts(max(int(usage["time_left"]), 1))


# --- per-token rate limit ---------------------------------------------------------------

TOKEN_RATE_GROUP = "tokens_app.token"  # noqa: S105 — a cache key prefix


def token_rate(token: APIToken) -> str | None:
    """The rate *token* is held to: its own, else ``DEFAULT_TOKEN_RATE`` (``None``: none)."""
    return token.rate_limit or token_settings().default_token_rate


Budget = limits.Budget  # one rate budget: the key id it is counted under, and its rate


def token_budgets(token: APIToken) -> list[Budget]:
    """Every budget a request of *token* counts against: its own and each ancestor's.

    A token created by a token shares that token's budget (and so on up to the root),
    so a family of tokens never goes faster than its root allows. Tokens without a rate
    (and no ``DEFAULT_TOKEN_RATE``) add none: the common case costs nothing.
    """
    default = token_settings().default_token_rate
    own = token.rate_limit or default
    found = [(token.key_id, own)] if own else []
    for key_id, rate in token.ancestry:
        if rate or default:
            found.append((str(key_id), str(rate or default)))
    return found


def count_token_requests(request: HttpRequest, budgets: Sequence[Budget]) -> None:
    """Count one authenticated request against each of *budgets*; raise when one is spent.

    Keyed by key id, so every process, and the tokens' JWTs, share one budget. Only
    requests that authenticated count: a wrong secret cannot spend a token's budget.
    No budget, no cost. A cache that cannot count raises ``RateLimiterUnavailable``.
    Every budget is counted even when an earlier one is spent, so a family's requests
    are all charged to its root.
    """
    waits = []
    for key_id, rate in budgets:
        usage = _usage(request, TOKEN_RATE_GROUP, _constant_key(key_id), rate)
        if usage is not None and usage["should_limit"]:
            logger.warning("Token rate limit %s exceeded (key id %s)", rate, key_id)
            waits.append(max(int(usage["time_left"]), 1))
    if waits:
        raise TooManyAttempts(max(waits))


def _client_key(group: str, request: HttpRequest) -> str:
    # The client's address, or its /64 for IPv6 (one holder, one budget).
    return client_network(request)


def _constant_key(value: str) -> Any:
    return lambda group, request: value
