"""The authority rule: what a credential may do to a token (issue 13 items 1, 2 and 9).

Each attack is replayed as it was found, over HTTP, and must now fail; then the rule
itself (``services.authority``) is pinned case by case.
"""

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from tests.helpers import HOME, INVALID_BODY, INVALID_CHALLENGE, MINT, NOTES, TOKENS, WHOAMI, bearer
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services import authority
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db


def rotate(client: APIClient, caller: str, key_id: str, grace: int = 0, ip: str = HOME) -> Any:
    return client.post(
        f"{TOKENS}{key_id}/rotate/",
        {"grace_seconds": grace},
        format="json",
        REMOTE_ADDR=ip,
        **bearer(caller),
    )


def works(plaintext: str, path: str = WHOAMI, ip: str = HOME) -> bool:
    return APIClient().get(path, REMOTE_ADDR=ip, **bearer(plaintext)).status_code == 200


def snapshot(token: APIToken) -> tuple[Any, ...]:
    stored = APIToken.objects.get(pk=token.pk)
    return (stored.secret_hash, stored.secret_version, stored.previous_secret_hash, stored.name)


# --- item 1: rotation escalates -------------------------------------------------------------


@pytest.fixture
def weak(alice: Any, issue: Any, clock: Any) -> services.IssuedToken:
    """The attacker's token: tokens:write only, restricted, rate-limited, one hour left."""
    return issue(
        alice,
        ["tokens:write"],
        allowed_ips=["10.0.0.0/8"],
        rate_limit="100/h",
        expires_in=timedelta(hours=1),
    )


@pytest.fixture
def strong(alice: Any, issue: Any, clock: Any) -> services.IssuedToken:
    """The victim: notes:write + tokens:introspect, anywhere, no rate, 30 days left."""
    return issue(alice, ["notes:write", "tokens:introspect"], expires_in=timedelta(days=30))


def test_weak_token_cannot_rotate_a_stronger_sibling(api, weak, strong):
    before = snapshot(strong.token)
    response = rotate(api, weak.plaintext, strong.token.key_id)
    assert response.status_code == 403
    assert "token" not in response.json()
    assert "no more than it can" in response.json()["detail"]
    assert snapshot(strong.token) == before
    assert not TokenEvent.objects.filter(kind="rotated").exists()
    # The victim's secret still works, from anywhere.
    assert works(strong.plaintext, NOTES, ip="203.0.113.7")


def create_child(api: APIClient, caller: str, **fields: Any) -> dict[str, Any]:
    body = {"name": fields.pop("name", "child"), "scopes": ["tokens:read"], **fields}
    response = api.post(TOKENS, body, format="json", REMOTE_ADDR=HOME, **bearer(caller))
    assert response.status_code == 201, response.content
    return dict(response.json())


@pytest.mark.parametrize(
    ("caller_rate", "excess", "reason"),
    [
        ("", {"scopes": ["notes:read"]}, "a scope the caller lacks"),
        ("", {"expires_in": timedelta(days=2)}, "a later expiry"),
        ("", {"allowed_ips": []}, "no networks: anywhere"),
        ("", {"allowed_ips": ["192.0.2.0/24"]}, "networks outside the caller's"),
        ("100/h", {"ancestry": "looser"}, "the caller's budget at a looser rate"),
    ],
)
def test_each_way_of_exceeding_the_caller_refuses_rotation(
    api, alice, issue, clock, caller_rate, excess, reason
):
    # A descendant that exceeds its ancestor cannot come from the API (creation and
    # narrowing keep it within), so the row is written directly, as an older release or
    # a data migration might have: covers() still refuses to hand its secret out.
    caller = issue(
        alice,
        ["tokens:write"],
        allowed_ips=["10.0.0.0/8"],
        rate_limit=caller_rate,
        expires_in=timedelta(hours=1),
    )
    covered = {"expires_at": (clock.current + timedelta(minutes=30)).isoformat()}
    target = create_child(api, caller.plaintext, allowed_ips=["10.1.0.0/16"], **covered)
    control = create_child(api, caller.plaintext, name="control", **covered)
    if "expires_in" in excess:
        excess = {"expires_at": clock.current + excess["expires_in"]}
    if excess.get("ancestry") == "looser":
        excess = {"ancestry": [[caller.token.key_id, "1000/h"]]}
    APIToken.objects.filter(key_id=target["id"]).update(**excess)
    before = snapshot(APIToken.objects.get(key_id=target["id"]))
    assert rotate(api, caller.plaintext, target["id"]).status_code == 403, reason
    assert snapshot(APIToken.objects.get(key_id=target["id"])) == before
    assert rotate(api, caller.plaintext, control["id"]).status_code == 200


