"""Per-token rate limits: enforced for real, bounded by the default, shared with its JWTs.

Real requests, real database, real rate-limit cache (local memory, or Redis in the
production profile); neither the limiter nor the checksum is bypassed.
"""

import logging
from types import SimpleNamespace

import django_ratelimit.core
import pytest
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from tests.guardrails.helpers import (
    V4,
    admin_change_url,
    admin_issued_plaintext,
    call,
    run_command,
    session,
    set_tokens_setting,
    snapshot,
    spend,
    status,
    wrong_secret,
)
from tests.helpers import (
    ADMIN_ADD,
    NOTES,
    T0,
    TOKENS,
    FakeClock,
    admin_client,
    change_data,
    counts,
    detail_url,
    exchange,
    form_errors,
    issue_data,
    mint_from,
    mint_jwt_from,
)
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db


# --- 2. per-token rate limit --------------------------------------------------------------
# Rates are per hour, so a window boundary during a test is (almost) impossible.


def test_rate_is_enforced_for_real_with_retry_after(alice, issue):
    plaintext = issue(alice, rate_limit="3/h").plaintext
    assert spend(plaintext, 3) == [200, 200, 200]
    refused = call(plaintext, path=NOTES)
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert "detail" in refused.json()
    assert spend(plaintext, 2) == [429, 429]


def test_rate_per_minute(alice, issue):
    plaintext = issue(alice, rate_limit="3/m").plaintext
    statuses = spend(plaintext, 4)
    if statuses != [200, 200, 200, 429]:  # only if a minute boundary fell in between
        statuses = spend(plaintext, 4)
    assert statuses[-1] == 429
    assert 0 < int(call(plaintext)["Retry-After"]) <= 60


def test_rate_limit_warning_names_the_key_id_not_the_secret(alice, issue, caplog):
    caplog.set_level(logging.INFO, logger="tokens_app")
    issued = issue(alice, rate_limit="1/h")
    spend(issued.plaintext, 2)
    assert any(
        issued.token.key_id in r.getMessage() and "1/h" in r.getMessage() for r in caplog.records
    )
    assert issued.plaintext not in caplog.text


def test_tokens_have_separate_budgets(alice, bob, issue):
    first = issue(alice, rate_limit="2/h").plaintext
    second = issue(alice, rate_limit="2/h").plaintext
    theirs = issue(bob, rate_limit="2/h").plaintext
    assert spend(first, 3) == [200, 200, 429]
    assert spend(second, 3) == [200, 200, 429]
    assert spend(theirs, 2) == [200, 200]


def test_budget_is_per_token_not_per_address(alice, issue):
    plaintext = issue(alice, rate_limit="2/h").plaintext
    assert [status(plaintext, ip) for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3")] == [
        200,
        200,
        429,
    ]


def test_bad_secrets_do_not_spend_the_budget(alice, issue):
    plaintext = issue(alice, rate_limit="3/h").plaintext
    forged = wrong_secret(plaintext)
    assert spend(forged, 10) == [401] * 10
    assert spend(plaintext, 4) == [200, 200, 200, 429]


def test_refused_addresses_do_not_spend_the_budget(alice, issue):
    plaintext = issue(alice, allowed_ips=[V4], rate_limit="2/h").plaintext
    assert spend(plaintext, 5, ip="203.0.113.9") == [401] * 5
    assert spend(plaintext, 3) == [200, 200, 429]


def test_over_the_rate_is_429_even_from_an_allowed_address_and_401_from_outside(alice, issue):
    plaintext = issue(alice, allowed_ips=[V4], rate_limit="1/h").plaintext
    assert spend(plaintext, 2) == [200, 429]
    assert status(plaintext, "203.0.113.9") == 401  # the address check comes first


def test_default_token_rate_applies_to_tokens_without_their_own(alice, issue, settings):
    older = issue(alice).plaintext  # issued before the default existed: read per request
    set_tokens_setting(settings, DEFAULT_TOKEN_RATE="2/h")
    issued = issue(alice)
    assert issued.token.rate_limit == ""
    assert spend(issued.plaintext, 3) == [200, 200, 429]
    assert spend(older, 3) == [200, 200, 429]
    own = issue(alice, rate_limit="1/h").plaintext  # its own rate wins over the default
    assert spend(own, 2) == [200, 429]
    looser = issue(alice, rate_limit="5/h").plaintext  # set by code: any rate
    assert spend(looser, 6) == [200] * 5 + [429]


def test_token_without_rate_is_unlimited_without_default(alice, issue):
    plaintext = issue(alice).plaintext
    assert set(spend(plaintext, 30)) == {200}


