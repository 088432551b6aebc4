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
"""

import ipaddress
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import jwt as pyjwt
import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import transaction
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from rest_framework.test import APIClient

from tests.helpers import MODEL_PERMISSIONS, FakeClock, admin_client, change_data, grant
from tokens_app.models import APIToken

pytestmark = pytest.mark.django_db

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEEWAY = 10  # JWT_LEEWAY_SECONDS: a JWT is accepted until exp + LEEWAY
JWT_LIFETIME = timedelta(minutes=5)
DEFAULT_LIFETIME = timedelta(days=30)
MAX_DEPTH = 5  # authority.MAX_LINEAGE_DEPTH: generations a token may create below itself
MAX_TOKENS = 14  # well under MAX_ACTIVE_TOKENS_PER_USER

# The example project's scopes, written out: the model must not borrow the code under test.
SCOPES = ("notes:read", "notes:write", "tokens:read", "tokens:write", "tokens:introspect")
STAFF_ONLY = frozenset({"audit:read"})
ALL_SCOPES = (*SCOPES, *STAFF_ONLY)
IMPLIES = {"notes:write": {"notes:read"}, "tokens:write": {"tokens:read"}}
# Nested networks of 10.0.0.0/8, and addresses inside some of them and outside all.
NETWORKS = ("10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16", "10.1.1.0/24", "10.1.2.0/24")
ADDRESSES = ("10.1.1.5", "10.1.2.5", "10.2.1.5", "10.3.0.5")
OUTSIDE_ALL = "192.168.1.5"
# Loose enough that the checks' own requests never spend a budget within one example.
RATES = ("100000/d", "10000/h", "20000/h")
EXPIRIES = (None, timedelta(hours=1), timedelta(days=2), timedelta(days=10), timedelta(days=60))
INSIDE = st.sampled_from((True, True, True, False))  # mostly from where the credential works
STEPS = (1, 11, 61, 301, 3601, 86401, 10 * 86400, 31 * 86400)
#: A token's networks or rate as asked for: none (inherit, or anywhere / unlimited) or some.
SOME_NETWORKS = st.none() | st.lists(st.sampled_from(NETWORKS), max_size=2, unique=True)
SOME_RATE = st.none() | st.sampled_from(RATES)

WHOAMI, NOTES, TOKENS, MINT = "/api/whoami/", "/api/notes/", "/api/tokens/", "/api/auth/jwt/"


# --- the model: independent of tokens_app ---------------------------------------------------


def expand(names: Any) -> frozenset[str]:
    found = set(names)
    for name in names:
        found |= IMPLIES.get(name, set())
    return frozenset(found)


def net(text: str) -> Any:
    return ipaddress.ip_network(text)


def normalised(networks: Any) -> list[str]:
    return [str(n) for n in sorted({net(n) for n in networks}, key=lambda n: (n.version, n))]


def within(inner: list[str], outer: list[str]) -> bool:
    """Whether *inner* allows nowhere *outer* does not (empty: anywhere)."""
    if not outer:
        return True
    return bool(inner) and all(any(net(i).subnet_of(net(o)) for o in outer) for i in inner)


def intersect(inner: list[str], outer: list[str]) -> list[str]:
    found = set()
    for a in inner or outer:
        for b in outer:
            if net(a).subnet_of(net(b)):
                found.add(a)
            elif net(b).subnet_of(net(a)):
                found.add(b)
    return normalised(found)


def allows(networks: list[str], address: str) -> bool:
    return not networks or any(ipaddress.ip_address(address) in net(n) for n in networks)


def per_second(rate: str) -> float:
    count, period = rate.split("/")
    return int(count) / {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[-1]] / int(period[:-1] or 1)


def epoch(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def row_budgets(row: APIToken | None) -> frozenset[tuple[str, str]]:
    """The budgets the server counts a token's requests against (its rate, its ancestry)."""
    if row is None:
        return frozenset()
    found = [(row.key_id, row.rate_limit)] if row.rate_limit else []
    found += [(str(k), str(r)) for k, r in row.ancestry if r]
    return frozenset(found)


@dataclass(eq=False)
class Tok:
    """What the model expects of one token row."""

    label: str
    key: str
    parent: "Tok | None"
    scopes: frozenset[str]
    expires_at: datetime
    networks: list[str]
    rate: str | None
    #: For a token created by a previous secret during its grace: when that grace ends.
    grace_bound: datetime | None = None
    version: int = 1
    grace: tuple[int, datetime] | None = None  # (previous version, until)
    revoked: bool = False
    minted_until: int = -1  # its JWTs with iat <= this are refused (narrowed)
    retired: list[tuple[int, datetime]] = field(default_factory=list)
    children: list["Tok"] = field(default_factory=list)

    def lineage(self) -> list["Tok"]:
        chain, current = [], self
        while current is not None:
            chain.append(current)
            current = current.parent
        return chain

    def budgets(self) -> frozenset[tuple[str, str]]:
        """The rate budgets its requests count against: its own and every ancestor's."""
        return frozenset((t.key, t.rate) for t in self.lineage() if t.rate)

    def descendants(self) -> list["Tok"]:
        found, level = [], list(self.children)
        while level:
            found.extend(level)
            level = [c for t in level for c in t.children]
        return found


@dataclass(frozen=True)
class JWTFacts:
    """What a JWT carries, fixed when it was minted."""

    scopes: frozenset[str]
    exp: int
    iat: int
    networks: list[str]


