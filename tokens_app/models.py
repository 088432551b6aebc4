"""``APIToken`` and its audit trail ``TokenEvent``.

The secret is never stored: only its hash. Whether a token authenticates is one rule
in two forms, kept equal by test: ``APIToken.status()`` for a loaded token and
:func:`status_conditions` (``APIToken.objects.with_status()``, ``usable()``) for a
query; everything else asks them.
"""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models, router
from django.db.models import Q
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from tokens_app.core import clock, limits, scopes, tokenstring


class TokenStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    EXPIRED = "expired", _("Expired")
    REVOKED = "revoked", _("Revoked")
    OWNER_INACTIVE = "owner_inactive", _("Owner inactive")


def _owner_can_be_inactive() -> bool:
    # Custom user models without an ``is_active`` field are always active.
    return any(field.name == "is_active" for field in get_user_model()._meta.get_fields())


def token_database() -> str:
    """The database alias token writes go to, as the router decides.

    Transactions must be opened there (``transaction.atomic(using=...)``), not on
    ``default``: with a router, a lock or a check outside the right transaction
    protects nothing.
    """
    return router.db_for_write(APIToken)


def status_conditions(now: datetime) -> dict[TokenStatus, Q]:
    """The one validity rule, as the condition a token row meets in each status at *now*.

    A token is revoked, else expired (its expiry is not after *now*), else refused for
    its owner's inactivity, else active. ``APIToken.status()`` decides the same for one
    loaded token, in the same order; ``tests/tokens/test_models.py`` holds them equal.
    """
    revoked = Q(revoked_at__isnull=False)
    expired = Q(revoked_at__isnull=True, expires_at__lte=now)
    live = Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    if not _owner_can_be_inactive():
        return {
            TokenStatus.REVOKED: revoked,
            TokenStatus.EXPIRED: expired,
            TokenStatus.OWNER_INACTIVE: Q(pk__in=[]),
            TokenStatus.ACTIVE: live,
        }
    return {
        TokenStatus.REVOKED: revoked,
        TokenStatus.EXPIRED: expired,
        TokenStatus.OWNER_INACTIVE: live & Q(owner__is_active=False),
        TokenStatus.ACTIVE: live & Q(owner__is_active=True),
    }


class APITokenQuerySet(models.QuerySet["APIToken"]):
    def unrevoked(self) -> "APITokenQuerySet":
        """Tokens nobody revoked (active, expired or with an inactive owner)."""
        return self.filter(revoked_at__isnull=True)

    def with_status(self, status: str, now: datetime | None = None) -> "APITokenQuerySet":
        """Tokens in *status* (a ``TokenStatus`` value) at *now*; none for an unknown value."""
        if status not in TokenStatus.values:
            return self.none()
        return self.filter(status_conditions(now or clock.now())[TokenStatus(status)])

    def usable(self, now: datetime | None = None) -> "APITokenQuerySet":
        """Tokens that authenticate right now: ``with_status(ACTIVE)``."""
        return self.with_status(TokenStatus.ACTIVE, now)

    def for_owner(self, owner: Any) -> "APITokenQuerySet":
        return self.filter(owner=owner)

    def prunable(self, cutoff: datetime) -> "APITokenQuerySet":
        """Tokens that ended (were revoked, or expired) at or before *cutoff*.

        A token ends at whichever comes first, so either moment counts: a token revoked
        long ago is as dead as one that expired long ago, even if its expiry lies in
        the future. Active and non-expiring unrevoked tokens never match. This is the
        one rule ``prune_tokens`` deletes by; it re-applies it at delete time so a row
        that changed since it was counted is left alone.
        """
        return self.filter(Q(revoked_at__lte=cutoff) | Q(expires_at__lte=cutoff))


