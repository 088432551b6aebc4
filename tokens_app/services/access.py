"""Who may see and manage which tokens, and how tokens are looked up (and verified)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from tokens_app.conf import token_settings
from tokens_app.core import clock, hashing, tokenstring
from tokens_app.models import APIToken, APITokenQuerySet, TokenEvent
from tokens_app.services.credentials import _in_rotation_grace
from tokens_app.services.errors import NotPermitted

MANAGE_ALL_PERMISSION = "tokens_app.manage_all_tokens"


def can_manage_all(user: Any) -> bool:
    """Return whether *user* may see and manage every user's tokens (not just their own)."""
    if user is None or not getattr(user, "is_active", False):
        return False
    return bool(getattr(user, "is_superuser", False) or user.has_perm(MANAGE_ALL_PERMISSION))


def visible_tokens(user: Any) -> APITokenQuerySet:
    """Return the tokens *user* may see and manage: all of them, or only their own."""
    queryset = APIToken.objects.select_related("owner", "created_by", "revoked_by")
    return queryset if can_manage_all(user) else queryset.filter(owner=user.pk)


def visible_events(user: Any, events: QuerySet[TokenEvent]) -> QuerySet[TokenEvent]:
    """Return those of *events* about tokens *user* may see (:func:`visible_tokens`' rule)."""
    return events if can_manage_all(user) else events.filter(token__owner=user.pk)


def may_issue_for(actor: Any, owner: Any) -> bool:
    """Return whether *actor* may issue a token owned by *owner*."""
    return can_manage_all(actor) or getattr(owner, "pk", None) == getattr(actor, "pk", None)


# --- look-ups ---------------------------------------------------------------------------

#: Verdicts on a full token string, besides the token's own status (``TokenStatus``):
#: well-formed (valid checksum) but a key id this installation never issued, or pruned.
UNKNOWN = "unknown"
#: A known key id whose secret matches nothing stored for it: a look-alike (anyone can
#: build one from a public key id), a mangled copy, or a secret retired long ago.
UNVERIFIED = "unverified"
#: The secret a rotation replaced, past its grace: it was this token's, it works nowhere.
RETIRED = "retired"


class UnverifiedToken(Exception):  # noqa: N818 — reads better at the raise sites
    """A full token string names a known key id, but its secret is not that token's."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id


@dataclass(frozen=True)
class TokenCheck:
    """What a full token string is here: a key id and a verdict (never the secret)."""

    key_id: str
    status: str
    """A ``TokenStatus`` value, ``RETIRED``, ``UNVERIFIED`` or ``UNKNOWN``."""
    token: APIToken | None = field(default=None, repr=False, compare=False)
    """The token, only when the secret verified (a look-alike names no token)."""

    @property
    def verified(self) -> bool:
        """Whether the secret proved to be this token's (now or before a rotation)."""
        return self.status not in (UNKNOWN, UNVERIFIED)


def secret_verdict(token: APIToken | None, secret: str, now: datetime) -> str:
    """Return what *secret* is for *token* (the row its key id names, or ``None``).

    The secret is verified in constant time against the stored hash, then, after a
    rotation with grace, against the previous one: inside the grace the old secret is a
    live credential (the token's own status), past it ``RETIRED``. Key ids are public,
    so a match of the key id alone proves nothing: a secret matching neither hash is
    ``UNVERIFIED``. Stored hashes are never upgraded here: this only looks.
    """
    if token is None:
        return UNKNOWN
    if hashing.verify_secret(secret, token.secret_hash)[0]:
        return token.status(now).value
    if token.previous_secret_hash and hashing.verify_secret(secret, token.previous_secret_hash)[0]:
        return token.status(now).value if _in_rotation_grace(token, now) else RETIRED
    # Not logged: the callers report it (the scan's finding, the command's one error line).
    return UNVERIFIED


def check_token_string(raw: str) -> TokenCheck | None:
    """Say what the full token string *raw* is here, by verifying its secret; one query.

    ``None`` when *raw* is not a well-formed token of this installation's prefix (the
    checksum decides, before any query). Every caller that acts on a pasted or scanned
    token string (revoking, reporting a leak) asks this, never the key id alone.
    """
    parsed = (
        tokenstring.parse(raw.strip(), token_settings().prefix) if isinstance(raw, str) else None
    )
    if parsed is None:
        return None
    token = APIToken.objects.select_related("owner").filter(key_id=parsed.key_id).first()
    status = secret_verdict(token, parsed.secret, clock.now())
    verified = status not in (UNKNOWN, UNVERIFIED)
    return TokenCheck(key_id=parsed.key_id, status=status, token=token if verified else None)


def find_token(reference: str) -> APIToken | None:
    """Return the token named by a key id or by a full token string, or ``None``.

    A key id names its token (operators name tokens by their public id). A full token
    string names it only if its secret verifies (``check_token_string``): otherwise
    raise ``UnverifiedToken``, so a look-alike built from a public key id acts on nothing.
    """
    reference = reference.strip() if isinstance(reference, str) else ""
    check = check_token_string(reference) if reference else None
    if check is not None:
        if check.status == UNVERIFIED:
            raise UnverifiedToken(check.key_id)
        return check.token
    if not tokenstring.is_valid_key_id(reference):
        return None
    return APIToken.objects.select_related("owner").filter(key_id=reference).first()


def tokens_for(owner: Any = None) -> APITokenQuerySet:
    """Return tokens (of *owner*, or all), newest first, with owners joined."""
    queryset = APIToken.objects.select_related("owner")
    return queryset.for_owner(owner) if owner is not None else queryset


def listed_tokens(user: Any, *, every: bool = False) -> APITokenQuerySet:
    """The tokens a listing shows *user*: their own, or with *every* all they may see.

    Raise ``NotPermitted`` when *every* is asked by someone who does not manage every
    token: a listing that silently showed fewer would read as "there are no others".
    """
    if not every:
        return tokens_for(user)
    if not can_manage_all(user):
        raise NotPermitted(_("Only token managers may list every token."))
    return visible_tokens(user)


def own_token(user: Any, key_id: str) -> APIToken | None:
    """Return *user*'s token with *key_id*, or ``None``: by the same query whatever the id.

    Someone else's token, an unknown id and a malformed one are all ``None``, so callers
    answer them alike (the same 404). A malformed id still runs the query (same timing),
    with a value no row can hold, which also keeps bytes such as NUL (refused by
    PostgreSQL) away from the database.
    """
    safe_id = key_id if tokenstring.is_valid_key_id(key_id) else ""
    return tokens_for(user).filter(key_id=safe_id).first()
