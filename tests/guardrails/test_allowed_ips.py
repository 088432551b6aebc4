"""IP allow-lists: every way of setting one, each enforced the same; normalised and audited.

Real requests, real database, real rate-limit cache (local memory, or Redis in the
production profile); neither the limiter nor the checksum is bypassed.
Bad lists are in ``test_bad_allow_lists.py``; revoking every token of an owner is
in ``test_revoke_all.py``.
"""

import ipaddress
import logging
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.guardrails.helpers import (
    INSIDE,
    OUTSIDE,
    V4,
    V6,
    admin_change_url,
    admin_issued_plaintext,
    call,
    run_command,
    session,
    set_tokens_setting,
    snapshot,
    status,
    unknown_token,
    wrong_secret,
)
from tests.helpers import (
    ADMIN_ADD,
    NOTES,
    TOKENS,
    admin_client,
    assert_invalid,
    change_data,
    detail_url,
    exchange,
    form_errors,
    issue_data,
    mint_from,
    mint_jwt_from,
)
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db


# --- 1. IP allow-list: every way of setting it, each enforced the same ----------------------


def _by_service(alice: Any, superuser: Any, allowed: list[str]) -> tuple[str, APIToken]:
    issued = services.issue_token(alice, name="svc", scopes=["notes:read"], allowed_ips=allowed)
    return issued.plaintext, issued.token


