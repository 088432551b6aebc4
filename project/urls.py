"""URLs of the example project."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from project.api import WhoAmIView

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("api/whoami/", WhoAmIView.as_view(), name="whoami"),
    path("api/notes/", include("project.notes.urls")),
]
