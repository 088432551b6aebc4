"""Per-client rate limits count an IPv6 client by its /64, as one holder has a whole /64."""

import pytest
from django.test import RequestFactory

from tests.helpers import exchange
from tokens_app.core.address import client_network

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("peer", "counted"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # IPv4 through a dual-stack socket
        ("192.0.2.7", "192.0.2.7"),
        ("not an address", "unknown"),
        ("", "unknown"),
    ],
)
def test_a_client_is_counted_by_its_address_or_its_64(peer, counted):
    assert client_network(RequestFactory().get("/", REMOTE_ADDR=peer)) == counted


def test_a_64_shares_one_password_exchange_budget(settings, api, alice):
    settings.API_TOKENS = {**settings.API_TOKENS, "PASSWORD_EXCHANGE_RATE": "3/m"}
    # Different usernames each time: only the per-client counter can stop them.
    answers = [
        exchange(api, f"guess-{n}", "wrong", ip=f"2001:db8:7:7::{n:x}").status_code
        for n in range(1, 5)
    ]
    assert answers == [400, 400, 400, 429]
    # Another /64 has a budget of its own.
    assert exchange(api, "guess-x", "wrong", ip="2001:db8:7:8::1").status_code == 400