def _by_api_create(alice: Any, superuser: Any, allowed: list[str]) -> tuple[str, APIToken]:
    body = {"name": "api", "scopes": ["notes:read"], "allowed_ips": allowed}
    response = session(alice).post(TOKENS, body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["allowed_ips"] == sorted_networks(allowed)
    return response.json()["token"], APIToken.objects.get(key_id=response.json()["id"])


def _by_api_patch(alice: Any, superuser: Any, allowed: list[str]) -> tuple[str, APIToken]:
    issued = services.issue_token(alice, name="patched", scopes=["notes:read"])
    response = session(alice).patch(
        detail_url(issued.token.key_id), {"allowed_ips": allowed}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["allowed_ips"] == sorted_networks(allowed)
    return issued.plaintext, issued.token


def _by_command(alice: Any, superuser: Any, allowed: list[str]) -> tuple[str, APIToken]:
    flags = [f"--allow-ip={entry}" for entry in allowed]
    plaintext = run_command("alice", "--name=cmd", "--scopes=notes:read", *flags)
    parsed = tokenstring.parse(plaintext, "tka")
    assert parsed is not None
    return plaintext, APIToken.objects.get(key_id=parsed.key_id)


def _by_admin_issue(alice: Any, superuser: Any, allowed: list[str]) -> tuple[str, APIToken]:
    data = issue_data(alice, allowed_ips="\n".join(allowed))
    response = admin_client(superuser).post(ADMIN_ADD, data)
    assert response.status_code == 200
    plaintext = admin_issued_plaintext(response)
    parsed = tokenstring.parse(plaintext, "tka")
    assert parsed is not None
    return plaintext, APIToken.objects.get(key_id=parsed.key_id)


def _by_admin_change(alice: Any, superuser: Any, allowed: list[str]) -> tuple[str, APIToken]:
    issued = services.issue_token(alice, name="changed", scopes=["notes:read"])
    data = change_data(issued.token, allowed_ips="\n".join(allowed))
    response = admin_client(superuser).post(admin_change_url(issued.token), data)
    assert response.status_code == 302, form_errors(response)
    return issued.plaintext, issued.token


def _by_password_exchange(alice: Any, superuser: Any, allowed: list[str]) -> tuple[str, APIToken]:
    response = exchange(APIClient(), allowed_ips=allowed)
    assert response.status_code == 201, response.content
    return response.json()["token"], APIToken.objects.get(key_id=response.json()["id"])


def sorted_networks(entries: list[str]) -> list[str]:
    networks = {ipaddress.ip_network(entry) for entry in entries}
    return [str(n) for n in sorted(networks, key=lambda n: (n.version, n))]


MAKERS: dict[str, Callable[[Any, Any, list[str]], tuple[str, APIToken]]] = {
    "service": _by_service,
    "api-create": _by_api_create,
    "api-patch": _by_api_patch,
    "command": _by_command,
    "admin-issue": _by_admin_issue,
    "admin-change": _by_admin_change,
    "password-exchange": _by_password_exchange,
}


@pytest.fixture(params=list(MAKERS))
def make_restricted(request: pytest.FixtureRequest, alice: Any, superuser: Any) -> Any:
    maker = MAKERS[request.param]
    return lambda allowed: maker(alice, superuser, allowed)


def test_v4_and_v6_networks_admit_inside_and_refuse_outside(make_restricted):
    plaintext, token = make_restricted([V6, V4])
    token.refresh_from_db()
    assert token.allowed_ips == [V4, V6]
    for ip in INSIDE:
        assert status(plaintext, ip) == 200, ip
    for ip in OUTSIDE:
        assert_invalid(call(plaintext, ip))


def test_single_addresses_admit_only_themselves(make_restricted):
    plaintext, token = make_restricted(["192.0.2.1", "2001:db8::1"])
    token.refresh_from_db()
    assert token.allowed_ips == ["192.0.2.1/32", "2001:db8::1/128"]
    assert status(plaintext, "192.0.2.1") == 200
    assert status(plaintext, "2001:db8::1") == 200
    for ip in ("192.0.2.2", "192.0.2.0", "2001:db8::2", "10.0.0.1"):
        assert status(plaintext, ip) == 401, ip


def test_ipv4_mapped_ipv6_peer_counts_as_its_ipv4_address(alice, issue):
    plaintext = issue(alice, allowed_ips=[V4]).plaintext
    assert status(plaintext, "::ffff:10.0.0.5") == 200
    assert status(plaintext, "::ffff:11.0.0.5") == 401


def test_unrestricted_token_works_from_anywhere(alice, issue):
    plaintext = issue(alice).plaintext
    for ip in [*INSIDE, *OUTSIDE, "::ffff:1.2.3.4"]:
        assert status(plaintext, ip) == 200, ip


def test_refusal_from_outside_is_byte_identical_to_an_unknown_token(alice, issue):
    plaintext = issue(alice, allowed_ips=[V4]).plaintext
    outside = call(plaintext, "11.0.0.1", path=NOTES)
    for other in (
        call(unknown_token(), "11.0.0.1", path=NOTES),
        call(wrong_secret(plaintext), "11.0.0.1", path=NOTES),
    ):
        assert outside.status_code == other.status_code == 401
        assert outside.content == other.content
        assert dict(outside.headers) == dict(other.headers)
    assert_invalid(outside)


def test_refusal_is_logged_by_key_id_and_reason_never_the_secret(alice, issue, caplog):
    caplog.set_level(logging.INFO, logger="tokens_app.authentication")
    issued = issue(alice, allowed_ips=[V4])
    parsed = tokenstring.parse(issued.plaintext, "tka")
    assert parsed is not None
    assert status(issued.plaintext, "203.0.113.9") == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "tokens_app.authentication"]
    assert len(lines) == 1
    assert "address not allowed" in lines[0]
    assert issued.token.key_id in lines[0]
    assert "203.0.113.9" in lines[0]
    assert parsed.secret not in caplog.text
    assert issued.plaintext not in caplog.text


def test_refused_request_does_not_stamp_last_used(alice, issue):
    issued = issue(alice, allowed_ips=[V4])
    assert status(issued.plaintext, "203.0.113.9") == 401
    issued.token.refresh_from_db()
    assert issued.token.last_used_at is None
    assert issued.token.last_used_ip is None
    assert status(issued.plaintext, "10.1.2.3") == 200
    issued.token.refresh_from_db()
    assert issued.token.last_used_ip == "10.1.2.3"


# --- X-Forwarded-For: believed only from a trusted proxy ---------------------------------


def test_spoofed_forwarded_for_from_an_untrusted_peer_does_not_bypass(alice, issue):
    plaintext = issue(alice, allowed_ips=[V4]).plaintext
    for forwarded in ("10.0.0.5", "10.0.0.5, 10.0.0.6", "203.0.113.1, 10.0.0.5"):
        response = call(plaintext, "203.0.113.9", HTTP_X_FORWARDED_FOR=forwarded)
        assert_invalid(response)


def test_peer_inside_list_is_used_even_if_forwarded_for_names_an_outsider(alice, issue):
    # Untrusted peer: its header is ignored both ways.
    plaintext = issue(alice, allowed_ips=[V4]).plaintext
    assert status(plaintext, "10.0.0.9", HTTP_X_FORWARDED_FOR="203.0.113.1") == 200


@pytest.fixture
def behind_proxy(settings: Any) -> str:
    proxy = "192.0.2.10"
    set_tokens_setting(settings, TRUSTED_PROXIES=[proxy])
    return proxy


def test_trusted_proxy_forwarded_client_inside_is_admitted(alice, issue, behind_proxy):
    issued = issue(alice, allowed_ips=[V4])
    assert status(issued.plaintext, behind_proxy, HTTP_X_FORWARDED_FOR="10.0.0.5") == 200
    issued.token.refresh_from_db()
    assert issued.token.last_used_ip == "10.0.0.5"


@pytest.mark.parametrize(
    "forwarded",
    [
        "203.0.113.9",
        "10.0.0.5, 203.0.113.9",  # the client wrote the left entry; the proxy the right one
        "not-an-address",
        "",
    ],
)
def test_trusted_proxy_forwarded_client_outside_is_refused(alice, issue, behind_proxy, forwarded):
    plaintext = issue(alice, allowed_ips=[V4]).plaintext
    assert_invalid(call(plaintext, behind_proxy, HTTP_X_FORWARDED_FOR=forwarded))


def test_trusted_proxy_chain_is_read_from_the_right(alice, issue, behind_proxy):
    plaintext = issue(alice, allowed_ips=[V4]).plaintext
    # The rightmost untrusted hop is the client, whatever it claims to its left.
    assert status(plaintext, behind_proxy, HTTP_X_FORWARDED_FOR="203.0.113.1, 10.0.0.5") == 200
    assert (
        status(plaintext, behind_proxy, HTTP_X_FORWARDED_FOR="203.0.113.1, 10.0.0.5, 192.0.2.10")
        == 200
    )


def test_trusted_proxy_does_not_make_other_peers_trusted(alice, issue, behind_proxy):
    plaintext = issue(alice, allowed_ips=[V4]).plaintext
    assert status(plaintext, "192.0.2.11", HTTP_X_FORWARDED_FOR="10.0.0.5") == 401


# --- normalisation and audit ------------------------------------------------------------


def test_service_normalises_dedupes_and_sorts(alice):
    entries = ["2001:DB8::/32", " 10.0.0.0/8", "10.0.0.0/8", "192.0.2.1", "172.16.0.0/12", "::1"]
    issued = services.issue_token(alice, name="x", scopes=["notes:read"], allowed_ips=entries)
    expected = ["10.0.0.0/8", "172.16.0.0/12", "192.0.2.1/32", "::1/128", "2001:db8::/32"]
    assert issued.token.allowed_ips == expected
    assert APIToken.objects.get(pk=issued.token.pk).allowed_ips == expected


def test_service_reads_text_split_on_commas_and_whitespace(alice):
    text = "2001:DB8::/32,10.0.0.0/8\n192.0.2.1  10.0.0.0/8\t"
    issued = services.issue_token(alice, name="x", scopes=["notes:read"], allowed_ips=text)
    assert issued.token.allowed_ips == ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]


