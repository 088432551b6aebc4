"""Test settings with a custom user model (tests/custom_user), for tests/tokens/test_lookup.py."""

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.custom_user"]
AUTH_USER_MODEL = "custom_user.Person"
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Its own test database, so it can run beside a session that uses the default name.
    DATABASES = {
        "default": {**DATABASES["default"], "TEST": {"NAME": "test_tokens_app_custom_user"}}
    }
