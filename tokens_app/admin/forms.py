"""Admin forms: they collect input and show errors; every rule is checked by ``services``."""

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib.admin import widgets
from django.contrib.admin.sites import AdminSite
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from tokens_app import services
from tokens_app.conf import token_settings
from tokens_app.core import limits, scopes
from tokens_app.models import APIToken
from tokens_app.services.caller import Caller

if TYPE_CHECKING:
    _TokenModelForm = forms.ModelForm[APIToken]
else:  # ModelForm is generic only in the type stubs
    _TokenModelForm = forms.ModelForm

EXPIRY_PRESETS = (("7", 7), ("30", 30), ("90", 90), ("365", 365))
CUSTOM, NEVER = "custom", "never"
# Service field name -> form field name, so service errors land next to their input.
_FIELD_FOR = {
    "expires_at": "expiry",
    "owner": "owner",
    "name": "name",
    "description": "description",
    "scopes": "scopes",
    "allowed_ips": "allowed_ips",
    "rate_limit": "rate_limit",
}


def allowed_ips_field() -> forms.CharField:
    return forms.CharField(
        label=_("Allowed IP addresses"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_(
            "Addresses or CIDR networks (IPv4 or IPv6), one per line, that the token works "
            "from, e.g. 203.0.113.0/24 or 2001:db8::/32. Empty: anywhere."
        ),
    )


def rate_limit_field() -> forms.CharField:
    return forms.CharField(
        label=_("Rate limit"),
        required=False,
        max_length=limits.RATE_LENGTH,
        help_text=_("Requests per period, such as 1000/h or 10/s. Empty: the configured default."),
    )


def scope_choices(holder: Any) -> list[tuple[str, str]]:
    """Return checkbox choices: the scopes *holder* may hold, with their descriptions."""
    return [
        (scope.name, f"{scope.name} — {scope.description}" if scope.description else scope.name)
        for scope in scopes.holdable_scopes(holder)
    ]


def add_service_errors(form: forms.BaseForm, error: ValidationError) -> None:
    """Show a service ``ValidationError`` on the matching fields of *form*."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, messages in error.message_dict.items():
        target = _FIELD_FOR.get(field)
        form.add_error(target if target in form.fields else None, messages)


class IssueTokenForm(forms.Form):
    """Issue a token: owner, name, description, scopes and an expiry preset."""

    owner = forms.ModelChoiceField(
        queryset=get_user_model()._default_manager.none(), label=_("Owner")
    )
    name = forms.CharField(label=_("Name"), max_length=limits.NAME_LENGTH)
    description = forms.CharField(
        label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    scopes = forms.MultipleChoiceField(label=_("Scopes"), widget=forms.CheckboxSelectMultiple)
    expiry = forms.ChoiceField(label=_("Expires"), widget=forms.RadioSelect)
    expires_at = forms.SplitDateTimeField(
        label=_("Custom expiry"),
        required=False,
        help_text=_("Used when “Custom date” is chosen."),
        widget=widgets.AdminSplitDateTime,
    )
    allowed_ips = allowed_ips_field()
    rate_limit = rate_limit_field()

    def __init__(self, *args: Any, actor: Any, admin_site: AdminSite, owner: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.actor = actor
        users = get_user_model()._default_manager.filter(is_active=True)
        owner_field = cast(forms.ModelChoiceField, self.fields["owner"])  # type: ignore[type-arg]
        if services.can_manage_all(actor):
            # Widget first: setting the queryset afterwards binds the widget's choices.
            owner_field.widget = widgets.AutocompleteSelect(
                APIToken._meta.get_field("owner"), admin_site
            )
            owner_field.queryset = users
        else:
            owner_field.queryset = users.filter(pk=actor.pk)
        owner_field.initial = owner.pk
        self.fields["scopes"].choices = scope_choices(owner)  # type: ignore[attr-defined]
        self.fields["expiry"].choices = self._expiry_choices()  # type: ignore[attr-defined]
        self.fields["expiry"].initial = "30"

    def _expiry_choices(self) -> list[tuple[str, Any]]:
        conf = token_settings()
        limit = conf.max_lifetime
        choices: list[tuple[str, Any]] = [
            (key, _("%(days)d days") % {"days": days})
            for key, days in EXPIRY_PRESETS
            if limit is None or timedelta(days=days) <= limit
        ]
        choices.append((CUSTOM, _("Custom date")))
        if conf.allow_non_expiring:
            choices.append((NEVER, _("Never")))
        return choices

    def expiry_arguments(self) -> dict[str, Any]:
        """Return the expiry keyword arguments for ``services.issue_token``."""
        choice = self.cleaned_data["expiry"]
        if choice == NEVER:
            return {"never_expires": True}
        if choice == CUSTOM:
            moment: datetime | None = self.cleaned_data.get("expires_at")
            if moment is None:
                raise ValidationError({"expires_at": _("Choose the custom expiry date.")})
            return {"expires_at": moment}
        return {"expires_in": timedelta(days=int(choice))}


class TokenChangeForm(_TokenModelForm):
    """Change name and description, and scopes for those who manage every token."""

    scopes = forms.MultipleChoiceField(
        label=_("Scopes"), widget=forms.CheckboxSelectMultiple, required=False
    )
    allowed_ips = allowed_ips_field()
    rate_limit = rate_limit_field()

    class Meta:
        model = APIToken
        fields = ("name", "description")

    #: Set by the admin on the form class it builds for one request.
    actor: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Pristine values: the ModelForm writes the new ones onto the instance while cleaning.
        self.stored = APIToken.objects.select_related("owner").get(pk=self.instance.pk)
        if "scopes" in self.fields:  # only for those who may change scopes
            field = cast(forms.MultipleChoiceField, self.fields["scopes"])
            field.choices = scope_choices(self.instance.owner)
            self.initial["scopes"] = list(self.instance.scopes)
        self.initial["allowed_ips"] = "\n".join(self.stored.allowed_ips)
        self.initial["rate_limit"] = self.stored.rate_limit

    def update_arguments(self) -> dict[str, Any]:
        """Return the keyword arguments for ``services.update_token``."""
        data = self.cleaned_data
        arguments = {"name": data.get("name"), "description": data.get("description")}
        for guardrail in ("allowed_ips", "rate_limit"):
            if guardrail in self.fields:  # gone from the form of a revoked token
                arguments[guardrail] = data.get(guardrail, "")
        if "scopes" in self.fields:
            arguments["scopes"] = data.get("scopes", [])
        return arguments

    def clean(self) -> dict[str, Any]:
        # Why: the service's rules decide; the form only shows their verdict before saving.
        cleaned = super().clean() or {}
        if not self.errors:
            try:
                services.plan_token_update(
                    self.stored, caller=Caller(user=self.actor), **self.update_arguments()
                )
            except ValidationError as error:
                add_service_errors(self, error)
        return cleaned


class RevokeForm(forms.Form):
    """Confirm a revocation, with a reason for the audit trail."""

    reason = forms.CharField(
        label=_("Reason"),
        max_length=limits.REASON_LENGTH,
        required=False,
        help_text=_("Kept with the token and in its audit trail."),
    )
