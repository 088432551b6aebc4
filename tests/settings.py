"""Test settings: the example project's, with a fast password hasher for fixtures."""

from project.settings import *  # noqa: F403

ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
# User passwords are not what is under test; token hashing keeps its real hashers.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",  # the demo fixture's hashes
]
LOGGING = {"version": 1, "disable_existing_loggers": False}
