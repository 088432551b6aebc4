"""Business rules of issuing, revoking and authenticating, through services only."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from tokens_app import services
from tokens_app.core import hashing, tokenstring
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.caller import Caller, Via

pytestmark = pytest.mark.django_db


def error_fields(excinfo: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return set(excinfo.value.message_dict)


def test_issue_stores_hash_not_secret_and_records_event(alice, superuser, clock):
    issued = services.issue_token(
        alice,
        name="ci",
        scopes=["notes:read", "notes:read"],
        caller=Caller(user=superuser, ip="10.1.2.3", via=Via.API),
    )
    token = APIToken.objects.get(pk=issued.token.pk)
    parsed = tokenstring.parse(issued.plaintext, "tka")
    assert parsed is not None and parsed.key_id == token.key_id
    assert parsed.secret not in token.secret_hash
    assert hashing.verify_secret(parsed.secret, token.secret_hash)[0]
    assert token.scopes == ["notes:read"]
    assert token.created_by == superuser
    assert token.expires_at == clock.current + timedelta(days=30)
    event = TokenEvent.objects.get()
    assert (event.kind, event.key_id, event.actor, event.ip, event.via) == (
        "issued",
        token.key_id,
        superuser,
        "10.1.2.3",
        "api",
    )
    assert issued.plaintext not in repr(issued)


def test_key_ids_are_random_not_sequential(alice, issue):
    ids = {issue(alice).token.key_id for _ in range(5)}
    assert len(ids) == 5
    assert all(tokenstring.is_valid_key_id(key_id) for key_id in ids)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "bad\nname"}, "name"),
        ({"name": "-leading"}, "name"),
        ({"name": None}, "name"),
        ({"description": "d" * 1001}, "description"),
        ({"description": 5}, "description"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["nope:read"]}, "scopes"),
        ({"scopes": ["audit:read"]}, "scopes"),
        ({"scopes": ["notes:read", 3]}, "scopes"),
        ({"expires_at": "2031-01-01"}, "expires_at"),
        ({"expires_in": timedelta(days=366)}, "expires_at"),
        ({"expires_in": timedelta(seconds=-1)}, "expires_at"),
        ({"never_expires": True}, "expires_at"),
        ({"expires_in": timedelta(days=1), "never_expires": True}, "expires_at"),
    ],
)
def test_bad_issue_input_is_refused_and_writes_nothing(alice, clock, kwargs, field):
    arguments = {"name": "ok", "scopes": ["notes:read"], **kwargs}
    with pytest.raises(ValidationError) as excinfo:
        services.issue_token(alice, **arguments)
    assert field in error_fields(excinfo)
    assert not APIToken.objects.exists()
    assert not TokenEvent.objects.exists()


def test_naive_and_past_expiry_times_are_refused(alice, clock):
    for moment in (clock.current.replace(tzinfo=None) + timedelta(days=1), clock.current):
        with pytest.raises(ValidationError) as excinfo:
            services.issue_token(alice, name="x", scopes=["notes:read"], expires_at=moment)
        assert error_fields(excinfo) == {"expires_at"}


def test_inactive_owner_cannot_be_issued_a_token(alice):
    alice.is_active = False
    alice.save()
    with pytest.raises(ValidationError) as excinfo:
        services.issue_token(alice, name="x", scopes=["notes:read"])
    assert "owner" in error_fields(excinfo)


def test_string_scopes_are_one_name_not_characters(alice):
    issued = services.issue_token(alice, name="x", scopes="notes:read")
    assert issued.token.scopes == ["notes:read"]


def test_staff_may_hold_staff_scope(staff, issue):
    assert issue(staff, ["audit:read"]).token.scopes == ["audit:read"]


def test_name_is_unique_among_active_tokens_only(alice, issue, clock):
    first = issue(alice, name="ci", expires_in=timedelta(hours=1))
    with pytest.raises(ValidationError) as excinfo:
        issue(alice, name="ci")
    assert error_fields(excinfo) == {"name"}
    clock.advance(hours=2)  # the first one has expired: the name is free again
    issue(alice, name="ci")
    services.revoke_token(first.token)
    assert APIToken.objects.filter(name="ci").count() == 2


def test_other_owners_may_reuse_a_name(alice, bob, issue):
    issue(alice, name="ci")
    issue(bob, name="ci")
    assert APIToken.objects.filter(name="ci").count() == 2


def test_per_user_active_token_limit(alice, bob, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ACTIVE_TOKENS_PER_USER": 2}
    first = issue(alice)
    issue(alice)
    with pytest.raises(ValidationError, match="2 active tokens"):
        issue(alice)
    issue(bob)  # the limit is per owner
    services.revoke_token(first.token)
    issue(alice)  # revoked tokens do not count


def test_non_expiring_tokens_when_allowed(alice, settings):
    settings.API_TOKENS = {
        **settings.API_TOKENS,
        "ALLOW_NON_EXPIRING": True,
        "DEFAULT_LIFETIME": None,
    }
    assert services.issue_token(alice, name="a", scopes=["notes:read"]).token.expires_at is None
    explicit = services.issue_token(alice, name="b", scopes=["notes:read"], never_expires=True)
    assert explicit.token.expires_at is None


def test_parent_token_cannot_mint_more_scopes_or_longer_life(alice, issue, clock):
    parent = issue(alice, ["notes:write"], expires_in=timedelta(days=2)).token
    child = services.issue_token(
        alice,
        name="child",
        scopes=["notes:read"],
        caller=Caller(presented=parent),
        expires_in=timedelta(days=1),
    )
    assert child.token.scopes == ["notes:read"]  # implied by notes:write
    with pytest.raises(ValidationError) as excinfo:
        services.issue_token(
            alice,
            name="c2",
            scopes=["tokens:read"],
            caller=Caller(presented=parent),
            expires_in=timedelta(days=1),
        )
    assert error_fields(excinfo) == {"scopes"}
    with pytest.raises(ValidationError) as excinfo:
        services.issue_token(
            alice,
            name="c3",
            scopes=["notes:read"],
            caller=Caller(presented=parent),
            expires_in=timedelta(days=3),
        )
    assert error_fields(excinfo) == {"expires_at"}


def test_parent_with_expiry_cannot_mint_non_expiring_token(alice, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "ALLOW_NON_EXPIRING": True}
    parent = issue(alice, ["notes:read"]).token
    with pytest.raises(ValidationError) as excinfo:
        services.issue_token(
            alice,
            name="c",
            scopes=["notes:read"],
            caller=Caller(presented=parent),
            never_expires=True,
        )
    assert error_fields(excinfo) == {"expires_at"}


def test_key_id_collision_is_retried(alice, issue, monkeypatch):
    existing = issue(alice).token.key_id
    fresh = iter([existing, existing, "Z" * tokenstring.KEY_ID_LENGTH])
    monkeypatch.setattr(tokenstring, "generate_key_id", lambda: next(fresh))
    issued = issue(alice)
    assert issued.token.key_id == "Z" * tokenstring.KEY_ID_LENGTH
    assert services.authenticate_token(issued.plaintext) == issued.token


def test_key_id_collisions_without_end_fail_loudly(alice, issue, monkeypatch):
    existing = issue(alice).token.key_id
    monkeypatch.setattr(tokenstring, "generate_key_id", lambda: existing)
    with pytest.raises(IntegrityError):
        issue(alice)
    assert APIToken.objects.count() == 1


def test_revoke_is_idempotent_and_audited(alice, superuser, issue, clock):
    token = issue(alice).token
    assert (
        services.revoke_token(token, caller=Caller(user=superuser, via=Via.API), reason="  leaked ")
        is True
    )
    assert services.revoke_token(token, caller=Caller(user=superuser), reason="again") is False
    token.refresh_from_db()
    assert (token.revoked_at, token.revoked_by, token.revoke_reason) == (
        clock.current,
        superuser,
        "leaked",
    )
    events = TokenEvent.objects.filter(kind="revoked")
    assert [(e.key_id, e.detail) for e in events] == [(token.key_id, {"reason": "leaked"})]


def test_revoke_with_overlong_reason_changes_nothing(alice, issue):
    token = issue(alice).token
    with pytest.raises(ValidationError):
        services.revoke_token(token, reason="r" * 201)
    token.refresh_from_db()
    assert token.revoked_at is None


def test_find_token_by_key_id_or_full_token(alice, issue):
    issued = issue(alice)
    assert services.find_token(issued.token.key_id) == issued.token
    assert services.find_token(f"  {issued.plaintext} ") == issued.token
    for reference in (
        "",
        "nope",
        "x" * tokenstring.KEY_ID_LENGTH + "!",
        "A" * tokenstring.KEY_ID_LENGTH,
    ):
        assert services.find_token(reference) is None


def test_tokens_for_lists_one_owner_or_all(alice, bob, issue):
    mine = issue(alice).token
    theirs = issue(bob).token
    assert list(services.tokens_for(alice)) == [mine]
    assert set(services.tokens_for()) == {mine, theirs}


@pytest.mark.parametrize("reason", ["malformed", "unknown key id", "wrong secret"])
def test_authenticate_failures_carry_a_log_reason(alice, issue, reason):
    issued = issue(alice)
    raw = {
        "malformed": "garbage",
        "unknown key id": tokenstring.assemble(
            "tka", "Q" * tokenstring.KEY_ID_LENGTH, tokenstring.generate_secret()
        ),
        "wrong secret": tokenstring.assemble(
            "tka", issued.token.key_id, tokenstring.generate_secret()
        ),
    }[reason]
    with pytest.raises(services.InvalidToken) as excinfo:
        services.authenticate_token(raw)
    assert excinfo.value.reason == reason


def test_authenticate_rejects_corrupt_stored_hash(alice, issue):
    issued = issue(alice)
    APIToken.objects.filter(pk=issued.token.pk).update(secret_hash="$unknown$hash")
    with pytest.raises(services.InvalidToken):
        services.authenticate_token(issued.plaintext)


def test_changing_the_prefix_retires_old_tokens(alice, issue, settings):
    issued = issue(alice)
    settings.API_TOKENS = {**settings.API_TOKENS, "TOKEN_PREFIX": "acme"}
    with pytest.raises(services.InvalidToken):
        services.authenticate_token(issued.plaintext)
    fresh = issue(alice)
    assert fresh.plaintext.startswith("acme_")
    assert services.authenticate_token(fresh.plaintext) == fresh.token


def test_unbounded_lifetime_that_overflows_is_an_error(alice, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_LIFETIME": None}
    with pytest.raises(ValidationError) as excinfo:
        services.issue_token(alice, name="x", scopes=["notes:read"], expires_in=timedelta.max)
    assert error_fields(excinfo) == {"expires_at"}
    assert not APIToken.objects.exists()


def test_staff_without_manage_all_may_issue_only_for_themselves(alice, staff):
    with pytest.raises(ValidationError) as excinfo:
        services.issue_token(alice, name="x", scopes=["notes:read"], caller=Caller(user=staff))
    assert error_fields(excinfo) == {"owner"}
    own = services.issue_token(staff, name="x", scopes=["notes:read"], caller=Caller(user=staff))
    assert own.token.created_by == staff


def test_update_token_records_what_changed(alice, superuser, issue):
    token = issue(alice, name="old").token
    changed = services.update_token(
        token, caller=Caller(user=superuser, via=Via.API), name="new", scopes=["tokens:read"]
    )
    assert changed == ["name", "scopes"]
    stored = APIToken.objects.get(pk=token.pk)
    assert (stored.name, stored.scopes) == ("new", ["tokens:read"])
    event = TokenEvent.objects.get(kind="updated")
    assert event.detail == {
        "name": {"from": "old", "to": "new"},
        "scopes": {"from": ["notes:read"], "to": ["tokens:read"]},
    }
    assert services.update_token(stored, caller=Caller(user=superuser), name="new") == []
    assert TokenEvent.objects.filter(kind="updated").count() == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "taken"}, "name"),
        ({"name": ""}, "name"),
        ({"description": "x" * 1001}, "description"),
        ({"scopes": ["audit:read"]}, "scopes"),
        ({"scopes": []}, "scopes"),
    ],
)
def test_update_token_refuses_bad_input_and_writes_nothing(alice, superuser, issue, kwargs, field):
    issue(alice, name="taken")
    token = issue(alice, name="mine").token
    with pytest.raises(ValidationError) as excinfo:
        services.update_token(token, caller=Caller(user=superuser), **kwargs)
    assert error_fields(excinfo) == {field}
    stored = APIToken.objects.get(pk=token.pk)
    assert (stored.name, stored.description, stored.scopes) == ("mine", "", ["notes:read"])
    assert not TokenEvent.objects.filter(kind="updated").exists()


def test_only_managers_may_change_scopes(staff, issue):
    token = issue(staff).token
    with pytest.raises(ValidationError) as excinfo:
        services.update_token(token, caller=Caller(user=staff), scopes=["tokens:read"])
    assert error_fields(excinfo) == {"scopes"}
    assert services.update_token(token, caller=Caller(user=staff), description="mine") == [
        "description"
    ]


def test_revoked_token_cannot_be_updated(alice, superuser, issue):
    token = issue(alice).token
    services.revoke_token(token)
    with pytest.raises(ValidationError):
        services.update_token(token, caller=Caller(user=superuser), name="renamed")
    assert APIToken.objects.get(pk=token.pk).name == token.name


def test_revoke_tokens_counts_only_newly_revoked(alice, bob, issue):
    tokens = [issue(alice).token, issue(bob).token, issue(alice).token]
    services.revoke_token(tokens[0])
    assert services.revoke_tokens(tokens, reason="bulk") == 2
    assert services.revoke_tokens(tokens) == 0
    assert TokenEvent.objects.filter(kind="revoked").count() == 3


def test_manage_all_right_decides_visibility(alice, staff, superuser, issue, django_user_model):
    from django.contrib.auth.models import Permission

    holder = django_user_model.objects.create_user("holder", is_staff=True)
    holder.user_permissions.add(Permission.objects.get(codename="manage_all_tokens"))
    inactive = django_user_model.objects.create_superuser("gone", "g@example.com", "pw")
    inactive.is_active = False
    mine, theirs = issue(staff).token, issue(alice).token
    assert [services.can_manage_all(u) for u in (superuser, holder, staff, inactive, None)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert set(services.visible_tokens(superuser)) == {mine, theirs}
    assert set(services.visible_tokens(holder)) == {mine, theirs}
    assert list(services.visible_tokens(staff)) == [mine]
    assert list(services.visible_tokens(inactive)) == []


def test_may_issue_for_self_or_as_manager(alice, bob, superuser):
    assert services.may_issue_for(alice, alice)
    assert not services.may_issue_for(alice, bob)
    assert services.may_issue_for(superuser, bob)


# --- rotation -----------------------------------------------------------------------------


def test_rotate_token_keeps_the_record_and_replaces_the_secret(alice, staff, issue, clock):
    issued = issue(alice, ["notes:write"], name="ci", expires_in=timedelta(days=7))
    old = APIToken.objects.get(pk=issued.token.pk)
    rotated = services.rotate_token(
        issued.token, caller=Caller(user=alice, ip="10.0.0.1", via=Via.API)
    )
    assert rotated.token is issued.token
    assert rotated.plaintext != issued.plaintext
    assert "plaintext" not in repr(rotated) and rotated.plaintext not in repr(rotated)
    new = APIToken.objects.get(pk=old.pk)
    assert (new.key_id, new.name, new.scopes, new.expires_at, new.created_at) == (
        old.key_id,
        old.name,
        old.scopes,
        old.expires_at,
        old.created_at,
    )
    assert new.secret_hash != old.secret_hash
    assert (new.previous_secret_hash, new.previous_secret_valid_until) == ("", None)
    assert rotated.plaintext.split("_")[-1] not in new.secret_hash
    assert services.authenticate_token(rotated.plaintext) == new
    with pytest.raises(services.InvalidToken) as excinfo:
        services.authenticate_token(issued.plaintext)
    assert excinfo.value.reason == "wrong secret"
    event = TokenEvent.objects.get(kind="rotated")
    assert (event.token, event.key_id, event.actor, event.ip, event.via, event.detail) == (
        new,
        new.key_id,
        alice,
        "10.0.0.1",
        "api",
        {"grace_seconds": 0},
    )
    assert event.created_at == clock()


def test_rotation_grace_accepts_the_old_secret_until_it_ends(alice, issue, clock):
    issued = issue(alice)
    rotated = services.rotate_token(issued.token, grace_seconds=60)
    stored = APIToken.objects.get(pk=issued.token.pk)
    assert stored.previous_secret_hash == issued.token.previous_secret_hash != ""
    assert stored.previous_secret_valid_until == clock() + timedelta(seconds=60)
    clock.advance(seconds=59)
    assert services.authenticate_token(issued.plaintext).pk == stored.pk
    assert services.authenticate_token(rotated.plaintext).pk == stored.pk
    clock.advance(seconds=1)
    with pytest.raises(services.InvalidToken) as excinfo:
        services.authenticate_token(issued.plaintext)
    assert excinfo.value.reason == "wrong secret"
    assert services.authenticate_token(rotated.plaintext).pk == stored.pk


def test_rotation_grace_never_upgrades_the_retired_hash(alice, issue, settings, clock):
    issued = issue(alice)
    services.rotate_token(issued.token, grace_seconds=60)
    settings.API_TOKENS = {**settings.API_TOKENS, "HASH_KEY": "k" * 40}  # old key now "old"
    before = APIToken.objects.get(pk=issued.token.pk)
    services.authenticate_token(issued.plaintext)
    after = APIToken.objects.get(pk=issued.token.pk)
    assert (after.secret_hash, after.previous_secret_hash) == (
        before.secret_hash,
        before.previous_secret_hash,
    )


def test_rotation_grace_ends_on_the_next_rotation(alice, issue, clock):
    first = issue(alice)
    second = services.rotate_token(first.token, grace_seconds=600)
    third = services.rotate_token(first.token)
    for old in (first, second):
        with pytest.raises(services.InvalidToken):
            services.authenticate_token(old.plaintext)
    assert services.authenticate_token(third.plaintext).pk == first.token.pk


def test_rotation_grace_does_not_outlive_revocation(alice, issue, clock):
    issued = issue(alice)
    services.rotate_token(issued.token, grace_seconds=600)
    services.revoke_token(issued.token)
    with pytest.raises(services.InvalidToken) as excinfo:
        services.authenticate_token(issued.plaintext)
    assert excinfo.value.reason == "revoked"


@pytest.mark.parametrize("grace", [-1, 86401, True, 1.5, "60", None])
def test_rotate_token_refuses_bad_grace_and_writes_nothing(alice, issue, grace):
    issued = issue(alice)
    before = APIToken.objects.get(pk=issued.token.pk).secret_hash
    with pytest.raises(ValidationError) as excinfo:
        services.rotate_token(issued.token, grace_seconds=grace)
    assert error_fields(excinfo) == {"grace_seconds"}
    assert APIToken.objects.get(pk=issued.token.pk).secret_hash == before
    assert not TokenEvent.objects.filter(kind="rotated").exists()
    assert services.authenticate_token(issued.plaintext).pk == issued.token.pk


def test_rotate_token_grace_limit_is_max_rotation_grace(alice, issue, settings):
    token = issue(alice).token
    services.rotate_token(token, grace_seconds=86400)
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ROTATION_GRACE": "30s"}
    services.rotate_token(token, grace_seconds=30)
    with pytest.raises(ValidationError, match="0 to 30"):
        services.rotate_token(token, grace_seconds=31)


@pytest.mark.parametrize("state", ["revoked", "expired", "owner_inactive"])
def test_only_a_usable_token_can_be_rotated(alice, issue, clock, state):
    issued = issue(alice, expires_in=timedelta(days=1))
    if state == "revoked":
        services.revoke_token(issued.token)
    elif state == "expired":
        clock.advance(days=1)
    else:
        alice.is_active = False
        alice.save()
    token = APIToken.objects.select_related("owner").get(pk=issued.token.pk)
    with pytest.raises(ValidationError, match="Only an active token"):
        services.rotate_token(token)
    assert APIToken.objects.get(pk=token.pk).secret_hash == token.secret_hash
    assert not TokenEvent.objects.filter(kind="rotated").exists()


def test_max_rotation_grace_setting(settings):
    from django.core.exceptions import ImproperlyConfigured

    from tokens_app import conf

    assert conf.token_settings().max_rotation_grace == timedelta(days=1)
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ROTATION_GRACE": "2h"}
    assert conf.token_settings().max_rotation_grace == timedelta(hours=2)
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ROTATION_GRACE": timedelta(minutes=5)}
    assert conf.token_settings().max_rotation_grace == timedelta(minutes=5)
    for bad in ("soon", None, timedelta(0)):
        with pytest.raises(ImproperlyConfigured, match="MAX_ROTATION_GRACE"):
            conf.load({"MAX_ROTATION_GRACE": bad})


# --- statuses in the database -------------------------------------------------------------


def test_with_status_matches_status_for_every_status(alice, bob, issue, clock):
    from tokens_app.models import TokenStatus

    active = issue(alice, expires_in=timedelta(days=10)).token
    never = issue(alice).token
    APIToken.objects.filter(pk=never.pk).update(expires_at=None)
    expired = issue(alice, expires_in=timedelta(days=1)).token
    revoked = issue(alice).token
    revoked_and_expired = issue(alice, expires_in=timedelta(days=1)).token
    for token in (revoked, revoked_and_expired):
        services.revoke_token(token)
    inactive = issue(bob, expires_in=timedelta(days=10)).token
    inactive_expired = issue(bob, expires_in=timedelta(days=1)).token
    bob.is_active = False
    bob.save()
    clock.advance(days=2)
    expected = {
        TokenStatus.ACTIVE: {active, never},
        TokenStatus.EXPIRED: {expired, inactive_expired},
        TokenStatus.REVOKED: {revoked, revoked_and_expired},
        TokenStatus.OWNER_INACTIVE: {inactive},
    }
    tokens = list(APIToken.objects.select_related("owner"))
    for status, wanted in expected.items():
        assert set(APIToken.objects.with_status(status)) == wanted, status
        assert set(APIToken.objects.with_status(status.value)) == wanted, status
        assert {t for t in tokens if t.status(clock()) is status} == wanted, status
    assert set(APIToken.objects.for_owner(alice).with_status("active")) == {active, never}
    assert list(APIToken.objects.with_status("bogus")) == []
    earlier = clock() - timedelta(days=2)
    assert set(APIToken.objects.with_status("expired", earlier)) == set()
