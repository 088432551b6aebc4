"""RFC 7009 revocation at ``POST /api/auth/revoke/`` (issue 15, item 3).

Holding a token is the right to revoke it. The answer is ``200 {}`` whether or not the
string was a token (no oracle); an API token is revoked with its family and JWTs; a JWT
alone is refused by its ``jti`` until it expires. Every request counts against
``REVOCATION_RATE`` per client IP; errors are RFC 6749 § 5.2 JSON.
"""

import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from tests.guardrails.helpers import dead_rate_limit_cache, set_tokens_setting
from tests.helpers import (
    DEAD_REDIS,
    HOME,
    NOTES,
    PREFIX,
    SECRET,
    WHOAMI,
    assert_invalid,
    bearer,
    counts,
    mint_jwt,
)
from tests.interop.oauth_helpers import (
    BASIC_CHALLENGE,
    FORM,
    INTROSPECT,
    REVOKE,
    basic,
    basic_as,
    form,
    post_fields,
)
from tokens_app import conf, services
from tokens_app.core import tokenstring
from tokens_app.exceptions import RETRY_AFTER_SECONDS, _oauth_text
from tokens_app.jwt import denylist
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.revoking import PRESENTED_REASON

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(alice: Any, issue: Any) -> services.IssuedToken:
    return issue(alice, ["notes:read"])


def revoked(issued: services.IssuedToken) -> bool:
    return APIToken.objects.get(pk=issued.token.pk).revoked_at is not None


def assert_done(response: Any) -> None:
    """RFC 7009 section 2.2: 200, and nothing that says whether a token was revoked."""
    assert response.status_code == 200, response.content
    assert response.json() == {}
    assert response["Cache-Control"] == "no-store"


def assert_oauth_error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    return body


# --- revoking an API token ---------------------------------------------------------------------


def test_revoking_an_api_token_by_form(api, reader):
    assert_done(form(api, REVOKE, {"token": reader.plaintext}))
    assert revoked(reader)
    assert_invalid(api.get(NOTES, **bearer(reader.plaintext)))
    event = TokenEvent.objects.filter(token=reader.token, kind=TokenEvent.Kind.REVOKED).get()
    assert event.detail["reason"] == PRESENTED_REASON


def test_revoking_an_api_token_by_json(api, reader):
    assert_done(api.post(REVOKE, {"token": reader.plaintext}, format="json"))
    assert revoked(reader)


def test_revoking_an_api_token_then_using_its_jwts(api, reader):
    jwt = mint_jwt(api, reader.plaintext)
    assert api.get(NOTES, **bearer(jwt)).status_code == 200
    assert_done(form(api, REVOKE, {"token": reader.plaintext, "token_type_hint": "access_token"}))
    assert_invalid(api.get(NOTES, **bearer(jwt)))


def test_revoking_an_api_token_takes_its_descendants(api, alice, issue):
    parent = issue(alice, ["notes:read", "tokens:write"])
    body = {"name": "child", "scopes": ["notes:read"]}
    child = api.post("/api/tokens/", body, format="json", **bearer(parent.plaintext)).json()
    assert_done(form(api, REVOKE, {"token": parent.plaintext}))
    assert_invalid(api.get(NOTES, **bearer(child["token"])))


def test_revoking_with_the_previous_secret_during_a_grace(api, clock, reader):
    rotated = services.rotate_token(reader.token, grace_seconds=90)
    assert_done(form(api, REVOKE, {"token": reader.plaintext}))  # the old secret, still live
    assert revoked(reader)
    assert_invalid(api.get(NOTES, **bearer(rotated.plaintext)))


def test_a_retired_secret_revokes_nothing(api, clock, reader):
    # A secret a rotation retired is no longer the token: holding it is no right to it.
    rotated = services.rotate_token(reader.token, grace_seconds=60)
    clock.advance(seconds=61)
    assert_done(form(api, REVOKE, {"token": reader.plaintext}))
    assert not revoked(reader)
    assert api.get(NOTES, **bearer(rotated.plaintext)).status_code == 200


def test_revoking_works_from_outside_the_allow_list(alice, issue):
    # Taking power away is what a leak response needs, wherever the token was found.
    fenced = issue(alice, allowed_ips=["10.0.0.0/8"])
    assert_done(form(APIClient(), REVOKE, {"token": fenced.plaintext}, REMOTE_ADDR="192.0.2.1"))
    assert revoked(fenced)


def test_revocation_is_not_a_use(api, reader):
    assert_done(form(api, REVOKE, {"token": reader.plaintext}))
    assert APIToken.objects.get(pk=reader.token.pk).last_used_at is None


