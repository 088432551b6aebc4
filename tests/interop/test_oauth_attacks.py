"""Attacks on the issue 15 surfaces (RFC 7662 client auth, RFC 7009, discovery, CORS), where
features meet: rotation graces, lineage, the rate limiter, the deny list, Host headers.

Each test replays one attack. Those that pass are defences that hold; a hole found by the
review was kept as ``xfail(strict=True)`` until it was fixed (both are now).
"""

import base64
from typing import Any

import jwt as pyjwt
import pytest
from django.core.cache import caches
from rest_framework.test import APIClient

from tests.helpers import DEAD_REDIS, HOME, PREFIX, SECRET, WHOAMI, bearer, mint_jwt
from tests.interop.oauth_helpers import BASIC_CHALLENGE, INTROSPECT, REVOKE, basic, basic_as, form
from tokens_app import services
from tokens_app.conf import token_settings
from tokens_app.core import clock as clock_module
from tokens_app.core import tokenstring
from tokens_app.jwt import denylist
from tokens_app.models import APIToken
from tokens_app.services.caller import Caller

pytestmark = pytest.mark.django_db

AS_METADATA = "/.well-known/oauth-authorization-server"
PR_METADATA = "/.well-known/oauth-protected-resource"


def revoke(token: str, **extra: Any) -> Any:
    return form(APIClient(), REVOKE, {"token": token}, **extra)


def introspect_as(caller: services.IssuedToken, token: str, **extra: Any) -> Any:
    return form(APIClient(), INTROSPECT, {"token": token}, **basic_as(caller), **extra)


def is_revoked(issued: services.IssuedToken) -> bool:
    return APIToken.objects.get(pk=issued.token.pk).revoked_at is not None


@pytest.fixture
def introspector(issue: Any, bob: Any) -> services.IssuedToken:
    return issue(bob, scopes=["tokens:introspect"])


# --- revocation x rotation grace ----------------------------------------------------------


def test_retired_secret_after_the_grace_revokes_nothing(issue, alice, clock):
    issued = issue(alice)
    services.rotate_token(issued.token, grace_seconds=60)
    clock.advance(seconds=61)
    assert revoke(issued.plaintext).status_code == 200
    assert not is_revoked(issued)


def test_secret_retired_at_once_revokes_nothing(issue, alice):
    issued = issue(alice)
    services.rotate_token(issued.token, grace_seconds=0)
    assert revoke(issued.plaintext).status_code == 200
    assert not is_revoked(issued)


def test_previous_secret_in_grace_revokes_as_documented(issue, alice, clock):
    issued = issue(alice)
    new = services.rotate_token(issued.token, grace_seconds=60)
    assert revoke(issued.plaintext).status_code == 200
    assert is_revoked(issued)
    assert APIClient().get(WHOAMI, **bearer(new.plaintext)).status_code == 401


def test_grace_secret_as_introspection_client_expires_with_the_grace(issue, bob, alice, clock):
    caller = issue(bob, scopes=["tokens:introspect"])
    services.rotate_token(caller.token, grace_seconds=60)
    target = issue(alice)
    assert introspect_as(caller, target.plaintext).json()["active"] is True
    clock.advance(seconds=61)
    response = introspect_as(caller, target.plaintext)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == BASIC_CHALLENGE


# --- revocation x lineage -----------------------------------------------------------------


def _child(parent: services.IssuedToken, owner: Any) -> services.IssuedToken:
    return services.issue_token(
        owner, name="child", scopes=["notes:read"], caller=Caller(presented=parent.token)
    )


def test_revoking_a_parent_kills_the_childs_jwts(issue, alice, api):
    parent = issue(alice, scopes=["notes:read", "tokens:write"])
    child = _child(parent, alice)
    jwt = mint_jwt(api, child.plaintext)
    assert revoke(parent.plaintext).status_code == 200
    assert is_revoked(child)
    assert APIClient().get(WHOAMI, **bearer(jwt)).status_code == 401


def test_revoking_a_child_leaves_the_parent(issue, alice):
    parent = issue(alice, scopes=["notes:read", "tokens:write"])
    child = _child(parent, alice)
    revoke(child.plaintext)
    assert is_revoked(child)
    assert not is_revoked(parent)


