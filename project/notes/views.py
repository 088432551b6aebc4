"""The demo notes API: scopes per method, and owner isolation (others' notes are 404)."""

from django.db.models import QuerySet
from rest_framework import generics

from project.notes.models import Note
from project.notes.serializers import NoteSerializer
from tokens_app.permissions import HasScope


class OwnNotesMixin:
    """Only the caller's notes exist: another user's note is a 404 like a missing one."""

    request: object

    def get_queryset(self) -> QuerySet[Note]:
        return Note.objects.filter(owner=self.request.user)  # type: ignore[attr-defined]


class NoteListView(OwnNotesMixin, generics.ListCreateAPIView[Note]):
    serializer_class = NoteSerializer
    permission_classes = [HasScope]
    required_scopes = {"GET": ["notes:read"], "POST": ["notes:write"]}

    def perform_create(self, serializer: NoteSerializer) -> None:
        serializer.save(owner=self.request.user)


class NoteDetailView(OwnNotesMixin, generics.RetrieveDestroyAPIView[Note]):
    serializer_class = NoteSerializer
    permission_classes = [HasScope]
    required_scopes = {"GET": ["notes:read"], "DELETE": ["notes:write"]}
