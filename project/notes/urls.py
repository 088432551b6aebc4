"""URLs of the demo notes API, under ``/api/notes/``."""

from django.urls import path

from project.notes.views import NoteDetailView, NoteListView

urlpatterns = [
    path("", NoteListView.as_view(), name="note-list"),
    path("<int:pk>/", NoteDetailView.as_view(), name="note-detail"),
]
