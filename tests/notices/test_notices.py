"""Expiry notices: who is notified, the one email per owner, once per token per window.

Failures and bad input are in ``test_notice_failures.py``; ``manage.py
notify_expiring_tokens`` and its output in ``test_notice_command.py``.
"""

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection

from tests import live
from tests.helpers import T0
from tests.notices.backends import HeldBackend
from tests.notices.helpers import NOTICE, WEEK, detail, expiring, notices, run, snapshot
from tokens_app import services
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.notices import _notify_owner

pytestmark = pytest.mark.django_db


# --- who is notified: the window --------------------------------------------------------


def test_window_is_active_tokens_expiring_after_now_and_at_most_within_later(
    alice, django_user_model, issue, clock, settings
):
    settings.API_TOKENS = {**settings.API_TOKENS, "ALLOW_NON_EXPIRING": True}
    just_inside = expiring(issue, alice, WEEK - timedelta(seconds=1)).token
    at_boundary = expiring(issue, alice, WEEK).token
    expiring(issue, alice, WEEK + timedelta(seconds=1))  # just outside
    issue(alice, never_expires=True)
    services.revoke_token(expiring(issue, alice, timedelta(days=2)).token)
    carol = django_user_model.objects.create_user("carol", "carol@example.com")
    expiring(issue, carol, timedelta(days=2))
    carol.is_active = False
    carol.save()
    clock.current = T0 - timedelta(days=2)
    expired = expiring(issue, alice, -timedelta(days=1)).token
    expires_now = expiring(issue, alice, timedelta(0)).token
    clock.current = T0
    assert not expired.is_usable(T0) and not expires_now.is_usable(T0)

    result = services.notify_expiring_tokens(within=WEEK)

    assert result.sent == (services.OwnerNotice("alice", (just_inside.key_id, at_boundary.key_id)),)
    assert (result.now, result.until, result.within_seconds) == (T0, T0 + WEEK, 604800)
    assert len(mail.outbox) == 1
    assert [key_id for key_id, _ in notices()] == [just_inside.key_id, at_boundary.key_id]


def test_nothing_expiring_sends_nothing(alice, issue, clock):
    expiring(issue, alice, timedelta(days=30))
    result = services.notify_expiring_tokens(within=WEEK)
    assert (result.owners_emailed, result.tokens_noticed, result.sent) == (0, 0, ())
    assert snapshot() == (0, 1)


# --- one email per owner, and what it says ---------------------------------------------


def test_one_email_per_owner_listing_all_their_due_tokens(alice, bob, issue, clock):
    a1 = expiring(issue, alice, timedelta(days=5), name="deploy").token
    a2 = expiring(issue, alice, timedelta(days=1), name="backup").token
    b1 = expiring(issue, bob, timedelta(days=3), name="ci").token

    result = services.notify_expiring_tokens(within=WEEK)

    assert result.sent == (
        services.OwnerNotice("alice", (a2.key_id, a1.key_id)),  # soonest first
        services.OwnerNotice("bob", (b1.key_id,)),
    )
    assert (result.owners_emailed, result.tokens_noticed) == (2, 3)
    assert [m.to for m in mail.outbox] == [["alice@example.com"], ["bob@example.com"]]
    alice_mail, bob_mail = mail.outbox
    assert alice_mail.subject == "Your API tokens expire soon"
    assert bob_mail.subject == "Your API token expires soon"
    for token in (a1, a2):
        assert token.name in alice_mail.body and token.key_id in alice_mail.body
    assert b1.key_id not in alice_mail.body and a1.key_id not in bob_mail.body
    assert alice_mail.body.index("backup") < alice_mail.body.index("deploy")


def test_email_names_the_token_its_expiry_and_how_to_replace_it_but_no_secret(
    alice, issue, clock, settings
):
    issued = expiring(issue, alice, timedelta(days=3), name="deploy: prod-eu @v2+")
    services.notify_expiring_tokens(within=WEEK)
    (message,) = mail.outbox
    body = message.body
    key_id = issued.token.key_id
    assert message.from_email == settings.DEFAULT_FROM_EMAIL
    assert body.startswith("Hello alice,\n")
    assert body.endswith("for each notice period.\n")
    assert "This API token of yours expires within 1 week:" in body
    assert f"- Token you named “deploy: prod-eu @v2+” (key id {key_id})\n" in body
    assert "Expires: 2030-01-04T12:00:00+00:00 (in 3 days)\n" in body
    assert "POST /api/tokens/" in body
    assert f"DELETE /api/tokens/{key_id}/" in body
    assert "DELETE /api/tokens/<key id>/" in body
    assert "Switch your clients to the new token." in body
    assert "a rotated token keeps its expiry date" in body
    assert "\xa0" not in body and "&amp;" not in body and "&lt;" not in body
    secret = issued.plaintext.rsplit("_", 1)[-1]
    for text in (body, message.subject):
        assert issued.plaintext not in text
        assert secret not in text
        assert issued.token.secret_hash not in text


