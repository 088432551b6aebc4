"""Client address resolution."""

import pytest
from django.test import RequestFactory

from tokens_app.core.address import client_ip


@pytest.mark.parametrize(
    ("remote", "expected"),
    [("10.0.0.1", "10.0.0.1"), ("::1", "::1"), ("", None), ("not-an-ip", None)],
)
def test_client_ip_is_the_validated_peer_address(remote, expected):
    request = RequestFactory().get("/", REMOTE_ADDR=remote)
    assert client_ip(request) == expected


def test_forwarded_for_header_is_not_trusted():
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert client_ip(request) == "10.0.0.1"


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("10.0.0.2", "203.0.113.7", "203.0.113.7"),  # behind our proxy
        ("10.0.0.2", "1.1.1.1, 203.0.113.7", "203.0.113.7"),  # client-written entry ignored
        ("10.0.0.2", "203.0.113.7, 10.0.0.3", "203.0.113.7"),  # two proxies of ours
        ("10.0.0.2", "", "10.0.0.2"),  # nothing forwarded: the proxy itself
        ("10.0.0.2", "garbage", None),  # a garbled chain tells nothing
        ("198.51.100.9", "203.0.113.7", "198.51.100.9"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_trusted_proxies_unwrap_forwarded_for(settings, remote, forwarded, expected):
    settings.API_TOKENS = {**settings.API_TOKENS, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


@pytest.mark.parametrize("value", ["10.0.0.0/33", ["nope"], "10.0.0.0/8", [None]])
def test_bad_trusted_proxies_are_improperly_configured(value):
    from django.core.exceptions import ImproperlyConfigured

    from tokens_app import conf

    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        conf.load({"TRUSTED_PROXIES": value})


@pytest.mark.parametrize("rate", ["5", "five/m", "0/m", "5/15x", 5])
def test_bad_password_exchange_rate_is_improperly_configured(rate):
    from django.core.exceptions import ImproperlyConfigured

    from tokens_app import conf

    with pytest.raises(ImproperlyConfigured, match="PASSWORD_EXCHANGE_RATE"):
        conf.load({"PASSWORD_EXCHANGE_RATE": rate})
