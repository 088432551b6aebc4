"""Test settings: the example project's, with a fast password hasher for fixtures."""

import os
import tempfile

# The shared (file-based) cache of the embedded default, in a directory of this run's own;
# processes the tests start get the same one through the environment.
os.environ.setdefault("DJANGO_CACHE_DIR", tempfile.mkdtemp(prefix="tokens-app-test-cache-"))

from project.settings import *  # noqa: F403

ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
# User passwords are not what is under test; token hashing keeps its real hashers.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",  # the demo fixture's hashes
]
LOGGING = {"version": 1, "disable_existing_loggers": False}
