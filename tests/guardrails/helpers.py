"""Helpers of the guardrails tests: the networks they use, requests from an address, forms.

Not collected (no ``test_`` prefix); the fixtures several modules share are in
``conftest.py`` next to this.
"""

import re
from io import StringIO
from typing import Any

from django.core.management import call_command
from rest_framework.test import APIClient

from tests.helpers import ADMIN_LIST, DEAD_REDIS, HOME, WHOAMI, bearer
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent

V4, V6 = "10.0.0.0/8", "2001:db8::/32"
BOTH = [V4, V6]
INSIDE = ["10.0.0.1", "10.255.255.254", "2001:db8::1", "2001:db8:ffff:1::5"]
OUTSIDE = ["11.0.0.1", "9.255.255.255", "192.168.1.1", "127.0.0.1", "2001:db9::1", "::1"]


def call(plaintext: str, ip: str = HOME, path: str = WHOAMI, **extra: Any) -> Any:
    """One request with *plaintext* from *ip*, on a fresh client (no session, no cookies)."""
    return APIClient().get(path, REMOTE_ADDR=ip, **bearer(plaintext), **extra)


def status(plaintext: str, ip: str = HOME, **extra: Any) -> int:
    return call(plaintext, ip, **extra).status_code


def unknown_token() -> str:
    return tokenstring.assemble("tka", tokenstring.generate_key_id(), tokenstring.generate_secret())


def wrong_secret(plaintext: str) -> str:
    parsed = tokenstring.parse(plaintext, "tka")
    assert parsed is not None
    secret = ("A" if parsed.secret[0] != "A" else "B") + parsed.secret[1:]
    return tokenstring.assemble("tka", parsed.key_id, secret)


def snapshot(token: APIToken) -> tuple[Any, ...]:
    row = APIToken.objects.get(pk=token.pk)
    events = TokenEvent.objects.filter(token=token).count()
    return row.name, row.allowed_ips, row.rate_limit, row.scopes, events


def session(user: Any) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def admin_change_url(token: APIToken) -> str:
    return f"{ADMIN_LIST}{token.pk}/change/"


def admin_issued_plaintext(response: Any) -> str:
    match = re.search(r'id="issued-token" value="([^"]+)"', response.content.decode())
    assert match, "no #issued-token on the page"
    return match.group(1)


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("issue_token", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def set_tokens_setting(settings: Any, **values: Any) -> None:
    settings.API_TOKENS = {**settings.API_TOKENS, **values}


def dead_rate_limit_cache(settings: Any) -> None:
    """Point the rate limiter (only) at a Redis that is not there."""
    settings.CACHES = {**settings.CACHES, "counters": DEAD_REDIS}
    settings.RATELIMIT_USE_CACHE = "counters"


def spend(plaintext: str, times: int, ip: str = HOME) -> list[int]:
    return [status(plaintext, ip) for _ in range(times)]