class APIToken(models.Model):
    """A hashed, scoped, expiring, revocable credential owned by one user."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_tokens",
        verbose_name=_("owner"),
    )
    name = models.CharField(_("name"), max_length=limits.NAME_LENGTH)
    description = models.TextField(
        _("description"), blank=True, max_length=limits.DESCRIPTION_LENGTH
    )
    key_id = models.CharField(
        _("key id"),
        max_length=tokenstring.KEY_ID_LENGTH,
        unique=True,
        editable=False,
        help_text=_("The token's public identifier. The secret part is never stored."),
    )
    secret_hash = models.CharField(_("secret hash"), max_length=255, editable=False)
    # After a rotation with a grace period, the old secret's hash and when it stops working.
    previous_secret_hash = models.CharField(max_length=255, blank=True, editable=False)
    previous_secret_valid_until = models.DateTimeField(null=True, blank=True, editable=False)
    scopes = models.JSONField(_("scopes"), default=list)
    created_at = models.DateTimeField(_("created at"), default=clock.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("created by"),
    )
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True, db_index=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("revoked by"),
    )
    revoke_reason = models.CharField(
        _("revoke reason"), max_length=limits.REASON_LENGTH, blank=True
    )
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(_("last used IP"), null=True, blank=True)
    # Guardrails; they travel with the row that authentication already fetches (no extra SQL).
    allowed_ips = models.JSONField(
        _("allowed IP addresses"),
        default=list,
        blank=True,
        help_text=_("Networks (CIDR) the token works from; empty means anywhere."),
    )
    rate_limit = models.CharField(
        _("rate limit"),
        max_length=limits.RATE_LENGTH,
        blank=True,
        help_text=_("Requests per period, such as 1000/h; empty means the configured default."),
    )
    # Lineage: the token whose request created this one, if any. Everything derived from a
    # token stays within it (services.authority) and is revoked with it.
    parent = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="children",
        verbose_name=_("created by token"),
    )
    #: ``[[key id, rate limit], ...]`` of every ancestor, root first: the budgets this
    #: token's requests also count against, read from the row authentication fetches.
    ancestry = models.JSONField(_("ancestry"), default=list, blank=True, editable=False)
    #: Counts rotations; JWTs carry the version of the secret that minted them, so the
    #: deny list can retire a rotated secret's JWTs when the secret itself stops.
    secret_version = models.PositiveIntegerField(_("secret version"), default=1, editable=False)
    #: Set on a token created by its parent's *previous* secret during a rotation grace:
    #: that secret's version. Such a token ends when that secret does, even when a later
    #: rotation cuts the grace short (``services.rotate_token`` revokes it then).
    grace_of_version = models.PositiveIntegerField(
        _("created by the parent's previous secret"), null=True, blank=True, editable=False
    )

    #: Set by authentication on the instance it returns (never stored): when the request
    #: presented the previous secret of a rotation grace, the moment that secret stops.
    presented_grace_until: datetime | None = None
    #: Set by the request path's lookup (never stored) when the row came from the token
    #: cache (``tokens_app.invalidation``), which may trail the database by up to its
    #: maximum lag: ``services.authority`` reads such a row again before it derives,
    #: changes or revokes anything with it.
    from_token_cache: bool = False

    objects = APITokenQuerySet.as_manager()

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ("-created_at",)
        permissions = [("manage_all_tokens", _("Can see and manage every user's API tokens"))]
        indexes = [models.Index(fields=["owner", "name"], name="tokens_app_owner_name_idx")]

    def __str__(self) -> str:
        # The key id and name only: never anything secret.
        return f"{self.name} ({self.key_id})"

    def status(self, now: datetime | None = None) -> TokenStatus:
        """Return why this token does or does not authenticate, in ``status_conditions``'s order."""
        now = now or clock.now()
        if self.revoked_at is not None:
            return TokenStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return TokenStatus.EXPIRED
        if not getattr(self.owner, "is_active", True):
            return TokenStatus.OWNER_INACTIVE
        return TokenStatus.ACTIVE

    def is_usable(self, now: datetime | None = None) -> bool:
        """Return whether this token authenticates right now: ``status()`` is active."""
        return self.status(now) is TokenStatus.ACTIVE

    @cached_property
    def effective_scopes(self) -> frozenset[str]:
        """The scopes this token may exercise now: granted, implied, and still holdable."""
        return scopes.effective_scopes(self.scopes, self.owner)

    def has_scope(self, name: str) -> bool:
        """Return whether this token may exercise scope *name* right now."""
        return name in self.effective_scopes


class TokenEvent(models.Model):
    """One entry of the audit trail, written in the transaction of the action it records."""

    class Kind(models.TextChoices):
        ISSUED = "issued", _("Issued")
        REVOKED = "revoked", _("Revoked")
        ROTATED = "rotated", _("Rotated")
        UPDATED = "updated", _("Updated")
        EXPIRY_NOTICE = "expiry_notice", _("Expiry notice sent")

    token = models.ForeignKey(
        APIToken,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="events",
        verbose_name=_("token"),
    )
    # A copy, so events stay meaningful after the token row is pruned.
    key_id = models.CharField(_("key id"), max_length=tokenstring.KEY_ID_LENGTH, db_index=True)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    created_at = models.DateTimeField(_("at"), default=clock.now, db_index=True)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    via = models.CharField(_("via"), max_length=20, blank=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    class Meta:
        verbose_name = _("token event")
        verbose_name_plural = _("token events")
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.key_id}"
