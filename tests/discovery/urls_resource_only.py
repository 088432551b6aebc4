"""A project that routes the RFC 9728 document, under a name of its own, and one API view."""

from django.urls import path

from project.api import WhoAmIView
from tokens_app.api import wellknown

urlpatterns = [
    path(
        "meta/.well-known/oauth-protected-resource",
        wellknown.protected_resource_metadata,
        name="my-resource-metadata",
    ),
    path("api/whoami/", WhoAmIView.as_view()),
]
