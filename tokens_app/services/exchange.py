"""The password exchange: a username and password traded for a new token (for CLIs)."""

from datetime import timedelta
from typing import Any

from django.http import HttpRequest

from tokens_app.services.caller import Caller, Via
from tokens_app.services.credentials import check_user_password, count_password_attempt
from tokens_app.services.issuing import IssuedToken, issue_token


def exchange_password(
    request: HttpRequest,
    username: str,
    password: str,
    *,
    ip: str | None,
    expires_in: timedelta | None = None,
    **token_fields: Any,
) -> IssuedToken | None:
    """Issue a token for the user *username* and *password* name, in the one safe order.

    The attempt is counted first (per client and per username; ``TooManyAttempts`` or
    ``RateLimiterUnavailable`` before any password is checked, so the right password
    past the limit is refused like a wrong one), then the password is checked (the
    hasher runs for unknown users too), and only then is the token issued, owned and
    created by that user (``ValidationError`` from ``issue_token``). Return ``None``
    when the username and password do not match: callers answer it like any failure.
    """
    count_password_attempt(request, username)
    user = check_user_password(request, username, password)
    if user is None:
        return None
    return issue_token(
        user,
        caller=Caller(user=user, ip=ip, via=Via.PASSWORD),
        expires_in=expires_in,
        **token_fields,
    )
