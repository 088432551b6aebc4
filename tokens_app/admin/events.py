"""The audit trail in the admin: a token's events on its page, and the list of all events.

Read only: events are written by ``services`` alone, and staff see only the events of the
tokens they may see. The token console that shows :class:`TokenEventInline` is
``admin.tokens``; both register when ``tokens_app.admin`` is imported.
"""

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from tokens_app import services
from tokens_app.models import APIToken, TokenEvent

if TYPE_CHECKING:
    _EventAdminBase = admin.ModelAdmin[TokenEvent]
    _EventInlineBase = admin.TabularInline[TokenEvent, APIToken]
else:  # ModelAdmin is generic only in the type stubs
    _EventAdminBase = admin.ModelAdmin
    _EventInlineBase = admin.TabularInline

_EVENT_FIELDS = ("created_at", "kind", "actor", "ip", "via", "detail")


class TokenEventInline(_EventInlineBase):
    model = TokenEvent
    fields = readonly_fields = _EVENT_FIELDS
    extra = 0
    can_delete = False
    ordering = ("-created_at", "-id")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # whoever may see the token may see its history

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit trail is written by services only

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TokenEvent)
class TokenEventAdmin(_EventAdminBase):
    list_display = ("created_at", "kind", "key_id", "actor", "ip", "via")
    list_filter = ("kind", ("actor", admin.RelatedOnlyFieldListFilter), "created_at")
    list_select_related = ("actor",)
    search_fields = ("key_id",)
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "created_at",
        "kind",
        "key_id",
        "token",
        "actor",
        "ip",
        "via",
        "detail",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[TokenEvent]:
        # Why: staff who manage only their own tokens see only those tokens' events.
        return services.visible_events(request.user, super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
