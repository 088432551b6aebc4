"""One translation of service errors into DRF errors (``tokens_app.exceptions.api_error``).

The token API answers through it whatever ``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` a
project sets: these tests run the token API under DRF's own default handler.
"""

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError
from django.db import OperationalError
from rest_framework import exceptions

from tests.helpers import bearer
from tokens_app import services
from tokens_app.exceptions import ServiceUnavailable, api_error
from tokens_app.jwt.denylist import DenyListUnavailable

LIST = "/api/tokens/"


@pytest.fixture
def drf_default_handler(settings: Any) -> None:
    """The project's REST_FRAMEWORK without our EXCEPTION_HANDLER: DRF's default answers."""
    configured = dict(settings.REST_FRAMEWORK)
    configured.pop("EXCEPTION_HANDLER", None)
    settings.REST_FRAMEWORK = configured


@pytest.mark.parametrize(
    ("raised", "expected", "status_code"),
    [
        (services.NotPermitted("Not yours."), exceptions.PermissionDenied, 403),
        (ValidationError({"name": ["Taken."]}), exceptions.ValidationError, 400),
        (ValidationError("Wrong."), exceptions.ValidationError, 400),
        (services.TooManyAttempts(7), exceptions.Throttled, 429),
        (services.RateLimiterUnavailable(), ServiceUnavailable, 503),
        (DenyListUnavailable(), ServiceUnavailable, 503),
        (OperationalError("connection refused"), ServiceUnavailable, 503),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_each_service_error_has_one_drf_error(raised, expected, status_code):
    translated = api_error(raised)
    assert type(translated) is expected
    assert translated.status_code == status_code


def test_the_translation_keeps_reasons_and_fields_and_hides_faults():
    assert api_error(services.NotPermitted("Not yours.")).detail == "Not yours."
    keyed = api_error(ValidationError({"name": ["Taken."], "__all__": ["Both."]})).detail
    assert keyed == {"name": ["Taken."], "non_field_errors": ["Both."]}
    assert api_error(ValidationError("Wrong.")).detail == {"non_field_errors": ["Wrong."]}
    assert api_error(services.TooManyAttempts(7)).wait == 7
    fault = api_error(OperationalError("password authentication failed for user x"))
    assert "password" not in str(fault.detail)


def test_exceptions_of_no_known_kind_pass_through_unchanged():
    for other in (KeyError("x"), DjangoPermissionDenied(), exceptions.NotFound()):
        assert api_error(other) is other


@pytest.mark.django_db
def test_token_api_gives_the_authority_reason_under_drfs_default_handler(
    drf_default_handler, api, alice, issue
):
    # DRF's default handler would answer Django's PermissionDenied with its generic message.
    own = issue(alice, ["tokens:read"]).plaintext
    response = api.get(LIST, {"all": "true"}, **bearer(own))
    assert response.status_code == 403
    assert response.json() == {"detail": "Only token managers may list every token."}


@pytest.mark.django_db
def test_token_api_keys_service_errors_by_field_under_drfs_default_handler(
    drf_default_handler, api, alice, issue
):
    # DRF's default handler knows nothing of Django's ValidationError: it would be a 500.
    issue(alice, name="taken")
    own = issue(alice, ["tokens:write", "notes:read"]).plaintext
    response = api.post(LIST, {"name": "taken", "scopes": ["notes:read"]}, **bearer(own))
    assert response.status_code == 400
    assert list(response.json()) == ["name"]
