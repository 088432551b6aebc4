"""Every business rule about tokens, once: issue, revoke, authenticate, look up.

The admin, the REST API and the management commands are thin adapters over
these functions; none of them decides anything that is decided here.
"""

from tokens_app.services.access import (
    MANAGE_ALL_PERMISSION,
    TokenCheck,
    UnverifiedToken,
    can_manage_all,
    check_token_string,
    find_token,
    listed_tokens,
    may_issue_for,
    own_token,
    tokens_for,
    visible_events,
    visible_tokens,
)
from tokens_app.services.caller import OPERATOR, Caller, Via
from tokens_app.services.credentials import (
    Budget,
    InvalidToken,
    RateLimiterUnavailable,
    TooManyAttempts,
    authenticate_client,
    authenticate_token,
    check_user_password,
    count_password_attempt,
    count_revocation_attempt,
    count_token_requests,
    token_budgets,
    token_rate,
)
from tokens_app.services.errors import NotPermitted
from tokens_app.services.exchange import exchange_password
from tokens_app.services.issuing import IssuedToken, issue_token
from tokens_app.services.jwts import MintedJWT, introspect, mint_jwt
from tokens_app.services.leaks import Finding, revoke_leaked, scan_lines, scan_sources
from tokens_app.services.maintenance import PruneResult, prune_tokens
from tokens_app.services.notices import (
    NoticeFailure,
    NoticeResult,
    OwnerNotice,
    notify_expiring_tokens,
)
from tokens_app.services.revoking import (
    MAX_REASON_LENGTH,
    descendants,
    revoke_all_tokens,
    revoke_presented,
    revoke_token,
    revoke_tokens,
)
from tokens_app.services.rotation import rotate_token
from tokens_app.services.updating import plan_token_update, update_token

__all__ = [
    "MANAGE_ALL_PERMISSION",
    "MAX_REASON_LENGTH",
    "OPERATOR",
    "Budget",
    "Caller",
    "Finding",
    "InvalidToken",
    "IssuedToken",
    "MintedJWT",
    "NotPermitted",
    "NoticeFailure",
    "NoticeResult",
    "OwnerNotice",
    "PruneResult",
    "RateLimiterUnavailable",
    "TokenCheck",
    "TooManyAttempts",
    "UnverifiedToken",
    "Via",
    "authenticate_client",
    "authenticate_token",
    "can_manage_all",
    "check_token_string",
    "check_user_password",
    "count_password_attempt",
    "count_revocation_attempt",
    "count_token_requests",
    "descendants",
    "exchange_password",
    "find_token",
    "introspect",
    "issue_token",
    "listed_tokens",
    "may_issue_for",
    "mint_jwt",
    "notify_expiring_tokens",
    "own_token",
    "plan_token_update",
    "prune_tokens",
    "revoke_all_tokens",
    "revoke_leaked",
    "revoke_presented",
    "revoke_token",
    "revoke_tokens",
    "rotate_token",
    "scan_lines",
    "scan_sources",
    "token_budgets",
    "token_rate",
    "tokens_for",
    "update_token",
    "visible_events",
    "visible_tokens",
]
