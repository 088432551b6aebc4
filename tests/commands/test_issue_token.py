"""``manage.py issue_token``: the token alone on stdout; an error exits non-zero, writes nothing."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from tests.commands.helpers import argv, issued_token, run
from tests.helpers import NOTES, bearer, counts
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db


# --- issue_token: success ---------------------------------------------------------------


def test_issue_prints_token_alone_and_it_authenticates(alice):
    out = run("issue_token", *argv(scopes="notes:read"))
    assert out.count("\n") == 1
    assert out.endswith("\n")
    plaintext, token = issued_token(out)
    assert token.owner == alice
    assert token.name == "ci"
    assert token.scopes == ["notes:read"]
    assert plaintext not in token.secret_hash
    event = TokenEvent.objects.get(token=token)
    assert (event.kind, event.via) == ("issued", "command")
    assert APIClient().get(NOTES, **bearer(plaintext)).status_code == 200


def test_issue_json_prints_one_object_with_token_and_metadata_but_no_hash(alice, clock):
    out = run("issue_token", *argv("--json", "--description=deploy bot", scopes="notes:write"))
    assert out.count("\n") == 1
    data = json.loads(out)
    token = APIToken.objects.get()
    assert tokenstring.parse(data["token"], "tka").key_id == token.key_id == data["key_id"]
    assert data["owner"] == "alice"
    assert data["name"] == "ci"
    assert data["description"] == "deploy bot"
    assert data["scopes"] == ["notes:write"]
    assert data["status"] == "active"
    assert datetime.fromisoformat(data["created_at"]) == clock.current
    assert datetime.fromisoformat(data["expires_at"]) == clock.current + timedelta(days=30)
    assert data["revoked_at"] is None
    assert not [key for key in data if "hash" in key or "secret" in key]
    assert token.secret_hash not in out


def test_issue_without_expiry_flag_uses_default_lifetime(alice, clock):
    _, token = issued_token(run("issue_token", *argv()))
    assert token.expires_at == clock.current + timedelta(days=30)


def test_issue_description_is_stored(alice):
    _, token = issued_token(run("issue_token", *argv("--description", "Nightly export job.")))
    assert token.description == "Nightly export job."


@pytest.mark.parametrize(
    ("value", "lifetime"),
    [
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("365d", timedelta(days=365)),
    ],
)
def test_issue_expires_in_sets_expiry_from_now(alice, clock, value, lifetime):
    _, token = issued_token(run("issue_token", *argv("--expires-in", value)))
    assert token.expires_at == clock.current + lifetime


@pytest.mark.parametrize(
    "value", ["2030-03-01T08:30:00+02:00", "2030-03-01T06:30:00Z", "2030-03-01T06:30:00+00:00"]
)
def test_issue_expires_at_with_zone_is_kept(alice, clock, value):
    _, token = issued_token(run("issue_token", *argv("--expires-at", value)))
    assert token.expires_at == datetime(2030, 3, 1, 6, 30, tzinfo=UTC)


def test_issue_naive_expires_at_is_read_in_utc_time_zone(alice, clock):
    _, token = issued_token(run("issue_token", *argv("--expires-at", "2030-03-01T08:30:00")))
    assert token.expires_at == datetime(2030, 3, 1, 8, 30, tzinfo=UTC)


def test_issue_naive_expires_at_follows_the_project_time_zone(alice, clock, settings):
    settings.TIME_ZONE = "Asia/Tokyo"  # UTC+9, no daylight saving
    _, token = issued_token(run("issue_token", *argv("--expires-at", "2030-03-01T08:30:00")))
    assert token.expires_at == datetime(2030, 2, 28, 23, 30, tzinfo=UTC)


def test_issue_scopes_may_have_spaces_and_repeats(alice):
    out = run("issue_token", *argv(scopes=" notes:write , notes:read,notes:write "))
    _, token = issued_token(out)
    assert sorted(token.scopes) == ["notes:read", "notes:write"]


def test_issue_staff_only_scope_for_staff_succeeds(staff):
    _, token = issued_token(run("issue_token", *argv(user="staff", scopes="audit:read")))
    assert token.scopes == ["audit:read"]


def test_issue_name_of_revoked_token_can_be_reused(alice, issue):
    old = issue(alice, name="ci")
    services.revoke_token(old.token)
    _, token = issued_token(run("issue_token", *argv(name="ci")))
    assert token.pk != old.token.pk


def test_issue_no_expiry_when_allowed_never_expires(alice, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "ALLOW_NON_EXPIRING": True}
    data = json.loads(run("issue_token", *argv("--no-expiry", "--json")))
    assert data["expires_at"] is None
    assert APIToken.objects.get(key_id=data["key_id"]).expires_at is None


# --- issue_token: every error exits non-zero and writes nothing --------------------------

BAD_EXPIRES_IN = ["0d", "10x", "-1d", "d", "1.5d", "30", "12H", "1 d", " ", "00d", "1d2h"]
BAD_EXPIRES_AT = ["tomorrow", "2030-13-01T00:00:00", "2030-01-31 noon", "1893456000", "+99:00"]
ISSUE_ERRORS = [
    pytest.param(argv(user="nobody"), "user 'nobody' does not exist", id="unknown-user"),
    pytest.param(argv(name=None), "required: --name", id="missing-name"),
    pytest.param(argv(scopes=None), "required: --scopes", id="missing-scopes"),
    pytest.param(argv(scopes=""), "invalid --scopes", id="empty-scopes"),
    pytest.param(argv(scopes="  "), "invalid --scopes", id="blank-scopes"),
    pytest.param(argv(scopes=","), "invalid --scopes", id="comma-only-scopes"),
    pytest.param(argv(scopes="notes:read,,notes:write"), "invalid --scopes", id="empty-between"),
    pytest.param(argv(scopes="notes:read,"), "invalid --scopes", id="trailing-comma"),
    pytest.param(argv(scopes="notes:delete"), r"Unknown scopes: notes:delete\.", id="unknown"),
    pytest.param(
        argv(scopes="notes:read,audit:read"),
        "may not hold these scopes: audit:read",
        id="staff-only-scope",
    ),
    *[
        pytest.param(argv(f"--expires-in={value}"), "invalid duration", id=f"expires-in-{value!r}")
        for value in BAD_EXPIRES_IN
    ],
    *[
        pytest.param(argv(f"--expires-at={value}"), "invalid --expires-at", id=f"at-{value!r}")
        for value in BAD_EXPIRES_AT
    ],
    pytest.param(
        argv("--expires-at=2030-01-01T11:59:59+00:00"), "must be in the future", id="past"
    ),
    pytest.param(argv("--expires-at=2030-01-01T12:00:00Z"), "must be in the future", id="now"),
    pytest.param(argv("--expires-at=2020-01-01"), "must be in the future", id="past-naive-date"),
    pytest.param(argv("--expires-in=366d"), "may live at most 365d", id="in-366d"),
    pytest.param(argv("--expires-in=400d"), "may live at most 365d", id="in-400d"),
    pytest.param(argv("--expires-in=53w"), "may live at most 365d", id="in-53w"),
    pytest.param(
        argv("--expires-at=2031-01-02T12:00:00Z"), "may live at most 365d", id="at-beyond-max"
    ),
    pytest.param(argv("--no-expiry"), "never expire are not allowed", id="no-expiry"),
    pytest.param(
        argv("--expires-in=1d", "--expires-at=2030-02-01T00:00:00Z"),
        "not allowed with argument",
        id="in-and-at",
    ),
    pytest.param(
        argv("--expires-in=1d", "--no-expiry"), "not allowed with argument", id="in-and-never"
    ),
    pytest.param(argv(name=""), "needs a name", id="empty-name"),
    pytest.param(argv(name="   "), "needs a name", id="blank-name"),
    pytest.param(argv(name="-leading-dash"), "name: Use at most 100", id="leading-dash"),
    pytest.param(argv(name="semi;colon"), "name: Use at most 100", id="semicolon"),
    pytest.param(argv(name="<script>"), "name: Use at most 100", id="markup"),
    pytest.param(argv(name="tab\there"), "name: A name cannot contain / or control", id="tab"),
    pytest.param(argv(name="new\nline"), "name: A name cannot contain / or control", id="newline"),
    pytest.param(argv(name="a" * 101), "name: Use at most 100", id="name-101"),
    pytest.param(
        argv("--description=" + "x" * 1001), "at most 1000 characters", id="description-1001"
    ),
]


@pytest.mark.parametrize(("args", "match"), ISSUE_ERRORS)
def test_issue_bad_input_fails_and_writes_nothing(alice, clock, args, match):
    with pytest.raises(CommandError, match=match) as error:
        run("issue_token", *args)
    assert "\n" not in str(error.value)
    assert counts() == (0, 0)


def test_issue_for_inactive_user_fails_and_writes_nothing(django_user_model):
    django_user_model.objects.create_user("carol", is_active=False)
    with pytest.raises(CommandError, match="owner: The owner must be an active user"):
        run("issue_token", *argv(user="carol"))
    assert counts() == (0, 0)


def test_issue_duplicate_active_name_fails_and_writes_nothing(alice, issue):
    issue(alice, name="ci")
    before = counts()
    with pytest.raises(CommandError, match="An active token named ci already exists"):
        run("issue_token", *argv(name="ci"))
    assert counts() == before


def test_issue_over_per_user_limit_fails_and_writes_nothing(alice, bob, issue, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "MAX_ACTIVE_TOKENS_PER_USER": 1}
    issue(alice)
    before = counts()
    with pytest.raises(CommandError, match="already has 1 active token, the most allowed"):
        run("issue_token", *argv(name="second"))
    assert counts() == before
    run("issue_token", *argv(user="bob"))  # the limit is per user
    assert counts() == (before[0] + 1, before[1] + 1)


def test_issue_two_expiry_options_passed_as_keywords_fail(alice):
    with pytest.raises(CommandError, match="Give one of an expiry time, a lifetime, or no expiry"):
        run("issue_token", *argv(), expires_in="1d", expires_at="2099-01-01T00:00:00Z")
    assert counts() == (0, 0)


def test_issue_several_problems_are_reported_on_one_line(alice):
    with pytest.raises(CommandError) as error:
        run("issue_token", *argv("--description=" + "x" * 1001, name="bad;name", scopes="x:y"))
    message = str(error.value)
    assert "\n" not in message
    for part in ("name: ", "description: ", "scopes: Unknown scopes: x:y."):
        assert part in message
    assert counts() == (0, 0)


@pytest.mark.parametrize("value", ["9999999d", "9999999w"])
def test_issue_huge_expires_in_fails_cleanly(alice, clock, value):
    with pytest.raises(CommandError, match="may live at most 365d"):
        run("issue_token", *argv(f"--expires-in={value}"))
    assert counts() == (0, 0)


@pytest.mark.parametrize("flag", ["--expires-in=", "--expires-at="])
def test_issue_empty_expiry_value_fails_and_writes_nothing(alice, flag):
    with pytest.raises(CommandError):
        run("issue_token", *argv(flag))
    assert counts() == (0, 0)
