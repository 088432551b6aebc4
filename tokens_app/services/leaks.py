"""Leaked tokens: find them in text, say what they can still do, revoke them.

Finding needs no database: the token format carries a checksum (see
:func:`tokens_app.keys.find_tokens`), so a scan can run in a pre-commit hook or on
a laptop with no access to production. Only the key id of a finding is kept: a
scanner's results end up in terminals, CI logs and tickets, and must not leak the
secret a second time.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tokens_app import clock, keys
from tokens_app.conf import token_settings
from tokens_app.models import APIToken
from tokens_app.services.revoking import revoke_token

#: Status of a well-formed token (valid checksum) that this installation never issued,
#: or has since pruned: another deployment's, a test fixture's, an example's.
UNKNOWN = "unknown"
#: The revoke reason recorded in the audit trail for tokens revoked by a scan.
LEAKED_REASON = "leaked"


@dataclass(frozen=True)
class Finding:
    """One token seen in one place; the key id names it, the secret is never kept."""

    source: str
    """Where it was seen: a file path, or ``<stdin>``."""
    line: int
    """Line number, from 1."""
    key_id: str


def scan_lines(source: str, lines: Iterable[str], prefix: str | None = None) -> list[Finding]:
    """Return a finding for every token in *lines* (read from *source*), in order.

    *prefix* defaults to this installation's; the scan itself is pure text work, so it
    is safe without a database.
    """
    prefix = token_settings().prefix if prefix is None else prefix
    return [
        Finding(source=source, line=number, key_id=parsed.key_id)
        for number, text in enumerate(lines, start=1)
        for _offset, parsed in keys.find_tokens(text, prefix)
    ]


def token_states(key_ids: Iterable[str]) -> dict[str, str]:
    """Return the status of each key id: a ``TokenStatus`` value, or ``"unknown"``.

    One query however many key ids (none when there are none): a scan of a big log
    can find many tokens, and each status is read at the same moment.
    """
    wanted = set(key_ids)
    if not wanted:
        return {}
    now = clock.now()
    tokens = APIToken.objects.select_related("owner").filter(key_id__in=wanted)
    known = {token.key_id: token.status(now).value for token in tokens}
    return {key_id: known.get(key_id, UNKNOWN) for key_id in wanted}


def revoke_leaked(key_ids: Iterable[str], *, actor: Any = None, via: str = "command") -> list[str]:
    """Revoke every known token among *key_ids* not yet revoked; return their key ids, sorted.

    Expired and owner-inactive tokens are revoked too: an inactive owner can be made
    active again, and either way the audit trail should say the token leaked. Each goes
    through :func:`revoke_token`, so each gets its audit event (reason ``"leaked"``)
    and its JWTs are refused; tokens already revoked are left as they are.
    """
    pending = (
        APIToken.objects.select_related("owner")
        .filter(key_id__in=set(key_ids), revoked_at__isnull=True)
        .order_by("key_id")
    )
    return [
        token.key_id
        for token in pending
        if revoke_token(token, actor=actor, reason=LEAKED_REASON, via=via)
    ]