def test_email_lists_several_tokens_each_with_its_own_expiry(alice, issue, clock):
    expiring(issue, alice, timedelta(days=2, hours=5), name="one")
    expiring(issue, alice, timedelta(hours=20), name="two")
    services.notify_expiring_tokens(within=timedelta(days=3))
    body = mail.outbox[0].body
    assert "These 2 API tokens of yours expire within 3 days:" in body
    assert "Expires: 2030-01-03T17:00:00+00:00 (in 2 days, 5 hours)" in body
    assert "Expires: 2030-01-02T08:00:00+00:00 (in 20 hours)" in body


def test_each_notified_token_gets_one_audit_event(alice, bob, issue, clock):
    a = expiring(issue, alice, timedelta(days=2)).token
    b = expiring(issue, bob, timedelta(days=6)).token
    run("--within", "7d")
    events = TokenEvent.objects.filter(kind=NOTICE).order_by("pk")
    assert [(e.token, e.key_id, e.actor, e.via, e.ip, e.created_at) for e in events] == [
        (a, a.key_id, None, "command", None, T0),
        (b, b.key_id, None, "command", None, T0),
    ]
    assert [e.detail for e in events] == [detail(a), detail(b)]
    assert events[0].get_kind_display() == "Expiry notice sent"


# --- idempotency: once per token per window --------------------------------------------


def test_second_run_of_the_same_window_sends_and_records_nothing(alice, bob, issue, clock):
    expiring(issue, alice, timedelta(days=2))
    expiring(issue, bob, timedelta(days=5))
    services.notify_expiring_tokens(within=WEEK)
    before = snapshot()
    assert before == (2, 4)
    result = services.notify_expiring_tokens(within=WEEK)
    assert (result.owners_emailed, result.tokens_noticed, result.failed) == (0, 0, ())
    assert snapshot() == before


def test_same_window_later_notifies_only_tokens_that_entered_it(alice, issue, clock):
    first = expiring(issue, alice, timedelta(days=5)).token
    second = expiring(issue, alice, timedelta(days=9)).token
    services.notify_expiring_tokens(within=WEEK)
    clock.advance(days=3)  # the second now expires in 6 days; the first stays notified
    result = services.notify_expiring_tokens(within=WEEK)
    assert result.sent == (services.OwnerNotice("alice", (second.key_id,)),)
    assert first.key_id not in mail.outbox[1].body
    assert [key_id for key_id, _ in notices()] == [first.key_id, second.key_id]


def test_a_different_window_notifies_again(alice, issue, clock):
    soon = expiring(issue, alice, timedelta(hours=12)).token
    later = expiring(issue, alice, timedelta(days=5)).token
    run("--within=7d")
    run("--within=1d")
    assert len(mail.outbox) == 2
    assert later.key_id not in mail.outbox[1].body
    assert notices() == [
        (soon.key_id, detail(soon)),
        (later.key_id, detail(later)),
        (soon.key_id, detail(soon, timedelta(days=1))),
    ]
    run("--within=7d")
    run("--within=24h")  # the same window as 1d, in other words
    assert snapshot() == (2, 2 + 3)


def test_a_token_whose_expiry_changed_is_notified_again(alice, issue, clock):
    token = expiring(issue, alice, timedelta(days=5)).token
    services.notify_expiring_tokens(within=WEEK)
    APIToken.objects.filter(pk=token.pk).update(expires_at=T0 + timedelta(days=4))
    token.refresh_from_db()
    result = services.notify_expiring_tokens(within=WEEK)
    assert result.tokens_noticed == 1
    assert notices()[-1] == (token.key_id, detail(token))


