"""The authority rule as a stateful property (issue 13): random credentials act on tokens.

A hypothesis ``RuleBasedStateMachine`` drives the real HTTP API (``APIClient``; the
admin for what only the admin does; a model save for what the admin does to a user)
with every kind of credential an owner's tokens hand out: the owner's session, API
token secrets, a rotated token's previous secret during its grace, and JWTs. Next to
the server it keeps its own model of the rules as they are meant to be (the issue and
``services.authority``'s docstring), and after every step checks, through HTTP:

1. no credential ever held exceeds the one that obtained it: scopes, expiry, networks
   and rate budgets, transitively up to the owner (parent -> child, token -> JWT);
2. every revoked credential and everything derived from it is refused;
3. the owner is never locked out by a weaker credential: a credential stops only
   through revocation, expiry, the owner's deactivation, its own grace end, or a
   rotation or change by a credential at least as strong.

Each example runs inside a savepoint rolled back at its end (``transaction.atomic``
inside pytest-django's test transaction: correct on SQLite and PostgreSQL alike, and
much faster than a flush per example), and starts with empty caches (the rate counters
and the JWT deny list live there) and the clock back at its start. Hypothesis's django
integration is not used: its ``TestCase`` classes do the same per example, but the
suite is pytest functions with fixtures (``clock``). Every step moves the clock at least
one second (a JWT's ``iat`` has whole seconds).

Bounds: 40 examples of at most 40 steps (about 10 s on SQLite, 20 s on PostgreSQL +
Redis on this machine); rates are loose enough that the checks' own requests never spend
a budget. Besides random rules, a few directed ones pick from the model what random draws
seldom line up (a token and one it may rotate; a token that obtained others, then
leaked). Reverting item 1's fix (rotation judged as if no token were presented) fails
the first run with two shrunk counterexamples of four steps: a ``tokens:write`` token
rotates a ``notes:read`` sibling and holds its scope, or one that outlives it.

The model is in ``model.py``; the machine is ``machine.py`` (directed rules, invariants)
over ``machine_rules.py`` (random rules) over ``machine_state.py`` (set-up, the model's view).
"""

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from rest_framework.test import APIClient

from tests.authority.machine import AuthorityMachine
from tests.helpers import MINT, TOKENS, WHOAMI, FakeClock, admin_client, change_data
from tokens_app import invalidation
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db


def machine_settings(examples: int, steps: int) -> settings:
    """Hypothesis's settings for a run of the machine: no deadline, slow examples allowed."""
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_no_credential_exceeds_its_obtainer_or_locks_out_a_stronger_one(
    clock: FakeClock,
) -> None:
    AuthorityMachine.clock = clock
    run_state_machine_as_test(AuthorityMachine, settings=machine_settings(40, 40))


class CachedAuthorityMachine(AuthorityMachine):
    """The same machine with every write committed, for the token cache to hear of it."""

    in_savepoint = False


@pytest.mark.django_db(transaction=True)
def test_the_token_cache_changes_none_of_it(clock: FakeClock, settings: Any) -> None:
    # Issue 16: a cached row serves requests until a change's message drops it. In one
    # process the writer drops its own entries at commit, so every check after a step must
    # see exactly what it sees without the cache: any difference is a change that does not
    # publish, or a stale row written back.
    settings.API_TOKENS = {
        **settings.API_TOKENS,
        "TOKEN_CACHE": "redis",
        "TOKEN_CACHE_REDIS_URL": "redis://127.0.0.1:6379/9",
    }
    channel = invalidation.channel()
    assert channel is not None and channel.wait_fresh(10)
    CachedAuthorityMachine.clock = clock
    run_state_machine_as_test(CachedAuthorityMachine, settings=machine_settings(15, 30))
    # The cache took part: requests were answered from it, and rows were read into it.
    assert channel.store.hits > 100 and channel.store.misses > 100, vars(channel.store)