# --- no oracle ---------------------------------------------------------------------------------


def look_alike(issued: services.IssuedToken) -> str:
    key_id = issued.token.key_id
    return f"{PREFIX}_{key_id}{SECRET}{tokenstring.checksum(key_id, SECRET)}"


@pytest.mark.parametrize(
    "make",
    [
        lambda victim: victim.token.key_id,
        look_alike,
        lambda victim: f"{PREFIX}_{victim.token.key_id}",
        lambda victim: victim.plaintext[:-1] + ("A" if victim.plaintext[-1] != "A" else "B"),
        lambda victim: "garbage",
        lambda victim: "eyJ.eyJ.eyJ",
    ],
    ids=["key-id-only", "look-alike", "prefixed-key-id", "bad-checksum", "garbage", "jwt-shaped"],
)
def test_another_users_token_by_anything_but_itself_revokes_nothing(api, bob, issue, make):
    victim = issue(bob, ["notes:read"])
    before = counts()
    assert_done(form(api, REVOKE, {"token": make(victim)}))
    assert not revoked(victim)
    assert counts() == before
    assert api.get(NOTES, **bearer(victim.plaintext)).status_code == 200


def test_the_answer_is_identical_for_a_token_and_for_nothing(api, reader):
    answers = [
        form(api, REVOKE, {"token": "nothing"}),
        form(api, REVOKE, {"token": reader.plaintext}),
        form(api, REVOKE, {"token": reader.plaintext}),  # already revoked
    ]
    assert len({(a.status_code, a.content, a["Content-Type"]) for a in answers}) == 1


def test_expired_and_inactive_owners_tokens_are_left_alone(api, clock, alice, bob, issue):
    # Only a credential that works now is revoked by holding it, as DELETE .../current/ is.
    short = issue(alice, expires_in=timedelta(minutes=5))
    dormant = issue(bob)
    bob.is_active = False
    bob.save()
    clock.advance(minutes=6)
    for issued in (short, dormant):
        assert_done(form(api, REVOKE, {"token": issued.plaintext}))
        assert not revoked(issued)


# --- revoking a JWT ----------------------------------------------------------------------------


def test_revoking_a_jwt_then_using_it(api, alice, issue, reader):
    jwt, sibling = mint_jwt(api, reader.plaintext), mint_jwt(api, reader.plaintext)
    assert_done(form(api, REVOKE, {"token": jwt}))
    assert_invalid(api.get(NOTES, **bearer(jwt)))
    assert_invalid(api.get(WHOAMI, **bearer(jwt)))
    # Only that JWT: its API token and the token's other JWTs live on.
    assert api.get(NOTES, **bearer(sibling)).status_code == 200
    assert api.get(NOTES, **bearer(reader.plaintext)).status_code == 200
    assert not revoked(reader)
    introspector = issue(alice, ["tokens:introspect"])
    answer = form(api, INTROSPECT, {"token": jwt}, **basic_as(introspector)).json()
    assert answer == {"active": False}


def test_a_revoked_jwt_stays_refused_in_every_process(api, reader, settings):
    # The entry is in the deny-list cache (JWT_DENY_LIST_CACHE, shared by every process),
    # not in any other cache: clearing every other store changes nothing. In the embedded
    # profile that is the file cache; in the production profile every alias is one Redis.
    jwt = mint_jwt(api, reader.plaintext)
    assert_done(form(api, REVOKE, {"token": jwt}))
    deny_list = conf.token_settings().jwt.deny_list_cache
    for alias, config in settings.CACHES.items():
        if config != settings.CACHES[deny_list]:
            caches[alias].clear()
    assert_invalid(api.get(NOTES, **bearer(jwt)))
    caches[deny_list].clear()
    assert api.get(NOTES, **bearer(jwt)).status_code == 200


def test_jwt_deny_entry_lasts_until_the_jwt_expires(api, clock, reader):
    # Within its lifetime the revoked JWT is refused; past it, it is refused as expired.
    jwt = mint_jwt(api, reader.plaintext)
    assert_done(form(api, REVOKE, {"token": jwt}))
    clock.advance(minutes=4)
    assert_invalid(api.get(NOTES, **bearer(jwt)))
    clock.advance(minutes=2)
    assert_invalid(api.get(NOTES, **bearer(jwt)))


