"""The state of the authority machine: per-example set-up, and what each credential may do.

``MachineState`` holds the model (``model.py``) of one owner's tokens and credentials,
answers what the rules say a credential may do, and reads what the server did. The
rules are in ``machine_rules.py`` and ``machine.py``.
"""

from datetime import UTC, datetime
from typing import Any

import jwt as pyjwt
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import transaction
from hypothesis.stateful import Bundle, RuleBasedStateMachine
from rest_framework.test import APIClient

from tests.authority.model import (
    ADDRESSES,
    ALL_SCOPES,
    LEEWAY,
    OUTSIDE_ALL,
    STAFF_ONLY,
    START,
    Asker,
    Cred,
    Owner,
    Tok,
    allows,
    epoch,
    expand,
    intersect,
    per_second,
    row_budgets,
    within,
)
from tests.helpers import MODEL_PERMISSIONS, WHOAMI, FakeClock, admin_client, grant
from tokens_app import invalidation
from tokens_app.models import APIToken, TokenEvent

#: The machine's bundles: the pools of values its rules draw from and add to.
creds = Bundle("creds")
secrets = Bundle("secrets")  # the API-token secrets among creds: targets of actions


class MachineState(RuleBasedStateMachine):
    """One owner and its tokens: each example's set-up, the model's view, the server's."""

    clock: FakeClock  # set by the test function (the `clock` fixture)
    #: False in a transactional test (the token cache hears of a change only when it
    #: commits): then every write commits, and teardown deletes the example's rows instead.
    in_savepoint = True

    def __init__(self) -> None:
        super().__init__()
        if self.in_savepoint:
            # One savepoint per example, rolled back in teardown (pytest-django's own
            # transaction wraps the test): no example sees another's rows, on any database.
            self._atomic = transaction.atomic()
            self._atomic.__enter__()
        for alias in django_settings.CACHES:
            caches[alias].clear()
        store = invalidation.store()
        if store is not None:
            store.clear()
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
        if self.in_savepoint:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)
            return
        TokenEvent.objects.all().delete()
        APIToken.objects.all().delete()
        get_user_model()._default_manager.all().delete()

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
