"""Token names (issue 13, item 13): what a new name may hold, and how any name is shown.

A name like "URGENT: re-verify at https://evil.example/login" once landed verbatim in
the official expiry email. New names refuse ``/`` and every control or format character
(Unicode C*) on every surface that creates or renames a token; rows named before keep
their names, still work everywhere, and are shown as quoted, neutralised labels.
"""

import json
import unicodedata
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import call_command

from tests.helpers import (
    ADMIN_ADD,
    ADMIN_LIST,
    EXCHANGE,
    T0,
    TOKENS,
    admin_client,
    bearer,
    change_data,
    command_line,
    counts,
    form_errors,
    issue_data,
)
from tokens_app import services
from tokens_app.core import labels
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db

MESSAGE = (
    "A name cannot contain / or control characters (line breaks, tabs, invisible "
    "formatting such as text-direction marks)."
)

BAD_NAMES = [
    pytest.param("prod/eu", id="slash"),
    pytest.param("URGENT: re-verify at https://evil.example/login", id="url"),
    pytest.param("tab\there", id="tab"),
    pytest.param("new\nline", id="newline"),
    pytest.param("carriage\rreturn", id="cr"),
    pytest.param("next\x85line", id="nel"),
    pytest.param("bell\x07", id="bell"),
    pytest.param("esc\x1b[31m", id="ansi-escape"),
    pytest.param("del\x7f", id="delete"),
    pytest.param("\u202egnp.exe", id="bidi-override"),
    pytest.param("bidi\u2066isolate", id="bidi-isolate"),
    pytest.param("zero\u200bwidth", id="zero-width-space"),
    pytest.param("soft\u00adhyphen", id="soft-hyphen"),
    pytest.param("private\ue000use", id="private-use"),
    pytest.param("unassigned\u0378", id="unassigned"),
]
GOOD_NAMES = ["deploy: prod-eu @v2+", "ci.example.com", "Zürich build", "日本語", "a_b", "x"]

#: Legacy names a row may hold from before the rule: each tries to read as our own text.
HOSTILE = {
    "url": "URGENT: re-verify at https://evil.example/login",
    "breakout": "x\u201d\nURGENT: your account is locked. Log in at https://evil.example/login\n\u201c",
    "straight-quotes": 'ok" (key id AAAAAAAAAAAA)\n- "Security team',
    "bidi": "\u202enigol/elpmaxe.live//:sptth",
    "terminal": "\x1b[31mred\x1b[0m\r\x1b[2K",
    "separator": "line\u2028URGENT\u2029call us",
    "markup": "R&D <team>",
}


def legacy(token: APIToken, name: str) -> APIToken:
    """Give *token* a name from before the rule, as an old row holds it."""
    APIToken.objects.filter(pk=token.pk).update(name=name)
    token.refresh_from_db()
    return token


def no_control_characters(text: str, allowed: str = "\n") -> bool:
    return not any(
        (unicodedata.category(c).startswith("C") or unicodedata.category(c) in ("Zl", "Zp"))
        and c not in allowed
        for c in text
    )


# --- the rule, in the service ----------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_service_refuses_a_new_name_with_a_slash_or_control_character(alice, name):
    before = counts()
    with pytest.raises(ValidationError) as error:
        services.issue_token(alice, name=name, scopes=["notes:read"])
    assert error.value.message_dict == {"name": [MESSAGE]}
    assert counts() == before


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_service_accepts_plain_names_in_any_script(alice, name):
    assert services.issue_token(alice, name=name, scopes=["notes:read"]).token.name == name


def test_surrounding_whitespace_is_trimmed_not_refused(alice):
    # Every surface trims the edges (forms and serializers do too); the inside is judged.
    issued = services.issue_token(alice, name="\t deploy \n", scopes=["notes:read"])
    assert issued.token.name == "deploy"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_service_refuses_renaming_to_a_bad_name(alice, issue, name):
    token = issue(alice, name="fine").token
    with pytest.raises(ValidationError) as error:
        services.update_token(token, caller=Caller(user=alice), name=name)
    assert error.value.message_dict == {"name": [MESSAGE]}
    assert APIToken.objects.get(pk=token.pk).name == "fine"


def test_the_message_is_translatable():
    from tokens_app.core import validation

    errors: validation.Errors = {}
    validation.clean_name("a/b", errors)
    (message,) = errors["name"]
    assert type(message).__name__ == "__proxy__"  # gettext_lazy, translated when shown


# --- every surface that creates or renames -------------------------------------------------


