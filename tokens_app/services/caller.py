"""Who is asking: the one value every adapter builds per request or command and hands on.

Services need the same four facts about each action: the person acting (for the audit
trail and ``created_by``), the credential the request presented (which bounds what the
action may hand out: ``services.authority``), the client address, and the surface it
came through. A :class:`Caller` carries them together, so no adapter rebuilds them
keyword by keyword and no service can be handed half of them.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.http import HttpRequest

from tokens_app.core.address import client_ip


class Via(StrEnum):
    """The surface an action came through, as the audit trail stores it."""

    CODE = ""  #: a direct call from Python code
    API = "api"
    ADMIN = "admin"
    COMMAND = "command"
    PASSWORD = "password"  # noqa: S105 — a surface: the password exchange (POST /api/auth/token/)


@dataclass(frozen=True)
class Caller:
    """The actor, the credential it presented, its address and its surface.

    ``user`` ``None`` is the operator: code or a management command, trusted.
    ``presented`` is what authenticated the request (``request.auth``: an API token,
    a JWT's claims), ``None`` for a session, a password or the operator.
    """

    user: Any = None
    presented: Any = None
    ip: str | None = None
    via: Via = Via.CODE

    @classmethod
    def of_request(cls, request: HttpRequest, via: Via) -> "Caller":
        """The caller of a Django or DRF *request*: its user, its credential, its address."""
        return cls(
            user=request.user,
            presented=getattr(request, "auth", None),
            ip=client_ip(request),
            via=via,
        )

    @property
    def surface(self) -> str:
        """How log lines name the surface: ``code`` for a direct call."""
        return self.via.value or "code"


#: Code calling services directly, with no person and no credential: trusted.
OPERATOR = Caller()
#: A management command run by an operator.
COMMAND = Caller(via=Via.COMMAND)
