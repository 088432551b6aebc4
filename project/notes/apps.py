"""The demo notes app."""

from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "project.notes"
    label = "notes"
    default_auto_field = "django.db.models.BigAutoField"
