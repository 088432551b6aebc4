"""Serializers of the token API: shapes and types only; the rules are in ``services``."""

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from tokens_app.core import clock, limits
from tokens_app.core.scopes import MAX_SCOPE_NAME_LENGTH
from tokens_app.models import APIToken


class StringField(serializers.CharField):
    """A ``CharField`` that takes only strings: DRF's turns the number ``5`` into ``"5"``.

    For values that are strings by nature (a token): a number there is a client's
    mistake, and answering it as if it were a string would hide it.
    """

    default_error_messages = {"not_a_string": _("Not a valid string.")}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer[Any]):
    """Reject fields the endpoint does not know: a typo must not be silently ignored."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: [_("Unknown field.")] for name in unknown})
        return attrs


class TokenSerializer(serializers.Serializer[APIToken]):
    """A token's public metadata: never a secret, never a hash."""

    id = serializers.CharField(source="key_id", read_only=True)
    name = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
    scopes = serializers.ListField(child=serializers.CharField(), read_only=True)
    status = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_used_ip = serializers.IPAddressField(read_only=True, allow_null=True)
    revoked_at = serializers.DateTimeField(read_only=True, allow_null=True)
    allowed_ips = serializers.ListField(child=serializers.CharField(), read_only=True)
    rate_limit = serializers.CharField(read_only=True)

    def get_status(self, token: APIToken) -> str:
        return token.status(clock.now()).value


class IssuedTokenSerializer(TokenSerializer):
    """Metadata plus the plaintext ``token``, which this response carries once.

    It serializes a ``services.IssuedToken``, so the plaintext is never attached
    to the model instance (where it could outlive this response).
    """

    token = serializers.CharField(read_only=True)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return {**super().to_representation(instance.token), "token": instance.plaintext}


def allowed_ips_field() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=limits.NETWORK_LENGTH),
        max_length=limits.ALLOWED_IPS,
        required=False,
        help_text=_("Addresses or CIDR networks the token works from; empty: anywhere."),
    )


def rate_limit_field() -> serializers.CharField:
    return serializers.CharField(
        max_length=limits.RATE_LENGTH,
        required=False,
        allow_blank=True,
        help_text=_("Requests per period, such as 1000/h; empty: the configured default."),
    )


class CreateTokenSerializer(StrictSerializer):
    name = serializers.CharField(max_length=limits.NAME_LENGTH)
    description = serializers.CharField(
        max_length=limits.DESCRIPTION_LENGTH, required=False, allow_blank=True
    )
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=MAX_SCOPE_NAME_LENGTH),
        max_length=limits.SCOPES_PER_REQUEST,
    )
    expires_in_days = serializers.IntegerField(min_value=1, max_value=36500, required=False)
    expires_at = serializers.DateTimeField(required=False)
    allowed_ips = allowed_ips_field()
    rate_limit = rate_limit_field()


class PasswordExchangeSerializer(CreateTokenSerializer):
    """The owner's credentials, plus the fields of the token to create."""

    username = serializers.CharField(max_length=150)
    password = serializers.CharField(
        max_length=4096, trim_whitespace=False, style={"input_type": "password"}
    )


class UpdateTokenSerializer(StrictSerializer):
    name = serializers.CharField(max_length=limits.NAME_LENGTH, required=False)
    description = serializers.CharField(
        max_length=limits.DESCRIPTION_LENGTH, required=False, allow_blank=True
    )
    allowed_ips = allowed_ips_field()
    rate_limit = rate_limit_field()


class RevokeAllSerializer(StrictSerializer):
    reason = serializers.CharField(
        max_length=limits.REASON_LENGTH, required=False, allow_blank=True
    )


class RotateTokenSerializer(StrictSerializer):
    grace_seconds = serializers.IntegerField(min_value=0, required=False, default=0)
