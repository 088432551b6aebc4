"""A read-only token list for now; issuing and revoking from the admin come with the admin screens.

Tokens are credentials: no add, change or delete here, and no secret or hash on screen.
"""

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from tokens_app.models import APIToken

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[APIToken]
else:  # ModelAdmin is generic only in the type stubs
    _ModelAdmin = admin.ModelAdmin


@admin.register(APIToken)
class APITokenAdmin(_ModelAdmin):
    list_display = ("name", "key_id", "owner", "scopes", "expires_at", "revoked_at", "last_used_at")
    list_select_related = ("owner",)
    search_fields = ("name", "key_id", "owner__username")
    fields = (
        "owner",
        "name",
        "description",
        "key_id",
        "scopes",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "last_used_at",
        "last_used_ip",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[APIToken]:
        # Staff who are not superusers see only their own tokens.
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(owner=request.user.pk)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issuing goes through the service, not a bare model form

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked tokens stay for the record
