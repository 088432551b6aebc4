"""Revoking every token of one owner at once: service, API, command and admin.

Real requests, real database, real JWT deny-list cache; nothing is mocked.
"""

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.test import APIClient

from tests.helpers import ADMIN_LIST, WHOAMI, admin_client, bearer, grant, mint_jwt
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.caller import Caller, Via

pytestmark = pytest.mark.django_db

REVOKE_ALL = "/api/tokens/revoke-all/"


# --- helpers ------------------------------------------------------------------------------


def works(plaintext: str) -> bool:
    response = APIClient().get(WHOAMI, **bearer(plaintext))
    assert response.status_code in (200, 401), response.content
    return response.status_code == 200


def state() -> list[tuple[Any, ...]]:
    """Every token's revocation fields and every event: what a refused call must not change."""
    tokens = list(
        APIToken.objects.order_by("pk").values_list(
            "pk", "revoked_at", "revoked_by", "revoke_reason"
        )
    )
    events = list(TokenEvent.objects.order_by("pk").values_list("pk", "kind", "key_id"))
    return [*tokens, *events]


def revoked_events(token: APIToken) -> list[TokenEvent]:
    return list(TokenEvent.objects.filter(token=token, kind="revoked"))


def admin_url(owner_id: Any) -> str:
    return f"{ADMIN_LIST}revoke-all/{owner_id}/"


@pytest.fixture
def estate(alice: Any, bob: Any, issue: Any, clock: Any) -> dict[str, Any]:
    """Alice: two active tokens, one expired, one long revoked. Bob: one active token."""
    active = [
        issue(alice, ["notes:read"]),
        issue(alice, ["tokens:write"], allowed_ips=["10.0.0.0/8"]),
    ]
    expired = issue(alice, expires_in=timedelta(hours=1))
    old = issue(alice)
    services.revoke_token(old.token, reason="old", caller=Caller())
    clock.advance(days=1)  # the expired one has expired; the others live 30 days
    return {"active": active, "expired": expired, "old": old, "bob": issue(bob)}


# --- service --------------------------------------------------------------------------


def test_service_revokes_every_unrevoked_token_of_the_owner(estate, alice, clock):
    old = APIToken.objects.get(pk=estate["old"].token.pk)
    old_events = TokenEvent.objects.filter(token=old).count()
    revoked = services.revoke_all_tokens(
        alice, caller=Caller(user=alice, ip="192.0.2.7", via=Via.API), reason="laptop stolen"
    )
    assert revoked == 3  # two active and the expired one
    for issued in [*estate["active"], estate["expired"]]:
        token = APIToken.objects.get(pk=issued.token.pk)
        assert token.revoked_at == clock.current
        assert token.revoked_by == alice
        assert token.revoke_reason == "laptop stolen"
        [event] = revoked_events(token)
        assert (event.actor, event.via, event.ip) == (alice, "api", "192.0.2.7")
        assert event.detail == {"reason": "laptop stolen"}
        assert event.key_id == token.key_id
    # Already revoked: untouched, no second event.
    again = APIToken.objects.get(pk=old.pk)
    assert (again.revoked_at, again.revoke_reason) == (old.revoked_at, "old")
    assert TokenEvent.objects.filter(token=old).count() == old_events
    # Other owners: untouched.
    bob_token = APIToken.objects.get(pk=estate["bob"].token.pk)
    assert bob_token.revoked_at is None
    assert not revoked_events(bob_token)


def test_service_second_call_revokes_nothing_and_records_nothing(estate, alice):
    assert services.revoke_all_tokens(alice, caller=Caller(user=alice)) == 3
    before = state()
    assert services.revoke_all_tokens(alice, caller=Caller(user=alice)) == 0
    assert state() == before


def test_service_owner_without_tokens_is_zero(bob):
    assert services.revoke_all_tokens(bob, caller=Caller(user=bob)) == 0
    assert not TokenEvent.objects.exists()


