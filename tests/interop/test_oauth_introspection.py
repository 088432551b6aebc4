"""RFC 7662 introspection as standard clients send it (issue 15, item 2).

The caller may authenticate as an OAuth client (RFC 6749 § 2.3.1): HTTP Basic
(``client_secret_basic``) or body fields (``client_secret_post``), where ``client_id`` is
the calling API token's key id and ``client_secret`` the whole token. The same scope is
required, every refusal is the one generic 401 (a Basic challenge for Basic attempts),
the client's budgets and allow-list apply, and unknown parameters are ignored.
"""

import logging
from typing import Any
from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from tests.helpers import (
    HOME,
    INVALID_BODY,
    INVALID_CHALLENGE,
    ISSUER,
    NO_CREDENTIALS_CHALLENGE,
    PREFIX,
    SECRET,
    bearer,
    mint_jwt,
)
from tests.interop.oauth_helpers import (
    BASIC_CHALLENGE,
    INTROSPECT,
    basic,
    basic_as,
    form,
    post_fields,
)
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def introspector(alice: Any, issue: Any) -> services.IssuedToken:
    return issue(alice, ["tokens:introspect"])


@pytest.fixture
def target(bob: Any, issue: Any) -> services.IssuedToken:
    return issue(bob, ["notes:read"])


def look_alike(issued: services.IssuedToken) -> str:
    """A well-formed token (valid checksum) with a public key id and a secret of our own."""
    key_id = issued.token.key_id
    return f"{PREFIX}_{key_id}{SECRET}{tokenstring.checksum(key_id, SECRET)}"


def assert_refused(response: Any, challenge: str) -> None:
    """The one answer to every refused client: 401, the challenge, the generic body."""
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == challenge
    assert response.json() == INVALID_BODY


# --- the two client authentication methods -----------------------------------------------------


def test_client_secret_basic_introspects(api, introspector, target):
    response = form(api, INTROSPECT, {"token": target.plaintext}, **basic_as(introspector))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    answer = response.json()
    assert answer["active"] is True
    assert answer["client_id"] == target.token.key_id  # the introspected token's, not the caller's


def test_client_secret_post_introspects(api, introspector, target):
    fields = {"token": target.plaintext, **post_fields(introspector)}
    response = form(api, INTROSPECT, fields)
    assert response.status_code == 200
    assert response.json()["username"] == "bob"


def test_client_secret_post_in_json_too(api, introspector, target):
    body = {"token": target.plaintext, **post_fields(introspector)}
    response = api.post(INTROSPECT, body, format="json")
    assert response.status_code == 200
    assert response.json()["active"] is True


def test_basic_credentials_may_be_form_encoded(api, introspector, target):
    # RFC 6749 section 2.3.1: id and secret are form-encoded before base64.
    client_id, secret = quote(introspector.token.key_id), quote(introspector.plaintext)
    response = form(api, INTROSPECT, {"token": target.plaintext}, **basic(client_id, secret))
    assert response.json()["active"] is True


def test_basic_with_a_matching_client_id_field_is_accepted(api, introspector, target):
    fields = {"token": target.plaintext, "client_id": introspector.token.key_id}
    response = form(api, INTROSPECT, fields, **basic_as(introspector))
    assert response.json()["active"] is True


def test_bearer_still_works_and_a_lone_client_id_is_ignored(api, introspector, target):
    # A client_id alone names a client without proving anything: it is no credential.
    fields = {"token": target.plaintext, "client_id": "whatever"}
    response = form(api, INTROSPECT, fields, **bearer(introspector.plaintext))
    assert response.json()["active"] is True


def test_the_answer_is_the_same_whichever_way_the_client_authenticated(api, introspector, target):
    answers = [
        form(api, INTROSPECT, {"token": target.plaintext}, **basic_as(introspector)).json(),
        form(api, INTROSPECT, {"token": target.plaintext, **post_fields(introspector)}).json(),
        form(api, INTROSPECT, {"token": target.plaintext}, **bearer(introspector.plaintext)).json(),
    ]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["iss"] == ISSUER
    assert answers[0]["token_type"] == "Bearer"
    assert answers[0]["tokens_app_kind"] == "api_token"


# --- refusals: the same generic 401 ------------------------------------------------------------


def test_forged_client_id_from_a_public_key_id_is_refused(api, alice, issue, introspector, target):
    # The key id is public: naming the introspector with someone else's token proves nothing.
    weak = issue(alice, ["notes:read"])
    attempts = [
        basic(introspector.token.key_id, weak.plaintext),
        basic(introspector.token.key_id, look_alike(introspector)),
        basic(introspector.token.key_id, introspector.token.key_id),
    ]
    for headers in attempts:
        assert_refused(
            form(api, INTROSPECT, {"token": target.plaintext}, **headers), BASIC_CHALLENGE
        )
    posted = {
        "token": target.plaintext,
        "client_id": introspector.token.key_id,
        "client_secret": weak.plaintext,
    }
    assert_refused(form(api, INTROSPECT, posted), INVALID_CHALLENGE)


