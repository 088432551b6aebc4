"""HasScope and HasAnyScope through real DRF views and tokens issued by the service."""

import json
import logging
from typing import Any

import pytest
from rest_framework import viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from tests.helpers import NO_CREDENTIALS_CHALLENGE, bearer
from tokens_app.authentication import APITokenAuthentication
from tokens_app.permissions import HasAnyScope, HasScope, required_scopes

pytestmark = pytest.mark.django_db

factory = APIRequestFactory()
NO_SCOPE_DETAIL = "This endpoint declares no scope for this request."
INSUFFICIENT_DETAIL = "This credential lacks the scope this request needs."
UNSET = object()


class ScopedView(APIView):
    authentication_classes = [APITokenAuthentication, SessionAuthentication]
    permission_classes = [HasScope]
    required_scopes: Any = None

    def get(self, request: Request) -> Response:
        return Response({"ok": True})

    def post(self, request: Request) -> Response:
        return Response({"ok": True})

    def delete(self, request: Request) -> Response:
        return Response(status=204)


class NoteViewSet(viewsets.ViewSet):
    authentication_classes = [APITokenAuthentication, SessionAuthentication]
    permission_classes = [HasScope]
    # The action wins over the method: POST here means "create", not tokens:read.
    required_scopes = {"list": ["notes:read"], "create": ["notes:write"], "POST": ["tokens:read"]}

    def list(self, request: Request) -> Response:
        return Response([])

    def create(self, request: Request) -> Response:
        return Response({}, status=201)


def call(
    view: Any,
    method: str = "get",
    *,
    token: str | None = None,
    user: Any = None,
    credential: Any = UNSET,
) -> Any:
    headers = bearer(token) if token else {}
    request = getattr(factory, method)("/scoped/", **headers)
    if user is not None:
        force_authenticate(request, user=user, token=None if credential is UNSET else credential)
    response = view(request)
    response.render()
    return response


def scoped(required: Any = UNSET, **initkwargs: Any) -> Any:
    if required is not UNSET:
        initkwargs["required_scopes"] = required
    return ScopedView.as_view(**initkwargs)


def body(response: Any) -> Any:
    return json.loads(response.content)


def challenge(scope: str, realm: str = "api") -> str:
    return f'Bearer realm="{realm}", error="insufficient_scope", scope="{scope}"'


# What a view declares


def test_token_with_listed_scope_passes(alice, issue):
    token = issue(alice, ["notes:read"]).plaintext
    assert call(scoped(["notes:read"]), token=token).status_code == 200


def test_tuple_declaration_is_accepted(alice, issue):
    token = issue(alice, ["notes:read"]).plaintext
    assert call(scoped(("notes:read",)), token=token).status_code == 200


@pytest.mark.parametrize(
    ("method", "status"), [("get", 200), ("head", 200), ("post", 403), ("delete", 403)]
)
def test_per_method_mapping_is_consulted(alice, issue, method, status):
    view = scoped({"GET": ["notes:read"], "POST": ["notes:write"], "DELETE": ["notes:write"]})
    token = issue(alice, ["notes:read"]).plaintext
    assert call(view, method, token=token).status_code == status


def test_head_falls_back_to_get(alice, issue):
    view = scoped({"GET": ["notes:read"]})
    assert call(view, "head", token=issue(alice, ["notes:read"]).plaintext).status_code == 200
    response = call(view, "head", token=issue(alice, ["tokens:read"]).plaintext)
    assert response.status_code == 403
    assert response["WWW-Authenticate"] == challenge("notes:read")


def test_explicit_head_wins_over_get(alice, issue):
    view = scoped({"GET": ["notes:read"], "HEAD": ["tokens:read"]})
    token = issue(alice, ["notes:read"]).plaintext
    assert call(view, "head", token=token).status_code == 403


@pytest.mark.parametrize(
    ("method", "scopes", "status"),
    [
        ("get", ["notes:read"], 200),
        ("get", ["tokens:read"], 403),
        ("post", ["notes:write"], 201),
        ("post", ["tokens:read"], 403),
        ("post", ["notes:read"], 403),
    ],
)
def test_viewset_action_mapping_is_consulted(alice, issue, method, scopes, status):
    view = NoteViewSet.as_view({"get": "list", "post": "create"})
    token = issue(alice, scopes).plaintext
    assert call(view, method, token=token).status_code == status


