"""The example project: notes isolation, whoami, sessions, settings from the environment."""

import os
import re
import subprocess

import pytest
from django.core.management import call_command

from project.notes.models import Note
from tests import live
from tests.helpers import NO_CREDENTIALS_CHALLENGE, ROOT, bearer

pytestmark = pytest.mark.django_db


def test_other_users_note_is_404_identical_to_missing(api, alice, bob, issue):
    theirs = Note.objects.create(owner=bob, title="private")
    token = issue(alice, ["notes:write"]).plaintext
    other = api.get(f"/api/notes/{theirs.pk}/", **bearer(token))
    missing = api.get(f"/api/notes/{theirs.pk + 1000}/", **bearer(token))
    assert other.status_code == missing.status_code == 404
    assert other.content == missing.content
    assert api.delete(f"/api/notes/{theirs.pk}/", **bearer(token)).status_code == 404
    assert Note.objects.filter(pk=theirs.pk).exists()
    assert api.get("/api/notes/", **bearer(token)).json()["results"] == []


def test_owner_reads_and_deletes_own_note(api, alice, issue):
    mine = Note.objects.create(owner=alice, title="mine", body="b")
    reader = issue(alice, ["notes:read"]).plaintext
    writer = issue(alice, ["notes:write"]).plaintext
    assert api.get(f"/api/notes/{mine.pk}/", **bearer(reader)).json()["title"] == "mine"
    assert api.delete(f"/api/notes/{mine.pk}/", **bearer(reader)).status_code == 403
    assert api.delete(f"/api/notes/{mine.pk}/", **bearer(writer)).status_code == 204
    assert not Note.objects.exists()


@pytest.mark.parametrize(
    "payload", [{}, {"title": ""}, {"title": "t", "owner": 2}, {"title": "x" * 201}]
)
def test_bad_note_input_is_400_and_writes_nothing(api, alice, issue, payload):
    token = issue(alice, ["notes:write"]).plaintext
    response = api.post("/api/notes/", payload, format="json", **bearer(token))
    assert response.status_code == 400
    assert not Note.objects.exists()


def test_session_user_uses_the_api_with_csrf(alice):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/notes/").status_code == 200
    assert client.post("/api/notes/", {"title": "t"}, format="json").status_code == 403
    who = client.get("/api/whoami/").json()
    assert who["credential"] == "session"
    assert "audit:read" not in who["scopes"]
    assert "notes:write" in who["scopes"]


def test_session_staff_holds_staff_scopes(api, staff):
    api.force_login(staff)
    assert "audit:read" in api.get("/api/whoami/").json()["scopes"]


def test_whoami_needs_credentials(api):
    response = api.get("/api/whoami/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == NO_CREDENTIALS_CHALLENGE


def test_home_page_and_admin_login_render(client):
    assert b"tokens_app" in client.get("/").content
    assert client.get("/admin/login/").status_code == 200


def test_demo_fixture_loads_users_with_roles(django_user_model):
    call_command("loaddata", str(ROOT / "fixtures" / "demo.json"), verbosity=0)
    users = {u.username: (u.is_staff, u.is_superuser) for u in django_user_model.objects.all()}
    assert users == {
        "admin": (True, True),
        "staff": (True, False),
        "alice": (False, False),
        "bob": (False, False),
    }
    assert django_user_model.objects.get(username="alice").check_password("alice-demo-pass")


def _settings_env(**overrides: str) -> dict[str, str]:
    # Only what the test sets: not the profile this suite itself runs on.
    inherited = ("DJANGO_", "API_TOKENS_", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(DJANGO_SETTINGS_MODULE="project.settings", **overrides)
    return env


def _run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return live.run_python("manage.py", "check", env=env, timeout=60)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "0"}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be"),
        ({"DJANGO_SECURE": "2"}, "DJANGO_SECURE must be"),
    ],
)
def test_unsafe_or_unclear_environment_refuses_to_start(env, message):
    result = _run_check(_settings_env(**env))
    assert result.returncode != 0
    assert message in result.stderr


def test_production_environment_starts_with_a_secret(tmp_path):
    env = _settings_env(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="a-long-random-production-secret-for-the-test-only-123456",
        DJANGO_ALLOWED_HOSTS="api.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL="redis://127.0.0.1:6379/0",  # `check` reads settings, it does not connect
    )
    result = _run_check(env)
    assert result.returncode == 0, result.stderr


def test_check_deploy_under_production_env_warns_only_about_hsts_preload(tmp_path):
    # README "Deploying" explains W021 (HSTS preload is the deployer's commitment to make).
    env = _settings_env(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="a-long-random-production-secret-for-the-test-only-123456",
        API_TOKENS_HASH_KEY="a-separate-random-hash-key-of-forty-characters",
        DJANGO_ALLOWED_HOSTS="api.example.com",
        DJANGO_SECURE="1",
        DATABASE_URL="postgres://app@127.0.0.1:5432/app",  # read, not connected to
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    result = live.run_python("manage.py", "check", "--deploy", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    reported = re.findall(r"\(([\w.]+\.[EW]\d{3})\)", result.stdout + result.stderr)
    assert reported == ["security.W021"]


def test_production_settings_refuse_a_per_process_rate_limit_cache(tmp_path):
    env = _settings_env(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="a-long-random-production-secret-for-the-test-only-123456",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    result = _run_check(env)
    assert result.returncode != 0
    assert "tokens_app.E009" in result.stderr
    assert "NonCullingLocMemCache) is one process's memory" in result.stderr


def _settings_value(expression: str, **env: str) -> str:
    code = f"import project.settings as s; print({expression})"
    result = live.run_python("-c", code, env=_settings_env(**env), timeout=60, check=True)
    return result.stdout.strip()


def test_environment_selects_cache_and_database_backends():
    assert _settings_value("s.CACHES['default']['BACKEND']").endswith("LocMemCache")
    assert _settings_value(
        "s.CACHES['default']['BACKEND']", REDIS_URL="redis://127.0.0.1:6379/0"
    ).endswith("RedisCache")
    assert _settings_value("s.DATABASES['default']['ENGINE']").endswith("sqlite3")
    assert _settings_value(
        "s.DATABASES['default']['ENGINE']", DATABASE_URL="postgres://u@127.0.0.1:5432/db"
    ).endswith("postgresql")


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_api_path_is_a_json_404(client, settings, debug):
    settings.DEBUG = debug
    response = client.get("/api/no-such-endpoint/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_api_404_handler_answers_json(rf):
    from project.errors import not_found

    response = not_found(rf.get("/api/x/"), Exception("no route"))
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_unknown_page_outside_the_api_is_django_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(("path", "json_body"), [("/api/tokens/", True), ("/admin/", False)])
def test_server_error_is_json_only_under_the_api(rf, path, json_body):
    from project.errors import server_error

    response = server_error(rf.get(path))
    assert response.status_code == 500
    if json_body:
        assert response["Content-Type"] == "application/json"
        assert b"Traceback" not in response.content
    else:
        assert response["Content-Type"].startswith("text/html")


def test_unknown_api_path_is_json_404_for_unsafe_methods_with_a_session(alice):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.delete("/api/notes/-5/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
