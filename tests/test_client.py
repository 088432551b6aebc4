"""Client address resolution."""

import pytest
from django.test import RequestFactory

from tokens_app.client import client_ip


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