# --- the holes the machine found, each replayed through HTTP --------------------------------
# Found by earlier runs of the machine above (issue 13) and fixed: a secret obtained by
# rotating a sibling outlived the rotator's revocation; a change took a child beyond its
# parent; a child's JWTs kept counting an ancestor's old, looser rate; a token changing its
# own rate restarted its budget.

HOME = "10.1.1.5"
ELSEWHERE = "192.168.1.5"


def whoami(plaintext: str, ip: str = HOME) -> Any:
    return APIClient().get(WHOAMI, REMOTE_ADDR=ip, HTTP_AUTHORIZATION=f"Bearer {plaintext}")


def with_token(method: str, path: str, plaintext: str, data: Any = None) -> Any:
    client = APIClient()
    extra = {"REMOTE_ADDR": HOME, "HTTP_AUTHORIZATION": f"Bearer {plaintext}"}
    return getattr(client, method)(path, data or {}, format="json", **extra)


def session_of(user: Any) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def child_of(parent: str, scopes: list[str], **fields: Any) -> dict[str, Any]:
    body = {"name": fields.pop("name", "child"), "scopes": scopes, **fields}
    response = with_token("post", TOKENS, parent, body)
    assert response.status_code == 201, response.content
    return dict(response.json())


def rotate_url(key_id: str) -> str:
    return f"{TOKENS}{quote(key_id)}/rotate/"


@pytest.mark.parametrize("rotator", ["sibling", "child of the target"])
def test_a_token_outside_the_family_cannot_rotate(alice, issue, clock, rotator):
    # A leaked token that covers another would rotate it (grace 0): the holder locked out,
    # the attacker holding a secret that revoking the leaked token would not take back.
    if rotator == "sibling":
        leaked = issue(alice, ["tokens:write", "notes:write", "tokens:introspect"]).plaintext
        victim = issue(alice, ["notes:read"])
    else:
        victim = issue(alice, ["tokens:write", "notes:read"])
        leaked = child_of(victim.plaintext, ["tokens:write", "notes:read"])["token"]
    clock.advance(seconds=1)
    response = with_token("post", rotate_url(victim.token.key_id), leaked, {"grace_seconds": 0})
    assert response.status_code == 403
    assert whoami(victim.plaintext).status_code == 200


def test_revoking_a_rotator_refuses_the_secret_it_obtained(alice, issue, clock):
    rotator = issue(alice, ["tokens:write", "notes:write", "tokens:introspect"])
    victim = child_of(rotator.plaintext, ["notes:read"])
    clock.advance(seconds=1)
    response = with_token("post", rotate_url(victim["id"]), rotator.plaintext, {"grace_seconds": 0})
    assert response.status_code == 200
    obtained = response.json()["token"]
    clock.advance(seconds=1)
    assert session_of(alice).delete(f"{TOKENS}{rotator.token.key_id}/").status_code == 204
    assert whoami(rotator.plaintext).status_code == 401
    assert whoami(obtained).status_code == 401, "the rotated secret outlives its rotator"


def test_narrowing_a_rotator_narrows_the_secret_it_obtained(alice, superuser, issue, clock):
    rotator = issue(alice, ["tokens:write", "notes:write"])
    victim = child_of(rotator.plaintext, ["notes:write", "tokens:read"])
    response = with_token("post", rotate_url(victim["id"]), rotator.plaintext, {"grace_seconds": 0})
    assert response.status_code == 200
    obtained = response.json()["token"]
    row = APIToken.objects.get(pk=rotator.token.pk)
    url = f"/admin/tokens_app/apitoken/{row.pk}/change/"
    answer = admin_client(superuser).post(url, change_data(row, scopes=["tokens:write"]))
    assert answer.status_code == 302
    held = set(whoami(rotator.plaintext).json()["scopes"])
    assert held == {"tokens:read", "tokens:write"}
    assert set(whoami(obtained).json()["scopes"]) == {"tokens:read"}


