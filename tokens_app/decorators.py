"""``@token_required``: API tokens and tokens_app JWTs for plain Django views, sync or async.

A thin adapter: the request is authenticated by the very classes DRF views use
(``APITokenAuthentication``, then ``JWTAuthentication``), scopes are judged by ``HasScope``,
and every refusal is answered by ``tokens_app.exceptions.exception_handler``. So a plain view
answers exactly as a DRF view does — the same RFC 6750 ``401`` (``WWW-Authenticate: Bearer``,
``error="invalid_token"`` for a refused credential), ``403 insufficient_scope`` with the
scopes needed, ``429`` with ``Retry-After`` for a token over its rate, ``503`` when the
database or the deny list cannot answer — as JSON, whatever the view itself returns.

On success ``request.user`` is the owner (a ``JWTUser`` for a JWT, as in DRF) and
``request.auth`` the ``APIToken`` or the verified ``JWTClaims``. An ``async def`` view gets
an async wrapper: the lookup runs in Django's thread-sensitive executor (``sync_to_async``),
so it never blocks the event loop and the database connection stays where Django expects it.

    @token_required(scopes=["notes:read"])
    def notes(request): ...

    @token_required                      # any valid credential
    async def whoami(request): ...
"""

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from tokens_app.authentication import APITokenAuthentication, JWTAuthentication
from tokens_app.exceptions import api_error, exception_handler
from tokens_app.permissions import HasScope

View = TypeVar("View", bound=Callable[..., Any])


class _ScopedView:
    """What ``HasScope`` reads of a view: the scopes it requires, for any method."""

    def __init__(self, required: list[str]) -> None:
        self.required_scopes = required


def _scopes(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TypeError("token_required(scopes=...) takes a list of scope names, not a string")
    if not all(isinstance(name, str) and name for name in value):
        raise TypeError("token_required(scopes=...) takes non-empty scope names")
    return list(value)


def _refusal(request: Request, exc: Exception) -> HttpResponseBase:
    """The JSON answer a DRF view would give for *exc*, headers included."""
    exc = api_error(exc)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        # What APIView.handle_exception does: a 401 with the Bearer challenge.
        challenge = APITokenAuthentication().authenticate_header(request)
        setattr(exc, "auth_header", challenge)  # noqa: B010 — DRF's own attribute, untyped
    response: Any = exception_handler(exc, {"request": request, "view": None})
    if response is None:
        raise exc  # not a refusal: Django's own 500 handling
    response.accepted_renderer = JSONRenderer()
    response.accepted_media_type = "application/json"
    response.renderer_context = {"request": request, "response": response}
    rendered: HttpResponseBase = response.render()
    return rendered


def authenticate(http_request: HttpRequest, required: Sequence[str]) -> HttpResponseBase | None:
    """Authenticate *http_request* and judge its scopes; return the refusal, or ``None``.

    On ``None`` the request carries ``user`` and ``auth``. Synchronous: the async
    wrapper runs it in Django's thread-sensitive executor.
    """
    request = Request(http_request, authenticators=[APITokenAuthentication(), JWTAuthentication()])
    try:
        if request.auth is None:  # authenticates; no credential of ours at all
            raise exceptions.NotAuthenticated()
        scoped: Any = _ScopedView(list(required))
        if required and not HasScope().has_permission(request, scoped):
            raise exceptions.PermissionDenied()
    except Exception as exc:  # every refusal and fault becomes the DRF view's answer
        return _refusal(request, exc)
    http_request.user, http_request.auth = request.user, request.auth  # type: ignore[attr-defined]
    return None


@overload
def token_required(view: View, *, scopes: Sequence[str] = ()) -> View: ...
@overload
def token_required(view: None = None, *, scopes: Sequence[str] = ()) -> Callable[[View], View]: ...
def token_required(
    view: View | None = None, *, scopes: Sequence[str] = ()
) -> View | Callable[[View], View]:
    """Require an API token or a tokens_app JWT holding every one of *scopes* (none: any).

    Usable bare (``@token_required``) or with scopes. The scopes are checked by
    ``manage.py check`` like a DRF view's ``required_scopes`` (``tokens_app.E003``).
    """
    required = _scopes(scopes)

    def decorate(function: View) -> View:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                refused = await sync_to_async(authenticate, thread_sensitive=True)(
                    request, required
                )
                if refused is not None:
                    return refused
                return await function(request, *args, **kwargs)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(function)
            def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                refused = authenticate(request, required)
                if refused is not None:
                    return refused
                return function(request, *args, **kwargs)

            wrapper = sync_wrapper
        wrapper.required_scopes = required
        # Like DRF's APIView: a bearer credential is no cookie, so CSRF does not apply (and
        # sessions are not accepted here at all).
        wrapper.csrf_exempt = True
        return wrapper  # type: ignore[no-any-return]

    return decorate(view) if view is not None else decorate
