"""Lineage: tokens made by tokens share their parent's budget, fit inside it, die with it.

Issue 13 item 11 (rates multiplied through children) and the invariants behind it:
everything derived from a token is revoked with it and narrowed with it.
"""

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from tests.helpers import HOME, MINT, NOTES, TOKENS, admin_client, bearer, change_data
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services import authority
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db


def child_of(parent: str, ip: str = HOME, **fields: Any) -> Any:
    body = {"name": fields.pop("name", "child"), "scopes": ["notes:read"], **fields}
    response = APIClient().post(TOKENS, body, format="json", REMOTE_ADDR=ip, **bearer(parent))
    assert response.status_code == 201, response.content
    return response.json()


def status_of(plaintext: str, ip: str = HOME) -> int:
    return APIClient().get(NOTES, REMOTE_ADDR=ip, **bearer(plaintext)).status_code


# --- item 11: a family never goes faster than its root ----------------------------------------


def test_children_share_their_parents_budget(alice, issue):
    # The attack used 5/m; a day-long window keeps the count exact however the test is timed.
    # Minting the four children spends four requests of the root's nine.
    root = issue(alice, ["tokens:write", "notes:read"], rate_limit="9/d")
    children = [child_of(root.plaintext, name=f"c{n}")["token"] for n in range(4)]
    assert all(APIToken.objects.get(key_id=c[4:16]).rate_limit == "9/d" for c in children)
    family = [root.plaintext, *children]
    answers = [status_of(family[n % 5]) for n in range(25)]
    assert answers.count(200) == 5
    assert set(answers) == {200, 429}
    for member in family:
        assert status_of(member) == 429


def test_a_child_of_a_child_counts_against_every_ancestor(alice, issue):
    # Two of the five go to minting the middle token (by the root) and the grandchild.
    root = issue(alice, ["tokens:write", "notes:read"], rate_limit="5/d")
    middle = child_of(root.plaintext, scopes=["tokens:write", "notes:read"], name="m")
    grandchild = child_of(middle["token"], name="g")
    stored = APIToken.objects.get(key_id=grandchild["id"])
    assert stored.ancestry == [[root.token.key_id, "5/d"], [middle["id"], "5/d"]]
    assert [status_of(grandchild["token"]) for _ in range(4)] == [200] * 3 + [429]
    assert status_of(root.plaintext) == 429
    assert status_of(middle["token"]) == 429


def test_jwts_of_children_count_against_the_root(api, alice, issue):
    # Creating the child and minting its JWT are the family's first two requests of five.
    root = issue(alice, ["tokens:write", "notes:read"], rate_limit="5/d")
    child = child_of(root.plaintext)
    jwt = api.post(MINT, {}, format="json", REMOTE_ADDR=HOME, **bearer(child["token"]))
    assert jwt.status_code == 200
    access = jwt.json()["access_token"]
    assert [status_of(access) for _ in range(4)] == [200] * 3 + [429]
    assert status_of(root.plaintext) == 429


def test_tokens_without_rates_carry_no_budget(alice, issue):
    root = issue(alice, ["tokens:write", "notes:read"])
    child = APIToken.objects.get(key_id=child_of(root.plaintext)["id"])
    assert services.token_budgets(child) == []
    assert child.ancestry == [[root.token.key_id, ""]]


def test_default_rate_applies_to_each_ancestor(alice, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "DEFAULT_TOKEN_RATE": "7/d"}
    root = issue(alice, ["tokens:write", "notes:read"])
    child = APIToken.objects.get(key_id=child_of(root.plaintext)["id"])
    assert services.token_budgets(child) == [
        (child.key_id, "7/d"),
        (root.token.key_id, "7/d"),
    ]


def test_lineage_is_at_most_so_deep(alice, issue):
    current = issue(alice, ["tokens:write", "notes:read"]).plaintext
    for depth in range(authority.MAX_LINEAGE_DEPTH):
        current = child_of(current, scopes=["tokens:write", "notes:read"], name=f"d{depth}")[
            "token"
        ]
    before = APIToken.objects.count()
    response = APIClient().post(
        TOKENS, {"name": "too-deep", "scopes": ["notes:read"]}, format="json", **bearer(current)
    )
    assert response.status_code == 400
    assert "generations deep" in str(response.json()["non_field_errors"])
    assert APIToken.objects.count() == before


# --- revoked together ---------------------------------------------------------------------------