@pytest.mark.parametrize("looser", ["3/m", "1/s", "200/h", "10000/d"])
def test_owner_cannot_set_a_looser_rate_than_the_default(alice, default_rate, looser):
    response = session(alice).post(
        TOKENS, {"name": "x", "scopes": ["notes:read"], "rate_limit": looser}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["rate_limit"] == ["The rate may be at most 2/m."]
    assert counts() == (0, 0)
    with pytest.raises(ValidationError):
        services.issue_token(
            alice, name="x", scopes=["notes:read"], rate_limit=looser, caller=Caller(user=alice)
        )
    assert counts() == (0, 0)


@pytest.mark.parametrize("tighter", ["2/m", "1/m", "100/h", "4/2m", ""])
def test_owner_can_tighten_the_default(alice, default_rate, tighter):
    response = session(alice).post(
        TOKENS, {"name": "x", "scopes": ["notes:read"], "rate_limit": tighter}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["rate_limit"] == tighter


def test_owner_cannot_loosen_by_patch_but_can_tighten(alice, issue, default_rate):
    token = issue(alice).token
    before = snapshot(token)
    client = session(alice)
    loosened = client.patch(detail_url(token.key_id), {"rate_limit": "5/m"}, format="json")
    assert loosened.status_code == 400
    assert snapshot(token) == before
    tightened = client.patch(detail_url(token.key_id), {"rate_limit": "1/m"}, format="json")
    assert tightened.status_code == 200
    assert tightened.json()["rate_limit"] == "1/m"


def test_password_exchange_cannot_loosen_the_default(alice, default_rate):
    response = exchange(APIClient(), rate_limit="100/m")
    assert response.status_code == 400
    assert "rate_limit" in response.json()
    assert counts() == (0, 0)
    assert exchange(APIClient(), rate_limit="1/m").status_code == 201


def test_superuser_may_set_any_rate(superuser, default_rate):
    response = session(superuser).post(
        TOKENS, {"name": "x", "scopes": ["notes:read"], "rate_limit": "1000/s"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["rate_limit"] == "1000/s"


def test_manager_may_set_any_rate_for_another_user_in_the_admin(alice, superuser, default_rate):
    response = admin_client(superuser).post(ADMIN_ADD, issue_data(alice, rate_limit="1000/s"))
    plaintext = admin_issued_plaintext(response)
    parsed = tokenstring.parse(plaintext, "tka")
    assert parsed is not None
    assert APIToken.objects.get(key_id=parsed.key_id).rate_limit == "1000/s"


def test_command_may_set_any_rate(alice, default_rate):
    plaintext = run_command("alice", "--name=x", "--scopes=notes:read", "--rate=1000/s")
    parsed = tokenstring.parse(plaintext, "tka")
    assert parsed is not None
    assert APIToken.objects.get(key_id=parsed.key_id).rate_limit == "1000/s"


def test_non_manager_staff_cannot_loosen_in_the_admin(limited, default_rate):
    client = admin_client(limited)
    refused = client.post(ADMIN_ADD, issue_data(limited, rate_limit="10/m"))
    assert form_errors(refused)["rate_limit"] == ["The rate may be at most 2/m."]
    assert counts() == (0, 0)
    accepted = client.post(ADMIN_ADD, issue_data(limited, rate_limit="1/m"))
    admin_issued_plaintext(accepted)
    assert APIToken.objects.get().rate_limit == "1/m"


def test_non_manager_staff_cannot_loosen_in_the_admin_change_form(limited, issue, default_rate):
    token = issue(limited).token
    before = snapshot(token)
    response = admin_client(limited).post(
        admin_change_url(token), change_data(token, rate_limit="10/m")
    )
    assert response.status_code == 200
    assert form_errors(response)["rate_limit"] == ["The rate may be at most 2/m."]
    assert snapshot(token) == before


def test_non_manager_can_rename_a_token_a_manager_gave_a_looser_rate(limited, issue, default_rate):
    token = issue(limited, rate_limit="100/m").token  # set by code (actor None): any rate
    response = admin_client(limited).post(admin_change_url(token), change_data(token, name="new"))
    assert response.status_code == 302, form_errors(response)
    token.refresh_from_db()
    assert (token.name, token.rate_limit) == ("new", "100/m")


# --- the window passes ------------------------------------------------------------------


def test_token_works_again_after_the_window(alice, issue, monkeypatch):
    # django-ratelimit reads its windows from time.time(): a still clock there, moved past
    # the one-second window, instead of waiting for a real second to pass.
    limiter_clock = FakeClock(T0)
    limiter_time = SimpleNamespace(time=lambda: limiter_clock().timestamp())
    monkeypatch.setattr(django_ratelimit.core, "time", limiter_time)
    plaintext = issue(alice, rate_limit="1/s").plaintext
    assert [status(plaintext), status(plaintext)] == [200, 429]
    limiter_clock.advance(seconds=1)
    assert status(plaintext) == 200, "the token stayed limited after its one-second window"


# --- JWTs share the token's budget ------------------------------------------------------


def test_jwt_requests_and_token_requests_share_one_budget(alice, issue):
    plaintext = issue(alice, rate_limit="4/h").plaintext
    jwt = mint_jwt_from(plaintext)  # 1: minting is an authenticated request of the token
    assert status(plaintext) == 200  # 2
    assert status(jwt) == 200  # 3
    assert status(jwt) == 200  # 4
    refused = call(jwt)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert status(plaintext) == 429
    assert mint_from(plaintext).status_code == 429


def test_jwt_of_a_token_under_the_default_rate_shares_its_budget(alice, issue, settings):
    set_tokens_setting(settings, DEFAULT_TOKEN_RATE="3/h")
    plaintext = issue(alice).plaintext
    jwt = mint_jwt_from(plaintext)
    assert [status(jwt), status(jwt), status(jwt), status(plaintext)] == [200, 200, 429, 429]


def test_jwts_of_different_tokens_have_separate_budgets(alice, issue):
    first = mint_jwt_from(issue(alice, rate_limit="2/h").plaintext)
    second = mint_jwt_from(issue(alice, rate_limit="2/h").plaintext)
    assert [status(first), status(first)] == [200, 429]
    assert status(second) == 200


# --- invalid rate syntax --------------------------------------------------------------

BAD_RATES = ["0/m", "5/0m", "abc", "5/x", "5", "/m", "-1/m", "1.5/m", "5/m/h", "5 /m", "1/0s"]


@pytest.mark.parametrize("rate", BAD_RATES)
def test_service_refuses_bad_rate_syntax(alice, rate):
    with pytest.raises(ValidationError) as info:
        services.issue_token(alice, name="x", scopes=["notes:read"], rate_limit=rate)
    assert "Give a rate such as 1000/h" in info.value.message_dict["rate_limit"][0]
    assert counts() == (0, 0)


@pytest.mark.parametrize("rate", [*BAD_RATES, 5, ["5/m"]])
def test_api_create_refuses_bad_rate_with_400(alice, rate):
    response = session(alice).post(
        TOKENS, {"name": "x", "scopes": ["notes:read"], "rate_limit": rate}, format="json"
    )
    # 5 is coerced to "5" by the serializer, and refused as a rate all the same.
    assert response.status_code == 400, response.content
    assert "rate_limit" in response.json()
    assert counts() == (0, 0)


@pytest.mark.parametrize("rate", BAD_RATES)
def test_api_patch_refuses_bad_rate_and_leaves_the_row(alice, issue, rate):
    token = issue(alice, rate_limit="5/h").token
    before = snapshot(token)
    response = session(alice).patch(
        detail_url(token.key_id), {"rate_limit": rate, "name": "new"}, format="json"
    )
    assert response.status_code == 400
    assert "rate_limit" in response.json()
    assert snapshot(token) == before


@pytest.mark.parametrize("rate", BAD_RATES)
def test_password_exchange_refuses_bad_rate(alice, rate):
    response = exchange(APIClient(), rate_limit=rate)
    assert response.status_code == 400
    assert "rate_limit" in response.json()
    assert counts() == (0, 0)


@pytest.mark.parametrize("rate", [*BAD_RATES, "", " "])
def test_command_refuses_bad_rate(alice, rate):
    with pytest.raises(CommandError) as info:
        run_command("alice", "--name=x", "--scopes=notes:read", f"--rate={rate}")
    assert "\n" not in str(info.value)
    assert "rate" in str(info.value)
    assert counts() == (0, 0)


@pytest.mark.parametrize("rate", BAD_RATES)
def test_admin_forms_refuse_bad_rate(alice, superuser, issue, rate):
    client = admin_client(superuser)
    response = client.post(ADMIN_ADD, issue_data(alice, rate_limit=rate))
    assert "Give a rate such as 1000/h" in form_errors(response)["rate_limit"][0]
    assert counts() == (0, 0)
    token = issue(alice, rate_limit="5/h").token
    before = snapshot(token)
    response = client.post(admin_change_url(token), change_data(token, rate_limit=rate))
    assert response.status_code == 200
    assert "Give a rate such as 1000/h" in form_errors(response)["rate_limit"][0]
    assert snapshot(token) == before


def test_rate_with_surrounding_spaces_is_trimmed(alice):
    issued = services.issue_token(alice, name="x", scopes=["notes:read"], rate_limit=" 5/h ")
    assert issued.token.rate_limit == "5/h"
