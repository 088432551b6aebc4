"""The demo notes API: scopes per method, and owner isolation (others' notes are 404)."""

from django.db.models import QuerySet
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.serializers import BaseSerializer

from project.notes.models import Note
from project.notes.serializers import NoteSerializer
from tokens_app.permissions import HasScope


def own_notes(request: Request) -> QuerySet[Note]:
    """Only the caller's notes exist: another user's note is a 404 like a missing one."""
    return Note.objects.filter(owner=request.user.pk)


class NoteListView(generics.ListCreateAPIView[Note]):
    serializer_class = NoteSerializer
    permission_classes = [HasScope]
    required_scopes = {"GET": ["notes:read"], "POST": ["notes:write"]}

    def get_queryset(self) -> QuerySet[Note]:
        return own_notes(self.request)

    def perform_create(self, serializer: BaseSerializer[Note]) -> None:
        # By id: with a JWT, request.user is built from the claims, not a User row.
        serializer.save(owner_id=self.request.user.pk)


class NoteDetailView(generics.RetrieveDestroyAPIView[Note]):
    serializer_class = NoteSerializer
    permission_classes = [HasScope]
    required_scopes = {"GET": ["notes:read"], "DELETE": ["notes:write"]}

    def get_queryset(self) -> QuerySet[Note]:
        return own_notes(self.request)