def test_a_jwt_revokes_only_itself_not_its_token_or_siblings(issue, alice, api):
    issued = issue(alice)
    first, second = mint_jwt(api, issued.plaintext), mint_jwt(api, issued.plaintext)
    assert revoke(first).status_code == 200
    assert APIClient().get(WHOAMI, **bearer(first)).status_code == 401
    assert APIClient().get(WHOAMI, **bearer(second)).status_code == 200
    assert not is_revoked(issued)


# --- revocation x rate limiter ------------------------------------------------------------


def test_spoofed_forwarded_for_gets_no_new_budget(settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "REVOCATION_RATE": "3/m"}
    answers = [
        revoke("x", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(5)
    ]
    assert answers == [200, 200, 200, 429, 429]


def test_bad_bodies_count_against_the_revocation_rate(settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "REVOCATION_RATE": "2/m"}
    api = APIClient()
    assert api.post(REVOKE, b"{", content_type="application/json").status_code == 400
    assert api.post(REVOKE, b"x", content_type="multipart/form-data; boundary=a").status_code == 415
    response = revoke("x")
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1


def test_refused_client_authentication_counts_too(settings, issue, alice):
    settings.API_TOKENS = {**settings.API_TOKENS, "REVOCATION_RATE": "2/m"}
    victim = issue(alice)
    for _attempt in range(2):
        assert revoke("x", **basic(victim.token.key_id, "wrong")).status_code == 401
    assert revoke(victim.plaintext).status_code == 429
    assert not is_revoked(victim)


def test_revocation_limiter_outage_fails_closed(settings, issue, alice):
    settings.CACHES = {**settings.CACHES, "dead": DEAD_REDIS}
    settings.RATELIMIT_USE_CACHE = "dead"
    issued = issue(alice)
    response = revoke(issued.plaintext)
    assert response.status_code == 503
    assert not is_revoked(issued)


def test_ipv6_addresses_of_one_64_share_the_revocation_budget(settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "REVOCATION_RATE": "3/m"}
    answers = [revoke("x", REMOTE_ADDR=f"2001:db8:1:2::{n:x}").status_code for n in range(1, 6)]
    assert answers[-1] == 429


# --- revocation: no oracle ----------------------------------------------------------------


def _lookalike(issued: services.IssuedToken) -> str:
    """The victim's public key id with a secret of one's own and a valid checksum."""
    return tokenstring.assemble(PREFIX, issued.token.key_id, SECRET)


def _unknown() -> str:
    return tokenstring.assemble(PREFIX, tokenstring.generate_key_id(), SECRET)


def test_revocation_answer_is_identical_whatever_the_string(issue, alice, api):
    live, dead = issue(alice), issue(alice)
    services.revoke_token(dead.token)
    jwt = mint_jwt(api, live.plaintext)
    strings = ["nonsense", _lookalike(live), dead.plaintext, jwt + "x", jwt, live.plaintext]
    answers = [revoke(text) for text in strings]
    shapes = {
        (r.status_code, r.content, r["Cache-Control"], r.get("Content-Type"), r.get("Vary"))
        for r in answers
    }
    assert len(shapes) == 1, shapes


def test_revocation_costs_the_same_queries_for_unknown_and_wrong_secrets(
    issue, alice, django_assert_num_queries
):
    issued = issue(alice)
    unknown = _unknown()
    services.rotate_token(issue(alice).token, grace_seconds=60)  # a token in grace exists too
    queries = []
    for text in (_lookalike(issued), unknown, "tka_short"):
        with django_assert_num_queries(queries[0] if queries else 1, exact=False) as captured:
            revoke(text)
        queries.append(len(captured.captured_queries))
    assert not is_revoked(issued)
    # Malformed strings fail before any query (they are recognisable offline anyway).
    assert queries[0] == queries[1], queries


def test_revoked_token_costs_what_an_unknown_one_does(issue, alice, django_assert_num_queries):
    dead, live = issue(alice), issue(alice)
    services.revoke_token(dead.token)
    with django_assert_num_queries(1, exact=False) as revoked_run:
        revoke(dead.plaintext)
    with django_assert_num_queries(1, exact=False) as unknown_run:
        revoke(_lookalike(live))
    assert len(revoked_run.captured_queries) == len(unknown_run.captured_queries)


# --- jti deny x JWT lifetime and leeway ---------------------------------------------------


def test_jti_entry_outlives_the_jwts_verification_window(issue, alice, api, monkeypatch):
    conf = token_settings().jwt
    jwt = mint_jwt(api, issue(alice).plaintext)
    exp = int(pyjwt.decode(jwt, options={"verify_signature": False})["exp"])
    cache = caches[conf.deny_list_cache]
    timeouts: list[Any] = []
    real_set = cache.set

    def spy(key: str, value: Any, timeout: Any = None, **kw: Any) -> Any:
        timeouts.append(timeout)
        return real_set(key, value, timeout=timeout, **kw)

    monkeypatch.setattr(cache, "set", spy)
    revoke(jwt)
    now = clock_module.now().timestamp()
    # The JWT verifies while now < exp + leeway: the entry must last at least that long.
    assert timeouts and timeouts[-1] >= exp + conf.leeway_seconds - now, timeouts


def test_a_revoked_jwt_is_refused_inside_the_leeway(issue, alice, api, clock, settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "JWT_LEEWAY_SECONDS": 30}
    jwt = mint_jwt(api, issue(alice).plaintext)
    revoke(jwt)
    clock.advance(seconds=token_settings().jwt.lifetime.total_seconds() + 20)
    assert APIClient().get(WHOAMI, **bearer(jwt)).status_code == 401
    assert introspect_as_any(jwt)["active"] is False


def introspect_as_any(token: str) -> Any:
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user("rs")
    caller = services.issue_token(owner, name="rs", scopes=["tokens:introspect"])
    return introspect_as(caller, token).json()


def test_jwt_revocation_with_the_deny_list_down_is_no_200(issue, alice, api, settings):
    jwt = mint_jwt(api, issue(alice).plaintext)
    settings.CACHES = {**settings.CACHES, "dead": DEAD_REDIS}
    settings.API_TOKENS = {**settings.API_TOKENS, "JWT_DENY_LIST_CACHE": "dead"}
    assert revoke(jwt).status_code == 503


# --- client authentication: Basic edge cases and forgeries ---------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode("k\u00e9y:s\u00e9cret".encode()).decode(),
        "Basic " + "A" * 5000,
        "Basic " + base64.b64encode(b":").decode(),
        "Basic",
        "Basic " + base64.b64encode(b"a:b\x00c").decode(),
    ],
)
def test_malformed_basic_is_the_generic_401(value, issue, alice):
    target = issue(alice)
    response = form(APIClient(), INTROSPECT, {"token": target.plaintext}, HTTP_AUTHORIZATION=value)
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == BASIC_CHALLENGE
    assert response.json() == {"detail": "Invalid token."}