def test_weak_token_cannot_change_a_stronger_sibling(api, weak, strong):
    before = snapshot(strong.token)
    response = api.patch(
        f"{TOKENS}{strong.token.key_id}/",
        {"name": "mine-now"},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(weak.plaintext),
    )
    assert response.status_code == 403
    assert snapshot(strong.token) == before


def test_token_may_rotate_itself_and_what_it_created(api, weak):
    child = api.post(
        TOKENS,
        {"name": "child", "scopes": ["tokens:read"]},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(weak.plaintext),
    ).json()
    rotated_child = rotate(api, weak.plaintext, child["id"])
    assert rotated_child.status_code == 200
    assert works(rotated_child.json()["token"])
    assert not works(child["token"])
    rotated_self = rotate(api, weak.plaintext, weak.token.key_id)
    assert rotated_self.status_code == 200
    assert works(rotated_self.json()["token"])


def test_token_never_rotates_a_sibling_even_a_weaker_one(api, alice, issue, clock):
    # Fewer scopes, an earlier expiry, no rates or networks anywhere: the sibling can do no
    # more than the caller. Still refused: the secret it handed out would outlive the
    # caller's revocation (a sibling is not revoked with it, a descendant is).
    caller = issue(alice, ["tokens:write", "notes:write"], expires_in=timedelta(days=10))
    sibling = issue(alice, ["notes:read"], expires_in=timedelta(days=5))
    before = snapshot(sibling.token)
    response = rotate(api, caller.plaintext, sibling.token.key_id)
    assert response.status_code == 403
    assert "only itself and the tokens it created" in response.json()["detail"]
    assert snapshot(sibling.token) == before
    assert works(sibling.plaintext)


def test_a_secret_obtained_by_rotating_a_child_goes_with_the_rotator(api, alice, issue, clock):
    caller = issue(alice, ["tokens:write", "notes:read"])
    child = create_child(api, caller.plaintext, scopes=["notes:read"])
    obtained = rotate(api, caller.plaintext, child["id"]).json()["token"]
    assert works(obtained, NOTES)
    session = APIClient()
    session.force_login(alice)
    assert session.delete(f"{TOKENS}{caller.token.key_id}/").status_code == 204
    assert not works(caller.plaintext)
    assert not works(obtained), "the rotated secret outlives the token that obtained it"


def test_session_owner_may_rotate_any_own_token(alice, strong):
    client = APIClient()
    client.force_login(alice)
    response = client.post(f"{TOKENS}{strong.token.key_id}/rotate/", {}, format="json")
    assert response.status_code == 200


# --- item 2: the previous secret during a rotation grace --------------------------------------


@pytest.fixture
def rotated(api: APIClient, alice: Any, issue: Any, clock: Any) -> dict[str, Any]:
    """A token rotated with a one-hour grace: its old and new secrets, and the grace end."""
    issued = issue(
        alice, ["tokens:write", "notes:read"], expires_in=timedelta(days=30), allowed_ips=[]
    )
    response = rotate(api, issued.plaintext, issued.token.key_id, grace=3600)
    assert response.status_code == 200
    return {
        "token": issued.token,
        "old": issued.plaintext,
        "new": response.json()["token"],
        "grace_end": clock.current + timedelta(hours=1),
    }


def test_old_secret_still_finishes_work_in_progress(rotated):
    assert works(rotated["old"], NOTES)
    assert works(rotated["new"], NOTES)


def test_old_secret_creates_only_children_that_end_with_the_grace(api, rotated):
    response = api.post(
        TOKENS,
        {"name": "kept-access", "scopes": ["notes:read"]},
        format="json",
        **bearer(rotated["old"]),
    )
    assert response.status_code == 201
    child = APIToken.objects.get(key_id=response.json()["id"])
    assert child.expires_at == rotated["grace_end"]
    assert child.parent_id == rotated["token"].pk


def test_old_secret_cannot_ask_for_a_child_outliving_the_grace(api, rotated):
    before = APIToken.objects.count()
    response = api.post(
        TOKENS,
        {"name": "kept-access", "scopes": ["notes:read"], "expires_in_days": 7},
        format="json",
        **bearer(rotated["old"]),
    )
    assert response.status_code == 400
    assert "expires_at" in response.json()
    assert APIToken.objects.count() == before


