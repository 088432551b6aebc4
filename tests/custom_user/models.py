"""A custom user model unlike ``auth.User`` in every way the token lookup could depend on.

Its own table name, a UUID primary key, an e-mail as the username, and ``is_active``
stored in a column of another name. ``tests/tokens/test_lookup.py`` runs with it
(``tests/settings_custom_user.py``) to show the prepared lookup reads the model's
metadata rather than assuming ``auth_user``.
"""

import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models


class PersonManager(BaseUserManager["Person"]):
    def create_user(self, email: str, password: str | None = None, **extra: Any) -> "Person":
        person = self.model(email=self.normalize_email(email), **extra)
        person.set_password(password)
        person.save(using=self._db)
        return person


class Person(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)
    display_name = models.CharField(max_length=100, blank=True)
    is_active = models.BooleanField(default=True, db_column="enabled")
    is_staff = models.BooleanField(default=False)
    joined = models.DateTimeField(auto_now_add=True)

    USERNAME_FIELD = "email"
    objects = PersonManager()

    class Meta:
        db_table = "people"