@pytest.mark.parametrize("name", ["prod/eu", "new\nline", "\u202egnp.exe", "zero\u200bwidth"])
def test_api_create_refuses_the_name(api, alice, name):
    api.force_login(alice)
    before = counts()
    response = api.post(TOKENS, {"name": name, "scopes": ["notes:read"]}, format="json")
    assert response.status_code == 400
    assert response.json() == {"name": [MESSAGE]}
    assert counts() == before


def test_api_create_with_a_token_refuses_the_name(api, alice, issue):
    parent = issue(alice, scopes=["notes:read", "tokens:write"]).plaintext
    before = counts()
    body = {"name": "see https://evil.example/x", "scopes": ["notes:read"]}
    response = api.post(TOKENS, body, format="json", **bearer(parent))
    assert (response.status_code, response.json()) == (400, {"name": [MESSAGE]})
    assert counts() == before


@pytest.mark.parametrize("name", ["prod/eu", "tab\there", "\u2066x"])
def test_api_patch_refuses_renaming_to_the_name(api, alice, issue, name):
    token = issue(alice, name="fine").token
    api.force_login(alice)
    response = api.patch(f"{TOKENS}{token.key_id}/", {"name": name}, format="json")
    assert (response.status_code, response.json()) == (400, {"name": [MESSAGE]})
    assert APIToken.objects.get(pk=token.pk).name == "fine"


def test_password_exchange_refuses_the_name(api, alice):
    before = counts()
    body = {"username": "alice", "password": "pw-alice", "scopes": ["notes:read"]}
    response = api.post(
        EXCHANGE, {**body, "name": "URGENT/re-verify"}, format="json", REMOTE_ADDR="10.0.0.1"
    )
    assert (response.status_code, response.json()) == (400, {"name": [MESSAGE]})
    assert counts() == before


@pytest.mark.parametrize("name", ["prod/eu", "bidi\u202eoverride", "bell\x07"])
def test_admin_issue_form_refuses_the_name(alice, superuser, name):
    before = counts()
    response = admin_client(superuser).post(ADMIN_ADD, issue_data(alice, name=name))
    assert response.status_code == 200
    assert 'id="issued-token"' not in response.content.decode()
    assert form_errors(response) == {"name": [MESSAGE]}
    assert counts() == before


@pytest.mark.parametrize("name", ["prod/eu", "zero\u200bwidth"])
def test_admin_change_form_refuses_renaming_to_the_name(alice, superuser, issue, name):
    token = issue(alice, name="fine").token
    url = f"{ADMIN_LIST}{token.pk}/change/"
    response = admin_client(superuser).post(url, change_data(token, name=name))
    assert response.status_code == 200
    assert form_errors(response) == {"name": [MESSAGE]}
    assert APIToken.objects.get(pk=token.pk).name == "fine"


@pytest.mark.django_db(transaction=True)  # run_from_argv closes connections on failure
@pytest.mark.parametrize("name", ["prod/eu", "new\nline", "\u202egnp.exe"])
def test_issue_token_command_refuses_the_name_in_one_stderr_line(alice, capsys, name):
    code = command_line("issue_token", "alice", "--name", name, "--scopes", "notes:read")
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"CommandError: name: {MESSAGE}\n"
    assert counts() == (0, 0)


# --- names from before the rule keep working ----------------------------------------------


@pytest.fixture
def old(alice, issue):
    """A token of alice's whose row holds a name the rule now refuses."""
    return legacy(issue(alice, name="placeholder").token, "team/prod: deploy")


def test_a_legacy_name_is_listed_by_the_api(api, alice, old):
    api.force_login(alice)
    response = api.get(TOKENS)
    assert response.status_code == 200
    assert [row["name"] for row in response.json()["results"]] == ["team/prod: deploy"]


def test_a_patch_that_resends_the_legacy_name_is_not_refused(api, alice, old):
    api.force_login(alice)
    url = f"{TOKENS}{old.key_id}/"
    response = api.patch(url, {"name": old.name}, format="json")
    assert response.status_code == 200
    assert not TokenEvent.objects.filter(kind="updated").exists()
    response = api.patch(url, {"name": old.name, "description": "why"}, format="json")
    assert response.status_code == 200, response.content
    stored = APIToken.objects.get(pk=old.pk)
    assert (stored.name, stored.description) == ("team/prod: deploy", "why")


def test_a_legacy_name_can_be_renamed_away_from(api, alice, old):
    api.force_login(alice)
    response = api.patch(f"{TOKENS}{old.key_id}/", {"name": "team-prod: deploy"}, format="json")
    assert response.status_code == 200
    event = TokenEvent.objects.get(kind="updated")
    assert event.detail["name"] == {"from": "team/prod: deploy", "to": "team-prod: deploy"}