def test_service_revoked_tokens_stop_authenticating(alice, issue):
    tokens = [issue(alice).plaintext for _ in range(3)]
    assert all(works(t) for t in tokens)
    services.revoke_all_tokens(alice)
    assert not any(works(t) for t in tokens)


@pytest.mark.parametrize("actor_name", ["bob", "staff"])
def test_service_refuses_an_actor_who_may_not_manage_the_owner(
    estate, alice, bob, staff, actor_name
):
    actor = {"bob": bob, "staff": staff}[actor_name]
    before = state()
    with pytest.raises(PermissionDenied):
        services.revoke_all_tokens(alice, caller=Caller(user=actor), reason="x")
    assert state() == before


@pytest.mark.parametrize("actor_name", ["superuser", "manager", "code"])
def test_service_managers_and_code_may_revoke_anyones_tokens(
    estate, alice, superuser, manager, actor_name
):
    actor = {"superuser": superuser, "manager": manager, "code": None}[actor_name]
    assert services.revoke_all_tokens(alice, caller=Caller(user=actor, via=Via.ADMIN)) == 3
    events = TokenEvent.objects.filter(kind="revoked", token__owner=alice, via="admin")
    assert events.count() == 3
    assert {e.actor for e in events} == {actor}
    assert APIToken.objects.get(pk=estate["bob"].token.pk).revoked_at is None


@pytest.mark.parametrize("reason", ["x" * 201, 42, None, ["leak"]])
def test_service_bad_reason_changes_nothing(estate, alice, reason):
    before = state()
    with pytest.raises(ValidationError) as info:
        services.revoke_all_tokens(alice, caller=Caller(user=alice), reason=reason)
    assert "reason" in info.value.message_dict
    assert state() == before


def test_service_reason_of_200_characters_is_kept(alice, issue):
    issued = issue(alice)
    assert services.revoke_all_tokens(alice, reason="r" * 200) == 1
    assert APIToken.objects.get(pk=issued.token.pk).revoke_reason == "r" * 200


def test_service_permission_is_checked_before_the_reason(alice, bob, issue):
    issue(alice)
    with pytest.raises(PermissionDenied):
        services.revoke_all_tokens(alice, caller=Caller(user=bob), reason="x" * 500)


def test_jwts_minted_from_the_tokens_are_refused_after_revoke_all(alice, bob, issue):
    first, second = issue(alice), issue(alice, ["notes:read", "tokens:read"])
    theirs = issue(bob)
    jwts = [mint_jwt(APIClient(), first.plaintext), mint_jwt(APIClient(), second.plaintext)]
    bob_jwt = mint_jwt(APIClient(), theirs.plaintext)
    assert all(works(jwt) for jwt in jwts)
    assert services.revoke_all_tokens(alice, caller=Caller(user=alice)) == 2
    for jwt in jwts:
        response = APIClient().get(WHOAMI, **bearer(jwt))
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid token."}
    assert works(bob_jwt)


# --- API --------------------------------------------------------------------------------


def test_api_revokes_every_token_including_the_calling_one(alice, bob, issue):
    caller = issue(alice, ["tokens:write"])
    others = [issue(alice), issue(alice, ["notes:write"])]
    theirs = issue(bob)
    jwt = mint_jwt(APIClient(), others[0].plaintext)
    response = APIClient().post(
        REVOKE_ALL, {"reason": "compromised"}, format="json", REMOTE_ADDR="192.0.2.5",
        **bearer(caller.plaintext),
    )  # fmt: skip
    assert response.status_code == 200
    assert response.json() == {"revoked": 3}
    assert not works(caller.plaintext)
    assert not any(works(o.plaintext) for o in others)
    assert not works(jwt)
    assert works(theirs.plaintext)
    events = TokenEvent.objects.filter(kind="revoked")
    assert events.count() == 3
    assert {(e.actor, e.via, e.ip) for e in events} == {(alice, "api", "192.0.2.5")}
    assert {e.detail["reason"] for e in events} == {"compromised"}