def test_deny_jwt_keeps_the_entry_for_the_remaining_lifetime(settings, clock):
    settings.CACHES = {
        **settings.CACHES,
        "shared": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "jti"},
    }
    now = int(clock.current.timestamp())
    assert denylist.deny_jwt("some-jti", now + 100) is True
    cache = caches["shared"]
    (expires,) = cache._expire_info.values()  # LocMemCache's own record of the timeout
    remaining = expires - time.time()
    # exp + leeway (10 s) + 1 from now; the cache counts in real seconds.
    assert 109 <= remaining <= 111
    assert denylist.refusal("AAAAAAAAAAAA", 1, now, 0, "some-jti") == "JWT revoked"
    assert denylist.refusal("AAAAAAAAAAAA", 1, now, 0, "other-jti") is None


def test_a_forged_or_expired_jwt_revokes_nothing(api, clock, reader):
    jwt = mint_jwt(api, reader.plaintext)
    forged = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
    assert_done(form(api, REVOKE, {"token": forged}))
    assert api.get(NOTES, **bearer(jwt)).status_code == 200
    clock.advance(minutes=10)
    assert_done(form(api, REVOKE, {"token": jwt}))


def test_jwt_revocation_fails_closed_when_the_deny_list_is_down(api, settings, reader):
    jwt = mint_jwt(api, reader.plaintext)
    settings.CACHES = {**settings.CACHES, "shared": DEAD_REDIS}
    response = form(api, REVOKE, {"token": jwt})
    assert_oauth_error(response, 503, "temporarily_unavailable")
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    # An API token is revoked even so (its JWTs are then refused: the list is unreadable).
    assert_done(form(api, REVOKE, {"token": reader.plaintext}))
    assert revoked(reader)


# --- client authentication: optional, but checked when sent ------------------------------------


def test_an_authenticated_client_may_revoke(api, alice, issue, reader):
    client = issue(alice, ["notes:read"])  # any API token: no scope is needed
    assert_done(form(api, REVOKE, {"token": reader.plaintext}, **basic_as(client)))
    assert revoked(reader)
    other = issue(alice)
    assert_done(form(api, REVOKE, {"token": other.plaintext, **post_fields(client)}))
    assert revoked(other)
    assert not revoked(client)


def test_wrong_client_credentials_are_invalid_client(api, alice, issue, reader):
    client = issue(alice)
    attempts = [
        ({"token": reader.plaintext}, basic(client.token.key_id, look_alike(client))),
        (
            {
                "token": reader.plaintext,
                "client_id": reader.token.key_id,
                "client_secret": client.plaintext,
            },
            {},
        ),
        ({"token": reader.plaintext}, {"HTTP_AUTHORIZATION": "Basic !!"}),
    ]
    for fields, headers in attempts:
        response = form(api, REVOKE, fields, **headers)
        assert_oauth_error(response, 401, "invalid_client")
        assert response["WWW-Authenticate"] == BASIC_CHALLENGE
    assert not revoked(reader)


def test_a_public_client_sends_its_client_id_alone(api, reader):
    # authlib's "none" method: a client_id is no credential, and not needed.
    assert_done(form(api, REVOKE, {"token": reader.plaintext, "client_id": "public-app"}))
    assert revoked(reader)


def test_a_bearer_header_is_not_read_here(api, alice, issue, reader):
    other = issue(alice)
    assert_done(form(api, REVOKE, {"token": reader.plaintext}, **bearer(other.plaintext)))
    assert revoked(reader)
    assert not revoked(other)
    assert_done(form(api, REVOKE, {"token": "x"}, **bearer("garbage")))


# --- bad requests ------------------------------------------------------------------------------


def test_missing_token_is_invalid_request(api):
    body = assert_oauth_error(
        form(api, REVOKE, {"token_type_hint": "access_token"}), 400, "invalid_request"
    )
    assert "token" in body["error_description"]
    assert_oauth_error(api.post(REVOKE, {}, format="json"), 400, "invalid_request")
    assert_oauth_error(form(api, REVOKE, {"token": ""}), 400, "invalid_request")


def test_token_twice_is_invalid_request_and_revokes_nothing(api, reader):
    response = form(api, REVOKE, [("token", reader.plaintext), ("token", reader.plaintext)])
    assert_oauth_error(response, 400, "invalid_request")
    assert not revoked(reader)


def test_unsupported_hint_and_unknown_parameters_are_ignored(api, reader):
    fields = {"token": reader.plaintext, "token_type_hint": "id_token", "foo": "bar"}
    assert_done(form(api, REVOKE, fields))
    assert revoked(reader)


