"""The caller: built once per request or command, and what services record of it."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from tokens_app import services
from tokens_app.models import TokenEvent
from tokens_app.services import OPERATOR, Caller, Via

pytestmark = pytest.mark.django_db


def test_a_request_caller_is_its_user_credential_and_address(alice, issue):
    presented = issue(alice).token
    request = RequestFactory().post("/", REMOTE_ADDR="192.0.2.9")
    request.user, request.auth = alice, presented  # as DRF sets them
    assert Caller.of_request(request, Via.API) == Caller(alice, presented, "192.0.2.9", Via.API)


def test_a_request_without_a_credential_presents_none(alice):
    request = RequestFactory().get("/", REMOTE_ADDR="2001:db8::1")
    request.user = alice  # the admin: a session, no request.auth
    assert Caller.of_request(request, Via.ADMIN).presented is None
    request.user = AnonymousUser()
    assert Caller.of_request(request, Via.ADMIN).ip == "2001:db8::1"


def test_every_surface_is_a_closed_set_stored_as_its_value(alice):
    assert {via.value for via in Via} == {"", "api", "admin", "command", "password"}
    with pytest.raises(ValueError):
        Via("test")
    issued = services.issue_token(
        alice, name="ci", scopes=["notes:read"], caller=Caller(alice, ip="10.0.0.2", via=Via.ADMIN)
    )
    services.revoke_token(issued.token)  # OPERATOR: no actor, no address, a direct call
    events = TokenEvent.objects.order_by("pk").values_list("kind", "actor", "ip", "via")
    assert list(events) == [("issued", alice.pk, "10.0.0.2", "admin"), ("revoked", None, None, "")]


def test_the_actor_is_recorded_only_when_it_is_a_saved_user(alice, superuser):
    issued = services.issue_token(alice, name="a", scopes=["notes:read"], caller=Caller(superuser))
    assert issued.token.created_by == superuser
    assert TokenEvent.objects.get().actor == superuser
    assert Caller() == OPERATOR and OPERATOR.surface == "code"
