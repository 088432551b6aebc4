"""A project that routes the RFC 8414 document and one API view, and nothing else of ours.

No JWKS, no token API (so no introspection or revocation), no RFC 9728 document: each
member or challenge parameter about them must be left out, not point at a 404.
"""

from django.urls import path

from project.api import WhoAmIView
from tokens_app.api import wellknown

urlpatterns = [
    path(".well-known/oauth-authorization-server", wellknown.authorization_server_metadata),
    path("api/whoami/", WhoAmIView.as_view()),
]
