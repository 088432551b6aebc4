"""JWTs end when what they came from loses power (issue 13 items 3 and 12).

A JWT is verified without SQL; the deny list carries rotations, narrowings and owner
changes to it. And a validly signed JWT with claims this server never writes is a 401,
never a 500 or a 503. The clock is ``tokens_app.core.clock`` (the ``clock`` fixture).
"""

from typing import Any

import jwt
import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import caches
from rest_framework.test import APIClient

from tests.helpers import (
    NOTES,
    TOKENS,
    WHOAMI,
    assert_invalid,
    bearer,
    mint_jwt,
)
from tokens_app import services
from tokens_app.conf import token_settings
from tokens_app.jwt import signing_keys

pytestmark = pytest.mark.django_db


def status_of(credential: str, path: str = NOTES) -> int:
    return APIClient().get(path, **bearer(credential)).status_code


def rotate(plaintext: str, key_id: str, grace: int) -> str:
    response = APIClient().post(
        f"{TOKENS}{key_id}/rotate/", {"grace_seconds": grace}, format="json", **bearer(plaintext)
    )
    assert response.status_code == 200, response.content
    return str(response.json()["token"])


@pytest.fixture
def writer(alice: Any, issue: Any, clock: Any) -> services.IssuedToken:
    return issue(alice, ["tokens:write", "notes:read"])


# --- item 3: rotation ends the old secret's JWTs with it ---------------------------------------


def test_rotation_without_grace_refuses_older_jwts_at_once(writer, clock):
    before = mint_jwt(APIClient(), writer.plaintext)
    assert status_of(before) == 200
    new = rotate(writer.plaintext, writer.token.key_id, grace=0)
    assert_invalid(APIClient().get(NOTES, **bearer(before)))
    after = mint_jwt(
        APIClient(), new
    )  # same second: told apart by the secret's version, not the time
    assert status_of(after) == 200


def test_rotation_grace_lets_older_jwts_finish_then_stops_them(writer, clock):
    before = mint_jwt(APIClient(), writer.plaintext)
    new = rotate(writer.plaintext, writer.token.key_id, grace=120)
    clock.advance(seconds=119)
    assert status_of(before) == 200
    clock.advance(seconds=1)
    assert status_of(before) == 401
    assert status_of(new) == 200


def test_jwts_of_the_new_secret_outlive_the_grace(writer, clock):
    new = rotate(writer.plaintext, writer.token.key_id, grace=60)
    after = mint_jwt(APIClient(), new)
    clock.advance(seconds=61)
    assert status_of(after) == 200


def test_a_second_rotation_ends_the_first_secrets_jwts_at_once(writer, clock):
    first = mint_jwt(APIClient(), writer.plaintext)
    second_secret = rotate(writer.plaintext, writer.token.key_id, grace=3600)
    clock.advance(seconds=1)
    second = mint_jwt(APIClient(), second_secret)
    third_secret = rotate(second_secret, writer.token.key_id, grace=3600)
    # Only one previous secret is kept: the first is gone, and its JWTs with it.
    assert status_of(writer.plaintext) == 401
    assert status_of(first) == 401
    assert status_of(second) == 200
    clock.advance(hours=1)
    assert status_of(second) == 401
    assert status_of(third_secret) == 200


def test_revocation_still_refuses_every_jwt(writer):
    minted = mint_jwt(APIClient(), writer.plaintext)
    services.revoke_token(writer.token)
    assert_invalid(APIClient().get(NOTES, **bearer(minted)))


# --- owners who lose power ----------------------------------------------------------------------


@pytest.fixture
def auditor(staff: Any, issue: Any, clock: Any) -> str:
    """A JWT of a staff member carrying the staff-only scope audit:read."""
    issued = issue(staff, ["audit:read", "notes:read"])
    return mint_jwt(APIClient(), issued.plaintext)


def scopes_of(credential: str) -> Any:
    response = APIClient().get(WHOAMI, **bearer(credential))
    return response.json()["scopes"] if response.status_code == 200 else response.status_code


def test_demoted_owner_loses_staff_scopes_in_jwts_at_once(staff, auditor, clock):
    assert scopes_of(auditor) == ["audit:read", "notes:read"]
    staff.is_staff = False
    staff.save()
    assert scopes_of(auditor) == 401


def test_saving_an_owner_without_a_demotion_changes_nothing(staff, auditor):
    staff.first_name = "Sam"
    staff.save()
    staff.save(update_fields=["last_login"])
    assert scopes_of(auditor) == ["audit:read", "notes:read"]


def test_deleted_owner_jwts_are_refused(alice, writer):
    minted = mint_jwt(APIClient(), writer.plaintext)
    alice.delete()
    assert status_of(minted) == 401