def test_viewset_denial_names_the_action_scopes(alice, issue):
    view = NoteViewSet.as_view({"get": "list", "post": "create"})
    response = call(view, "post", token=issue(alice, ["tokens:read"]).plaintext)
    assert body(response)["required_scopes"] == ["notes:write"]


# Failing closed


def test_view_without_required_scopes_refuses_token(alice, issue, caplog):
    token = issue(alice, ["notes:read", "notes:write"]).plaintext
    with caplog.at_level(logging.WARNING, logger="tokens_app.permissions"):
        response = call(scoped(), token=token)
    assert response.status_code == 403
    assert body(response) == {"detail": NO_SCOPE_DETAIL}
    assert "ScopedView declares no required_scopes for GET" in caplog.text


def test_view_without_required_scopes_refuses_superuser_session(superuser):
    response = call(scoped(), user=superuser)
    assert response.status_code == 403
    assert body(response) == {"detail": NO_SCOPE_DETAIL}


def test_view_without_required_scopes_challenges_anonymous():
    response = call(scoped())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == NO_CREDENTIALS_CHALLENGE


@pytest.mark.parametrize(
    "declared",
    [
        "notes:read",
        [],
        (),
        ["notes:read", 7],
        [None],
        42,
        {"GET": "notes:read"},
        {"GET": []},
        {"GET": None},
        {"POST": ["notes:read"]},
        {"get": ["notes:read"]},
        {},
    ],
)
def test_malformed_declaration_fails_closed(alice, issue, declared):
    token = issue(alice, ["notes:read", "notes:write"]).plaintext
    response = call(scoped(declared), token=token)
    assert response.status_code == 403
    assert body(response) == {"detail": NO_SCOPE_DETAIL}


@pytest.mark.parametrize(
    ("declared", "method", "expected"),
    [
        (["a:b"], "GET", ["a:b"]),
        (("a:b", "c:d"), "POST", ["a:b", "c:d"]),
        ({"GET": ["a:b"]}, "get", ["a:b"]),
        ({"GET": ["a:b"]}, "HEAD", ["a:b"]),
        ({"GET": ["a:b"]}, "POST", None),
        ("a:b", "GET", None),
        ([], "GET", None),
        (None, "GET", None),
    ],
)
def test_required_scopes_reads_the_declaration(declared, method, expected):
    view = ScopedView(required_scopes=declared)
    assert required_scopes(view, method) == expected


def test_view_without_the_attribute_declares_nothing():
    assert required_scopes(APIView(), "GET") is None


# All of, any of


def test_has_scope_needs_every_scope(alice, issue):
    view = scoped(["notes:read", "tokens:read"])
    assert call(view, token=issue(alice, ["notes:read", "tokens:read"]).plaintext).status_code == (
        200
    )
    response = call(view, token=issue(alice, ["notes:read"]).plaintext)
    assert response.status_code == 403
    assert body(response) == {
        "detail": INSUFFICIENT_DETAIL,
        "required_scopes": ["notes:read", "tokens:read"],
    }
    assert response["WWW-Authenticate"] == challenge("notes:read tokens:read")


def test_has_any_scope_needs_one_scope(alice, issue):
    view = scoped(["notes:read", "tokens:read"], permission_classes=[HasAnyScope])
    assert call(view, token=issue(alice, ["tokens:read"]).plaintext).status_code == 200
    response = call(view, token=issue(alice, ["tokens:introspect"]).plaintext)
    assert response.status_code == 403
    assert body(response)["required_scopes"] == ["notes:read", "tokens:read"]
    assert response["WWW-Authenticate"] == challenge("notes:read tokens:read")


def test_implied_scope_satisfies_the_requirement(alice, issue):
    token = issue(alice, ["notes:write"]).plaintext
    assert call(scoped(["notes:read"]), token=token).status_code == 200