@pytest.mark.parametrize("changer", ["covering sibling token", "owner session"])
def test_a_change_cannot_widen_a_token_beyond_its_parent(alice, issue, clock, changer):
    # The parent works only from 10.1.0.0/16, so the child it created does too. Whoever
    # changes the child may not take it beyond its parent: its holder (the parent's) would
    # then reach what the parent cannot. Emptied, the child's networks are its parent's.
    parent = issue(alice, ["tokens:write", "notes:read"], allowed_ips=["10.1.0.0/16"])
    sibling = issue(alice, ["tokens:write", "notes:read"])
    child = child_of(parent.plaintext, ["notes:read"])
    assert child["allowed_ips"] == ["10.1.0.0/16"]
    clock.advance(seconds=1)
    path = f"{TOKENS}{child['id']}/"
    if changer == "owner session":
        client = session_of(alice)
        emptied = client.patch(path, {"allowed_ips": []}, format="json")
        assert emptied.status_code == 200
        assert emptied.json()["allowed_ips"] == ["10.1.0.0/16"]
        wider = client.patch(path, {"allowed_ips": ["0.0.0.0/0"]}, format="json")
        assert wider.status_code == 400
        assert "its parent token does not" in str(wider.json()["allowed_ips"])
    else:
        wider = with_token("patch", path, sibling.plaintext, {"allowed_ips": []})
        assert wider.status_code == 403
    assert APIToken.objects.get(key_id=child["id"]).allowed_ips == ["10.1.0.0/16"]
    assert whoami(child["token"], ELSEWHERE).status_code == 401, "the child escaped its parent"


def test_a_manager_cannot_widen_a_childs_scopes_beyond_its_parent(alice, superuser, issue):
    parent = issue(alice, ["tokens:write", "notes:read"])
    child = child_of(parent.plaintext, ["notes:read"])
    row = APIToken.objects.get(key_id=child["id"])
    url = f"/admin/tokens_app/apitoken/{row.pk}/change/"
    wider = change_data(row, scopes=["notes:read", "notes:write", "tokens:introspect"])
    answer = admin_client(superuser).post(url, wider)
    assert answer.status_code == 200  # the form again, with the error
    assert "its parent token does not" in answer.content.decode()
    assert set(whoami(child["token"]).json()["scopes"]) == {"notes:read"}


def test_narrowing_a_parents_rate_reaches_the_jwts_of_its_children(alice, issue, clock):
    # A day-long window keeps the counts exact however the test is timed.
    parent = issue(alice, ["tokens:write", "notes:read"], rate_limit="1000/d")
    child = child_of(parent.plaintext, ["notes:read"], rate_limit="4/d")
    minted = with_token("post", MINT, child["token"])
    assert minted.status_code == 200
    access = minted.json()["access_token"]
    clock.advance(seconds=1)
    narrowed = session_of(alice).patch(
        f"{TOKENS}{parent.token.key_id}/", {"rate_limit": "5/d"}, format="json"
    )
    assert narrowed.status_code == 200
    assert APIToken.objects.get(key_id=child["id"]).rate_limit == "4/d"  # it fits: unchanged
    assert [whoami(parent.plaintext).status_code for _ in range(6)] == [200] * 5 + [429]
    assert whoami(child["token"]).status_code == 429  # the family's budget is spent...
    assert whoami(access).status_code == 401, "...and the child's old JWT stops"


def test_changing_its_own_rate_never_resets_a_tokens_budget(alice, issue):
    # Each rate string has its own counter: a token allowed 3 a day that may change itself
    # switched to an equal rate in other units (6/2d, 9/3d...) and started again each time.
    # Found here too; fixed in d21f164 (a token never changes its own rate).
    token = issue(alice, ["tokens:write", "notes:read"], rate_limit="3/d")
    path = f"{TOKENS}{token.token.key_id}/"
    answers = []
    for n in range(2, 7):
        answers.append(whoami(token.plaintext).status_code)
        answers.append(
            with_token("patch", path, token.plaintext, {"rate_limit": f"{3 * n}/{n}d"}).status_code
        )
    answers += [whoami(token.plaintext).status_code for _ in range(3)]
    assert sum(a != 429 for a in answers) <= 3, f"3 a day, and {answers}"