def test_client_id_of_another_token_is_refused_even_with_a_valid_secret(
    api, alice, issue, introspector, target
):
    other = issue(alice, ["tokens:introspect"])
    headers = basic(other.token.key_id, introspector.plaintext)
    assert_refused(form(api, INTROSPECT, {"token": target.plaintext}, **headers), BASIC_CHALLENGE)
    fields = {"token": target.plaintext, "client_id": other.token.key_id}
    fields["client_secret"] = introspector.plaintext
    assert_refused(form(api, INTROSPECT, fields), INVALID_CHALLENGE)


def test_revoked_calling_token_is_refused(api, introspector, target):
    services.revoke_token(introspector.token)
    response = form(api, INTROSPECT, {"token": target.plaintext}, **basic_as(introspector))
    assert_refused(response, BASIC_CHALLENGE)
    fields = {"token": target.plaintext, **post_fields(introspector)}
    assert_refused(form(api, INTROSPECT, fields), INVALID_CHALLENGE)


def test_client_without_the_scope_is_403(api, alice, issue, target):
    reader = issue(alice, ["notes:read"])
    for response in (
        form(api, INTROSPECT, {"token": target.plaintext}, **basic_as(reader)),
        form(api, INTROSPECT, {"token": target.plaintext, **post_fields(reader)}),
    ):
        assert response.status_code == 403
        assert response.json()["required_scopes"] == ["tokens:introspect"]


def test_a_jwt_is_no_client_secret(api, introspector, target):
    # Even one carrying tokens:introspect: the client is an API token.
    jwt = mint_jwt(api, introspector.plaintext)
    key_id = introspector.token.key_id
    headers = basic(key_id, jwt)
    assert_refused(form(api, INTROSPECT, {"token": target.plaintext}, **headers), BASIC_CHALLENGE)
    fields = {"token": target.plaintext, "client_id": key_id, "client_secret": jwt}
    assert_refused(form(api, INTROSPECT, fields), INVALID_CHALLENGE)


@pytest.mark.parametrize(
    "header",
    ["Basic not-base64!", "Basic " + "YWJj", "Basic ", "Basic " + "QQ==" * 400],
    ids=["not-base64", "no-colon", "empty", "too-long"],
)
def test_malformed_basic_is_refused(api, target, header):
    response = form(api, INTROSPECT, {"token": target.plaintext}, HTTP_AUTHORIZATION=header)
    assert_refused(response, BASIC_CHALLENGE)


def test_two_methods_at_once_are_refused(api, introspector, target):
    # RFC 6749 section 2.3: a client uses one authentication method per request.
    fields = {"token": target.plaintext, **post_fields(introspector)}
    assert_refused(form(api, INTROSPECT, fields, **basic_as(introspector)), BASIC_CHALLENGE)
    assert_refused(
        form(api, INTROSPECT, fields, **bearer(introspector.plaintext)), INVALID_CHALLENGE
    )


def test_basic_user_and_client_id_field_must_agree(api, alice, issue, introspector, target):
    fields = {"token": target.plaintext, "client_id": issue(alice).token.key_id}
    assert_refused(form(api, INTROSPECT, fields, **basic_as(introspector)), BASIC_CHALLENGE)


def test_secret_without_client_id_is_refused(api, introspector, target):
    fields = {"token": target.plaintext, "client_secret": introspector.plaintext}
    assert_refused(form(api, INTROSPECT, fields), INVALID_CHALLENGE)


def test_client_parameters_sent_twice_or_not_text_are_refused(api, introspector, target):
    pairs = [
        ("token", target.plaintext),
        ("client_id", introspector.token.key_id),
        ("client_secret", introspector.plaintext),
        ("client_secret", introspector.plaintext),
    ]
    assert_refused(form(api, INTROSPECT, pairs), INVALID_CHALLENGE)
    body = {"token": target.plaintext, "client_id": introspector.token.key_id, "client_secret": 7}
    assert_refused(api.post(INTROSPECT, body, format="json"), INVALID_CHALLENGE)


def test_no_credentials_is_the_bearer_challenge(api, target):
    response = form(api, INTROSPECT, {"token": target.plaintext, "client_id": "x"})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == NO_CREDENTIALS_CHALLENGE


def test_refusal_reasons_are_logged_by_key_id_never_the_secret(
    api, alice, issue, introspector, target, caplog
):
    caplog.set_level(logging.INFO, logger="tokens_app.authentication")
    other = issue(alice, ["tokens:introspect"])
    headers = basic(other.token.key_id, introspector.plaintext)
    form(api, INTROSPECT, {"token": target.plaintext}, **headers)
    assert "client_id is not the key id of the client_secret" in caplog.text
    assert introspector.token.key_id in caplog.text
    assert introspector.plaintext not in caplog.text


# --- the client is a credential like any other -------------------------------------------------