@pytest.mark.parametrize("grace", [0, 60, 3600])
def test_old_secret_cannot_rotate_again_and_lock_the_owner_out(api, rotated, grace, clock):
    before = snapshot(rotated["token"])
    response = rotate(api, rotated["old"], rotated["token"].key_id, grace=grace)
    assert response.status_code == 403
    assert "Use the new secret" in response.json()["detail"]
    assert snapshot(rotated["token"]) == before
    assert works(rotated["new"], NOTES)


def test_old_secret_cannot_change_the_token(api, rotated):
    before = snapshot(rotated["token"])
    response = api.patch(
        f"{TOKENS}{rotated['token'].key_id}/",
        {"allowed_ips": ["10.0.0.0/8"]},
        format="json",
        **bearer(rotated["old"]),
    )
    assert response.status_code == 403
    assert snapshot(rotated["token"]) == before
    assert APIToken.objects.get(pk=rotated["token"].pk).allowed_ips == []


def test_old_secret_mints_jwts_that_end_with_the_grace(api, rotated, clock):
    response = api.post(MINT, {}, format="json", **bearer(rotated["old"]))
    assert response.status_code == 200
    clock.advance(minutes=59, seconds=50)
    rotated_jwt = response.json()["access_token"]
    assert response.json()["expires_in"] == 300
    assert works(rotated_jwt, NOTES) is False  # minted 59m50s ago with a 5-minute life
    fresh = api.post(MINT, {}, format="json", **bearer(rotated["old"])).json()
    assert fresh["expires_in"] == 10  # the grace ends in ten seconds
    assert works(fresh["access_token"], NOTES)
    clock.advance(seconds=10)
    assert not works(fresh["access_token"], NOTES)
    assert not works(rotated["old"], NOTES)
    assert works(rotated["new"], NOTES)


def test_old_secret_may_still_revoke_the_token(api, rotated):
    # A leaked old secret can always be used to kill the token: revocation hands out nothing.
    response = api.delete(f"{TOKENS}current/", **bearer(rotated["old"]))
    assert response.status_code == 204
    assert not works(rotated["new"])


def test_new_secret_may_end_the_grace_at_once(api, rotated):
    response = rotate(api, rotated["new"], rotated["token"].key_id, grace=0)
    assert response.status_code == 200
    assert not works(rotated["old"])
    assert not works(rotated["new"])
    assert works(response.json()["token"])


# --- item 9: a JWT where only API tokens count ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", TOKENS),
        ("post", TOKENS),
        ("get", f"{TOKENS}current/"),
        ("post", f"{TOKENS}revoke-all/"),
        ("post", MINT),
    ],
)
def test_jwt_on_token_endpoints_gets_the_invalid_token_challenge(api, alice, issue, method, path):
    issued = issue(alice, ["tokens:write", "notes:read"])
    jwt = api.post(MINT, {}, format="json", **bearer(issued.plaintext)).json()["access_token"]
    before = (APIToken.objects.count(), TokenEvent.objects.count())
    response = getattr(api, method)(path, {}, format="json", **bearer(jwt))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == INVALID_CHALLENGE
    assert response.json() == INVALID_BODY
    assert (APIToken.objects.count(), TokenEvent.objects.count()) == before


def test_jwt_next_to_a_session_is_still_refused(alice, issue):
    issued = issue(alice, ["tokens:write"])
    client = APIClient()
    jwt = client.post(MINT, {}, format="json", **bearer(issued.plaintext)).json()["access_token"]
    client.force_login(alice)
    response = client.get(TOKENS, **bearer(jwt))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == INVALID_CHALLENGE


# --- the rule itself ---------------------------------------------------------------------------


def test_credential_kinds(alice, issue, rotated):
    token = issue(alice).token
    assert authority.credential_of(None).kind is authority.Kind.OPERATOR
    assert authority.credential_of(alice).kind is authority.Kind.USER
    assert authority.credential_of(alice, token).kind is authority.Kind.TOKEN
    assert authority.credential_of(alice, object()).kind is authority.Kind.OTHER
    grace = services.authenticate_token(rotated["old"])
    assert authority.credential_of(alice, grace).kind is authority.Kind.GRACE
    assert services.authenticate_token(rotated["new"]).presented_grace_until is None


@pytest.mark.parametrize("action", list(authority.Action))
def test_other_credentials_may_do_nothing(alice, issue, action):
    token = issue(alice).token
    with pytest.raises(authority.NotPermitted):
        authority.authorize(authority.credential_of(alice, object()), action, target=token)


@pytest.mark.parametrize("action", list(authority.Action))
def test_a_token_never_acts_for_another_owner(alice, bob, issue, action):
    mine, theirs = issue(alice, ["tokens:write"]).token, issue(bob).token
    credential = authority.credential_of(alice, mine)
    with pytest.raises(authority.NotPermitted):
        authority.authorize(credential, action, target=theirs)


