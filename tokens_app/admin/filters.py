"""Change-list filters and the status badge of the token admin."""

from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from tokens_app.core import clock, scopes
from tokens_app.models import APIToken, TokenStatus

#: A usable token that expires within this window is shown as "expiring soon".
EXPIRING_SOON = timedelta(days=7)
_EXPIRING = "expiring"


def display_status(token: APIToken, now: datetime) -> tuple[str, str]:
    """Return ``(key, label)`` for the badge: the model's status, plus "expiring soon"."""
    status = token.status(now)
    if (
        status is TokenStatus.ACTIVE
        and token.expires_at
        and token.expires_at - now <= EXPIRING_SOON
    ):
        return _EXPIRING, str(_("Expiring soon"))
    return status.value, str(status.label)


class StatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            (TokenStatus.ACTIVE.value, TokenStatus.ACTIVE.label),
            (_EXPIRING, _("Expiring soon")),
            (TokenStatus.EXPIRED.value, TokenStatus.EXPIRED.label),
            (TokenStatus.REVOKED.value, TokenStatus.REVOKED.label),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[APIToken]) -> QuerySet[APIToken]:
        now = clock.now()
        value = self.value()
        if value == _EXPIRING:
            usable = APIToken.objects.usable(now).values("pk")
            return queryset.filter(pk__in=usable, expires_at__lte=now + EXPIRING_SOON)
        return queryset.with_status(value, now) if value else queryset  # type: ignore[attr-defined]


class ScopeFilter(admin.SimpleListFilter):
    title = _("scope")
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(scope.name, scope.name) for scope in scopes.registry()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[APIToken]) -> QuerySet[APIToken]:
        name = self.value()
        if name is None or name not in scopes.registry():
            return queryset
        # The JSON text holds each scope quoted, on SQLite and PostgreSQL alike.
        as_text = queryset.annotate(scopes_text=Cast("scopes", output_field=TextField()))
        return as_text.filter(scopes_text__contains=f'"{name}"')
