"""Email backends for the expiry-notice tests: a server that is down, one that refuses
one address, one that holds a run in the middle of sending.

Named by dotted path in ``EMAIL_BACKEND`` (here and in a child ``manage.py``).
"""

import threading
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


class HeldBackend(LocmemBackend):
    """Delivers once the test lets go: holds a run inside its transaction, rows locked.

    ``sending`` is set when a run reaches the send; the send waits for ``release``.
    """

    sending = threading.Event()
    release = threading.Event()

    def send_messages(self, messages: Sequence[EmailMessage]) -> int:
        self.sending.set()
        self.release.wait(timeout=60)  # the test sets it, also when it fails
        return super().send_messages(messages)