@pytest.fixture
def family(alice: Any, issue: Any) -> dict[str, Any]:
    root = issue(alice, ["tokens:write", "notes:read"])
    child = child_of(root.plaintext, scopes=["tokens:write", "notes:read"], name="child")
    grandchild = child_of(child["token"], name="grandchild")
    sibling = issue(alice, ["notes:read"])
    return {"root": root, "child": child, "grandchild": grandchild, "sibling": sibling}


def test_revoking_a_token_revokes_everything_derived_from_it(api, family):
    jwt = api.post(MINT, {}, format="json", **bearer(family["grandchild"]["token"]))
    access = jwt.json()["access_token"]
    assert status_of(access) == 200
    response = api.delete(
        f"{TOKENS}{family['root'].token.key_id}/", **bearer(family["root"].plaintext)
    )
    assert response.status_code == 204
    for name in ("root", "child", "grandchild"):
        plaintext = family[name].plaintext if name == "root" else family[name]["token"]
        assert status_of(plaintext) == 401, name
    assert status_of(access) == 401
    assert status_of(family["sibling"].plaintext) == 200
    events = TokenEvent.objects.filter(kind="revoked").order_by("id")
    assert [e.key_id for e in events] == [
        family["root"].token.key_id,
        family["child"]["id"],
        family["grandchild"]["id"],
    ]
    assert events[2].detail == {
        "reason": f"with ancestor {family['root'].token.key_id}",
        "ancestor": family["root"].token.key_id,
    }


def test_revoking_a_child_leaves_its_parent(api, family):
    child_id = family["child"]["id"]
    assert services.revoke_token(APIToken.objects.get(key_id=child_id)) is True
    assert status_of(family["root"].plaintext) == 200
    assert status_of(family["grandchild"]["token"]) == 401


def test_revoke_all_counts_every_token_once(alice, family):
    assert services.revoke_all_tokens(alice, caller=Caller(user=alice)) == 4
    assert not APIToken.objects.usable().exists()


def test_a_child_cannot_appear_under_a_revoked_parent(alice, issue):
    parent = issue(alice, ["tokens:write", "notes:read"])
    stale = services.authenticate_token(parent.plaintext)
    services.revoke_token(parent.token)
    before = APIToken.objects.count()
    # The request authenticated just before the revoke committed: it must still not mint.
    with pytest.raises(ValidationError):
        services.issue_token(
            alice, name="late", scopes=["notes:read"], caller=Caller(user=alice, presented=stale)
        )
    assert APIToken.objects.count() == before


# --- narrowed together --------------------------------------------------------------------------


def test_narrowing_a_parents_networks_narrows_its_children(api, alice, issue):
    parent = issue(alice, ["tokens:write", "notes:read"], allowed_ips=["10.0.0.0/8"])
    inside = child_of(parent.plaintext, allowed_ips=["10.1.0.0/16"], name="inside")
    wide = child_of(parent.plaintext, name="wide")  # inherits 10.0.0.0/8
    elsewhere = child_of(parent.plaintext, allowed_ips=["10.9.0.0/16"], name="elsewhere")
    response = api.patch(
        f"{TOKENS}{parent.token.key_id}/",
        {"allowed_ips": ["10.1.0.0/16", "10.2.0.0/16"]},
        format="json",
        REMOTE_ADDR="10.1.0.1",
        **bearer(parent.plaintext),
    )
    assert response.status_code == 200
    assert APIToken.objects.get(key_id=inside["id"]).allowed_ips == ["10.1.0.0/16"]
    assert APIToken.objects.get(key_id=wide["id"]).allowed_ips == ["10.1.0.0/16", "10.2.0.0/16"]
    gone = APIToken.objects.get(key_id=elsewhere["id"])
    assert gone.revoked_at is not None  # nowhere left to work from
    assert status_of(wide["token"], ip="10.5.0.1") == 401
    assert status_of(wide["token"], ip="10.2.0.1") == 200


def test_tightening_a_parents_rate_reaches_its_children(api, alice, issue):
    parent = issue(alice, ["tokens:write", "notes:read"], rate_limit="100/d")
    child = child_of(parent.plaintext)
    api.force_login(alice)  # a token may not change its own rate; its owner may
    response = api.patch(f"{TOKENS}{parent.token.key_id}/", {"rate_limit": "2/d"}, format="json")
    assert response.status_code == 200
    stored = APIToken.objects.get(key_id=child["id"])
    assert (stored.rate_limit, stored.ancestry) == ("2/d", [[parent.token.key_id, "2/d"]])
    update = TokenEvent.objects.filter(key_id=child["id"], kind="updated").get()
    assert update.detail["ancestor"] == parent.token.key_id


