"""The admin login and password change under the password rate limit (tokens_app.login).

Issue 13, item 5: 30 wrong passwords for a staff user at ``/admin/login/``, then the right
one, logged in. Item 6(a): a flood of other usernames from a blocked client evicted its
counters from the local-memory cache, and it could guess again.
"""

import time
from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any

import django_ratelimit.core
import pytest
from django.conf import settings as django_settings
from django.contrib.admin import AdminSite
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import AnonymousUser
from django.core.cache import caches
from django.core.checks import run_checks
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import NoReverseMatch, reverse
from rest_framework.test import APIClient

from tests import live
from tests.helpers import exchange
from tokens_app.exceptions import RETRY_AFTER_SECONDS
from tokens_app.login import throttle_admin_site, throttled_login, throttled_password_change
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
PASSWORD_CHANGE = "/admin/password_change/"
ATTACKER, ELSEWHERE = "10.0.0.1", "10.9.9.9"
NEW_PASSWORD = "An0ther-long-passphrase"


@pytest.fixture(autouse=True)
def still_rate_windows(monkeypatch):
    """Hold django-ratelimit's clock still during each test.

    Its windows are fixed (15 minutes, each key's shifted by a hash of it): a window that
    ends mid-test is a counter expiring, not one lost, and would make a test flaky.
    """
    now = time.time()
    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: now))


def log_in(client: Client, username: str = "staff", password: str = "pw-staff", ip=ATTACKER):
    form = {"username": username, "password": password, "next": "/admin/"}
    return client.post(LOGIN, form, REMOTE_ADDR=ip)