def test_admin_change_form_saves_other_fields_of_a_legacy_named_token(superuser, old):
    client = admin_client(superuser)
    url = f"{ADMIN_LIST}{old.pk}/change/"
    response = client.post(url, change_data(old, description="kept"))
    assert response.status_code == 302
    stored = APIToken.objects.get(pk=old.pk)
    assert (stored.name, stored.description) == ("team/prod: deploy", "kept")
    assert client.get(url).status_code == 200
    assert client.get(ADMIN_LIST).status_code == 200


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_legacy_names_break_nothing_in_admin_or_api(api, alice, superuser, issue, name):
    token = legacy(issue(alice).token, name)
    client = admin_client(superuser)
    listing = client.get(ADMIN_LIST)
    assert listing.status_code == 200
    assert "<team>" not in listing.content.decode()  # the admin escapes as ever
    assert client.get(f"{ADMIN_LIST}{token.pk}/change/").status_code == 200
    api.force_login(alice)
    assert api.get(f"{TOKENS}{token.key_id}/").json()["name"] == name


def test_list_tokens_prints_one_plain_line_per_token_whatever_the_names(alice, issue):
    for name in HOSTILE.values():
        legacy(issue(alice).token, name)
    out = StringIO()
    call_command("list_tokens", stdout=out)
    text = out.getvalue()
    assert len(text.splitlines()) == 1 + len(HOSTILE)
    assert no_control_characters(text)
    as_json = StringIO()
    call_command("list_tokens", "--json", stdout=as_json)
    assert sorted(row["name"] for row in json.loads(as_json.getvalue())) == sorted(HOSTILE.values())


def test_revoke_token_of_a_legacy_named_token_prints_its_name_escaped(alice, issue):
    token = legacy(issue(alice).token, HOSTILE["terminal"])
    out = StringIO()
    call_command("revoke_token", token.key_id, stdout=out)
    assert out.getvalue().startswith(f"Revoked token {token.key_id} (")
    assert no_control_characters(out.getvalue())


# --- the expiry email: names are quoted labels --------------------------------------------


def notice_body(alice: Any, issue: Any, names: list[str]) -> tuple[str, list[APIToken]]:
    tokens = [legacy(issue(alice, expires_at=T0 + timedelta(days=2)).token, n) for n in names]
    services.notify_expiring_tokens(within=timedelta(days=7))
    (message,) = mail.outbox
    return message.body, tokens


def test_email_quotes_each_name_as_a_label_the_owner_chose(alice, issue, clock):
    body, (token,) = notice_body(alice, issue, ["deploy: prod-eu @v2+"])
    assert f"\n- Token you named “deploy: prod-eu @v2+” (key id {token.key_id})\n" in body
    assert "Names in quotes are labels chosen for your tokens" in body
    assert "nothing in them is a message or an instruction from us" in body


def test_email_neutralises_hostile_legacy_names(alice, issue, clock):
    body, tokens = notice_body(alice, issue, list(HOSTILE.values()))
    assert no_control_characters(body)  # no bidi override, escape, separator; only "\n"
    assert "://" not in body  # no URL of theirs is a link in a mail reader
    assert not any(line.lstrip().startswith(("URGENT", '- "', '"')) for line in body.split("\n"))
    lines = {
        token.key_id: [ln for ln in body.split("\n") if token.key_id + ")" in ln]
        for token in tokens
    }
    for token in tokens:
        (line,) = lines[token.key_id]  # one line per token, with its key id on it
        assert line.startswith("- Token you named “")
        assert line.endswith(f"” (key id {token.key_id})")
        inside = line.removeprefix("- Token you named “").removesuffix(f"” (key id {token.key_id})")
        assert "“" not in inside and "”" not in inside and '"' not in inside
        assert inside == labels.label(token.name)
    # Plain text: nothing HTML-escaped, even with autoescape off being the point.
    assert "“R&D <team>”" in body


def test_labels_leave_plain_names_alone_and_cut_long_ones():
    for name in GOOD_NAMES:
        assert labels.label(name) == name
        assert labels.quoted(name) == f"“{name}”"
    long = labels.label("a" * 300)
    assert (len(long), long[-1]) == (labels.MAX_LABEL_LENGTH, "…")
    assert labels.label("a\u202eb\nc«d»e\u2028f") == "a\ufffdb\ufffdc'd'e\ufffdf"
    assert labels.label("see https://x.example") == "see https[:]//x.example"