def test_api_without_body_revokes_with_an_empty_reason(alice, issue):
    caller = issue(alice, ["tokens:write"])
    response = APIClient().post(REVOKE_ALL, **bearer(caller.plaintext))
    assert response.status_code == 200
    assert response.json() == {"revoked": 1}
    assert APIToken.objects.get(pk=caller.token.pk).revoke_reason == ""


def test_api_second_call_with_the_revoked_token_is_401(alice, issue):
    caller = issue(alice, ["tokens:write"])
    client = APIClient()
    assert client.post(REVOKE_ALL, **bearer(caller.plaintext)).status_code == 200
    again = client.post(REVOKE_ALL, **bearer(caller.plaintext))
    assert again.status_code == 401
    assert again.json() == {"detail": "Invalid token."}


def test_api_with_a_session_works_and_counts_expired_tokens(estate, alice):
    client = APIClient()
    client.force_login(alice)
    response = client.post(REVOKE_ALL, {"reason": "session"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"revoked": 3}
    assert APIToken.objects.filter(owner=alice, revoked_at__isnull=True).count() == 0
    assert APIToken.objects.get(pk=estate["bob"].token.pk).revoked_at is None


@pytest.mark.parametrize("scopes", [["tokens:read"], ["notes:read", "notes:write"]])
def test_api_without_tokens_write_is_403_and_changes_nothing(alice, issue, scopes):
    caller = issue(alice, scopes)
    issue(alice)
    before = state()
    response = APIClient().post(REVOKE_ALL, **bearer(caller.plaintext))
    assert response.status_code == 403
    assert "tokens:write" in response["WWW-Authenticate"]
    assert state() == before
    assert works(caller.plaintext)


def test_api_refuses_a_jwt_and_changes_nothing(alice, issue):
    caller = issue(alice, ["tokens:write"])
    jwt = mint_jwt(APIClient(), caller.plaintext)
    before = state()
    response = APIClient().post(REVOKE_ALL, {}, format="json", **bearer(jwt))
    assert response.status_code == 401
    assert state() == before
    assert works(caller.plaintext)


def test_api_without_credentials_is_401(alice, issue):
    issue(alice)
    before = state()
    assert APIClient().post(REVOKE_ALL).status_code == 401
    assert state() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [({"reason": "x" * 201}, "reason"), ({"bogus": 1}, "bogus"), ({"reason": None}, "reason")],
)
def test_api_bad_body_is_400_and_changes_nothing(alice, issue, body, field):
    caller = issue(alice, ["tokens:write"])
    before = state()
    response = APIClient().post(REVOKE_ALL, body, format="json", **bearer(caller.plaintext))
    assert response.status_code == 400
    assert field in response.json()
    assert state() == before
    assert works(caller.plaintext)


def test_api_other_methods_revoke_nothing(alice, issue):
    # HasScope refuses a method that declares no scopes (403) before DRF's 405.
    caller = issue(alice, ["tokens:write"])
    client = APIClient()
    before = state()
    assert client.get(REVOKE_ALL, **bearer(caller.plaintext)).status_code in (403, 405)
    assert client.delete(REVOKE_ALL, **bearer(caller.plaintext)).status_code in (403, 405)
    assert state() == before
    assert works(caller.plaintext)


def test_api_restricted_caller_from_outside_cannot_revoke(alice, issue):
    caller = issue(alice, ["tokens:write"], allowed_ips=["10.0.0.0/8"])
    before = state()
    response = APIClient().post(REVOKE_ALL, REMOTE_ADDR="203.0.113.9", **bearer(caller.plaintext))
    assert response.status_code == 401
    assert state() == before


# --- command ----------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("revoke_token", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_command_revokes_every_token_of_the_user(estate, alice):
    out = run("--user", "alice", "--all", "--reason", "offboarding")
    assert out == "Revoked 3 tokens of alice.\n"
    events = TokenEvent.objects.filter(kind="revoked", via="command")
    assert events.count() == 3
    assert {e.actor for e in events} == {None}
    assert {e.detail["reason"] for e in events} == {"offboarding"}
    assert APIToken.objects.filter(owner=alice, revoked_at__isnull=True).count() == 0
    assert APIToken.objects.get(pk=estate["bob"].token.pk).revoked_at is None
    for issued in estate["active"]:
        assert not works(issued.plaintext)


