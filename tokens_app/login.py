"""Django's own password forms (admin login, password change) under the password rate limit.

Django's login and password-change views check a password on every POST and count
nothing. The wrappers here count each POST through ``services.count_password_attempt``
(per client IP and per normalised username, ``PASSWORD_EXCHANGE_RATE``: the budget the
password exchange spends too) *before* the view runs, so a refused attempt checks no
password. The rule lives in services; this module only turns its answers into pages:
429 over the rate, 503 when the counter is unavailable (fail closed), both with
``Retry-After`` and neither echoing what was posted.

Wiring, once, in the URLconf before ``admin.site.urls`` is read::

    from tokens_app.login import throttle_admin_site

    throttle_admin_site(admin.site)

Any other login view: ``path("login/", throttled_login(LoginView.as_view()))``, and
``throttled_password_change(...)`` for a view that checks the old password. System checks
``tokens_app.W005`` (an admin site) and ``W006`` (Django's ``LoginView`` or
``PasswordChangeView``, which DRF's browsable-API login is) warn about such views routed
without the wrapper.
"""

import math
from collections.abc import Callable, Iterator, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters

from tokens_app import services
from tokens_app.exceptions import RETRY_AFTER_SECONDS, UNAVAILABLE_MESSAGE

if TYPE_CHECKING:  # importing the admin here would need it installed; only types need it
    from django.contrib.admin import AdminSite

View = Callable[..., HttpResponse]

#: Set on every wrapped view (``functools.wraps`` carries it through outer decorators,
#: the admin's ``admin_view`` included), so checks can see what is routed.
THROTTLED_MARK = "tokens_app_password_throttled"
#: The refusal pages: inside an admin site's look, and a plain one for any other view.
#: Override them by name to brand them.
ADMIN_TEMPLATE = "tokens_app/admin_password_attempts_refused.html"
TEMPLATE = "tokens_app/password_attempts_refused.html"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
#: The routes of an admin site (``app_name == "admin"``) that check a password.
ADMIN_PASSWORD_ROUTES = ("login", "password_change")

REFUSED_TITLE = _("Too many password attempts")
UNAVAILABLE_TITLE = _("Service unavailable")


def is_throttled(view: Any) -> bool:
    """Return whether *view* counts password attempts (was wrapped by this module)."""
    return getattr(view, THROTTLED_MARK, False) is True


def throttled_login(view: View, *, site: "AdminSite | None" = None) -> View:
    """Return *view* with every POST (any unsafe method) counted as an attempt at ``username``.

    For any view built on Django's ``AuthenticationForm`` (its field is always named
    ``username``, whatever ``USERNAME_FIELD`` says). With *site* the refusal page has
    that admin site's look; without, it is a plain page that needs no admin installed.
    """
    return _throttle(view, _posted_username, site)


def throttled_password_change(view: View, *, site: "AdminSite | None" = None) -> View:
    """Return *view* with every POST of a logged-in user counted as an attempt at their name.

    The form checks the old password: without a limit a stolen session could guess it.
    An anonymous POST is not counted, because such a view checks nothing for it.
    """
    return _throttle(view, _session_username, site)


def throttle_admin_site(site: "AdminSite") -> "AdminSite":
    """Put *site*'s login and password change under the password rate limit; return *site*.

    Call it before ``site.urls`` is read (in the URLconf, above ``urlpatterns``):
    ``get_urls`` routes the views the site has at that moment. Calling it twice is harmless.
    """
    # Instance attributes shadow the methods, which get_urls() looks up on the instance.
    site.login = throttled_login(site.login, site=site)  # type: ignore[method-assign]
    site.password_change = throttled_password_change(  # type: ignore[method-assign,assignment]
        site.password_change, site=site
    )
    return site


def unthrottled_password_views(
    patterns: Sequence[Any], prefix: str = "", app_name: str | None = None
) -> Iterator[tuple[str, str | None, Any]]:
    """Yield ``(route, app_name, view)`` for each routed view that checks a password uncounted.

    Those are an admin site's login and password change, and any view built on
    Django's ``LoginView`` or ``PasswordChangeView`` (DRF's browsable-API login is one).
    It looks at what the URLconf routes, so it sees every wiring; a hand-written view
    that calls ``authenticate()`` itself is beyond what it can recognise.
    """
    from django.contrib.auth.views import LoginView, PasswordChangeView

    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.app_name or app_name
            yield from unthrottled_password_views(
                pattern.url_patterns, prefix + str(pattern.pattern), inner
            )
        elif isinstance(pattern, URLPattern) and not is_throttled(pattern.callback):
            view_class = getattr(pattern.callback, "view_class", None)
            in_admin = app_name == "admin" and pattern.name in ADMIN_PASSWORD_ROUTES
            if in_admin or (
                isinstance(view_class, type)
                and issubclass(view_class, LoginView | PasswordChangeView)
            ):
                yield prefix + str(pattern.pattern), app_name, pattern.callback


def _posted_username(request: HttpRequest) -> str | None:
    return str(request.POST.get("username", ""))


def _session_username(request: HttpRequest) -> str | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return str(user.get_username())


def _throttle(view: View, username_of: Callable[[HttpRequest], str | None], site: Any) -> View:
    if is_throttled(view):
        return view  # wrapped already: wrapping again would count every attempt twice

    @wraps(view)
    def counted(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Not only POST: Django's form views treat PUT as POST too. Reads check nothing.
        unsafe = request.method not in SAFE_METHODS
        username = username_of(request) if unsafe else None
        if username is not None:
            refused = _refusal(request, username, site)
            if refused is not None:
                return refused  # nothing checked, nobody logged in
        return view(request, *args, **kwargs)

    guarded: View = sensitive_post_parameters()(counted)  # error reports never show them
    setattr(guarded, THROTTLED_MARK, True)
    return guarded


def _refusal(request: HttpRequest, username: str, site: Any) -> HttpResponse | None:
    """Count the attempt; return the page refusing it, or ``None`` to let it through."""
    try:
        services.count_password_attempt(request, username)
    except services.TooManyAttempts as limited:
        minutes = max(math.ceil(limited.retry_after / 60), 1)
        message = ngettext(
            "Too many password attempts. Try again in %(count)d minute.",
            "Too many password attempts. Try again in %(count)d minutes.",
            minutes,
        ) % {"count": minutes}
        return _page(request, site, 429, limited.retry_after, REFUSED_TITLE, message)
    except services.RateLimiterUnavailable:
        return _page(
            request, site, 503, RETRY_AFTER_SECONDS, UNAVAILABLE_TITLE, str(UNAVAILABLE_MESSAGE)
        )
    return None


def _page(
    request: HttpRequest, site: Any, status: int, retry_after: int, title: Any, message: str
) -> HttpResponse:
    # The context holds no form and nothing posted: the page cannot echo a username.
    context = {**(site.each_context(request) if site is not None else {})}
    context.update(title=title, message=message)
    template = ADMIN_TEMPLATE if site is not None else TEMPLATE
    response = render(request, template, context, status=status)
    response["Retry-After"] = str(retry_after)
    add_never_cache_headers(response)
    return response