def test_notices_of_other_windows_or_unreadable_details_do_not_count(alice, issue, clock):
    token = expiring(issue, alice, timedelta(days=5)).token
    for odd in (
        ["not", "a", "dict"],
        {"within_seconds": 604800, "expires_at": "not a date"},
        {"within_seconds": 604800, "expires_at": None},
        {"within_seconds": 86400, "expires_at": detail(token)["expires_at"]},
        {},
    ):
        TokenEvent.objects.create(token=token, key_id=token.key_id, kind=NOTICE, detail=odd)
    TokenEvent.objects.create(
        token=token, key_id=token.key_id, kind="updated", detail=detail(token)
    )
    assert services.notify_expiring_tokens(within=WEEK).tokens_noticed == 1


def test_a_notice_recorded_meanwhile_by_another_run_is_not_sent_twice(alice, issue, clock):
    # Each owner's tokens are re-read under lock before sending: what another run
    # notified between this run's first read and the lock is left out.
    expiring(issue, alice, timedelta(days=2))
    services.notify_expiring_tokens(within=WEEK)
    before = snapshot()
    assert _notify_owner(alice, T0, T0 + WEEK, 604800, "command") == ()
    assert snapshot() == before


def waiting_for_a_lock() -> bool:
    """True once a connection to this database waits for a lock (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        (waiting,) = cursor.fetchone()
    return bool(waiting)


@pytest.mark.production_profile  # row locks: PostgreSQL; SQLite serialises whole transactions
@pytest.mark.django_db(transaction=True)  # two connections must see each other's commits
def test_concurrent_runs_notify_each_token_once(alice, issue, clock, settings):
    settings.EMAIL_BACKEND = "tests.notices.backends.HeldBackend"
    HeldBackend.sending.clear()
    HeldBackend.release.clear()
    token = expiring(issue, alice, timedelta(days=2)).token
    results: list[services.NoticeResult] = []

    def notify() -> None:
        try:
            results.append(services.notify_expiring_tokens(within=WEEK))
        finally:
            connection.close()

    first = threading.Thread(target=notify)
    first.start()
    assert HeldBackend.sending.wait(timeout=10)
    # The first run holds alice's token rows and is sending; the second reads her token
    # as due (the first has not committed), waits for the lock, then finds the notice.
    second = threading.Thread(target=notify)
    second.start()
    try:
        live.wait_until(waiting_for_a_lock, "the second run to wait for the row locks", timeout=10)
    finally:
        HeldBackend.release.set()
        second.join(timeout=30)
        first.join(timeout=30)
    assert sorted(r.owners_emailed for r in results) == [0, 1]
    assert [r.failed for r in results] == [(), ()]
    assert len(mail.outbox) == 1
    assert [key_id for key_id, _ in notices()] == [token.key_id]


# --- dry run ----------------------------------------------------------------------------


def test_dry_run_reports_and_neither_sends_nor_records(alice, bob, issue, clock):
    a = expiring(issue, alice, timedelta(days=2)).token
    bob.email = ""
    bob.save()
    b = expiring(issue, bob, timedelta(days=2)).token
    before = snapshot()
    result = services.notify_expiring_tokens(within=WEEK, dry_run=True)
    assert result.dry_run is True
    assert result.sent == (services.OwnerNotice("alice", (a.key_id,)),)
    assert result.skipped_without_email == (services.OwnerNotice("bob", (b.key_id,)),)
    assert snapshot() == before
    # Nothing was recorded, so the real run sends what the dry run announced.
    assert services.notify_expiring_tokens(within=WEEK).sent == result.sent


# --- owners without an email address ----------------------------------------------------


@pytest.mark.parametrize("email", ["", "   "])
def test_owner_without_email_is_skipped_reported_and_not_recorded(alice, bob, issue, clock, email):
    bob.email = email
    bob.save()
    b = expiring(issue, bob, timedelta(days=2)).token
    a = expiring(issue, alice, timedelta(days=2)).token
    result = services.notify_expiring_tokens(within=WEEK)
    assert result.skipped_without_email == (services.OwnerNotice("bob", (b.key_id,)),)
    assert result.sent == (services.OwnerNotice("alice", (a.key_id,)),)
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert [key_id for key_id, _ in notices()] == [a.key_id]
    # Once bob has an address, he is notified: nothing marked his token as done.
    bob.email = "bob@example.com"
    bob.save()
    assert services.notify_expiring_tokens(within=WEEK).sent == (
        services.OwnerNotice("bob", (b.key_id,)),
    )
