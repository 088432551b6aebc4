"""System checks: settings (E001/E002), scopes named by views (E003/W001), deploy (W002/W003)."""

from io import StringIO
from typing import Any

import pytest
from django.core.checks import CheckMessage
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests import urls_bad_scopes as bad
from tests.helpers import ids
from tokens_app.checks import check_deploy, check_settings, check_view_scopes

HASH_KEY = "k" * 32


@pytest.fixture
def bad_urls(settings: Any) -> None:
    settings.ROOT_URLCONF = "tests.urls_bad_scopes"


def about(view: type, messages: list[CheckMessage] | None = None) -> list[CheckMessage]:
    if messages is None:
        messages = check_view_scopes(None)
    return [message for message in messages if message.obj is view]


def with_api_tokens(settings: Any, **changes: Any) -> None:
    settings.API_TOKENS = {**settings.API_TOKENS, **changes}


# The example project


def test_example_project_passes_check():
    call_command("check", stdout=StringIO(), stderr=StringIO())


def test_example_project_has_no_token_messages():
    assert check_settings(None) == []
    assert check_view_scopes(None) == []


# E003: undeclared scopes named by views


@pytest.mark.usefixtures("bad_urls")
def test_undeclared_scope_in_view_raises_system_check_error():
    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check", stdout=StringIO(), stderr=StringIO())
    message = str(excinfo.value)
    assert "tokens_app.E003" in message
    assert "tests.urls_bad_scopes.TypoView (/typo/) requires undeclared scope 'notes:wirte'" in (
        message
    )


@pytest.mark.usefixtures("bad_urls")
@pytest.mark.parametrize(
    ("view", "route", "scope"),
    [
        (bad.TypoView, "/typo/", "'notes:wirte'"),
        (bad.MethodTypoView, "/method-typo/", "'notes:raed'"),
        (bad.ActionTypoViewSet, "/action-typo/", "'notes:wirte'"),
        (bad.InitkwargsTypoView, "/initkwargs-typo/", "'tokens:raed'"),
        (bad.NestedTypoView, "/outer/inner/deep/", "'tokens:wrte'"),
    ],
)
def test_view_naming_undeclared_scope_gets_e003(view, route, scope):
    messages = about(view)
    assert ids(messages) == ["tokens_app.E003"]
    view_name = f"tests.urls_bad_scopes.{view.__qualname__}"
    assert messages[0].msg == f"{view_name} ({route}) requires undeclared scope {scope}."
    assert messages[0].hint


@pytest.mark.usefixtures("bad_urls")
def test_non_string_scope_is_undeclared_and_fails_closed():
    messages = about(bad.NonStringScopeView)
    assert sorted(ids(messages)) == ["tokens_app.E003", "tokens_app.W001"]
    assert any("requires undeclared scope 7." in message.msg for message in messages)


@pytest.mark.usefixtures("bad_urls")
def test_view_routed_twice_is_reported_once():
    assert ids(about(bad.TypoView)) == ["tokens_app.E003"]


@pytest.mark.usefixtures("bad_urls")
@pytest.mark.parametrize(
    "view", [bad.ScopedView, bad.FixedByInitkwargsView, bad.PlainView, bad.DjangoView]
)
def test_sound_or_unscoped_view_gets_no_message(view):
    assert about(view) == []


@pytest.mark.usefixtures("bad_urls")
def test_every_message_names_a_known_id_and_skips_function_views():
    messages = check_view_scopes(None)
    assert set(ids(messages)) <= {"tokens_app.E003", "tokens_app.W001"}
    assert not any("/function/" in message.msg for message in messages)


@pytest.mark.usefixtures("bad_urls")
def test_scopes_declared_later_clear_e003(settings):
    scopes = settings.API_TOKENS["SCOPES"]
    with_api_tokens(settings, SCOPES={**scopes, "notes:wirte": "Oops, now declared."})
    assert about(bad.TypoView) == []


# W001: HasScope without required_scopes


