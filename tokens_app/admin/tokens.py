"""The token console: issue (shown once), list, inspect, change, revoke one or all of an owner's.

Tokens are credentials: no deletion, no secret or hash on screen, and every change
goes through ``services``. Staff without the manage-all right see only their own
tokens, and any URL about another token answers exactly like a missing one. A token's
history is ``admin.events``; the forms and filters are ``admin.forms`` and ``admin.filters``.
"""

from collections.abc import Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from tokens_app import services
from tokens_app.admin.events import TokenEventInline
from tokens_app.admin.filters import ScopeFilter, StatusFilter, display_status
from tokens_app.admin.forms import IssueTokenForm, RevokeForm, TokenChangeForm, add_service_errors
from tokens_app.core import clock
from tokens_app.models import APIToken
from tokens_app.services.caller import Caller, Via

if TYPE_CHECKING:
    _TokenAdminBase = admin.ModelAdmin[APIToken]
else:  # ModelAdmin is generic only in the type stubs
    _TokenAdminBase = admin.ModelAdmin

TEMPLATES = "admin/tokens_app/apitoken/"
FROZEN_GUARDRAILS = ("allowed_ips", "rate_limit")


@admin.register(APIToken)
class APITokenAdmin(_TokenAdminBase):
    list_display = (
        "name",
        "key_id",
        "owner",
        "scope_list",
        "status_badge",
        "expires_at",
        "last_used",
        "created_by",
    )
    list_select_related = ("owner", "created_by")
    list_filter = (StatusFilter, ScopeFilter, ("owner", admin.RelatedOnlyFieldListFilter))
    # Only public fields: a search term ends up in access logs and browser history.
    search_fields = ("name", "key_id", "owner__username", "owner__email")
    date_hierarchy = "created_at"
    actions = ("revoke_selected",)
    empty_value_display = "—"
    inlines = (TokenEventInline,)
    form = TokenChangeForm
    readonly_fields = (
        "key_id",
        "owner",
        "status_badge",
        "scope_list",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "last_used_at",
        "last_used_ip",
    )

    # --- who sees what ------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[APIToken]:
        # Why: the single visibility rule of services, not a copy of it.
        return services.visible_tokens(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked tokens stay for the record; pruning is a command

    def _visible_or_404(self, request: HttpRequest, object_id: str) -> APIToken:
        token = self.get_object(request, unquote(object_id))
        if token is None:
            raise Http404  # why: identical for "not yours" and "does not exist"
        return token

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        # Why: Django redirects with a message naming the id; we answer a plain 404.
        self._visible_or_404(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        self._visible_or_404(request, object_id)
        return super().history_view(request, object_id, extra_context)

    # --- columns ------------------------------------------------------------------------

    @admin.display(description=_("scopes"))
    def scope_list(self, token: APIToken) -> str:
        return ", ".join(token.scopes)

    @admin.display(description=_("status"))
    def status_badge(self, token: APIToken) -> str:
        key, label = display_status(token, clock.now())
        return format_html('<span class="token-status token-status-{}">{}</span>', key, label)

    @admin.display(description=_("last used"), ordering="last_used_at")
    def last_used(self, token: APIToken) -> str:
        if token.last_used_at is None:
            return "—"
        return f"{token.last_used_at:%Y-%m-%d %H:%M} ({token.last_used_ip or '?'})"

    # --- change view --------------------------------------------------------------------

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = cast(type[TokenChangeForm], super().get_form(request, obj, change, **kwargs))
        form.actor = request.user  # why: the service's rules depend on who changes what
        if not services.can_manage_all(request.user) or (obj and obj.revoked_at):
            form.base_fields.pop("scopes", None)  # only managers change scopes, never when revoked
        if obj and obj.revoked_at:
            for guardrail in FROZEN_GUARDRAILS:
                form.base_fields.pop(guardrail, None)
        return form

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.revoked_at is not None:
            # A revoked token is frozen.
            return (*self.readonly_fields, "name", "description", *FROZEN_GUARDRAILS)
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: APIToken, form: Any, change: bool) -> None:
        # Why: the form was validated against the same service call, so this only applies it.
        services.update_token(
            form.stored,
            caller=Caller.of_request(request, Via.ADMIN),
            **form.update_arguments(),
        )

    def _render(
        self, request: HttpRequest, template: str, title: Any, **extra: Any
    ) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "title": title, "opts": self.opts}
        return TemplateResponse(request, TEMPLATES + template, {**context, **extra})

    # --- issuing ------------------------------------------------------------------------

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        # Why: issuing is a service call whose answer (the plaintext) is shown once, not a save.
        if not self.has_add_permission(request):
            raise PermissionDenied
        owner = self._requested_owner(request)
        form = IssueTokenForm(
            request.POST or None, actor=request.user, admin_site=self.admin_site, owner=owner
        )
        if request.method == "POST" and form.is_valid():
            try:
                issued = services.issue_token(
                    form.cleaned_data["owner"],
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                    scopes=form.cleaned_data["scopes"],
                    allowed_ips=form.cleaned_data["allowed_ips"],
                    rate_limit=form.cleaned_data["rate_limit"],
                    caller=Caller.of_request(request, Via.ADMIN),
                    **form.expiry_arguments(),
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                self.log_addition(request, issued.token, [{"added": {}}])
                return self._issued_response(request, issued)
        return self._render(
            request, "issue.html", _("Issue an API token"), form=form, media=self.media + form.media
        )

    def _requested_owner(self, request: HttpRequest) -> Any:
        # Why: the scope checkboxes offer what the chosen owner may hold.
        owner_id = request.POST.get("owner") or request.GET.get("owner")
        if owner_id and services.can_manage_all(request.user):
            users = get_user_model()._default_manager.filter(is_active=True)
            try:
                return users.get(pk=owner_id)
            except (users.model.DoesNotExist, ValueError, ValidationError):
                pass  # an unusable owner id: the form reports it on submit
        return request.user

    def _issued_response(self, request: HttpRequest, issued: services.IssuedToken) -> HttpResponse:
        response = self._render(
            request,
            "issued.html",
            _("Token issued"),
            token=issued.token,
            plaintext=issued.plaintext,
        )
        response["Cache-Control"] = "no-store"
        return response

    # --- revoking -----------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        revoke = path(
            "<path:object_id>/revoke/",
            self.admin_site.admin_view(self.revoke_view),
            name="tokens_app_apitoken_revoke",
        )
        revoke_all = path(
            "revoke-all/<path:owner_id>/",
            self.admin_site.admin_view(self.revoke_all_view),
            name="tokens_app_apitoken_revoke_all",
        )
        return [revoke_all, revoke, *super().get_urls()]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        token = self._visible_or_404(request, object_id)
        if not self.has_change_permission(request, token):
            raise PermissionDenied
        form = RevokeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            revoked = self._revoke(request, [token], form)
            message = _("Revoked %(token)s.") if revoked else _("%(token)s was already revoked.")
            messages.success(request, message % {"token": token})
            return HttpResponseRedirect(
                reverse("admin:tokens_app_apitoken_change", args=[token.pk])
            )
        return self._revoke_confirmation(request, [token], form, action=None)

    # --- revoking every token of one owner ---------------------------------------------

    def owner_filter_parameter(self) -> str:
        """The changelist's query parameter that filters by owner (``owner__id__exact``)."""
        return f"owner__{get_user_model()._meta.pk.name}__exact"

    def _manageable_owner(self, request: HttpRequest, owner_id: str) -> Any:
        # Why: the same 404 for a missing user and one whose tokens the actor may not manage.
        users = get_user_model()._default_manager
        try:
            owner = users.get(pk=unquote(owner_id))
        except (users.model.DoesNotExist, ValueError, ValidationError):
            raise Http404 from None
        if not services.may_issue_for(request.user, owner):
            raise Http404
        return owner

    def revoke_all_view(self, request: HttpRequest, owner_id: str) -> HttpResponse:
        """Confirm, then revoke every token of one owner (a compromised account's first step)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        owner = self._manageable_owner(request, owner_id)
        form = RevokeForm(request.POST or None)
        changelist = reverse("admin:tokens_app_apitoken_changelist")
        back = f"{changelist}?{self.owner_filter_parameter()}={owner.pk}"
        if request.method == "POST" and form.is_valid():
            count = services.revoke_all_tokens(
                owner,
                caller=Caller.of_request(request, Via.ADMIN),
                reason=form.cleaned_data["reason"],
            )
            messages.success(
                request,
                ngettext(
                    "Revoked %(count)d token of %(owner)s.",
                    "Revoked %(count)d tokens of %(owner)s.",
                    count,
                )
                % {"count": count, "owner": owner.get_username()},
            )
            return HttpResponseRedirect(back)
        pending = services.tokens_for(owner).unrevoked()
        return self._render(
            request,
            "revoke_all_confirmation.html",
            _("Revoke every token of %(owner)s") % {"owner": owner.get_username()},
            owner=owner,
            tokens=list(pending),
            form=form,
            back=back,
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # Why: filtered by one owner, the list offers "revoke all" for that owner.
        owner_id = request.GET.get(self.owner_filter_parameter())
        context = dict(extra_context or {})
        if owner_id and self.has_change_permission(request):
            with suppress(Http404):  # offered only where it leads somewhere
                owner = self._manageable_owner(request, owner_id)
                context["revoke_all_url"] = reverse(
                    "admin:tokens_app_apitoken_revoke_all", args=[quote(owner.pk)]
                )
        return super().changelist_view(request, context)

    def _revoke(self, request: HttpRequest, tokens: Iterable[APIToken], form: RevokeForm) -> int:
        return services.revoke_tokens(
            tokens,
            caller=Caller.of_request(request, Via.ADMIN),
            reason=form.cleaned_data["reason"],
        )

    def _revoke_confirmation(
        self, request: HttpRequest, tokens: list[APIToken], form: RevokeForm, action: str | None
    ) -> HttpResponse:
        # Why: revoking a token revokes what was derived from it; say so before, not after.
        chosen = {token.pk for token in tokens}
        derived = {
            child.pk: child
            for token in tokens
            for child in services.descendants(token)
            if child.revoked_at is None and child.pk not in chosen
        }
        return self._render(
            request,
            "revoke_confirmation.html",
            _("Revoke API tokens"),
            tokens=tokens,
            derived=list(derived.values()),
            form=form,
            action=action,
            action_checkbox_name=ACTION_CHECKBOX_NAME,
        )

    @admin.action(description=_("Revoke selected tokens"), permissions=["change"])
    def revoke_selected(
        self, request: HttpRequest, queryset: QuerySet[APIToken]
    ) -> HttpResponse | None:
        form = RevokeForm(request.POST if "confirm" in request.POST else None)
        if form.is_bound and form.is_valid():
            count = self._revoke(request, queryset, form)
            messages.success(
                request,
                ngettext("Revoked %(count)d token.", "Revoked %(count)d tokens.", count)
                % {"count": count},
            )
            return None
        return self._revoke_confirmation(request, list(queryset), form, action="revoke_selected")
