"""URLs of the example project."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from project import health, plain
from project.api import WhoAmIView
from project.errors import api_not_found
from tokens_app.api import wellknown
from tokens_app.login import throttle_admin_site

# The admin login and password change count attempts like the password exchange (429/503).
throttle_admin_site(admin.site)

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/", admin.site.urls),
    path(".well-known/jwks.json", wellknown.jwks, name="jwks"),
    path(
        ".well-known/oauth-authorization-server",
        wellknown.authorization_server_metadata,
        name="oauth-authorization-server",
    ),
    path(
        ".well-known/oauth-protected-resource",
        wellknown.protected_resource_metadata,
        name="oauth-protected-resource",
    ),
    path("health/", health.live, name="health-live"),
    path("health/ready/", health.ready, name="health-ready"),
    path("api/whoami/", WhoAmIView.as_view(), name="whoami"),
    path("plain/whoami/", plain.whoami, name="plain-whoami"),
    path("plain/async/whoami/", plain.async_whoami, name="plain-async-whoami"),
    path("api/notes/", include("project.notes.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("tokens_app.api.urls")),
    # Last: any other /api/ path is a JSON 404, with DEBUG on too (no HTML, no URL list).
    re_path(r"^api/", api_not_found, name="api-not-found"),
]

handler400 = "project.errors.bad_request"
handler404 = "project.errors.not_found"
handler500 = "project.errors.server_error"