def test_api_and_command_and_admin_show_normalised_lists(alice, superuser):
    body = {"name": "api", "scopes": ["notes:read"], "allowed_ips": ["2001:DB8::/32", V4, V4]}
    created = session(alice).post(TOKENS, body, format="json")
    assert created.json()["allowed_ips"] == [V4, V6]
    assert session(alice).get(detail_url(created.json()["id"])).json()["allowed_ips"] == [V4, V6]
    out = StringIO()
    call_command(
        "issue_token",
        "alice",
        "--name=cmd",
        "--scopes=notes:read",
        "--allow-ip=2001:DB8::/32,10.0.0.0/8",
        "--allow-ip=10.0.0.0/8",
        "--json",
        stdout=out,
    )
    assert '"allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]' in out.getvalue()
    token = APIToken.objects.get(name="cmd")
    page = admin_client(superuser).get(admin_change_url(token)).content.decode()
    assert "10.0.0.0/8\n2001:db8::/32" in page


def test_issuing_records_the_allow_list_and_rate_in_the_event(alice, issue):
    token = issue(alice, allowed_ips=["2001:DB8::/32", V4], rate_limit="100/h").token
    event = TokenEvent.objects.get(token=token, kind="issued")
    assert event.detail["allowed_ips"] == [V4, V6]
    assert event.detail["rate_limit"] == "100/h"
    plain = issue(alice).token
    detail = TokenEvent.objects.get(token=plain, kind="issued").detail
    assert "allowed_ips" not in detail
    assert "rate_limit" not in detail


