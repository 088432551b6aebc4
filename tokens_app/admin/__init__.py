"""The token console in the Django admin: issue (shown once), list, inspect, revoke, audit.

Tokens are credentials: no deletion, no secret or hash on screen, and every change
goes through ``services``. Staff without the manage-all right see only their own
tokens, and any URL about another token answers exactly like a missing one.

Django's admin autodiscovery imports this package, which registers each model admin
once, where it is defined: the token console in ``admin.tokens``, the audit events in
``admin.events``; ``admin.forms`` and ``admin.filters`` serve the console.
"""

from tokens_app.admin.events import TokenEventAdmin, TokenEventInline
from tokens_app.admin.tokens import APITokenAdmin

__all__ = ["APITokenAdmin", "TokenEventAdmin", "TokenEventInline"]
