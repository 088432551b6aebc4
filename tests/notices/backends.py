"""Email backends for the expiry-notice tests: a server that is down, one that refuses
one address, one that holds a run in the middle of sending.

Named by dotted path in ``EMAIL_BACKEND`` (here and in a child ``manage.py``).
"""

import threading
import time
from collections.abc import Sequence

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend


class FailingBackend(BaseEmailBackend):
    """A mail server that is down: every send raises, as an SMTP backend would."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        raise ConnectionRefusedError("mail server down")


class FailingForBobBackend(LocmemBackend):
    """Delivers to ``mail.outbox`` but refuses bob's address: one owner fails, not all."""

    def send_messages(self, messages: Sequence[EmailMessage]) -> int:
        if any("bob@example.com" in message.to for message in messages):
            raise OSError("mailbox bob@example.com unavailable\nsecond line")
        return super().send_messages(messages)


class SlowBackend(LocmemBackend):
    """Delivers, but slowly: long enough for a concurrent run to reach the same owner."""

    sending = threading.Event()

    def send_messages(self, messages: Sequence[EmailMessage]) -> int:
        self.sending.set()
        time.sleep(1)
        return super().send_messages(messages)
