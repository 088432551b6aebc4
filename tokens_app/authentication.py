"""DRF authentication by API token: a thin adapter over ``services.authenticate``."""

import logging
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from tokens_app import services
from tokens_app.client import client_ip
from tokens_app.conf import token_settings
from tokens_app.models import APIToken

logger = logging.getLogger("tokens_app.authentication")

_INVALID_FLAG = "_tokens_app_invalid_token"


class APITokenAuthentication(BaseAuthentication):
    """Authenticate ``Authorization: Bearer <token>`` (and ``X-API-Key`` when enabled).

    ``request.user`` becomes the token's owner and ``request.auth`` the token.
    Every failure answers with one generic message; the reason goes to the log,
    by key id, never with the secret.
    """

    keyword = "Bearer"

    def get_credential(self, request: Request) -> str | None:
        """Return the presented credential, or ``None`` when the request carries none of ours."""
        meta = request._request.META  # the HttpRequest's, without DRF's attribute proxy
        header = meta.get("HTTP_AUTHORIZATION", "")
        if header:
            scheme, _space, value = header.partition(" ")
            return value.strip() if scheme.lower() == self.keyword.lower() else None
        if token_settings().accept_x_api_key:
            value = meta.get("HTTP_X_API_KEY")
            return value.strip() if isinstance(value, str) else None
        return None

    def authenticate(self, request: Request) -> tuple[Any, APIToken] | None:
        credential = self.get_credential(request)
        if credential is None:
            return None
        ip = client_ip(request._request)
        try:
            token = services.authenticate(credential, ip=ip)
        except services.InvalidToken as failure:
            logger.info(
                "API token rejected: %s (key id %s, ip %s)",
                failure.reason,
                failure.key_id or "-",
                ip or "-",
            )
            # Read by authenticate_header to add error="invalid_token" (RFC 6750).
            setattr(request, _INVALID_FLAG, True)
            raise exceptions.AuthenticationFailed(
                _("Invalid token."), code="invalid_token"
            ) from None
        return token.owner, token

    def authenticate_header(self, request: Request) -> str:
        realm = token_settings().realm
        if getattr(request, _INVALID_FLAG, False):
            return f'Bearer realm="{realm}", error="invalid_token"'
        return f'Bearer realm="{realm}"'