def test_percent_encoded_basic_credentials_are_decoded(introspector, issue, alice):
    from urllib.parse import quote

    target = issue(alice)
    encoded = basic(
        quote(introspector.token.key_id, safe=""), quote(introspector.plaintext, safe="")
    )
    response = form(APIClient(), INTROSPECT, {"token": target.plaintext}, **encoded)
    assert response.json()["active"] is True


def test_victims_key_id_with_own_token_is_refused(introspector, issue, alice):
    victim = issue(alice, scopes=["tokens:introspect"])
    response = form(
        APIClient(),
        INTROSPECT,
        {"token": victim.plaintext},
        **basic(victim.token.key_id, introspector.plaintext),
    )
    assert response.status_code == 401


def test_victims_key_id_without_secret_in_body_is_no_credential(issue, alice):
    victim = issue(alice, scopes=["tokens:introspect"])
    response = form(
        APIClient(), INTROSPECT, {"token": victim.plaintext, "client_id": victim.token.key_id}
    )
    assert response.status_code == 401


def test_basic_and_post_at_once_are_refused(introspector, issue, alice):
    target = issue(alice)
    fields = {"token": target.plaintext, "client_secret": introspector.plaintext}
    response = form(APIClient(), INTROSPECT, fields, **basic_as(introspector))
    assert response.status_code == 401


def test_basic_user_and_body_client_id_differ(introspector, issue, alice):
    target = issue(alice, scopes=["tokens:introspect"])
    fields = {"token": target.plaintext, "client_id": target.token.key_id}
    response = form(APIClient(), INTROSPECT, fields, **basic_as(introspector))
    assert response.status_code == 401


def test_bearer_header_with_body_secret_is_refused(introspector, issue, alice):
    other = issue(alice, scopes=["tokens:introspect"])
    fields = {
        "token": other.plaintext,
        "client_id": introspector.token.key_id,
        "client_secret": introspector.plaintext,
    }
    response = form(APIClient(), INTROSPECT, fields, **bearer(other.plaintext))
    assert response.status_code == 401