def test_command_output_counts_one_and_zero(alice, issue):
    issue(alice)
    assert run("--user", "alice", "--all") == "Revoked 1 token of alice.\n"
    assert run("--user", "alice", "--all") == "Revoked 0 tokens of alice.\n"


def test_command_never_prints_secrets(alice, issue):
    issued = issue(alice)
    out = run("--user", "alice", "--all")
    assert issued.plaintext not in out


# run_from_argv closes the database connections when the command fails: outside a test
# transaction, so that PostgreSQL reconnects instead of losing the test's transaction.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["KEYID", "--user", "alice", "--all"], "not both"),
        (["KEYID", "--all"], "not both"),
        (["KEYID", "--user", "alice"], "not both"),
        (["--user", "alice"], "give KEY_ID_OR_TOKEN, or --user USERNAME --all"),
        (["--all"], "give KEY_ID_OR_TOKEN, or --user USERNAME --all"),
        ([], "give KEY_ID_OR_TOKEN, or --user USERNAME --all"),
        (["--user", "nobody", "--all"], "user 'nobody' does not exist"),
        (["--user", "alice", "--all", "--reason", "x" * 201], "reason: "),
    ],
)
def test_command_errors_are_one_stderr_line_and_change_nothing(estate, capsys, args, message):
    before = state()
    command = load_command_class("tokens_app", "revoke_token")
    with pytest.raises(SystemExit) as exit_info:
        command.run_from_argv(["manage.py", "revoke_token", *args])
    assert exit_info.value.code != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert message in captured.err
    assert state() == before


def test_command_error_in_process_is_a_command_error(estate):
    before = state()
    with pytest.raises(CommandError, match="does not exist"):
        run("--user", "nobody", "--all")
    assert state() == before


# --- admin ------------------------------------------------------------------------------


