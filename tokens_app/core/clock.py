"""The one clock of the app: a seam tests move instead of sleeping."""

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    """Return the current aware time; every expiry and interval rule reads this."""
    return timezone.now()