@dataclass(eq=False)
class Cred:
    """A credential handed out: by whom (``obtained_by``) and when."""

    label: str
    kind: str  # session | secret | jwt
    value: str = field(repr=False)
    tok: Tok | None = field(default=None, repr=False)
    version: int = 0
    obtained_by: "Cred | None" = field(default=None, repr=False)
    how: str = ""  # create | rotate | mint: how obtained_by obtained it
    jwt: JWTFacts | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Asker:
    """A credential as it was when it asked for another: the bounds of what it obtains."""

    cred: Cred
    scopes: frozenset[str] | None
    end: datetime | None
    networks: list[str]
    budgets: frozenset[tuple[str, str]]


@dataclass
class Owner:
    """The owner as the admin left them."""

    active: bool = True
    staff: bool = True
    deleted: bool = False
    lost_power_at: int = -1  # JWTs minted (iat) up to this second are refused


# --- the machine ----------------------------------------------------------------------------


class AuthorityMachine(RuleBasedStateMachine):
    """Random credentials acting on one owner's tokens through the real API."""

    clock: FakeClock  # set by the test function (the `clock` fixture)

    creds = Bundle("creds")
    secrets = Bundle("secrets")  # the API-token secrets among creds: targets of actions

    def __init__(self) -> None:
        super().__init__()
        # One savepoint per example, rolled back in teardown (pytest-django's own
        # transaction wraps the test): no example sees another's rows, on any database.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        for alias in django_settings.CACHES:
            caches[alias].clear()
        self.clock.current = START
        self.owner = Owner()
        self.tokens: list[Tok] = []
        self.held: list[Cred] = []
        self.counter = 0
        self.last_expected: dict[Cred, Any] = {}
        self.turn = 0
        users = get_user_model()._default_manager
        self.alice = users.create_user("alice", "alice@example.com", "pw", is_staff=True)
        manager = users.create_user("manager", "m@example.com", "pw", is_staff=True)
        grant(manager, *MODEL_PERMISSIONS, "manage_all_tokens")
        self.admin = admin_client(manager)
        self.session_client = APIClient()
        self.session_client.force_login(self.alice)
        self.session = self.hold(Cred("session", "session", ""))

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- helpers ---------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.current

    def tick(self, seconds: int = 1) -> None:
        # JWT iat has whole seconds: every step happens at a later second than the last.
        self.clock.advance(seconds=seconds)

    def next_label(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def holdable(self, name: str) -> bool:
        return name not in STAFF_ONLY or self.owner.staff

    def effective(self, granted: frozenset[str]) -> frozenset[str]:
        return frozenset(
            n for n in expand([g for g in granted if self.holdable(g)]) if self.holdable(n)
        )

    def refusal(self, cred: Cred) -> str | None:
        """Why *cred* must be refused now (``None``: it must work, from inside its networks)."""
        return self.own_refusal(cred) or self.derived_refusal(cred)

    def rotated_by_another(self, cred: Cred) -> bool:
        by = cred.obtained_by
        return cred.how == "rotate" and by is not None and by.tok not in (None, cred.tok)

    def derived_refusal(self, cred: Cred) -> str | None:
        """Invariant 2 as stated: refused once any credential it was obtained from is revoked."""
        link = cred
        while link.obtained_by is not None:
            by = link.obtained_by
            if by.tok is not None and by.tok.revoked:
                return f"obtained through {by}, which is revoked"
            link = by
        return None

    def own_refusal(self, cred: Cred) -> str | None:
        if self.owner.deleted:
            return "owner deleted"
        if cred.kind == "session":
            return None if self.owner.active else "owner inactive"
        tok = cred.tok
        assert tok is not None
        if cred.kind == "secret":
            if tok.revoked:
                return "revoked (itself or an ancestor)"
            if tok.expires_at <= self.now:
                return "expired"
            if not self.owner.active:
                return "owner inactive"
            if cred.version == tok.version:
                return None
            if tok.grace and cred.version == tok.grace[0] and self.now < tok.grace[1]:
                return None
            return "rotated away (grace over)"
        facts = cred.jwt
        assert facts is not None
        if self.now.timestamp() >= facts.exp + LEEWAY:
            return "JWT expired"
        if tok.revoked:
            return "JWT of a revoked token"
        if facts.iat <= tok.minted_until:
            return "JWT minted before its token was narrowed"
        if facts.iat <= self.owner.lost_power_at:
            return "JWT minted before the owner lost power"
        if any(at <= self.now and cred.version < below for below, at in tok.retired):
            return "JWT of a rotated-away secret"
        return None

    def kind(self, cred: Cred) -> str:
        """session, token, grace or jwt: what the credential is right now."""
        if cred.kind != "secret":
            return cred.kind
        tok = cred.tok
        assert tok is not None
        if cred.version == tok.version:
            return "token"
        if tok.grace and cred.version == tok.grace[0] and self.now < tok.grace[1]:
            return "grace"
        return "rotated away"

    def scopes_of(self, cred: Cred) -> frozenset[str]:
        if cred.kind == "session":
            return frozenset(n for n in ALL_SCOPES if self.holdable(n))
        if cred.kind == "jwt":
            assert cred.jwt is not None
            return cred.jwt.scopes
        assert cred.tok is not None
        return self.effective(cred.tok.scopes)

    def networks_of(self, cred: Cred) -> list[str]:
        if cred.kind == "jwt":
            assert cred.jwt is not None
            return cred.jwt.networks
        return cred.tok.networks if cred.tok is not None else []

    def end_of(self, cred: Cred) -> datetime | None:
        """The latest a credential derived from *cred* may end (``None``: no bound)."""
        if cred.kind == "session":
            return None
        if cred.kind == "jwt":
            assert cred.jwt is not None
            return datetime.fromtimestamp(cred.jwt.exp, tz=UTC)
        assert cred.tok is not None
        if self.kind(cred) == "grace" and cred.tok.grace is not None:
            return min(cred.tok.expires_at, cred.tok.grace[1])
        return cred.tok.expires_at

    def rate_of(self, cred: Cred) -> str | None:
        return cred.tok.rate if cred.kind == "secret" and cred.tok is not None else None

    def address(self, networks: list[str], inside: bool) -> str:
        if not networks:
            return OUTSIDE_ALL
        if not inside:
            return OUTSIDE_ALL
        return next(a for a in ADDRESSES if allows(networks, a))

    def request(self, method: str, path: str, cred: Cred, address: str, data: Any = None) -> Any:
        client = self.session_client if cred.kind == "session" else APIClient()
        extra: dict[str, str] = {"REMOTE_ADDR": address}
        if cred.kind != "session":
            extra["HTTP_AUTHORIZATION"] = f"Bearer {cred.value}"
        return getattr(client, method)(path, data, format="json", **extra)

    def usable_by(self, cred: Cred, inside: bool) -> tuple[str | None, str]:
        """The refusal reason for a request by *cred* (``None``: let in) and its address."""
        networks = self.networks_of(cred)
        address = self.address(networks, inside)
        reason = self.refusal(cred)
        if reason is None and not allows(networks, address):
            reason = "outside its networks"
        return reason, address

    def expect(self, response: Any, status: int, what: str) -> None:
        assert response.status_code == status, (
            f"{what}: expected {status}, got {response.status_code} {response.content[:300]!r}"
        )

    def authority_status(self, cred: Cred, inside: bool, scope: str | None) -> tuple[int, str]:
        """What the token API answers before the action: 401, 403, or 0 (go on)."""
        reason, address = self.usable_by(cred, inside)
        if cred.kind == "jwt" or reason is not None:
            return 401, address
        if scope is not None and scope not in self.scopes_of(cred):
            return 403, address
        return 0, address

    def covers(self, cred: Cred, target: Tok) -> bool:
        """Whether *cred* may rotate or change *target*: itself or a descendant, no stronger."""
        if cred.kind == "session":
            return True
        own = cred.tok
        assert own is not None
        return (
            own in target.lineage()  # its family only: what it obtains goes when it goes
            and expand(target.scopes) <= expand(own.scopes)
            and target.expires_at <= own.expires_at
            and within(target.networks, own.networks)
            and own.budgets() <= target.budgets()
        )

    def revoke_family(self, tok: Tok) -> None:
        for t in [tok, *tok.descendants()]:
            t.revoked = True

    def usable_tok(self, tok: Tok) -> bool:
        return (
            not tok.revoked
            and tok.expires_at > self.now
            and self.owner.active
            and not self.owner.deleted
        )

    def narrow_descendants(self, tok: Tok, rate_changed: bool = False) -> None:
        """Every descendant brought back within its parent, or revoked if left with nothing.

        A new rate of *tok* is a new budget in every descendant's ancestry: their JWTs,
        which carry the ancestors' rates, are refused.
        """
        for child in tok.descendants():
            parent = child.parent
            assert parent is not None
            if parent.revoked or child.revoked:
                continue
            kept = frozenset(s for s in child.scopes if s in expand(parent.scopes))
            networks = child.networks
            if not within(child.networks, parent.networks):
                networks = intersect(child.networks, parent.networks)
            if not kept or (parent.networks and not networks):
                self.revoke_family(child)
                continue
            rate = child.rate
            if parent.rate and (not rate or per_second(rate) > per_second(parent.rate)):
                rate = parent.rate
            if (kept, networks, rate) != (child.scopes, child.networks, child.rate):
                child.scopes, child.networks, child.rate = kept, networks, rate
                child.minted_until = epoch(self.now)
            elif rate_changed:
                child.minted_until = epoch(self.now)

    def hold(self, cred: Cred) -> Cred:
        self.held.append(cred)
        return cred

    def row(self, tok: Tok) -> APIToken | None:
        return APIToken.objects.select_related("owner", "parent").filter(key_id=tok.key).first()

    # --- invariant 1, at the moment a credential is obtained ----------------------------

    def asker(self, by: Cred, address: str) -> "Asker":
        """What *by* can do just before it asks for a credential (its scopes through HTTP)."""
        response = self.request("get", WHOAMI, by, address)
        scopes = frozenset(response.json()["scopes"]) if response.status_code == 200 else None
        budgets = by.tok.budgets() if by.tok is not None else frozenset()
        return Asker(by, scopes, self.end_of(by), list(self.networks_of(by)), budgets)

    def check_obtained(self, new: Cred, asker: "Asker") -> None:
        """The credential just handed out exceeds in nothing the one that asked (HTTP)."""
        by = asker.cred
        response = self.request("get", WHOAMI, new, self.address(self.networks_of(new), True))
        self.expect(response, 200, f"{new} just obtained by {by} must work")
        if by.kind == "session":
            return
        beyond = set(response.json()["scopes"]) - (asker.scopes or set())
        assert not beyond, (
            f"invariant 1: {new} obtained by {by} holds scopes {sorted(beyond)} beyond it"
        )
        end = self.server_end(new)
        assert asker.end is None or (end is not None and end <= asker.end), (
            f"invariant 1: {new} obtained by {by} ends {end}, after it ({asker.end})"
        )
        mine = self.server_networks(new)
        assert within(mine, asker.networks), (
            f"invariant 1: {new} obtained by {by} works from {mine or 'anywhere'}, "
            f"beyond {asker.networks}"
        )
        if asker.networks:
            response = self.request("get", WHOAMI, new, OUTSIDE_ALL)
            self.expect(response, 401, f"invariant 1: {new} from outside {by}'s networks")
        missing = asker.budgets - self.server_budgets(new)
        assert not missing, (
            f"invariant 1: {new} obtained by {by} does not count against {sorted(missing)}"
        )

    def server_end(self, cred: Cred) -> datetime | None:
        if cred.kind == "jwt":
            claims = pyjwt.decode(cred.value, options={"verify_signature": False})
            return datetime.fromtimestamp(claims["exp"], tz=UTC)
        row = self.row(cred.tok)  # type: ignore[arg-type]
        return row.expires_at if row else None

    def server_networks(self, cred: Cred) -> list[str]:
        if cred.kind == "jwt":
            return list(
                pyjwt.decode(cred.value, options={"verify_signature": False}).get("allowed_ips", [])
            )
        row = self.row(cred.tok)  # type: ignore[arg-type]
        return list(row.allowed_ips) if row else []

    def server_budgets(self, cred: Cred) -> frozenset[tuple[str, str]]:
        if cred.kind == "jwt":
            claims = pyjwt.decode(cred.value, options={"verify_signature": False})
            own = [(claims["client_id"], claims["rate_limit"])] if "rate_limit" in claims else []
            shared = [tuple(b) for b in claims.get("shared_rate_limits", [])]
            return frozenset((str(k), str(r)) for k, r in [*own, *shared])
        return row_budgets(self.row(cred.tok))  # type: ignore[arg-type]

    # --- rules -----------------------------------------------------------------------------

    @initialize(target=creds)
    def owner_logs_in(self) -> Cred:
        return self.session

    @initialize(
        targets=(creds, secrets),
        scopes=st.sets(st.sampled_from(ALL_SCOPES), max_size=4),
        networks=SOME_NETWORKS,
        rate=SOME_RATE,
        lifetime=st.sampled_from((timedelta(days=60), None)),  # often outlives the others
    )
    def owner_issues_a_token_manager(
        self,
        scopes: set[str],
        networks: list[str] | None,
        rate: str | None,
        lifetime: timedelta | None,
    ) -> Any:
        """A first token that may create, rotate and change tokens: the family's root."""
        return self.create(self.session, {"tokens:write", *scopes}, networks, rate, lifetime, True)

    @initialize(
        targets=(creds, secrets),
        scopes=st.sets(st.sampled_from(ALL_SCOPES), min_size=1, max_size=4),
        networks=SOME_NETWORKS,
        rate=SOME_RATE,
        lifetime=st.sampled_from(EXPIRIES),
    )
    def owner_issues_another_token(
        self,
        scopes: set[str],
        networks: list[str] | None,
        rate: str | None,
        lifetime: timedelta | None,
    ) -> Any:
        """A sibling of the first, stronger or weaker: what item 1's attacker rotated."""
        return self.create(self.session, scopes, networks, rate, lifetime, True)

    @precondition(lambda self: len(self.tokens) < MAX_TOKENS)
    @rule(
        targets=(creds, secrets),
        by=creds,
        scopes=st.sets(st.sampled_from(ALL_SCOPES), min_size=1, max_size=4),
        networks=SOME_NETWORKS,
        rate=SOME_RATE,
        lifetime=st.sampled_from(EXPIRIES),
        inside=INSIDE,
        modest=INSIDE,
    )
    def create(
        self,
        by: Cred,
        scopes: set[str],
        networks: list[str] | None,
        rate: str | None,
        lifetime: timedelta | None,
        inside: bool,
        modest: bool = False,
    ) -> Any:
        """POST /api/tokens/ with any credential: a root token (session) or a child.

        A *modest* request asks only for scopes the credential holds (when it holds any
        of those drawn): most requests are, so the families grow; the others probe.
        """
        self.tick()
        if modest and set(scopes) & self.scopes_of(by):
            scopes = set(scopes) & self.scopes_of(by)
        status, address = self.authority_status(by, inside, "tokens:write")
        asker = self.asker(by, address)
        name = self.next_label("t")
        data: dict[str, Any] = {"name": name, "scopes": sorted(scopes)}
        if networks is not None:
            data["allowed_ips"] = networks
        if rate is not None:
            data["rate_limit"] = rate
        if lifetime is not None:
            data["expires_at"] = (self.now + lifetime).isoformat()
        response = self.request("post", TOKENS, by, address, data)
        if status:
            self.expect(response, status, f"{by} creating")
            return multiple()
        default_end = self.now + DEFAULT_LIFETIME
        end = self.now + lifetime if lifetime else default_end
        chosen = normalised(networks or [])
        parent, ok = None, all(self.holdable(s) for s in scopes)
        if by.kind != "session":
            parent = by.tok
            assert parent is not None
            bound = self.end_of(by)
            assert bound is not None
            ok = (
                ok
                and frozenset(scopes) <= self.scopes_of(by)
                and len(parent.lineage()) <= MAX_DEPTH
            )
            if lifetime is None:
                end = min(end, bound)
            ok = ok and end <= bound
            if parent.networks:
                if not chosen:
                    chosen = list(parent.networks)
                ok = ok and within(chosen, parent.networks)
            if parent.rate:
                if rate is None:
                    rate = parent.rate
                ok = ok and per_second(rate) <= per_second(parent.rate)
        if not ok:
            self.expect(response, 400, f"{by} creating {data}")
            return multiple()
        self.expect(response, 201, f"{by} creating {data}")
        body = response.json()
        tok = Tok(
            label=name,
            key=body["id"],
            parent=parent,
            scopes=frozenset(scopes),
            expires_at=end,
            networks=chosen,
            rate=rate,
            grace_bound=self.end_of(by) if self.kind(by) == "grace" else None,
        )
        if parent is not None:
            parent.children.append(tok)
        self.tokens.append(tok)
        new = self.hold(Cred(f"{name}.v1", "secret", body["token"], tok, 1, by, "create"))
        self.check_obtained(new, asker)
        return multiple(new)

    @rule(
        targets=(creds, secrets),
        by=creds,
        token=secrets,
        grace=st.sampled_from((0, 0, 60, 3600)),
        inside=INSIDE,
    )
    def rotate(self, by: Cred, token: Cred, grace: int, inside: bool) -> Any:
        """POST /api/tokens/<id>/rotate/: only a credential that covers the token may."""
        self.tick()
        tok = token.tok
        assert tok is not None
        status, address = self.authority_status(by, inside, "tokens:write")
        asker = self.asker(by, address)
        response = self.request(
            "post", f"{TOKENS}{quote(tok.key)}/rotate/", by, address, {"grace_seconds": grace}
        )
        weaker = self.kind(by) == "grace" or not self.covers(by, tok)
        if response.status_code == 200 and not status and self.usable_tok(tok) and weaker:
            # What the attacker got: show it (invariant 1), then the lockout (invariant 3).
            new = Cred(f"{tok.label}.v{tok.version + 1}", "secret", response.json()["token"],
                       tok, tok.version + 1, by, "rotate")  # fmt: skip
            self.check_obtained(new, asker)
            raise AssertionError(
                f"invariant 3: {by} ({self.kind(by)}) does not cover {tok.label} "
                "yet rotated it, locking out its holder"
            )
        if status:
            self.expect(response, status, f"{by} rotating {tok.label}")
            return multiple()
        if not self.usable_tok(tok):
            self.expect(response, 400, f"{by} rotating the unusable {tok.label}")
            return multiple()
        if weaker:
            self.expect(response, 403, f"{by} ({self.kind(by)}) rotating {tok.label}")
            return multiple()
        self.expect(response, 200, f"{by} rotating {tok.label}")
        for child in tok.children:  # made by a previous secret in its grace: it ends with it
            if child.grace_bound is not None and child.expires_at > self.now:
                self.revoke_family(child)
        previous = tok.version
        tok.version += 1
        if grace:
            tok.grace = (previous, self.now + timedelta(seconds=grace))
            tok.retired += [(previous, self.now), (tok.version, tok.grace[1])]
        else:
            tok.grace = None
            tok.retired.append((tok.version, self.now))
        new = self.hold(Cred(f"{tok.label}.v{tok.version}", "secret", response.json()["token"],
                             tok, tok.version, by, "rotate"))  # fmt: skip
        self.check_obtained(new, asker)
        return multiple(new)

    @rule(
        by=creds,
        token=secrets,
        networks=SOME_NETWORKS,
        rate=st.none() | st.sampled_from(("", *RATES)),
        inside=INSIDE,
    )
    def patch(
        self, by: Cred, token: Cred, networks: list[str] | None, rate: str | None, inside: bool
    ) -> None:
        """PATCH /api/tokens/<id>/ guardrails: only a covering current secret or the owner."""
        self.tick()
        tok = token.tok
        assert tok is not None
        data: dict[str, Any] = {}
        if networks is not None:
            data["allowed_ips"] = networks
        if rate is not None:
            data["rate_limit"] = rate
        status, address = self.authority_status(by, inside, "tokens:write")
        what = f"{by} ({self.kind(by)}) changing {tok.label} with {data}"
        expected, new_networks, new_rate = 200, tok.networks, tok.rate
        if status:
            expected = status
        elif self.kind(by) == "grace" or not self.covers(by, tok):
            expected = 403
        else:
            ok = True
            parent = tok.parent
            if networks is not None and normalised(networks) != tok.networks:
                # Within its parent first (an empty list inherits the parent's), then the caller.
                new_networks = normalised(networks)
                if parent is not None and parent.networks and not new_networks:
                    new_networks = list(parent.networks)
                ok = parent is None or within(new_networks, parent.networks)
                bound = self.networks_of(by) if by.kind != "session" else []
                if bound and not new_networks:
                    new_networks = list(bound)
                ok = ok and within(new_networks, bound)
            if rate is not None and rate != (tok.rate or ""):
                new_rate = rate or None
                if parent is not None and parent.rate:
                    new_rate = new_rate or parent.rate
                    ok = ok and per_second(new_rate) <= per_second(parent.rate)
                ceiling = self.rate_of(by)
                new_rate = new_rate or ceiling
                ok = ok and not (
                    ceiling and new_rate and per_second(new_rate) > per_second(ceiling)
                )
            changed = (new_networks, new_rate) != (tok.networks, tok.rate)
            if not ok:
                expected = 400
            elif new_rate != tok.rate and by.tok is tok:
                expected = 403  # its own rate: a new rate string would be a fresh budget
            elif changed and tok.revoked:
                expected = 400
        response = self.request("patch", f"{TOKENS}{quote(tok.key)}/", by, address, data)
        self.expect(response, expected, what)
        if expected != 200:
            return
        changed = (new_networks, new_rate) != (tok.networks, tok.rate)
        if changed:
            rate_changed = new_rate != tok.rate
            tok.networks, tok.rate = new_networks, new_rate
            tok.minted_until = epoch(self.now)
            self.narrow_descendants(tok, rate_changed)

    @rule(
        target=creds,
        by=creds,
        scope=st.none() | st.sets(st.sampled_from(ALL_SCOPES), min_size=1, max_size=3),
        inside=INSIDE,
    )
    def mint(self, by: Cred, scope: set[str] | None, inside: bool) -> Any:
        """POST /api/auth/jwt/: an API token's current or previous secret mints a JWT."""
        self.tick()
        reason, address = self.usable_by(by, inside)
        asker = self.asker(by, address)
        data = {} if scope is None else {"scope": " ".join(sorted(scope))}
        response = self.request("post", MINT, by, address, data)
        if by.kind != "secret" or reason is not None:
            self.expect(response, 401, f"{by} minting")
            return multiple()
        held = self.scopes_of(by)
        granted = held if scope is None else frozenset(scope)
        end = self.end_of(by)
        assert end is not None and by.tok is not None
        exp = epoch(min(self.now + JWT_LIFETIME, end))
        if not granted or not granted <= held or exp <= epoch(self.now):
            self.expect(response, 400, f"{by} minting {data}")
            return multiple()
        self.expect(response, 200, f"{by} minting {data}")
        facts = JWTFacts(granted, exp, epoch(self.now), list(by.tok.networks))
        label = self.next_label(f"jwt{by.label}#")
        new = self.hold(Cred(label, "jwt", response.json()["access_token"], by.tok, by.version,
                             by, "mint", facts))  # fmt: skip
        self.check_obtained(new, asker)
        return multiple(new)

    @rule(cred=creds, inside=INSIDE)
    def use(self, cred: Cred, inside: bool) -> None:
        """GET /api/notes/ (notes:read): let in, refused for its scope, or refused outright."""
        self.tick()
        reason, address = self.usable_by(cred, inside)
        response = self.request("get", NOTES, cred, address)
        if reason is not None:
            self.expect(response, 401, f"{cred} refused ({reason}) on notes")
        elif "notes:read" in self.scopes_of(cred):
            self.expect(response, 200, f"{cred} reading notes")
        else:
            self.expect(response, 403, f"{cred} lacks notes:read")

    @rule(by=creds, token=secrets, inside=INSIDE)
    def revoke(self, by: Cred, token: Cred, inside: bool) -> None:
        """DELETE /api/tokens/<id>/: any credential with tokens:write (it only takes power away)."""
        self.tick()
        tok = token.tok
        assert tok is not None
        status, address = self.authority_status(by, inside, "tokens:write")
        response = self.request("delete", f"{TOKENS}{quote(tok.key)}/", by, address)
        self.expect(response, status or 204, f"{by} revoking {tok.label}")
        if not status:
            self.revoke_family(tok)

    @rule(by=creds, inside=INSIDE)
    def revoke_current(self, by: Cred, inside: bool) -> None:
        """DELETE /api/tokens/current/: a token revokes itself without any scope."""
        self.tick()
        status, address = self.authority_status(by, inside, None)
        response = self.request("delete", f"{TOKENS}current/", by, address)
        if status:
            self.expect(response, status, f"{by} revoking itself")
        elif by.kind == "session":
            self.expect(response, 400, "the session revoking 'itself'")
        else:
            self.expect(response, 204, f"{by} revoking itself")
            assert by.tok is not None
            self.revoke_family(by.tok)

    @precondition(lambda self: len(self.held) >= 10)
    @rule(by=creds, inside=INSIDE)
    def revoke_all(self, by: Cred, inside: bool) -> None:
        """POST /api/tokens/revoke-all/: every token of the owner, by any tokens:write holder."""
        self.tick()
        status, address = self.authority_status(by, inside, "tokens:write")
        response = self.request("post", f"{TOKENS}revoke-all/", by, address, {})
        self.expect(response, status or 200, f"{by} revoking all")
        if not status:
            for tok in self.tokens:
                tok.revoked = True

    # Two directed rules: random pairs seldom meet the conditions of a takeover (a live
    # token that covers another one), so these pick such pairs from the model's state.

    def covering_pairs(self, children_only: bool) -> list[tuple[Cred, Cred]]:
        managers = [
            c
            for c in self.held
            if c.kind == "secret"
            and self.kind(c) == "token"
            and self.refusal(c) is None
            and "tokens:write" in self.scopes_of(c)
        ]
        current = {c.tok: c for c in self.held if c.kind == "secret"}
        return [
            (by, current[t])
            for by in managers
            for t in self.tokens
            if t is not by.tok
            and t in current
            and self.usable_tok(t)
            and (t.parent is not None or not children_only)
            and self.covers(by, t)
        ]

    @rule(targets=(creds, secrets), pick=st.integers(0, 99), grace=st.sampled_from((0, 60)))
    def a_token_rotates_one_it_covers(self, pick: int, grace: int) -> Any:
        """What a leaked token with tokens:write does to every token it covers."""
        pairs = self.covering_pairs(children_only=False)
        if not pairs:
            return multiple()
        by, token = pairs[pick % len(pairs)]
        note(f"{by} rotates {token.tok.label if token.tok else token}")
        return self.rotate(by, token, grace, True)

    @rule(pick=st.integers(0, 99), networks=st.lists(st.sampled_from(NETWORKS), max_size=2))
    def a_token_changes_a_child_it_covers(self, pick: int, networks: list[str]) -> None:
        """A covering token changes the guardrails of a token some other token created."""
        pairs = self.covering_pairs(children_only=True)
        if not pairs:
            return
        by, token = pairs[pick % len(pairs)]
        note(f"{by} changes {token.tok.label if token.tok else token}")
        self.patch(by, token, list(dict.fromkeys(networks)), None, True)

    @precondition(lambda self: len(self.tokens) < MAX_TOKENS)
    @rule(targets=(creds, secrets), pick=st.integers(0, 99), again=st.sampled_from((0, 60)))
    def a_grace_secret_creates_then_a_rotation_cuts_its_grace(self, pick: int, again: int) -> Any:
        """What the old secret made in its grace ends when a later rotation stops it."""
        graces = [c for c in self.held if self.kind(c) == "grace" and self.refusal(c) is None]
        if not graces:
            return multiple()
        old = graces[pick % len(graces)]
        made = self.create(old, set(self.scopes_of(old)) or {"notes:read"}, None, None, None, True)
        current = next(c for c in self.held if c.tok is old.tok and self.kind(c) == "token")
        rotated = self.rotate(self.session, current, again, True)
        return multiple(*made.values, *rotated.values)

    @rule(target=creds, pick=st.integers(0, 99))
    def a_live_secret_mints_a_jwt(self, pick: int) -> Any:
        """JWTs live minutes: mint them often enough that rotations and changes meet them."""
        live = [c for c in self.held if c.kind == "secret" and self.refusal(c) is None]
        if not live:
            return multiple()
        return self.mint(live[pick % len(live)], None, True)

    @rule(
        targets=(creds, secrets),
        pick=st.integers(0, 99),
        grace=st.sampled_from((0, 60)),
        by_itself=st.booleans(),
    )
    def a_token_with_live_jwts_is_rotated(self, pick: int, grace: int, by_itself: bool) -> Any:
        """Item 3: the JWTs minted from a secret stop when it does (at once, or at grace end)."""
        current = {c.tok: c for c in self.held if c.kind == "secret" and self.kind(c) == "token"}
        minted = [
            current[c.tok]
            for c in self.held
            if c.kind == "jwt" and self.refusal(c) is None and c.tok in current
        ]
        if not minted:
            return multiple()
        token = minted[pick % len(minted)]
        return self.rotate(token if by_itself else self.session, token, grace, True)

    @precondition(lambda self: not self.owner.deleted)
    @rule(
        pick=st.integers(0, 99),
        response=st.sampled_from(("revoke", "narrow")),
        keep=st.sets(st.sampled_from(ALL_SCOPES), min_size=1),
    )
    def the_owner_answers_a_leak(self, pick: int, response: str, keep: set[str]) -> None:
        """A token that obtained others (children, rotated secrets) leaked: revoke or narrow it."""
        suspects = [
            c.obtained_by
            for c in self.held
            if c.how in ("create", "rotate")
            and c.obtained_by is not None
            and c.obtained_by.kind == "secret"
            and c.obtained_by.tok is not None
            and not c.obtained_by.tok.revoked
        ]
        if not suspects:
            return
        leaked = suspects[pick % len(suspects)]
        note(f"the owner answers the leak of {leaked}: {response}")
        if response == "revoke":
            self.revoke(self.session, leaked, True)
        else:
            self.manager_narrows_scopes(leaked, keep)

    @precondition(lambda self: not self.owner.deleted)
    @rule(pick=st.integers(0, 99), rate=st.sampled_from(RATES))
    def the_owner_tightens_a_parents_rate(self, pick: int, rate: str) -> None:
        """Tighten the rate of a token that has children: their budgets follow."""
        current = {c.tok: c for c in self.held if c.kind == "secret"}
        parents = [
            current[t]
            for t in self.tokens
            if t.children and t.rate and t in current and per_second(rate) < per_second(t.rate)
        ]
        if parents:
            self.patch(self.session, parents[pick % len(parents)], None, rate, True)

    @rule(seconds=st.sampled_from(STEPS))
    def advance(self, seconds: int) -> None:
        """Time passes: graces end, JWTs and tokens expire."""
        self.tick(seconds)

    @precondition(lambda self: not self.owner.deleted)
    @rule(active=st.booleans())
    def set_active(self, active: bool) -> None:
        """The admin (de)activates the owner: a model save, as the admin's form does."""
        self.set_owner_flag("active", active)

    @precondition(lambda self: not self.owner.deleted)
    @rule(staff=st.booleans())
    def set_staff(self, staff: bool) -> None:
        """The admin demotes or promotes the owner: audit:read is for staff only."""
        self.set_owner_flag("staff", staff)

    def set_owner_flag(self, flag: str, value: bool) -> None:
        self.tick()
        if getattr(self.owner, flag) and not value:
            self.owner.lost_power_at = epoch(self.now)
        setattr(self.owner, flag, value)
        setattr(self.alice, f"is_{flag}", value)
        self.alice.save()

    @precondition(lambda self: not self.owner.deleted and len(self.held) > 12)
    @rule()
    def delete_owner(self) -> None:
        """The owner is deleted: every token and JWT of theirs stops."""
        self.tick()
        self.alice.delete()
        self.owner.deleted = True
        self.owner.lost_power_at = epoch(self.now)

    @precondition(lambda self: not self.owner.deleted)
    @rule(token=secrets, keep=st.sets(st.sampled_from(ALL_SCOPES), min_size=1))
    def manager_narrows_scopes(self, token: Cred, keep: set[str]) -> None:
        """A token manager narrows a token's scopes in the admin: descendants follow."""
        self.tick()
        tok = token.tok
        assert tok is not None
        scopes = frozenset(keep) & tok.scopes
        row = self.row(tok)
        if tok.revoked or not scopes or scopes == tok.scopes or row is None:
            return
        if not self.owner.active or not all(self.holdable(s) for s in scopes):
            return  # the grant policy refuses it (an inactive owner holds nothing)
        url = f"/admin/tokens_app/apitoken/{row.pk}/change/"
        response = self.admin.post(url, change_data(row, scopes=sorted(scopes)))
        assert response.status_code == 302, response.content[:2000]
        tok.scopes = scopes
        tok.minted_until = epoch(self.now)
        self.narrow_descendants(tok)

    # --- invariants after every step -----------------------------------------------------

    @invariant()
    def rows_match_the_rules(self) -> None:
        """Each token row within its parent's (invariant 1), revoked with it (invariant 2)."""
        rows = {r.key_id: r for r in APIToken.objects.select_related("parent")}
        if self.owner.deleted:
            assert not rows, "a deleted owner's tokens must be gone"
            return
        for tok in self.tokens:
            row = rows[tok.key]
            seen = (
                row.revoked_at is not None,
                frozenset(row.scopes),
                row.allowed_ips,
                row.rate_limit or None,
                row.expires_at,
            )
            wanted = (tok.revoked, tok.scopes, tok.networks, tok.rate, tok.expires_at)
            assert seen == wanted, f"{tok.label}: server has {seen}, the rules say {wanted}"
            parent = row.parent
            if parent is None:
                continue
            assert parent.revoked_at is None or row.revoked_at is not None, (
                f"invariant 2: {tok.label} lives on while its parent is revoked"
            )
            if row.revoked_at is not None:
                continue
            assert set(row.scopes) <= expand(parent.scopes), f"invariant 1: {tok.label} scopes"
            assert row.expires_at <= parent.expires_at, f"invariant 1: {tok.label} expiry"
            assert tok.grace_bound is None or row.expires_at <= tok.grace_bound, (
                f"invariant 1: {tok.label} outlives the grace of the secret that made it"
            )
            assert within(row.allowed_ips, parent.allowed_ips), (
                f"invariant 1: {tok.label} works from {row.allowed_ips or 'anywhere'}, "
                f"beyond its parent's {parent.allowed_ips}"
            )
            assert tok.parent is not None
            missing = tok.parent.budgets() - row_budgets(row)
            assert not missing, f"invariant 1: {tok.label} escapes the budgets {missing}"

    @invariant()
    def credentials_work_exactly_as_the_rules_say(self) -> None:
        """Every credential ever held: refused when it must be (2), working when it must (3).

        A credential the rules let in is tried after every step; one whose expected state
        just changed is tried in full (inside and outside its networks); of those refused
        for a while, two a step in turn (refused stays refused): bounded, and complete.
        """
        refused = []
        for cred in self.held:
            expected = (self.refusal(cred), self.scopes_of(cred), self.networks_of(cred))
            changed = self.last_expected.get(cred) != expected
            self.last_expected[cred] = expected
            if expected[0] is None or changed:
                self.check_credential(cred, full=changed)
            else:
                refused.append(cred)
        for _turn in range(min(2, len(refused))):
            self.turn += 1
            self.check_credential(refused[self.turn % len(refused)], full=False)

    def check_credential(self, cred: Cred, *, full: bool) -> None:
        reason, address = self.usable_by(cred, inside=True)
        response = self.request("get", WHOAMI, cred, address)
        if reason is not None:
            self.expect(response, 401, f"invariant 2: {cred} must be refused ({reason})")
            return
        self.expect(response, 200, f"invariant 3: {cred} ({self.kind(cred)}) locked out")
        scopes = frozenset(response.json()["scopes"])
        assert scopes == self.scopes_of(cred), (
            f"{cred}: scopes {sorted(scopes)}, the rules say {sorted(self.scopes_of(cred))}"
        )
        networks = self.networks_of(cred)
        if networks and full:
            response = self.request("get", WHOAMI, cred, OUTSIDE_ALL)
            self.expect(response, 401, f"invariant 1: {cred} from outside {networks}")
        by = cred.obtained_by
        if self.rotated_by_another(cred):
            assert by is not None and cred.tok is not None
            assert self.covers(by, cred.tok), (
                f"invariant 1: {cred}, obtained by {by} rotating it, now exceeds {by}"
            )
        if cred.kind == "jwt":
            assert cred.tok is not None and cred.jwt is not None
            tok = cred.tok
            assert scopes <= self.effective(tok.scopes), (
                f"invariant 1: {cred} holds {sorted(scopes)} beyond its token {tok.label}"
            )
            assert within(networks, tok.networks), (
                f"invariant 1: {cred} works from {networks or 'anywhere'}, "
                f"beyond its token's {tok.networks}"
            )
            missing = tok.budgets() - self.server_budgets(cred)
            assert not missing, (
                f"invariant 1: {cred} does not count against {sorted(missing)}, "
                f"budgets its token {tok.label} counts against now"
            )


def test_no_credential_exceeds_its_obtainer_or_locks_out_a_stronger_one(
    clock: FakeClock,
) -> None:
    AuthorityMachine.clock = clock
    run_state_machine_as_test(
        AuthorityMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


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