def test_managers_token_acts_only_for_its_owner(alice, superuser, issue):
    manager_token = issue(superuser, ["tokens:write"]).token
    with pytest.raises(authority.NotPermitted):
        services.revoke_token(
            issue(alice).token, caller=Caller(user=superuser, presented=manager_token)
        )
    # The same manager in a session (the admin) may.
    assert services.revoke_token(issue(alice).token, caller=Caller(user=superuser)) is True


def test_only_an_api_token_mints_jwts(alice):
    with pytest.raises(authority.NotPermitted):
        authority.authorize(authority.credential_of(alice), authority.Action.MINT_JWT, owner=alice)


def test_a_child_never_rotates_its_parent_even_with_equal_limits(api, alice, issue, clock):
    parent = issue(alice, ["tokens:write"])
    child = api.post(
        TOKENS,
        {"name": "child", "scopes": ["tokens:write"]},
        format="json",
        **bearer(parent.plaintext),
    ).json()
    stored = APIToken.objects.get(key_id=child["id"])
    assert (stored.scopes, stored.expires_at) == (parent.token.scopes, parent.token.expires_at)
    before = snapshot(parent.token)
    assert rotate(api, child["token"], parent.token.key_id).status_code == 403
    assert snapshot(parent.token) == before


def test_a_child_of_the_old_secret_stops_when_a_rotation_cuts_the_grace_short(
    api, alice, issue, clock
):
    # Found by review: the child ended at the grace's scheduled end, so a second rotation
    # (which stops the old secret at once) left it working, minting and creating for hours.
    root = issue(alice, ["tokens:write", "notes:read"], expires_in=timedelta(days=30))
    session = APIClient()
    session.force_login(alice)
    rotate_url = f"{TOKENS}{root.token.key_id}/rotate/"
    old = root.plaintext
    new = session.post(rotate_url, {"grace_seconds": 3600}, format="json").json()["token"]
    body = {"name": "graceborn", "scopes": ["notes:read", "tokens:write"]}
    made = api.post(TOKENS, body, format="json", REMOTE_ADDR=HOME, **bearer(old))
    assert made.status_code == 201
    child = made.json()["token"]
    sibling = api.post(TOKENS, {**body, "name": "by-new"}, format="json", **bearer(new)).json()
    assert works(child, NOTES)
    clock.advance(seconds=5)
    assert session.post(rotate_url, {"grace_seconds": 0}, format="json").status_code == 200
    clock.advance(seconds=5)
    assert not works(old)
    assert not works(child), "the old secret's child outlives the secret"
    assert api.post(MINT, {}, format="json", **bearer(child)).status_code == 401
    assert api.post(TOKENS, body, format="json", **bearer(child)).status_code == 401
    assert works(sibling["token"]), "a child of the current secret is not the grace's"
    stored = APIToken.objects.get(key_id=made.json()["id"])
    assert stored.revoke_reason == "the previous secret that created it stopped"


def test_an_old_secret_rotated_away_mid_request_creates_nothing(alice, issue, clock):
    # The request authenticated with the grace secret; before its insert, the token was
    # rotated again (that stops the old secret): the locked re-read refuses the child.
    root = issue(alice, ["tokens:write", "notes:read"], expires_in=timedelta(days=30))
    old = root.plaintext
    services.rotate_token(root.token, caller=Caller(user=alice), grace_seconds=3600)
    presented = services.authenticate_token(old)
    assert presented is not None and presented.presented_grace_until is not None
    services.rotate_token(root.token, caller=Caller(user=alice), grace_seconds=0)
    with pytest.raises(ValidationError, match="no longer active"):
        services.issue_token(
            alice,
            name="late",
            scopes=["notes:read"],
            caller=Caller(user=alice, presented=presented),
        )
    assert not APIToken.objects.filter(name="late").exists()


def test_a_token_cannot_widen_its_own_networks_and_is_told_so(api, alice, issue):
    token = issue(alice, ["tokens:write", "notes:read"], allowed_ips=["10.0.0.0/8"])
    response = api.patch(
        f"{TOKENS}{token.token.key_id}/",
        {"allowed_ips": ["0.0.0.0/0"]},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(token.plaintext),
    )
    assert response.status_code == 400
    assert "making this change cannot allow networks" in str(response.json()["allowed_ips"])
    assert APIToken.objects.get(pk=token.token.pk).allowed_ips == ["10.0.0.0/8"]