@pytest.mark.parametrize(
    ("arguments", "status"),
    [
        ({"data": "[" * 100_000, "content_type": "application/json"}, 400),
        ({"data": '{"token": ', "content_type": "application/json"}, 400),
        ({"data": "[1]", "content_type": "application/json"}, 400),
        ({"data": "token=x&" + "a=1&" * 1001, "content_type": FORM}, 413),
        ({"data": "token=" + "x" * 2_700_000, "content_type": FORM}, 413),
        ({"data": {"token": "x"}, "format": "multipart"}, 415),
        ({"data": "token=x", "content_type": "text/plain"}, 415),
    ],
    ids=["deep-json", "broken-json", "json-list", "many-fields", "oversized", "multipart", "text"],
)
def test_hostile_bodies_are_oauth_errors(api, reader, arguments, status):
    response = api.post(REVOKE, **arguments)
    body = assert_oauth_error(response, status, "invalid_request")
    assert "Traceback" not in body["error_description"]
    assert not revoked(reader)


def test_other_methods_are_refused(api):
    assert_oauth_error(api.get(REVOKE), 405, "invalid_request")


def test_error_descriptions_use_only_the_characters_rfc_6749_allows():
    text = _oauth_text('Type "text/plain" non supporté \\ ok\n')
    assert text == "Type 'text/plain' non supporte / ok"
    assert all(" " <= char <= "~" and char not in '"\\' for char in text)


# --- the rate limit ----------------------------------------------------------------------------


def test_flooding_past_the_limit_is_429_and_revokes_nothing(api, reader, settings):
    set_tokens_setting(settings, REVOCATION_RATE="3/m")
    for _ in range(3):
        assert_done(form(api, REVOKE, {"token": "guess"}))
    response = form(api, REVOKE, {"token": reader.plaintext})
    assert_oauth_error(response, 429, "slow_down")
    assert int(response["Retry-After"]) >= 1
    assert not revoked(reader)
    # Per client address: another one still gets through.
    assert_done(form(APIClient(), REVOKE, {"token": reader.plaintext}, REMOTE_ADDR="192.0.2.7"))
    assert revoked(reader)


def test_the_default_limit_is_sixty_a_minute(api):
    statuses = [form(api, REVOKE, {"token": "x"}).status_code for _ in range(61)]
    assert statuses == [200] * 60 + [429]


def test_every_attempt_counts_even_refused_clients_and_bad_bodies(api, alice, issue, settings):
    set_tokens_setting(settings, REVOCATION_RATE="2/m")
    client = issue(alice)
    form(api, REVOKE, {"token": "x"}, **basic(client.token.key_id, "wrong"))
    form(api, REVOKE, {})
    assert_oauth_error(form(api, REVOKE, {"token": "x"}), 429, "slow_down")


def test_limiter_outage_is_503_and_revokes_nothing(api, reader, settings):
    dead_rate_limit_cache(settings)
    response = form(api, REVOKE, {"token": reader.plaintext})
    assert_oauth_error(response, 503, "temporarily_unavailable")
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert not revoked(reader)


def test_attempts_are_logged_without_the_token(api, reader, settings, caplog):
    caplog.set_level(logging.INFO, logger="tokens_app")
    set_tokens_setting(settings, REVOCATION_RATE="1/m")
    form(api, REVOKE, {"token": look_alike(reader)}, REMOTE_ADDR=HOME)
    form(api, REVOKE, {"token": reader.plaintext}, REMOTE_ADDR=HOME)
    assert "Revocation rate exceeded" in caplog.text
    assert reader.plaintext not in caplog.text
    assert look_alike(reader) not in caplog.text


# --- the schema --------------------------------------------------------------------------------


def test_schema_documents_the_revocation_endpoint(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"][REVOKE]["post"]
    assert {} in operation["security"]  # public
    assert {"clientSecretBasic": []} in operation["security"]
    assert set(operation["requestBody"]["content"]) == {FORM}  # one per body; JSON read too
    assert {"200", "400", "401", "413", "415", "429", "503"} <= set(operation["responses"])
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    error = operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/OAuthError")
    request = schema["components"]["schemas"]["TokenRevocationRequest"]
    assert request["required"] == ["token"]


# --- the service and its setting ---------------------------------------------------------------


def test_revoke_presented_tells_its_caller_what_it_did(api, reader):
    jwt = mint_jwt(api, reader.plaintext)
    assert services.revoke_presented(jwt) is True
    assert services.revoke_presented(jwt) is False  # already refused
    assert services.revoke_presented(reader.plaintext, ip=HOME) is True
    assert services.revoke_presented(reader.plaintext) is False
    assert services.revoke_presented("garbage") is False


@pytest.mark.parametrize("rate", ["0/m", "5/0m", "abc", 5, ""])
def test_bad_revocation_rates_are_refused(rate):
    with pytest.raises(ImproperlyConfigured, match="REVOCATION_RATE must look like"):
        conf.load({"REVOCATION_RATE": rate})