def test_challenge_uses_the_configured_realm(settings, alice, issue):
    settings.API_TOKENS = {**settings.API_TOKENS, "REALM": "notes"}
    response = call(scoped(["tokens:read"]), token=issue(alice, ["notes:read"]).plaintext)
    assert response["WWW-Authenticate"] == challenge("tokens:read", realm="notes")


def test_anonymous_request_to_scoped_view_is_challenged():
    response = call(scoped(["notes:read"]))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == NO_CREDENTIALS_CHALLENGE


# Tokens and the grant policy


def test_demoted_owner_token_loses_staff_scope(staff, issue):
    token = issue(staff, ["audit:read"]).plaintext
    view = scoped(["audit:read"])
    assert call(view, token=token).status_code == 200
    staff.is_staff = False
    staff.save()
    response = call(view, token=token)
    assert response.status_code == 403
    assert response["WWW-Authenticate"] == challenge("audit:read")


def test_implication_does_not_grant_staff_scope_to_non_staff_token(settings, alice, issue):
    declared = settings.API_TOKENS["SCOPES"]
    settings.API_TOKENS = {
        **settings.API_TOKENS,
        "SCOPES": {**declared, "everything:read": {"implies": ["notes:read", "audit:read"]}},
    }
    token = issue(alice, ["everything:read"]).plaintext
    assert call(scoped(["notes:read"]), token=token).status_code == 200
    assert call(scoped(["audit:read"]), token=token).status_code == 403


def test_undeclared_scope_at_runtime_is_refused(alice, superuser, issue):
    view = scoped(["notes:wirte"])
    response = call(view, token=issue(alice, ["notes:read", "notes:write"]).plaintext)
    assert response.status_code == 403
    assert body(response)["required_scopes"] == ["notes:wirte"]
    assert call(view, user=superuser).status_code == 403


# Session users and other credentials


@pytest.mark.parametrize(
    ("user_fixture", "status"), [("alice", 403), ("staff", 200), ("superuser", 200)]
)
def test_session_user_needs_to_be_allowed_the_scope(request, user_fixture, status):
    user = request.getfixturevalue(user_fixture)
    assert call(scoped(["audit:read"]), user=user).status_code == status


def test_session_user_denial_has_no_bearer_challenge(alice):
    response = call(scoped(["audit:read", "notes:read"]), user=alice)
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response
    assert body(response) == {
        "detail": INSUFFICIENT_DETAIL,
        "required_scopes": ["audit:read", "notes:read"],
    }


def test_session_user_passes_any_of_when_one_is_allowed(alice):
    view = scoped(["audit:read", "notes:read"], permission_classes=[HasAnyScope])
    assert call(view, user=alice).status_code == 200


def test_logged_in_session_user_uses_the_notes_api(api, alice):
    api.force_login(alice)
    assert api.get("/api/notes/").status_code == 200
    created = api.post("/api/notes/", {"title": "t", "body": "b"}, format="json")
    assert created.status_code == 201


def test_logged_in_session_user_denied_without_bearer_challenge(api, alice, settings):
    declared = settings.API_TOKENS["SCOPES"]
    settings.API_TOKENS = {
        **settings.API_TOKENS,
        "SCOPES": {**declared, "notes:write": {"requires": "staff", "implies": ["notes:read"]}},
    }
    api.force_login(alice)
    response = api.post("/api/notes/", {"title": "t", "body": "b"}, format="json")
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response
    assert response.json()["required_scopes"] == ["notes:write"]


def test_token_denial_on_notes_api_has_bearer_challenge(api, alice, issue):
    token = issue(alice, ["tokens:read"]).plaintext
    response = api.get("/api/notes/", **bearer(token))
    assert response.status_code == 403
    assert response["WWW-Authenticate"] == challenge("notes:read")


@pytest.mark.parametrize("credential", ["some string", {"scopes": ["notes:read"]}, 42])
def test_unknown_credential_type_is_refused(alice, credential):
    response = call(scoped(["notes:read"]), user=alice, credential=credential)
    assert response.status_code == 403
    assert body(response)["required_scopes"] == ["notes:read"]


def test_unknown_credential_type_is_refused_by_any_of(superuser):
    view = scoped(["notes:read"], permission_classes=[HasAnyScope])
    assert call(view, user=superuser, credential="some string").status_code == 403
