"""Django app configuration: registers system checks and the settings reload hook."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TokensAppConfig(AppConfig):
    name = "tokens_app"
    verbose_name = _("API tokens")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported for their side effects: check registration and signal wiring.
        from tokens_app import checks, conf, schema  # noqa: F401
        from tokens_app.services import owners

        owners.connect()