def test_json_client_secret_of_wrong_type_is_refused(introspector, issue, alice):
    body = {
        "token": issue(alice).plaintext,
        "client_id": introspector.token.key_id,
        "client_secret": [introspector.plaintext],
    }
    response = APIClient().post(INTROSPECT, body, format="json")
    assert response.status_code == 401


def test_jwt_as_client_secret_is_refused(issue, bob, alice, api):
    caller = issue(bob, scopes=["tokens:introspect"])
    jwt = mint_jwt(api, caller.plaintext)
    response = form(
        APIClient(),
        INTROSPECT,
        {"token": issue(alice).plaintext},
        **basic(caller.token.key_id, jwt),
    )
    assert response.status_code == 401


def test_client_auth_obeys_the_ip_allow_list(issue, bob, alice):
    caller = issue(bob, scopes=["tokens:introspect"], allowed_ips=["10.0.0.0/8"])
    target = issue(alice)
    assert introspect_as(caller, target.plaintext, REMOTE_ADDR=HOME).status_code == 200
    outside = introspect_as(caller, target.plaintext, REMOTE_ADDR="203.0.113.1")
    assert outside.status_code == 401


def test_client_auth_spends_the_callers_rate_budget(issue, bob, alice):
    caller = issue(bob, scopes=["tokens:introspect"], rate_limit="2/m")
    target = issue(alice)
    answers = [introspect_as(caller, target.plaintext).status_code for _n in range(3)]
    assert answers == [200, 200, 429]


def test_forged_client_attempts_spend_no_victim_budget(issue, bob, alice):
    victim = issue(bob, scopes=["tokens:introspect"], rate_limit="2/m")
    target = issue(alice)
    for _attempt in range(5):
        form(
            APIClient(),
            INTROSPECT,
            {"token": target.plaintext},
            **basic(victim.token.key_id, _lookalike(victim)),
        )
    assert introspect_as(victim, target.plaintext).status_code == 200


def test_child_client_shares_the_parents_budget(issue, bob, alice):
    parent = issue(bob, scopes=["tokens:introspect", "tokens:write"], rate_limit="2/m")
    child = services.issue_token(
        bob, name="c", scopes=["tokens:introspect"], caller=Caller(presented=parent.token)
    )
    target = issue(alice)
    introspect_as(parent, target.plaintext)
    introspect_as(parent, target.plaintext)
    assert introspect_as(child, target.plaintext).status_code == 429


