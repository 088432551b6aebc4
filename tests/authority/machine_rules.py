"""The authority machine's random rules: credentials create, rotate, change, mint and revoke."""

from datetime import timedelta
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from hypothesis.stateful import initialize, multiple, precondition, rule
from rest_framework.test import APIClient

from tests.authority.machine_state import MachineState, creds, secrets
from tests.authority.model import (
    ALL_SCOPES,
    DEFAULT_LIFETIME,
    EXPIRIES,
    INSIDE,
    JWT_LIFETIME,
    MAX_DEPTH,
    MAX_TOKENS,
    RATES,
    SOME_NETWORKS,
    SOME_RATE,
    Cred,
    JWTFacts,
    Tok,
    epoch,
    normalised,
    per_second,
    within,
)
from tests.helpers import MINT, NOTES, TOKENS
from tests.interop.oauth_helpers import REVOKE


class AuthorityRules(MachineState):
    """Random credentials acting on tokens: each rule checks the answer against the model."""

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

    @rule(token=secrets, inside=INSIDE)
    def revoke_by_possession(self, token: Cred, inside: bool) -> None:
        """POST /api/auth/revoke/ (RFC 7009): whoever holds a working secret revokes its token.

        No credential but the string itself, from any address: it revokes the token and its
        family when the secret authenticates now (current, or previous within its grace),
        and nothing otherwise; the answer is the same 200 either way (a 429 past the
        per-address rate, which revokes nothing).
        """
        self.tick()
        tok = token.tok
        assert tok is not None
        works = self.refusal(token) is None
        address = self.address(self.networks_of(token), inside)
        response = APIClient().post(REVOKE, {"token": token.value}, REMOTE_ADDR=address)
        if response.status_code == 429:
            return
        self.expect(response, 200, f"{token} revoking by possession")
        assert response.json() == {}
        if works:
            self.revoke_family(tok)

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
