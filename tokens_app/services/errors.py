"""The refusals services raise besides ``ValidationError``; adapters translate them once each."""

from typing import Any

from django.core.exceptions import PermissionDenied


class NotPermitted(PermissionDenied):
    """The credential may not do this; the message says why (shown to the caller)."""

    def __init__(self, message: Any) -> None:
        super().__init__(message)
        self.message = message
