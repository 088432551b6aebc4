"""DRF permissions by scope: ``HasScope`` (all of) and ``HasAnyScope`` (any of).

A view declares ``required_scopes`` as a list, or as a mapping keyed by HTTP
method (``"GET"``) or viewset action (``"list"``). A view that names no scope
for the request is refused: forgetting the declaration never opens an endpoint.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from tokens_app.conf import token_settings
from tokens_app.core import scopes

logger = logging.getLogger("tokens_app.permissions")


class InsufficientScope(exceptions.PermissionDenied):
    """403 with RFC 6750's ``insufficient_scope`` challenge and the scopes needed."""

    default_detail = _("This credential lacks the scope this request needs.")
    default_code = "insufficient_scope"

    def __init__(self, required: Sequence[str], *, challenge: bool) -> None:
        super().__init__({"detail": self.default_detail, "required_scopes": list(required)})
        if challenge:
            realm = token_settings().realm
            self.auth_header = (
                f'Bearer realm="{realm}", error="insufficient_scope", scope="{" ".join(required)}"'
            )


def _scope_list(value: Any) -> list[str] | None:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        return None  # a bare string would be read letter by letter
    if not value or not all(isinstance(name, str) for name in value):
        return None
    return list(value)


def is_well_formed(declared: Any) -> bool:
    """Return whether a ``required_scopes`` declaration can ever let a request through."""
    if isinstance(declared, Mapping):
        return bool(declared) and all(_scope_list(v) is not None for v in declared.values())
    return _scope_list(declared) is not None


def required_scopes(view: Any, method: str) -> list[str] | None:
    """Return the scopes *view* declares for *method*, or ``None`` if it declares none."""
    declared = getattr(view, "required_scopes", None)
    if isinstance(declared, Mapping):
        action = getattr(view, "action", None)
        method = method.upper()
        candidates = [action, method, "GET" if method == "HEAD" else None]
        declared = next((declared[key] for key in candidates if key in declared), None)
    return _scope_list(declared)


class HasScope(BasePermission):
    """Allow the request only when the credential holds **every** required scope.

    Token credentials are judged by ``request.auth.has_scope`` (granted scopes,
    implications, and what the owner may still hold). Other authenticated
    users (sessions) pass when the grant policy lets them hold each scope.
    """

    message = _("This endpoint declares no scope for this request.")
    require_all = True

    def has_permission(self, request: Request, view: APIView) -> bool:
        required = required_scopes(view, request.method or "")
        if required is None:
            logger.warning(
                "%s declares no required_scopes for %s", type(view).__name__, request.method
            )
            return False
        user = request.user
        if not (user and user.is_authenticated):
            return False  # DRF answers 401 with the authentication challenge
        credential = request.auth
        if hasattr(credential, "has_scope"):
            held = [name for name in required if credential.has_scope(name)]
        elif credential is None:
            held = [name for name in required if scopes.may_hold(user, name)]
        else:
            held = []  # a credential type we cannot judge: fail closed
        if (len(held) == len(required)) if self.require_all else bool(held):
            return True
        raise InsufficientScope(required, challenge=credential is not None)


class HasAnyScope(HasScope):
    """Allow the request when the credential holds **at least one** required scope."""

    require_all = False
