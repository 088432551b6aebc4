"""What the discovery documents say: RFC 8414 and RFC 9728 metadata, from settings alone.

Both documents follow from what is configured already (``JWT_ISSUER``, ``JWT_ALGORITHM``,
``SCOPES``) and from which endpoints the project routes, so there is no second place to
describe the server and nothing to keep in step. The adapter (``tokens_app.api.wellknown``)
finds the routed URLs; a member whose endpoint is not routed is left out rather than
pointing at a 404.

What this server is, honestly: a resource server that is its own token issuer, with
introspection (RFC 7662), revocation (RFC 7009) and a JWKS, but no OAuth authorization
endpoint and no RFC 6749 token endpoint (API tokens are issued by the admin, commands, the
token API and the password exchange; JWTs by ``POST /api/auth/jwt/``, which takes an API
token rather than an OAuth grant). README's "Discovery" section explains each choice.
"""

from dataclasses import dataclass
from typing import Any

from tokens_app.conf import token_settings
from tokens_app.core import scopes

#: How an introspection caller may authenticate: as an RFC 6749 client (HTTP Basic or form
#: fields, the calling token's key id and the token itself), or by presenting the token as a
#: bearer token. RFC 8414 §2 takes these names from two registries: the token endpoint
#: authentication methods, and the access token types (``Bearer``).
INTROSPECTION_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "Bearer")
#: Revocation needs no client authentication: holding a token is the right to revoke it.
#: Said explicitly, with RFC 7591's ``none``, because RFC 8414 reads an omitted list as
#: ``client_secret_basic``.
REVOCATION_AUTH_METHODS = ("none",)
#: RFC 6750 §2.1 only: tokens are never accepted in a form body or in the URL.
BEARER_METHODS = ("header",)


@dataclass(frozen=True)
class Endpoints:
    """The absolute URLs of the endpoints the project routes; ``None`` for one it does not."""

    jwks: str | None = None
    introspection: str | None = None
    revocation: str | None = None
    #: The RFC 8414 document itself: RFC 9728's ``authorization_servers`` names the issuer
    #: only when a client can fetch its metadata here.
    authorization_server_metadata: str | None = None


def authorization_server_metadata(endpoints: Endpoints) -> dict[str, Any]:
    """The RFC 8414 document: the issuer, its keys, scopes and endpoints.

    ``response_types_supported`` (REQUIRED by §2) and ``grant_types_supported`` are
    empty lists rather than absent, the one departure from §3.2 (empty members are
    omitted): an omitted ``grant_types_supported`` means ``["authorization_code",
    "implicit"]``, and there is no authorization endpoint and no grant here.
    """
    document: dict[str, Any] = {"issuer": token_settings().jwt.issuer}
    _put(document, "jwks_uri", _jwks_uri(endpoints))
    _put(document, "scopes_supported", declared_scopes())
    document["response_types_supported"] = []
    document["grant_types_supported"] = []
    if endpoints.introspection is not None:
        document["introspection_endpoint"] = endpoints.introspection
        document["introspection_endpoint_auth_methods_supported"] = [*INTROSPECTION_AUTH_METHODS]
    if endpoints.revocation is not None:
        document["revocation_endpoint"] = endpoints.revocation
        document["revocation_endpoint_auth_methods_supported"] = [*REVOCATION_AUTH_METHODS]
    return document


def protected_resource_metadata(resource: str, endpoints: Endpoints) -> dict[str, Any]:
    """The RFC 9728 document of the API at *resource* (an absolute URL without a fragment).

    The issuer is the one authorization server, listed when its RFC 8414 document is
    routed; the JWKS is the issuer's (this server signs no responses of its own).
    """
    document: dict[str, Any] = {"resource": resource}
    if endpoints.authorization_server_metadata is not None:
        document["authorization_servers"] = [token_settings().jwt.issuer]
    _put(document, "jwks_uri", _jwks_uri(endpoints))
    _put(document, "scopes_supported", declared_scopes())
    document["bearer_methods_supported"] = [*BEARER_METHODS]
    return document


def declared_scopes() -> list[str]:
    """Every declared scope, by name: what a token may be issued with here."""
    return [scope.name for scope in scopes.registry()]


def _jwks_uri(endpoints: Endpoints) -> str | None:
    """The JWKS URL when it has a key in it: HS256 JWTs cannot be verified elsewhere."""
    if token_settings().jwt.algorithm == "HS256":
        return None
    return endpoints.jwks


def _put(document: dict[str, Any], member: str, value: str | list[str] | None) -> None:
    """Add *member* unless it has nothing to say (RFC 8414 §3.2, RFC 9728 §3.2)."""
    if value:
        document[member] = value