def test_a_manager_narrowing_scopes_in_the_admin_narrows_the_children(alice, superuser, issue):
    parent = issue(alice, ["tokens:write", "notes:write"])
    keeps = child_of(parent.plaintext, scopes=["notes:read", "tokens:read"], name="keeps")
    loses = child_of(parent.plaintext, scopes=["tokens:read"], name="loses")
    client = admin_client(superuser)
    url = f"/admin/tokens_app/apitoken/{parent.token.pk}/change/"
    response = client.post(url, change_data(parent.token, scopes=["notes:write"]))
    assert response.status_code == 302, response.content
    assert APIToken.objects.get(key_id=keeps["id"]).scopes == ["notes:read"]
    assert APIToken.objects.get(key_id=loses["id"]).revoked_at is not None


def test_narrowing_refuses_the_jwts_minted_so_far(api, alice, issue, clock):
    parent = issue(alice, ["tokens:write", "notes:read"])
    access = api.post(MINT, {}, format="json", **bearer(parent.plaintext)).json()["access_token"]
    assert status_of(access) == 200
    api.patch(
        f"{TOKENS}{parent.token.key_id}/",
        {"allowed_ips": ["10.0.0.0/8"]},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(parent.plaintext),
    )
    assert status_of(access) == 401
    clock.advance(seconds=1)
    fresh = api.post(MINT, {}, format="json", REMOTE_ADDR=HOME, **bearer(parent.plaintext))
    assert status_of(fresh.json()["access_token"]) == 200
    assert status_of(fresh.json()["access_token"], ip="192.0.2.1") == 401


def test_a_rename_refuses_no_jwt(api, alice, issue):
    parent = issue(alice, ["tokens:write", "notes:read"])
    access = api.post(MINT, {}, format="json", **bearer(parent.plaintext)).json()["access_token"]
    api.patch(
        f"{TOKENS}{parent.token.key_id}/",
        {"name": "renamed"},
        format="json",
        **bearer(parent.plaintext),
    )
    assert status_of(access) == 200


def test_clamp_child_keeps_what_fits(alice, issue):
    parent = issue(alice, ["notes:write"], allowed_ips=["10.0.0.0/8"], rate_limit="5/m").token
    child = issue(
        alice,
        ["notes:read"],
        allowed_ips=["10.0.0.0/8"],
        rate_limit="5/m",
        caller=Caller(presented=parent),
    ).token
    assert authority.clamp_child(child, parent) == {}
    assert child.expires_at is not None and child.expires_at <= parent.expires_at


def test_admin_revoke_confirmation_names_the_tokens_revoked_with_it(superuser, family):
    client = admin_client(superuser)
    root = family["root"].token
    page = client.get(f"/admin/tokens_app/apitoken/{root.pk}/revoke/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="derived-tokens"' in body
    assert family["child"]["id"] in body and family["grandchild"]["id"] in body
    assert family["sibling"].token.key_id not in body
    client.post(f"/admin/tokens_app/apitoken/{root.pk}/revoke/", {"reason": "leaked"})
    assert status_of(family["grandchild"]["token"]) == 401


def test_a_token_cannot_restart_its_budget_by_changing_its_own_rate(api, alice, issue):
    # 3/d and 6/2d are the same speed, but a new rate is a new counter: a fresh budget.
    token = issue(alice, ["tokens:write", "notes:read"], rate_limit="3/d")
    assert [status_of(token.plaintext) for _ in range(2)] == [200, 200]
    response = api.patch(
        f"{TOKENS}{token.token.key_id}/",
        {"rate_limit": "6/2d"},
        format="json",
        REMOTE_ADDR=HOME,
        **bearer(token.plaintext),
    )
    assert response.status_code == 403
    assert "own rate limit" in response.json()["detail"]
    assert APIToken.objects.get(pk=token.token.pk).rate_limit == "3/d"
    assert status_of(token.plaintext) == 429


def test_the_owners_session_may_change_a_tokens_rate(alice, issue):
    token = issue(alice, ["notes:read"], rate_limit="3/d")
    client = APIClient()
    client.force_login(alice)
    response = client.patch(f"{TOKENS}{token.token.key_id}/", {"rate_limit": "2/d"}, format="json")
    assert response.status_code == 200