@pytest.mark.parametrize("how", ["user_side", "permission_side", "group_side", "group_perm"])
def test_losing_a_permission_or_group_refuses_the_owners_jwts(alice, issue, how, clock):
    permission = Permission.objects.get(codename="view_apitoken")
    group = Group.objects.create(name="readers")
    group.permissions.add(permission)
    alice.user_permissions.add(permission)
    alice.groups.add(group)
    minted = mint_jwt(APIClient(), issue(alice, ["notes:read"]).plaintext)
    assert status_of(minted) == 200
    if how == "user_side":
        alice.user_permissions.remove(permission)
    elif how == "permission_side":
        permission.user_set.clear()
    elif how == "group_side":
        group.user_set.remove(alice)
    else:
        permission.group_set.remove(group)
    assert status_of(minted) == 401


def test_other_users_jwts_are_untouched_by_a_demotion(bob, staff, issue, auditor):
    bobs = mint_jwt(APIClient(), issue(bob, ["notes:read"]).plaintext)
    staff.is_staff = False
    staff.save()
    assert status_of(bobs) == 200


# --- item 12: validly signed JWTs with claims we never write ------------------------------------


def claims_for(issued: services.IssuedToken, now: int, **overrides: Any) -> dict[str, Any]:
    claims = {
        "iss": "tokens_app-example",
        "sub": str(issued.token.owner.pk),
        "aud": "api",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": "signed-by-us",
        "scope": "notes:read",
        "client_id": issued.token.key_id,
        "username": issued.token.owner.get_username(),
        "secret_version": 1,
    }
    return {**claims, **overrides}


def sign(claims: dict[str, Any]) -> str:
    ring = signing_keys.keyring()
    headers = {"typ": "at+jwt", "kid": ring.signing_kid}
    return jwt.encode(claims, ring.signing_key, algorithm=ring.algorithm, headers=headers)


def test_control_signed_jwt_is_accepted(writer, clock):
    now = int(clock.current.timestamp())
    assert status_of(sign(claims_for(writer, now))) == 200


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"sub": "alice"}, "a non-numeric subject (was a 500)"),
        ({"sub": 7}, "a subject that is not a string"),
        ({"exp_years": 5}, "an exp years ahead (was accepted)"),
        ({"rate_limit": "0/s"}, "a zero rate (was a 503)"),
        ({"rate_limit": "fast"}, "an unreadable rate"),
        ({"allowed_ips": "10.0.0.0/8"}, "networks not as a list"),
        ({"allowed_ips": ["10.0.0.5/8"]}, "a network with host bits"),
        ({"shared_rate_limits": [["short", "5/m"]]}, "a budget with a bad key id"),
        ({"shared_rate_limits": [["AAAAAAAAAAAA", "0/m"]]}, "a budget with a zero rate"),
        ({"secret_version": -1}, "a negative secret version"),
        ({"secret_version": "1"}, "a secret version that is not a number"),
        ({"exp": 1.5e12}, "a float expiry"),
        ({"iat": True}, "a boolean iat"),
        ({"client_id": "not a key id"}, "a malformed client id"),
        ({"username": ["alice"]}, "a username that is not text"),
    ],
)
def test_signed_jwt_with_claims_we_never_write_is_401(writer, clock, overrides, why):
    now = int(clock.current.timestamp())
    overrides = dict(overrides)
    years = overrides.pop("exp_years", None)
    if years:
        overrides["exp"] = now + years * 365 * 86400
    response = APIClient().get(NOTES, **bearer(sign(claims_for(writer, now, **overrides))))
    assert_invalid(response)


def test_jwt_lifetime_may_not_exceed_the_setting_plus_leeway(writer, clock):
    now = int(clock.current.timestamp())
    assert status_of(sign(claims_for(writer, now, exp=now + 300 + 10))) == 200
    assert status_of(sign(claims_for(writer, now, exp=now + 300 + 11))) == 401


def test_jwt_of_a_future_or_a_past_moment_is_refused(writer, clock):
    now = int(clock.current.timestamp())
    assert status_of(sign(claims_for(writer, now + 60, exp=now + 120))) == 401
    assert status_of(sign(claims_for(writer, now - 400, exp=now - 100))) == 401
    assert status_of(sign(claims_for(writer, now - 5, exp=now - 1))) == 200  # within leeway


# --- floods ---------------------------------------------------------------------------------


def test_many_rotations_keep_the_deny_entry_small_and_exact(writer, clock):
    secret = writer.plaintext
    first = mint_jwt(APIClient(), secret)
    for _ in range(40):
        clock.advance(seconds=1)
        secret = rotate(secret, writer.token.key_id, grace=600)
    last = mint_jwt(APIClient(), secret)
    cache = caches[token_settings().jwt.deny_list_cache]
    entry = cache.get(f"tokens_app:jwt-deny:{writer.token.key_id}")
    assert len(entry["retired"]) <= 2
    assert status_of(first) == 401
    assert status_of(last) == 200


def test_introspection_of_a_grace_secret_says_when_it_ends(alice, issue, clock):
    caller = issue(alice, ["tokens:introspect"])
    issued = issue(alice, ["notes:read"])
    services.rotate_token(issued.token, grace_seconds=90)
    answer = (
        APIClient()
        .post(
            "/api/auth/introspect/",
            {"token": issued.plaintext},
            format="json",
            **bearer(caller.plaintext),
        )
        .json()
    )
    assert answer["active"] is True
    assert answer["exp"] == int(clock.current.timestamp()) + 90
