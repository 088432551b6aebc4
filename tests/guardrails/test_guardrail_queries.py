"""Guardrails cost no extra query: one for an API token, none for a JWT."""

import pytest

from tests.guardrails.helpers import V4, V6, status
from tests.helpers import mint_jwt_from

pytestmark = pytest.mark.django_db


# --- 3. query budget --------------------------------------------------------------------


def test_restricted_and_rate_limited_token_still_costs_one_query(
    alice, issue, django_assert_num_queries
):
    plaintext = issue(alice, allowed_ips=[V4, V6], rate_limit="100/h").plaintext
    assert status(plaintext) == 200  # warm-up: stamps last_used
    with django_assert_num_queries(1):
        assert status(plaintext, "10.0.0.2") == 200
    with django_assert_num_queries(1):
        assert status(plaintext, "2001:db8::7") == 200


def test_refused_address_costs_one_query_and_writes_nothing(
    alice, issue, django_assert_num_queries
):
    plaintext = issue(alice, allowed_ips=[V4], rate_limit="100/h").plaintext
    with django_assert_num_queries(1):
        assert status(plaintext, "203.0.113.9") == 401


def test_over_the_rate_costs_one_query(alice, issue, django_assert_num_queries):
    plaintext = issue(alice, allowed_ips=[V4], rate_limit="1/h").plaintext
    assert status(plaintext) == 200
    with django_assert_num_queries(1):
        assert status(plaintext) == 429


def test_jwt_with_guardrails_costs_no_query(alice, issue, django_assert_num_queries):
    jwt = mint_jwt_from(issue(alice, allowed_ips=[V4], rate_limit="100/h").plaintext)
    with django_assert_num_queries(0):
        assert status(jwt) == 200
        assert status(jwt, "203.0.113.9") == 401
