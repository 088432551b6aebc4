"""The one validity rule: ``status()`` and ``with_status()`` (and so ``usable()``) always agree."""

from datetime import timedelta

import pytest

from tokens_app import services
from tokens_app.models import APIToken, TokenEvent, TokenStatus

pytestmark = pytest.mark.django_db


def test_status_and_queryset_agree_for_every_state(alice, bob, issue, clock):
    active = issue(alice, expires_in=timedelta(days=2)).token
    expiring = issue(alice, expires_in=timedelta(hours=1)).token
    revoked = issue(alice).token
    services.revoke_token(revoked)
    inactive_owner = issue(bob).token
    bob.is_active = False
    bob.save()
    clock.advance(hours=2)

    tokens = APIToken.objects.select_related("owner")
    statuses = {token.pk: token.status() for token in tokens}
    assert statuses == {
        active.pk: TokenStatus.ACTIVE,
        expiring.pk: TokenStatus.EXPIRED,
        revoked.pk: TokenStatus.REVOKED,
        inactive_owner.pk: TokenStatus.OWNER_INACTIVE,
    }
    usable = set(APIToken.objects.usable().values_list("pk", flat=True))
    assert usable == {token.pk for token in tokens if token.is_usable()} == {active.pk}
    for status in TokenStatus:
        selected = set(APIToken.objects.with_status(status).values_list("pk", flat=True))
        assert selected == {pk for pk, held in statuses.items() if held is status}, status


def test_an_unknown_status_selects_nothing(alice, issue):
    issue(alice)
    assert not APIToken.objects.with_status("dormant").exists()


def test_expiry_boundary_is_exclusive(alice, issue, clock):
    token = issue(alice, expires_in=timedelta(minutes=1)).token
    clock.advance(minutes=1)
    assert not token.is_usable()
    assert not APIToken.objects.usable().exists()


def test_string_forms_name_no_secret(alice, issue):
    issued = issue(alice, name="deploy")
    assert str(issued.token) == f"deploy ({issued.token.key_id})"
    event = TokenEvent.objects.get()
    assert str(event) == f"Issued {issued.token.key_id}"


def test_events_survive_token_deletion(alice, issue):
    issued = issue(alice)
    issued.token.delete()
    event = TokenEvent.objects.get()
    assert event.token is None
    assert event.key_id == issued.token.key_id
