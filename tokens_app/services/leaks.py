"""Leaked tokens: find them in text, say what they can still do, revoke them.

Finding needs no database: the token format carries a checksum (see
:func:`tokens_app.core.tokenstring.find_tokens`), so a scan can run in a pre-commit hook or on
a laptop with no access to production. Only the key id of a finding is kept: a
scanner's results end up in terminals, CI logs and tickets, and must not leak the
secret a second time.

Saying *whose* a finding is needs its secret verified: key ids are public (admin,
API, logs), so anyone can build a string with a victim's key id, any secret and a
valid checksum. A scan with the database verifies every candidate's secret
(:func:`tokens_app.services.access.secret_verdict`) before it reports a status, and
only verified findings are ever revoked; a look-alike is reported as ``unverified``.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from tokens_app.conf import token_settings
from tokens_app.core import clock, tokenstring
from tokens_app.models import APIToken, TokenStatus
from tokens_app.services.access import RETIRED, UNKNOWN, UNVERIFIED, secret_verdict
from tokens_app.services.caller import COMMAND, Caller
from tokens_app.services.revoking import revoke_token

__all__ = [
    "LEAKED_REASON",
    "RETIRED",
    "REVOCABLE",
    "UNKNOWN",
    "UNVERIFIED",
    "Finding",
    "revoke_leaked",
    "scan_lines",
    "scan_sources",
]

#: The revoke reason recorded in the audit trail for tokens revoked by a scan.
LEAKED_REASON = "leaked"
#: Verified statuses a leak revokes. ``revoked`` is done already; ``retired`` (a secret a
#: rotation replaced, past its grace) works nowhere, and the token's current secret did
#: not leak; ``unknown`` and ``unverified`` name no token of ours.
REVOCABLE = frozenset(
    {TokenStatus.ACTIVE.value, TokenStatus.EXPIRED.value, TokenStatus.OWNER_INACTIVE.value}
)


@dataclass(frozen=True)
class Finding:
    """One token seen in one place; the key id names it, the secret is never kept."""

    source: str
    """Where it was seen: a file path, or ``<stdin>``."""
    line: int
    """Line number, from 1."""
    key_id: str
    status: str | None = None
    """The verified verdict (a ``TokenStatus`` value, ``retired``, ``unverified`` or
    ``unknown``); ``None`` when the scan did not consult the database."""


def scan_lines(source: str, lines: Iterable[str], prefix: str | None = None) -> list[Finding]:
    """Return a finding for every token in *lines* (read from *source*), in order, unverified.

    *prefix* defaults to this installation's; the scan itself is pure text work, so it
    is safe without a database, and every status is ``None``.
    """
    return scan_sources([(source, lines)], verify=False, prefix=prefix)


def scan_sources(
    sources: Iterable[tuple[str, Iterable[str]]],
    *,
    verify: bool = True,
    prefix: str | None = None,
) -> list[Finding]:
    """Return a finding for every token in every ``(name, lines)`` of *sources*, in order.

    With *verify*, each finding's secret is checked against this installation (one
    query for all of them, none when nothing is found) and the finding carries the
    verdict: a key id seen twice with two different secrets, one real and one forged,
    gives two findings with two statuses. The secrets of the distinct candidates are
    held only in this call, until that query has answered, and never reach a finding.
    Without *verify* (``--offline``) nothing touches the database and every status
    is ``None``.
    """
    prefix = token_settings().prefix if prefix is None else prefix
    seen: list[tuple[str, int, str, int]] = []
    candidates: dict[tuple[str, str], int] = {}
    for source, lines in sources:
        for number, text in enumerate(lines, start=1):
            for _offset, parsed in tokenstring.find_tokens(text, prefix):
                index = -1
                if verify:
                    pair = (parsed.key_id, parsed.secret)
                    index = candidates.setdefault(pair, len(candidates))
                seen.append((source, number, parsed.key_id, index))
    verdicts = _verdicts(candidates)
    candidates.clear()  # the secrets go now, before anything is reported
    return [
        Finding(source=source, line=line, key_id=key_id, status=verdicts[index] if verify else None)
        for source, line, key_id, index in seen
    ]


def _verdicts(candidates: dict[tuple[str, str], int]) -> list[str]:
    """The verdict on each ``(key id, secret)`` candidate, by its index; one query."""
    if not candidates:
        return []
    key_ids = {key_id for key_id, _secret in candidates}
    tokens = {
        token.key_id: token
        for token in APIToken.objects.select_related("owner").filter(key_id__in=key_ids)
    }
    now = clock.now()  # every status is read at the same moment
    verdicts = [UNKNOWN] * len(candidates)
    for (key_id, secret), index in candidates.items():
        verdicts[index] = secret_verdict(tokens.get(key_id), secret, now)
    return verdicts


def revoke_leaked(findings: Iterable[Finding], *, caller: Caller = COMMAND) -> list[str]:
    """Revoke the tokens of the verified *findings* not yet revoked; return their key ids, sorted.

    Only a finding whose secret verified as a live credential of one of our tokens
    (status in ``REVOCABLE``) counts: a look-alike built from a public key id revokes
    nothing, whatever else is found with it. Expired and owner-inactive tokens are
    revoked too: an inactive owner can be made active again, and either way the audit
    trail should say the token leaked. Each goes through :func:`revoke_token`, so each
    gets its audit event (reason ``"leaked"``) and its JWTs are refused; tokens already
    revoked are left as they are.
    """
    key_ids = {finding.key_id for finding in findings if finding.status in REVOCABLE}
    if not key_ids:
        return []
    pending = (
        APIToken.objects.select_related("owner")
        .unrevoked()
        .filter(key_id__in=key_ids)
        .order_by("key_id")
    )
    return [
        token.key_id
        for token in pending
        if revoke_token(token, caller=caller, reason=LEAKED_REASON)
    ]