def test_admin_confirmation_lists_the_tokens_to_revoke(estate, superuser, alice):
    response = admin_client(superuser).get(admin_url(alice.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="revoke-all-form"' in page
    for issued in [*estate["active"], estate["expired"]]:
        assert issued.token.key_id in page
    assert estate["old"].token.key_id not in page  # already revoked
    assert estate["bob"].token.key_id not in page
    assert "Revoke all 3 tokens of alice" in page
    assert APIToken.objects.filter(owner=alice, revoked_at__isnull=True).count() == 3


def test_admin_get_changes_nothing(estate, superuser, alice):
    before = state()
    admin_client(superuser).get(admin_url(alice.pk))
    assert state() == before


def test_admin_post_revokes_all_and_redirects_to_the_filtered_list(estate, superuser, alice):
    response = admin_client(superuser).post(
        admin_url(alice.pk), {"reason": "incident 42"}, REMOTE_ADDR="192.0.2.8"
    )
    assert response.status_code == 302
    assert response["Location"] == f"{ADMIN_LIST}?owner__id__exact={alice.pk}"
    assert APIToken.objects.filter(owner=alice, revoked_at__isnull=True).count() == 0
    events = TokenEvent.objects.filter(kind="revoked", via="admin")
    assert events.count() == 3
    assert {(e.actor, e.ip, e.detail["reason"]) for e in events} == {
        (superuser, "192.0.2.8", "incident 42")
    }
    assert APIToken.objects.get(pk=estate["bob"].token.pk).revoked_at is None
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Revoked 3 tokens of alice." in messages


def test_admin_post_with_too_long_reason_changes_nothing(estate, superuser, alice):
    before = state()
    response = admin_client(superuser).post(admin_url(alice.pk), {"reason": "x" * 201})
    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    assert state() == before


def test_admin_owner_without_tokens_left(superuser, bob):
    response = admin_client(superuser).get(admin_url(bob.pk))
    assert response.status_code == 200
    assert "bob has no token left to revoke." in response.content.decode()


def test_admin_non_manager_staff_gets_404_for_another_owner(estate, limited, alice):
    client = admin_client(limited)
    before = state()
    assert client.get(admin_url(alice.pk)).status_code == 404
    assert client.post(admin_url(alice.pk), {"reason": "x"}).status_code == 404
    assert state() == before


def test_admin_non_manager_staff_can_revoke_their_own(limited, issue):
    mine = [issue(limited), issue(limited)]
    client = admin_client(limited)
    assert client.get(admin_url(limited.pk)).status_code == 200
    response = client.post(admin_url(limited.pk), {"reason": "mine"})
    assert response.status_code == 302
    assert not any(works(i.plaintext) for i in mine)


def test_admin_manager_without_superuser_can_revoke_others(estate, manager, alice):
    response = admin_client(manager).post(admin_url(alice.pk), {"reason": ""})
    assert response.status_code == 302
    assert APIToken.objects.filter(owner=alice, revoked_at__isnull=True).count() == 0


def test_admin_staff_without_change_permission_is_refused(estate, staff, alice):
    grant(staff, "view_apitoken")
    client = admin_client(staff)
    before = state()
    assert client.get(admin_url(staff.pk)).status_code == 403
    assert client.post(admin_url(staff.pk)).status_code == 403
    assert state() == before


@pytest.mark.parametrize(
    "owner_id", ["987654", "abc", "-1", "1.5", "99999999999999999999999", "%00", "1/2"]
)
def test_admin_unknown_or_malformed_owner_is_404(estate, superuser, owner_id):
    before = state()
    client = admin_client(superuser)
    assert client.get(admin_url(owner_id)).status_code == 404
    assert client.post(admin_url(owner_id), {"reason": "x"}).status_code == 404
    assert state() == before


def test_admin_not_logged_in_is_sent_to_login(estate, alice):
    before = state()
    response = Client().post(admin_url(alice.pk))
    assert response.status_code == 302
    assert "/login/" in response["Location"]
    assert state() == before


def test_changelist_filtered_by_owner_shows_the_link(estate, superuser, alice):
    client = admin_client(superuser)
    page = client.get(f"{ADMIN_LIST}?owner__id__exact={alice.pk}").content.decode()
    assert 'id="revoke-all-tokens-link"' in page
    assert f'href="{admin_url(alice.pk)}"' in page
    unfiltered = client.get(ADMIN_LIST).content.decode()
    assert 'id="revoke-all-tokens-link"' not in unfiltered


def test_change_page_shows_the_link_for_the_tokens_owner(estate, superuser, alice):
    token = estate["active"][0].token
    page = admin_client(superuser).get(f"{ADMIN_LIST}{token.pk}/change/").content.decode()
    assert 'id="revoke-all-tokens-link"' in page
    assert f'href="{admin_url(alice.pk)}"' in page


def test_link_then_confirm_end_to_end(estate, superuser, alice):
    client = admin_client(superuser)
    listed = client.get(f"{ADMIN_LIST}?owner__id__exact={alice.pk}")
    assert admin_url(alice.pk) in listed.content.decode()
    confirmed = client.post(admin_url(alice.pk), {"reason": "e2e"}, follow=True)
    assert confirmed.status_code == 200
    assert confirmed.redirect_chain[-1][0] == f"{ADMIN_LIST}?owner__id__exact={alice.pk}"
    assert 'id="revoke-all-tokens-link"' in confirmed.content.decode()


def test_changelist_of_own_tokens_shows_the_link_to_non_manager_staff(limited, issue):
    issue(limited)
    page = admin_client(limited).get(f"{ADMIN_LIST}?owner__id__exact={limited.pk}")
    assert f'href="{admin_url(limited.pk)}"' in page.content.decode()


@pytest.mark.parametrize("whose", ["another owner", "garbage"])
def test_changelist_offers_no_link_staff_could_not_follow(estate, limited, alice, whose):
    owner_id = alice.pk if whose == "another owner" else "abc"
    page = admin_client(limited).get(f"{ADMIN_LIST}?owner__id__exact={owner_id}")
    assert page.status_code == 200
    assert 'id="revoke-all-tokens-link"' not in page.content.decode()
