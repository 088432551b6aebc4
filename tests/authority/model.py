"""The state machine's model of the authority rule (issue 13): independent of tokens_app.

The bounds, the values random draws pick from, and the rules as they are meant to be:
scopes and what they imply, networks within networks, rates as budgets, and the
tokens, credentials and owner the machine holds. Used by ``machine*.py``; see
``test_authority_properties.py`` for what is checked.
"""

import ipaddress
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tokens_app.models import APIToken

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
