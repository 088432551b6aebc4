"""Who may see and manage which tokens, and how tokens are looked up."""

from typing import Any

from tokens_app import keys
from tokens_app.conf import token_settings
from tokens_app.models import APIToken, APITokenQuerySet

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


def may_issue_for(actor: Any, owner: Any) -> bool:
    """Return whether *actor* may issue a token owned by *owner*."""
    return can_manage_all(actor) or getattr(owner, "pk", None) == getattr(actor, "pk", None)


# --- look-ups ---------------------------------------------------------------------------


def find_token(reference: str) -> APIToken | None:
    """Return the token named by a key id or by a full token string, or ``None``.

    A full token is recognised by its checksum; its secret is not needed to name it.
    """
    parsed = keys.parse(reference.strip(), token_settings().prefix) if reference else None
    key_id = parsed.key_id if parsed else reference.strip()
    if not keys.is_valid_key_id(key_id):
        return None
    return APIToken.objects.select_related("owner").filter(key_id=key_id).first()


def tokens_for(owner: Any = None) -> APITokenQuerySet:
    """Return tokens (of *owner*, or all), newest first, with owners joined."""
    queryset = APIToken.objects.select_related("owner")
    return queryset.for_owner(owner) if owner is not None else queryset
