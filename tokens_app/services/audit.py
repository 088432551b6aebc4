"""The audit trail: one ``TokenEvent`` per action, written in the action's transaction."""

from typing import Any

from tokens_app.core import clock
from tokens_app.models import APIToken, TokenEvent
from tokens_app.services.caller import Caller


def record_event(
    token: APIToken,
    kind: str,
    *,
    caller: Caller,
    detail: dict[str, Any] | None = None,
) -> TokenEvent:
    """Record that *caller* did *kind* to *token*: its user, address and surface."""
    return TokenEvent.objects.create(
        token=token,
        key_id=token.key_id,
        kind=kind,
        actor=caller.user if getattr(caller.user, "pk", None) else None,
        created_at=clock.now(),
        ip=caller.ip,
        via=caller.via.value,
        detail=detail or {},
    )
