"""The authority state machine: its directed rules and the invariants checked after each step.

Run by ``test_authority_properties.py``; hypothesis collects the rules of the whole class
chain (``MachineState`` -> ``AuthorityRules`` -> ``AuthorityMachine``) by name, so the
split changes neither the rules nor the order they are drawn in.
"""

from typing import Any

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import invariant, multiple, precondition, rule

from tests.authority.machine_rules import AuthorityRules
from tests.authority.machine_state import creds, secrets
from tests.authority.model import (
    ALL_SCOPES,
    MAX_TOKENS,
    NETWORKS,
    OUTSIDE_ALL,
    RATES,
    STEPS,
    Cred,
    epoch,
    expand,
    per_second,
    row_budgets,
    within,
)
from tests.helpers import WHOAMI, change_data
from tokens_app.models import APIToken


class AuthorityMachine(AuthorityRules):
    """Random credentials acting on one owner's tokens through the real API."""

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