def test_revoke_with_wrong_client_auth_revokes_nothing(issue, alice):
    target = issue(alice)
    response = revoke(target.plaintext, **basic(target.token.key_id, "nope"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert not is_revoked(target)


def test_introspection_without_the_scope_is_403(issue, bob, alice):
    caller = issue(bob, scopes=["notes:read"])
    assert introspect_as(caller, issue(alice).plaintext).status_code == 403


def test_token_in_the_query_string_is_not_read(issue, alice):
    target = issue(alice)
    response = APIClient().post(f"{REVOKE}?token={target.plaintext}")
    assert response.status_code == 400
    assert not is_revoked(target)


@pytest.mark.parametrize(
    "value",
    [
        ["a", "b"],
        5,
        1.5,
        {"a": 1},
        None,
        True,
    ],
)
def test_json_token_of_wrong_type_is_a_400(value):
    response = APIClient().post(REVOKE, {"token": value}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_repeated_token_parameter_is_refused(issue, alice):
    first, second = issue(alice), issue(alice)
    response = form(APIClient(), REVOKE, [("token", first.plaintext), ("token", second.plaintext)])
    assert response.status_code == 400
    assert not is_revoked(first) and not is_revoked(second)


# --- what the introspector sees ------------------------------------------------------------


def test_introspection_answer_carries_no_secret_material(introspector, issue, alice):
    target = issue(alice, allowed_ips=["10.0.0.0/8"])
    response = introspect_as(introspector, target.plaintext)
    body = response.json()
    text = response.content.decode()
    assert target.plaintext not in text
    assert target.token.secret_hash not in text
    assert response["Cache-Control"] == "no-store"
    assert body["allowed_ips"] == ["10.0.0.0/8"]  # by design (README: for the RS to apply)


def test_introspection_does_not_touch_the_token(introspector, issue, alice):
    target = issue(alice)
    introspect_as(introspector, target.plaintext)
    assert APIToken.objects.get(pk=target.token.pk).last_used_at is None


# --- cache headers on secret-bearing answers -----------------------------------------------


def test_mint_and_token_creation_are_no_store(issue, alice):
    creator = issue(alice, scopes=["tokens:write", "notes:read"])
    api = APIClient()
    minted = api.post("/api/auth/jwt/", {}, format="json", **bearer(creator.plaintext))
    assert minted["Cache-Control"] == "no-store"
    created = api.post(
        "/api/tokens/",
        {"name": "n", "scopes": ["notes:read"]},
        format="json",
        **bearer(creator.plaintext),
    )
    assert created.status_code == 201, created.content
    assert "no-store" in created.get("Cache-Control", "")


def test_rotation_answer_is_no_store(issue, alice):
    creator = issue(alice, scopes=["tokens:write"])
    response = APIClient().post(
        f"/api/tokens/{creator.token.key_id}/rotate/",
        {},
        format="json",
        **bearer(creator.plaintext),
    )
    assert response.status_code == 200, response.content
    assert "no-store" in response.get("Cache-Control", "")


# --- discovery: Host header, resource_metadata ---------------------------------------------


def test_foreign_host_gets_no_metadata(client):
    for path in (AS_METADATA, PR_METADATA):
        assert client.get(path, HTTP_HOST="evil.example").status_code == 400


def test_foreign_host_gets_no_challenge_pointing_elsewhere(client):
    response = client.get(WHOAMI, HTTP_HOST="evil.example")
    assert "evil.example" not in response.get("WWW-Authenticate", "")


def test_forwarded_host_is_ignored(client):
    response = client.get(AS_METADATA, HTTP_X_FORWARDED_HOST="evil.example")
    assert "evil.example" not in response.content.decode()
    challenge = client.get(WHOAMI, HTTP_X_FORWARDED_HOST="evil.example")["WWW-Authenticate"]
    assert "evil.example" not in challenge


def test_forwarded_proto_is_ignored_when_not_secure(client):
    response = client.get(PR_METADATA, HTTP_X_FORWARDED_PROTO="https")
    assert response.json()["resource"].startswith("http://testserver")


def test_resource_metadata_stays_one_quoted_string_under_a_hostile_mount(client):
    response = client.get(WHOAMI, SCRIPT_NAME='/x", error="evil')
    challenge = response.get("WWW-Authenticate", "")
    assert 'error="evil"' not in challenge


def test_metadata_documents_refuse_writes_and_send_no_credentials_cors(client):
    for path in (AS_METADATA, PR_METADATA, "/.well-known/jwks.json"):
        assert client.post(path).status_code == 405
        response = client.get(path, HTTP_ORIGIN="https://evil.example")
        assert response["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in response


# --- CORS on the API -----------------------------------------------------------------------


@pytest.fixture
def cors(settings: Any) -> str:
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    return "https://app.example"


def test_api_does_not_reflect_a_foreign_origin(cors, client, issue, alice):
    for origin in ("https://evil.example", "https://app.example.evil.example", "null"):
        response = client.get(WHOAMI, HTTP_ORIGIN=origin, **bearer(issue(alice).plaintext))
        assert "Access-Control-Allow-Origin" not in response


def test_api_allows_the_origin_without_credentials(cors, client):
    response = client.options(
        REVOKE,
        HTTP_ORIGIN=cors,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == cors
    assert "Access-Control-Allow-Credentials" not in response


def test_preflight_from_a_foreign_origin_gets_no_cors(cors, client):
    response = client.options(
        INTROSPECT, HTTP_ORIGIN="https://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert "Access-Control-Allow-Origin" not in response


def test_session_cookie_cannot_drive_introspection_cross_site(cors, alice, issue):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = form(client, INTROSPECT, {"token": issue(alice).plaintext}, HTTP_ORIGIN=cors)
    assert response.status_code == 403


def test_deny_list_helper_is_what_revocation_writes(issue, alice, api):
    """Sanity for the spy test: the jti entry is really in the deny-list cache."""
    jwt = mint_jwt(api, issue(alice).plaintext)
    revoke(jwt)
    assert APIClient().get(WHOAMI, **bearer(jwt)).status_code == 401
    assert denylist.DenyListUnavailable is not None
