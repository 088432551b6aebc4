"""URLs of the token API: ``path("api/", include("tokens_app.api.urls"))``."""

from django.urls import path, re_path

from tokens_app.api import jwt_views, views

app_name = "tokens_api"

urlpatterns = [
    path("tokens/", views.TokenListView.as_view(), name="token-list"),
    path("tokens/current/", views.CurrentTokenView.as_view(), name="token-current"),
    path("tokens/revoke-all/", views.RevokeAllView.as_view(), name="token-revoke-all"),
    # Any id, even one with a slash, reaches the views, which answer one uniform 404.
    re_path(
        r"^tokens/(?P<key_id>.+)/rotate/$", views.TokenRotateView.as_view(), name="token-rotate"
    ),
    re_path(r"^tokens/(?P<key_id>.+)/$", views.TokenDetailView.as_view(), name="token-detail"),
    path("auth/token/", views.PasswordExchangeView.as_view(), name="password-exchange"),
    path("auth/jwt/", jwt_views.MintJWTView.as_view(), name="jwt-mint"),
    path("auth/introspect/", jwt_views.IntrospectView.as_view(), name="introspect"),
    path("auth/revoke/", jwt_views.RevokeView.as_view(), name="revoke"),
]