@pytest.mark.usefixtures("bad_urls")
@pytest.mark.parametrize(
    ("view", "route"),
    [
        (bad.NoScopesView, "/no-scopes/"),
        (bad.AndComposedView, "/and-composed/"),
        (bad.OrComposedView, "/or-composed/"),
        (bad.NotComposedView, "/not-composed/"),
        (bad.InitkwargsPermissionView, "/initkwargs-perm/"),
    ],
)
def test_has_scope_view_without_required_scopes_gets_w001(view, route):
    messages = about(view)
    assert ids(messages) == ["tokens_app.W001"]
    assert f"tests.urls_bad_scopes.{view.__qualname__} ({route})" in messages[0].msg


@pytest.mark.usefixtures("bad_urls")
@pytest.mark.parametrize("view", [bad.EmptyScopesView, bad.StringScopesView])
def test_malformed_required_scopes_gets_w001(view):
    assert ids(about(view)) == ["tokens_app.W001"]


# E001 / E002: settings


@pytest.mark.parametrize(
    "api_tokens",
    [
        "not a dict",
        {"TOKEN_PREFIX": "X"},
        {"SCOPES": ["notes:read"]},
        {"UNKNOWN_SETTING": 1},
        {"HASH_KEY": "too short"},
    ],
)
def test_malformed_api_tokens_gets_e001(settings, api_tokens):
    settings.API_TOKENS = api_tokens
    assert ids(check_settings(None)) == ["tokens_app.E001"]
    # Reported once, by check_settings: the other checks stand back.
    assert check_view_scopes(None) == []
    assert check_deploy(None) == []


def test_malformed_api_tokens_fails_check(settings):
    settings.API_TOKENS = {"TOKEN_PREFIX": "X"}
    with pytest.raises(SystemCheckError, match=r"tokens_app\.E001"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize(
    ("scopes", "count"),
    [
        ({"Notes:read": "Bad name."}, 1),
        ({"notes:read": 42}, 1),
        ({"notes:read": {"description": "x", "implies": ["notes:raed"]}}, 1),
        ({"notes:read": {"requires": "admin", "colour": "red"}}, 2),
        ({"a": "x", "b": "y"}, 2),
    ],
)
def test_malformed_scopes_get_one_e002_per_problem(settings, scopes, count):
    with_api_tokens(settings, SCOPES=scopes)
    messages = check_settings(None)
    assert ids(messages) == ["tokens_app.E002"] * count
    assert all(message.msg.startswith("API_TOKENS['SCOPES']: ") for message in messages)
    assert check_view_scopes(None) == []


def test_malformed_scopes_fail_check(settings):
    with_api_tokens(settings, SCOPES={"notes": "No action."})
    with pytest.raises(SystemCheckError, match=r"tokens_app\.E002"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


# W002 / W003: deploy


@pytest.mark.parametrize(
    ("hash_key", "allow_non_expiring", "expected"),
    [
        (None, False, ["tokens_app.W002"]),
        (HASH_KEY, False, []),
        (HASH_KEY, True, ["tokens_app.W003"]),
        (None, True, ["tokens_app.W002", "tokens_app.W003"]),
    ],
)
def test_deploy_check_warns_about_weak_settings(settings, hash_key, allow_non_expiring, expected):
    with_api_tokens(settings, HASH_KEY=hash_key, ALLOW_NON_EXPIRING=allow_non_expiring)
    assert ids(check_deploy(None)) == expected


def test_check_deploy_reports_derived_hash_key(settings):
    with_api_tokens(settings, HASH_KEY=None)
    stderr = StringIO()
    call_command("check", "--deploy", stdout=StringIO(), stderr=stderr)
    assert "tokens_app.W002" in stderr.getvalue()


def test_plain_check_skips_deploy_warnings(settings):
    with_api_tokens(settings, HASH_KEY=None, ALLOW_NON_EXPIRING=True)
    stdout, stderr = StringIO(), StringIO()
    call_command("check", stdout=stdout, stderr=stderr)
    assert "tokens_app.W00" not in stdout.getvalue() + stderr.getvalue()
