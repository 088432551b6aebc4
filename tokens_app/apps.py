"""Django app configuration: registers system checks, the OpenAPI extensions and signal wiring."""

import importlib.util

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TokensAppConfig(AppConfig):
    name = "tokens_app"
    verbose_name = _("API tokens")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported for their side effects: check registration and signal wiring.
        from django.contrib.auth import get_user_model

        from tokens_app import checks, conf, invalidation  # noqa: F401
        from tokens_app.services import owners

        owners.connect()
        invalidation.connect(get_user_model())
        if openapi_available():
            # drf-spectacular finds extensions by subclass registration at import time.
            from tokens_app.api import schema  # noqa: F401


def openapi_available() -> bool:
    """Whether drf-spectacular is installed: the schema extensions are optional."""
    return importlib.util.find_spec("drf_spectacular") is not None
