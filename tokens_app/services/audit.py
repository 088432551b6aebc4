"""The audit trail: one ``TokenEvent`` per action, written in the action's transaction."""

from typing import Any

from tokens_app.core import clock
from tokens_app.models import APIToken, TokenEvent


def record_event(
    token: APIToken,
    kind: str,
    *,
    actor: Any,
    ip: str | None,
    via: str,
    detail: dict[str, Any] | None = None,
) -> TokenEvent:
    """Record that *actor* did *kind* to *token* (from *ip*, through *via*)."""
    return TokenEvent.objects.create(
        token=token,
        key_id=token.key_id,
        kind=kind,
        actor=actor if getattr(actor, "pk", None) else None,
        created_at=clock.now(),
        ip=ip,
        via=via,
        detail=detail or {},
    )
