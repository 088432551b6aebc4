"""The public documents under ``/.well-known/``: the JWKS, RFC 8414 and RFC 9728 metadata.

Route them at the root of your URLconf (not inside a namespaced ``include``: the metadata
finds them by view, whatever you name them)::

    path(".well-known/jwks.json", wellknown.jwks),
    path(".well-known/oauth-authorization-server", wellknown.authorization_server_metadata),
    path(".well-known/oauth-protected-resource", wellknown.protected_resource_metadata),

They are plain Django views, not DRF ones: they never read a credential, so a bad
``Authorization`` header cannot turn a public document into a 401. What they say is
``services.discovery``'s; here are only the URLs this project routes and the HTTP around it.
"""

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.views.decorators.csrf import csrf_exempt

from tokens_app.jwt import signing_keys
from tokens_app.services import discovery

#: Seconds a client or shared cache may keep the JWKS: short, so a rotated key is seen soon.
JWKS_MAX_AGE = 300
#: Seconds for the metadata documents, which change only when the settings do.
METADATA_MAX_AGE = 3600
#: How long a browser may cache the answer to a CORS preflight of these documents.
PREFLIGHT_MAX_AGE = 86400
SAFE_METHODS = ("GET", "HEAD")

View = Callable[[HttpRequest], HttpResponse]


def public_document(max_age: int) -> Callable[[View], View]:
    """Serve a view as a public, cacheable document that any web origin may read.

    ``GET`` and ``HEAD`` get the view's answer with ``Cache-Control: public``; ``OPTIONS``
    answers a CORS preflight itself; any other method is a 405 (CSRF exempt, so a ``POST``
    learns that, not a CSRF failure: nothing here changes anything). Every answer carries
    ``Access-Control-Allow-Origin: *``: the documents hold no secret and are the same for
    everyone, and a browser never sends credentials with a ``*`` answer.
    """

    def decorate(view: View) -> View:
        @wraps(view)
        def serve(request: HttpRequest) -> HttpResponse:
            if request.method == "OPTIONS":
                response = _preflight()
            elif request.method in SAFE_METHODS:
                response = view(request)
                response["Cache-Control"] = f"public, max-age={max_age}"
            else:
                response = HttpResponseNotAllowed([*SAFE_METHODS, "OPTIONS"])
            response["Access-Control-Allow-Origin"] = "*"
            return response

        return csrf_exempt(serve)

    return decorate


def _preflight() -> HttpResponse:
    response = HttpResponse(status=204)
    response["Allow"] = ", ".join([*SAFE_METHODS, "OPTIONS"])
    response["Access-Control-Allow-Methods"] = ", ".join(SAFE_METHODS)
    # Any header a client likes to send (the wildcard never covers Authorization).
    response["Access-Control-Allow-Headers"] = "*"
    response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    return response


@public_document(max_age=JWKS_MAX_AGE)
def jwks(request: HttpRequest) -> HttpResponse:
    """``GET /.well-known/jwks.json``: the public keys JWTs are signed with (none for HS256)."""
    return JsonResponse({"keys": signing_keys.keyring().public_jwks()})


@public_document(max_age=METADATA_MAX_AGE)
def authorization_server_metadata(request: HttpRequest) -> HttpResponse:
    """``GET /.well-known/oauth-authorization-server``: RFC 8414 metadata."""
    return JsonResponse(discovery.authorization_server_metadata(endpoints(request)))


@public_document(max_age=METADATA_MAX_AGE)
def protected_resource_metadata(request: HttpRequest) -> HttpResponse:
    """``GET /.well-known/oauth-protected-resource``: RFC 9728 metadata of this API."""
    resource = request.build_absolute_uri(f"{script_name(request)}/").rstrip("/")
    return JsonResponse(discovery.protected_resource_metadata(resource, endpoints(request)))


def endpoints(request: HttpRequest) -> discovery.Endpoints:
    """The absolute URLs, as *request* reached this server, of what the project routes."""
    return discovery.Endpoints(
        jwks=routed_url(request, jwks),
        introspection=routed_url(request, "tokens_api:introspect"),
        revocation=routed_url(request, "tokens_api:revoke"),
        authorization_server_metadata=routed_url(request, authorization_server_metadata),
    )


def resource_metadata_url(request: HttpRequest) -> str | None:
    """The RFC 9728 document's absolute URL, for the ``resource_metadata`` of a challenge."""
    return routed_url(request, protected_resource_metadata)


def routed_url(request: HttpRequest, view: Any) -> str | None:
    """The absolute URL of *view* (a view or a URL name), or ``None`` when it is not routed."""
    urlconf = getattr(request, "urlconf", None) or settings.ROOT_URLCONF
    path = _routed_path(urlconf, script_name(request), view)
    return None if path is None else request.build_absolute_uri(path)


def script_name(request: HttpRequest) -> str:
    """Where the site is mounted (``SCRIPT_NAME``, no trailing slash; ``""`` at the root)."""
    return request.path[: len(request.path) - len(request.path_info)].rstrip("/")


@lru_cache(maxsize=128)
def _routed_path(urlconf: Any, mount: str, view: Any) -> str | None:
    """The path of *view* under *mount*, reversed once per URLconf and mount point.

    Every 401 needs one (the challenge's ``resource_metadata``), and ``reverse`` costs
    tens of microseconds here, mostly in reading the URLconf, script prefix and language
    from context-local state; the request carries the first two, and the documents are
    routed at the root, never under ``i18n_patterns``. The path is rebuilt on *mount*, so
    a cached one never depends on the prefix of the request that computed it.
    """
    try:
        path = reverse(view)
    except NoReverseMatch:
        return None
    return f"{mount}/{path.removeprefix(get_script_prefix())}"