def change_password(client: Client, old_password: str, ip: str = ATTACKER):
    form = {"old_password": old_password, "new_password1": NEW_PASSWORD}
    return client.post(PASSWORD_CHANGE, {**form, "new_password2": NEW_PASSWORD}, REMOTE_ADDR=ip)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def assert_refused_page(response: Any, status: int, *secrets: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    assert int(response["Retry-After"]) > 0
    assert "no-store" in response["Cache-Control"]
    body = response.content.decode()
    assert 'id="password-attempts-refused"' in body
    for secret in secrets:
        assert secret not in body


def dead_rate_limit_cache() -> override_settings:
    """Counters in a Redis nobody listens on: every count fails, as in an outage."""
    dead = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{live.free_port()}/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
    return override_settings(
        CACHES={**django_settings.CACHES, "dead": dead}, RATELIMIT_USE_CACHE="dead"
    )


# --- item 5: the attack, per address and per username ----------------------------------------


def test_thirty_wrong_passwords_then_the_right_one_is_429_and_no_session(staff):
    client = Client()
    statuses = [log_in(client, password=f"guess-{n}").status_code for n in range(30)]
    assert statuses == [200] * 5 + [429] * 25
    response = log_in(client)
    assert_refused_page(response, 429, "pw-staff")
    assert not logged_in(client)
    assert client.get("/admin/").status_code == 302  # back to the login page


def test_right_password_within_the_rate_logs_in(staff):
    client = Client()
    for number in range(4):
        assert log_in(client, password=f"guess-{number}").status_code == 200
    assert log_in(client).status_code == 302
    assert logged_in(client)


#: "staff" in mathematical bold letters: Django's login form folds it to "staff" (NFKC).
BOLD_STAFF = "\U0001d42c\U0001d42d\U0001d41a\U0001d41f\U0001d41f"


@pytest.mark.parametrize("spelling", ["staff", "STAFF", "  Staff ", BOLD_STAFF])
def test_limit_is_per_normalised_username_across_addresses(staff, spelling):
    for number in range(5):
        assert log_in(Client(), spelling, "guess", ip=f"10.0.1.{number}").status_code == 200
    client = Client()
    assert log_in(client, ip=ELSEWHERE).status_code == 429
    assert not logged_in(client)


def test_unicode_lookalike_username_logs_in_as_the_user(staff):
    # Why the counter folds NFKC: a look-alike spelling reaches the same account.
    client = Client()
    assert log_in(client, BOLD_STAFF).status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_limit_is_per_address_across_usernames(staff):
    for number in range(5):
        assert log_in(Client(), f"user{number}", "guess").status_code == 200
    assert log_in(Client()).status_code == 429
    other = Client()
    assert log_in(other, ip=ELSEWHERE).status_code == 302
    assert logged_in(other)


def test_login_and_password_exchange_share_one_budget(staff):
    for number in range(5):
        assert exchange(APIClient(), "staff", "guess", ip=f"10.0.2.{number}").status_code == 400
    assert log_in(Client(), ip=ELSEWHERE).status_code == 429
    for number in range(5):
        assert log_in(Client(), "alice", "guess", ip=f"10.0.3.{number}").status_code == 200
    assert exchange(APIClient(), "alice", "pw-alice", ip=ELSEWHERE).status_code == 429


def test_showing_the_login_page_is_not_an_attempt(staff):
    client = Client()
    for _ in range(10):
        assert client.get(LOGIN, REMOTE_ADDR=ATTACKER).status_code == 200
    assert log_in(client).status_code == 302


def test_refusal_page_names_neither_username_nor_password(staff):
    for number in range(5):
        log_in(Client(), "probe-user-name", f"probe-password-{number}")
    response = log_in(Client(), "probe-user-name", "probe-password-5")
    assert_refused_page(response, 429, "probe-user-name", "probe-password")
    assert int(response["Retry-After"]) <= 15 * 60
    assert "Too many password attempts" in response.content.decode()


# --- the counter is unavailable: fail closed ------------------------------------------------


def test_counter_unavailable_is_503_and_no_login(staff):
    client = Client()
    with dead_rate_limit_cache():
        response = log_in(client)
    assert_refused_page(response, 503, "pw-staff", "staff")
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert not logged_in(client)


def test_counter_unavailable_password_change_is_503_and_unchanged(staff):
    client = Client()
    client.force_login(staff)
    with dead_rate_limit_cache():
        assert_refused_page(change_password(client, "pw-staff"), 503, "pw-staff", NEW_PASSWORD)
    staff.refresh_from_db()
    assert staff.check_password("pw-staff")


def test_fail_open_policy_lets_the_login_through(staff):
    client = Client()
    with dead_rate_limit_cache(), override_settings(RATELIMIT_FAIL_OPEN=True):
        assert log_in(client).status_code == 302
    assert logged_in(client)


# --- the same hasher work for every answer ---------------------------------------------------


class CountingHasher(MD5PasswordHasher):
    """A real (fast) hasher that counts its work: each answer must cost one hash."""

    algorithm = "counting_md5_login"
    calls = 0

    def encode(self, password, salt):
        CountingHasher.calls += 1
        return super().encode(password, salt)


@pytest.mark.parametrize(
    ("username", "password", "status"),
    [
        ("staff", "wrong", 200),  # known user, wrong password
        ("nobody", "pw-staff", 200),  # unknown user
        ("inactive", "pw-inactive", 200),  # inactive staff, right password
        ("plain", "pw-plain", 200),  # not staff, right password
        ("staff", "pw-staff", 302),  # the right one
    ],
)
def test_every_admin_login_answer_costs_one_password_hash(
    settings, django_user_model, username, password, status
):
    settings.PASSWORD_HASHERS = ["tests.throttling.test_login_throttle.CountingHasher"]
    create = django_user_model.objects.create_user
    create("staff", password="pw-staff", is_staff=True)
    create("inactive", password="pw-inactive", is_staff=True, is_active=False)
    create("plain", password="pw-plain")
    CountingHasher.calls = 0
    assert log_in(Client(), username, password).status_code == status
    assert CountingHasher.calls == 1


def test_refused_attempts_check_no_password(settings, django_user_model):
    settings.PASSWORD_HASHERS = ["tests.throttling.test_login_throttle.CountingHasher"]
    django_user_model.objects.create_user("staff", password="pw-staff", is_staff=True)
    for number in range(5):
        log_in(Client(), password=f"guess-{number}")
    CountingHasher.calls = 0
    for _ in range(5):
        assert log_in(Client()).status_code == 429
    assert CountingHasher.calls == 0


# --- the password change: a stolen session cannot guess ---------------------------------------


def test_stolen_session_cannot_brute_force_the_password_change(staff):
    client = Client()
    client.force_login(staff)
    for number in range(5):
        assert change_password(client, f"guess-{number}").status_code == 200
    response = change_password(client, "pw-staff")
    assert_refused_page(response, 429, "pw-staff", NEW_PASSWORD)
    assert change_password(client, "pw-staff", ip=ELSEWHERE).status_code == 429  # per user
    staff.refresh_from_db()
    assert staff.check_password("pw-staff")


def test_password_change_within_the_rate_changes_it(staff):
    client = Client()
    client.force_login(staff)
    assert client.get(PASSWORD_CHANGE).status_code == 200
    assert change_password(client, "pw-staff").status_code == 302
    staff.refresh_from_db()
    assert staff.check_password(NEW_PASSWORD)


def test_wrong_logins_spend_the_password_change_budget(staff):
    for number in range(5):
        log_in(Client(), password=f"guess-{number}", ip=f"10.0.4.{number}")
    client = Client()
    client.force_login(staff)
    assert change_password(client, "pw-staff", ip=ELSEWHERE).status_code == 429


# --- item 6(a): a blocked client's flood keeps its counters -----------------------------------


def post_admin_login(username: str, password: str, ip: str) -> int:
    return log_in(Client(), username, password, ip=ip).status_code


def post_exchange(username: str, password: str, ip: str) -> int:
    return exchange(APIClient(), username, password, ip=ip).status_code


@pytest.fixture(params=["configured cache", "local memory, 300 entries, culling"])
def rate_limit_cache(request):
    """The project's rate-limit cache, and the culling one ``make run`` had in issue 13."""
    with ExitStack() as stack:
        if request.param != "configured cache":
            culling = {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "tokens-app-test-culling",
                "OPTIONS": {"MAX_ENTRIES": 300},
            }
            stack.enter_context(
                override_settings(
                    CACHES={**django_settings.CACHES, "culling": culling},
                    RATELIMIT_USE_CACHE="culling",
                )
            )
            caches["culling"].clear()
        yield


@pytest.mark.usefixtures("rate_limit_cache")
@pytest.mark.parametrize(
    ("attempt", "victim", "password", "accepted"),
    [
        (post_admin_login, "staff", "pw-staff", 302),
        (post_exchange, "alice", "pw-alice", 201),
    ],
    ids=["admin login", "password exchange"],
)
def test_flood_of_other_usernames_from_a_blocked_client_keeps_it_blocked(
    staff, alice, attempt, victim, password, accepted
):
    statuses = [attempt(victim, f"guess-{number}", ATTACKER) for number in range(6)]
    assert statuses[-1] == 429
    flood = {attempt(f"flood-{number}", "guess", ATTACKER) for number in range(320)}
    assert flood == {429}
    assert attempt(victim, password, ATTACKER) == 429
    # The per-username counter is what a flood evicted: from a fresh address it must hold too.
    assert attempt(victim, password, ELSEWHERE) == 429
    assert accepted not in {attempt(victim, password, f"10.0.5.{n}") for n in range(3)}
    assert not APIToken.objects.exists()


# --- wiring, and the checks that see it --------------------------------------------------------


def test_example_project_routes_no_password_view_without_the_limit():
    assert [m for m in run_checks() if m.id in {"tokens_app.W005", "tokens_app.W006"}] == []


def test_example_project_has_no_browsable_api_login():
    with pytest.raises(NoReverseMatch):
        reverse("rest_framework:login")
    assert Client().get("/api-auth/login/").status_code == 404


def test_password_views_routed_without_the_limit_are_w005_and_w006(settings):
    settings.ROOT_URLCONF = "tests.urls_unthrottled_login"
    found = sorted(
        (m.id, m.msg.split(" ")[0])
        for m in run_checks()
        if m.id in {"tokens_app.W005", "tokens_app.W006"}
    )
    assert found == [
        ("tokens_app.W005", "/bare/login/"),
        ("tokens_app.W005", "/bare/password_change/"),
        ("tokens_app.W006", "/accounts/login/"),
        ("tokens_app.W006", "/accounts/password_change/"),
        ("tokens_app.W006", "/api-auth/login/"),
    ]
    assert all(m.hint for m in run_checks() if m.id in {"tokens_app.W005", "tokens_app.W006"})


def test_wrapped_login_view_outside_the_admin_is_limited_with_a_plain_page(settings, staff):
    settings.ROOT_URLCONF = "tests.urls_unthrottled_login"
    form = {"username": "staff", "password": "guess"}
    for _ in range(5):
        assert Client().post("/counted/login/", form).status_code == 200
    response = Client().post("/counted/login/", {**form, "password": "pw-staff"})
    assert_refused_page(response, 429, "pw-staff", "staff")
    assert b"admin" not in response.content


def test_wrapped_views_hide_every_posted_value_from_error_reports():
    def report(request):
        return HttpResponse(str(request.sensitive_post_parameters))

    request = RequestFactory().post("/login/", {"username": "u", "password": "p"})
    request.user = AnonymousUser()
    assert throttled_login(report)(request).content == b"__ALL__"
    assert throttled_password_change(report)(request).content == b"__ALL__"


def test_throttling_a_site_twice_counts_each_attempt_once():
    site = throttle_admin_site(AdminSite(name="twice"))
    login, password_change = site.login, site.password_change
    throttle_admin_site(site)
    assert (site.login, site.password_change) == (login, password_change)