def test_client_requests_spend_the_client_tokens_budget(api, alice, issue, target):
    client = issue(alice, ["tokens:introspect"], rate_limit="2/h")
    statuses = [
        form(api, INTROSPECT, {"token": target.plaintext}, **basic_as(client)).status_code,
        form(api, INTROSPECT, {"token": target.plaintext, **post_fields(client)}).status_code,
        form(api, INTROSPECT, {"token": target.plaintext}, **basic_as(client)).status_code,
    ]
    assert statuses == [200, 200, 429]
    # The budget is the token's, whichever way it is presented.
    assert form(api, INTROSPECT, {"token": "x"}, **bearer(client.plaintext)).status_code == 429


def test_refused_attempts_do_not_spend_the_budget(api, alice, issue, target):
    client = issue(alice, ["tokens:introspect"], rate_limit="1/h")
    for _ in range(3):
        headers = basic(client.token.key_id, look_alike(client))
        assert form(api, INTROSPECT, {"token": "x"}, **headers).status_code == 401
    assert form(api, INTROSPECT, {"token": "x"}, **basic_as(client)).status_code == 200


def test_client_tokens_allow_list_applies(alice, issue, target):
    client = issue(alice, ["tokens:introspect"], allowed_ips=["10.0.0.0/8"])
    elsewhere = form(
        APIClient(), INTROSPECT, {"token": "x"}, REMOTE_ADDR="192.0.2.1", **basic_as(client)
    )
    assert_refused(elsewhere, BASIC_CHALLENGE)
    inside = form(APIClient(), INTROSPECT, {"token": "x"}, REMOTE_ADDR=HOME, **basic_as(client))
    assert inside.status_code == 200


def test_client_use_is_stamped_on_the_client_not_the_target(api, introspector, target):
    form(api, INTROSPECT, {"token": target.plaintext}, **basic_as(introspector))
    assert APIToken.objects.get(pk=introspector.token.pk).last_used_at is not None
    assert APIToken.objects.get(pk=target.token.pk).last_used_at is None


# --- parameters --------------------------------------------------------------------------------


def test_unknown_parameters_are_ignored(api, introspector, target):
    fields = {
        "token": target.plaintext,
        "token_type_hint": "refresh_token",
        "resource": "https://rs.example",
        "anything": "else",
    }
    response = form(api, INTROSPECT, fields, **basic_as(introspector))
    assert response.status_code == 200
    assert response.json()["active"] is True


def test_token_sent_twice_is_a_400(api, introspector, target):
    pairs = [("token", target.plaintext), ("token", "x")]
    response = form(api, INTROSPECT, pairs, **basic_as(introspector))
    assert response.status_code == 400
    assert response.json() == {"token": ["Send this parameter once."]}


def test_multipart_is_not_read(api, introspector, target):
    response = api.post(
        INTROSPECT,
        {"token": target.plaintext},
        format="multipart",
        **bearer(introspector.plaintext),
    )
    assert response.status_code == 415


# --- the answer --------------------------------------------------------------------------------


def test_active_jwt_answer_carries_every_known_member(api, alice, issue, introspector):
    parent = issue(alice, ["notes:read"])
    jwt = mint_jwt(api, parent.plaintext)
    answer = form(api, INTROSPECT, {"token": jwt}, **basic_as(introspector)).json()
    assert set(answer) == {
        "active",
        "iss",
        "aud",
        "jti",
        "nbf",
        "exp",
        "iat",
        "sub",
        "client_id",
        "username",
        "scope",
        "token_type",
        "tokens_app_kind",
    }
    assert (answer["token_type"], answer["tokens_app_kind"]) == ("Bearer", "jwt")
    assert answer["client_id"] == parent.token.key_id


def test_inactive_is_exactly_inactive_for_a_client_too(api, introspector, target):
    services.revoke_token(target.token)
    response = form(api, INTROSPECT, {"token": target.plaintext}, **basic_as(introspector))
    assert response.json() == {"active": False}


# --- the schema --------------------------------------------------------------------------------


def test_schema_documents_client_authentication(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    scheme = schema["components"]["securitySchemes"]["clientSecretBasic"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    operation = schema["paths"][INTROSPECT]["post"]
    assert {"clientSecretBasic": []} in operation["security"]
    assert {"apiToken": ["tokens:introspect"]} in operation["security"]
    # One media type per body (generators handle one): the form RFC 7662 names; JSON is
    # read too (the tests above).
    assert set(operation["requestBody"]["content"]) == {
        "application/x-www-form-urlencoded",
    }
    request = schema["components"]["schemas"]["TokenIntrospectionRequest"]
    assert {"token", "token_type_hint", "client_id", "client_secret"} <= set(request["properties"])
    answer = schema["components"]["schemas"]["Introspection"]["properties"]
    assert {"iss", "aud", "jti", "nbf", "tokens_app_kind"} <= set(answer)
    enum = answer["token_type"]["$ref"].rpartition("/")[2]
    assert schema["components"]["schemas"][enum]["enum"] == ["Bearer"]
