"""A URLconf routing password views without the rate limit, for checks W005 and W006."""

from django.contrib.admin import AdminSite
from django.contrib.auth.views import LoginView
from django.urls import include, path

from tokens_app.login import throttle_admin_site, throttled_login

bare_site = AdminSite(name="bare")
guarded_site = throttle_admin_site(AdminSite(name="guarded"))

urlpatterns = [
    path("bare/", bare_site.urls),  # W005 twice: login/ and password_change/
    path("guarded/", guarded_site.urls),
    path("accounts/", include("django.contrib.auth.urls")),  # W006: login/, password_change/
    path("api-auth/", include("rest_framework.urls")),  # W006: DRF's browsable-API login/
    path("counted/login/", throttled_login(LoginView.as_view(template_name="admin/login.html"))),
]
