"""``POST /api/auth/token/``: password for a token, one answer for every failure, rate-limited."""

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.core.cache import cache

from tests.helpers import EXCHANGE, bearer, exchange
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db

INVALID = {"detail": "Invalid username or password."}


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    # Counters live in the cache; each test starts with none (the limiter itself stays on).
    cache.clear()
    yield
    cache.clear()


def test_right_password_gets_a_token_once(api, alice):
    response = exchange(api)
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    token = response.json()["token"]
    assert api.get("/api/whoami/", **bearer(token)).json()["username"] == "alice"
    assert APIToken.objects.get().created_by == alice


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("nobody", "pw-alice"), ("inactive", "pw-inactive")],
)
def test_every_credential_failure_is_one_identical_answer(
    api, alice, django_user_model, username, password
):
    django_user_model.objects.create_user("inactive", password="pw-inactive", is_active=False)
    response = exchange(api, username=username, password=password)
    assert response.status_code == 400
    assert response.json() == INVALID
    assert not APIToken.objects.exists()


def test_sixth_attempt_is_429_even_with_the_right_password(api, alice):
    for _ in range(5):
        assert exchange(api, password="wrong").status_code == 400
    response = exchange(api)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "detail" in response.json()
    assert not APIToken.objects.exists()


def test_limit_is_per_username_across_addresses(api, alice):
    for number in range(5):
        body = {"username": "ALICE ", "password": "x", "name": "n", "scopes": ["notes:read"]}
        api.post(EXCHANGE, body, format="json", REMOTE_ADDR=f"10.0.1.{number}")
    assert exchange(api).status_code == 429


def test_limit_is_per_address_across_usernames(api, alice):
    for number in range(5):
        assert exchange(api, username=f"user{number}").status_code == 400
    assert exchange(api).status_code == 429


def test_rate_is_configurable(api, alice, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "PASSWORD_EXCHANGE_RATE": "2/h"}
    exchange(api, password="wrong")
    exchange(api, password="wrong")
    assert exchange(api).status_code == 429


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scopes": ["audit:read"]}, "scopes"),
        ({"expires_in_days": 400}, "expires_at"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_token_fields_are_400_and_write_nothing(api, alice, fields, field):
    response = exchange(api, **fields)
    assert response.status_code == 400
    assert field in response.json()
    assert not APIToken.objects.exists()


def test_password_is_never_logged(api, alice, caplog):
    exchange(api, password="s3cret-not-logged")
    for _ in range(6):
        exchange(api, password="s3cret-not-logged")
    assert "s3cret-not-logged" not in caplog.text


class CountingHasher(MD5PasswordHasher):
    """A real (fast) hasher that counts its work, to show every failure path pays for a hash."""

    algorithm = "counting_md5"
    calls = 0

    def encode(self, password, salt):
        CountingHasher.calls += 1
        return super().encode(password, salt)


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("nobody", "pw-alice"), ("inactive", "pw-inactive")],
)
def test_the_password_hasher_runs_for_every_failure(
    api, settings, django_user_model, username, password
):
    settings.PASSWORD_HASHERS = ["tests.authentication.test_password_exchange.CountingHasher"]
    django_user_model.objects.create_user("alice", password="pw-alice")
    django_user_model.objects.create_user("inactive", password="pw-inactive", is_active=False)
    CountingHasher.calls = 0
    assert exchange(api, username=username, password=password).status_code == 400
    assert CountingHasher.calls >= 1