def test_changing_the_allow_list_records_from_and_to(alice, issue):
    token = issue(alice, allowed_ips=[V4]).token
    response = session(alice).patch(detail_url(token.key_id), {"allowed_ips": [V6]}, format="json")
    assert response.status_code == 200
    event = TokenEvent.objects.get(token=token, kind="updated")
    assert event.detail == {"allowed_ips": {"from": [V4], "to": [V6]}}
    assert event.via == "api"
    assert event.actor == alice


def test_clearing_the_allow_list_opens_the_token_again(alice, issue):
    issued = issue(alice, allowed_ips=[V4])
    assert status(issued.plaintext, "203.0.113.9") == 401
    response = session(alice).patch(
        detail_url(issued.token.key_id), {"allowed_ips": []}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["allowed_ips"] == []
    assert status(issued.plaintext, "203.0.113.9") == 200


def test_admin_change_form_edits_both_guardrails(alice, superuser, issue):
    issued = issue(alice)
    data = change_data(issued.token, allowed_ips="10.0.0.0/8, 2001:DB8::/32", rate_limit="7/h")
    response = admin_client(superuser).post(admin_change_url(issued.token), data)
    assert response.status_code == 302, form_errors(response)
    issued.token.refresh_from_db()
    assert (issued.token.allowed_ips, issued.token.rate_limit) == ([V4, V6], "7/h")
    event = TokenEvent.objects.get(token=issued.token, kind="updated")
    assert event.via == "admin"
    assert set(event.detail) == {"allowed_ips", "rate_limit"}


def test_admin_change_form_of_a_revoked_token_has_no_guardrail_inputs(alice, superuser, issue):
    token = issue(alice, allowed_ips=[V4], rate_limit="5/h").token
    services.revoke_token(token)
    before = snapshot(token)
    client = admin_client(superuser)
    page = client.get(admin_change_url(token)).content.decode()
    assert 'name="allowed_ips"' not in page
    assert 'name="rate_limit"' not in page
    data = change_data(token, allowed_ips="0.0.0.0/0", rate_limit="1000/s")
    client.post(admin_change_url(token), data)
    assert snapshot(token) == before


def test_revoked_token_guardrails_cannot_be_changed_through_the_api(alice, issue):
    token = issue(alice, allowed_ips=[V4]).token
    services.revoke_token(token)
    before = snapshot(token)
    response = session(alice).patch(
        detail_url(token.key_id), {"allowed_ips": ["0.0.0.0/0"]}, format="json"
    )
    assert response.status_code == 400
    assert snapshot(token) == before


# --- JWTs minted from a restricted token ------------------------------------------------


def test_jwt_from_a_restricted_token_works_inside_and_is_refused_outside(alice, issue):
    plaintext = issue(alice, allowed_ips=[V4, V6]).plaintext
    jwt = mint_jwt_from(plaintext, "10.0.0.1")
    for ip in ("10.0.0.1", "10.200.0.1", "2001:db8::9", "::ffff:10.0.0.1"):
        assert status(jwt, ip) == 200, ip
    outside = call(jwt, "203.0.113.9")
    assert_invalid(outside)
    assert outside.content == call(unknown_token(), "203.0.113.9").content


def test_jwt_from_a_restricted_token_ignores_spoofed_forwarded_for(alice, issue):
    jwt = mint_jwt_from(issue(alice, allowed_ips=[V4]).plaintext)
    assert_invalid(call(jwt, "203.0.113.9", HTTP_X_FORWARDED_FOR="10.0.0.1"))


def test_jwt_cannot_be_minted_from_outside_the_list(alice, issue):
    response = mint_from(issue(alice, allowed_ips=[V4]).plaintext, "203.0.113.9")
    assert_invalid(response)


def test_jwt_refusal_is_logged_by_key_id(alice, issue, caplog):
    caplog.set_level(logging.INFO, logger="tokens_app.authentication")
    issued = issue(alice, allowed_ips=[V4])
    jwt = mint_jwt_from(issued.plaintext)
    assert status(jwt, "203.0.113.9") == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "tokens_app.authentication"]
    assert any("address not allowed" in line and issued.token.key_id in line for line in lines)
    assert jwt not in caplog.text
    assert issued.plaintext not in caplog.text
