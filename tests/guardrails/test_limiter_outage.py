"""The rate limiter's cache fails: rate-limited credentials get a 503, the others go on."""

import pytest

from tests.guardrails.helpers import (
    V4,
    call,
    dead_rate_limit_cache,
    set_tokens_setting,
    spend,
    status,
    unknown_token,
    wrong_secret,
)
from tests.helpers import NOTES, UNAVAILABLE, mint_jwt_from
from tokens_app.exceptions import RETRY_AFTER_SECONDS

pytestmark = pytest.mark.django_db


# --- the limiter's cache fails ----------------------------------------------------------


def test_rate_limit_cache_down_is_503_for_rate_limited_tokens(alice, issue, settings):
    issued = issue(alice, rate_limit="100/h")
    dead_rate_limit_cache(settings)
    response = call(issued.plaintext, path=NOTES)
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert b"Traceback" not in response.content
    assert b"redis" not in response.content.lower()


def test_rate_limit_cache_down_is_503_for_the_default_rate(alice, issue, settings):
    plaintext = issue(alice).plaintext
    set_tokens_setting(settings, DEFAULT_TOKEN_RATE="100/h")
    dead_rate_limit_cache(settings)
    assert status(plaintext) == 503


def test_rate_limit_cache_down_is_503_for_a_rate_limited_jwt(alice, issue, settings):
    jwt = mint_jwt_from(issue(alice, rate_limit="100/h").plaintext)
    dead_rate_limit_cache(settings)
    assert status(jwt) == 503


def test_rate_limit_cache_down_with_fail_open_lets_requests_through(alice, issue, settings):
    plaintext = issue(alice, rate_limit="1/h").plaintext
    jwt = mint_jwt_from(plaintext)
    dead_rate_limit_cache(settings)
    settings.RATELIMIT_FAIL_OPEN = True
    assert spend(plaintext, 3) == [200, 200, 200]
    assert status(jwt) == 200


def test_tokens_without_a_rate_never_touch_the_limiter_cache(alice, issue, settings):
    plaintext = issue(alice, allowed_ips=[V4]).plaintext
    jwt = mint_jwt_from(plaintext)
    dead_rate_limit_cache(settings)
    assert spend(plaintext, 3) == [200, 200, 200]
    assert status(jwt) == 200
    assert status(plaintext, "203.0.113.9") == 401


def test_bad_credentials_never_touch_the_limiter_cache(alice, issue, settings):
    plaintext = issue(alice, rate_limit="5/h").plaintext
    dead_rate_limit_cache(settings)
    assert status(wrong_secret(plaintext)) == 401
    assert status(unknown_token()) == 401
