"""``make serve``'s stack: gunicorn, production settings, whitenoise serving collected files.

Runs in both profiles and needs no service: the server gets a SQLite file of its own
(the login page and static files touch no table).
"""

import re
from collections.abc import Iterator

import pytest

from tests import live
from tokens_app.core import tokenstring


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.LiveServer]:
    base = tmp_path_factory.mktemp("serve")
    env = live.server_env(
        f"sqlite:///{base / 'db.sqlite3'}", None, DJANGO_STATIC_ROOT=str(base / "static")
    )
    # What `make serve` does before it starts gunicorn.
    live.run_python("manage.py", "collectstatic", "--noinput", "-v0", env=env, check=True)
    with live.gunicorn(env, base, workers=2) as server:
        yield server


def test_admin_login_links_hashed_static_files_served_for_a_year(served):
    page = served.request("GET", "/admin/login/")
    assert page.status == 200
    match = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.body)
    assert match, "the admin links content-hashed file names (manifest storage)"
    css = served.request("GET", match[1].decode(), headers={"Accept-Encoding": "gzip"})
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert css.headers["Content-Encoding"] == "gzip"
    assert "max-age=315360000" in css.headers["Cache-Control"]
    assert "immutable" in css.headers["Cache-Control"]


def test_api_docs_assets_are_served_locally(served):
    page = served.request("GET", "/api/docs/")
    assert page.status == 200
    match = re.search(rb'src="(/static/drf_spectacular_sidecar/[^"]+\.js)"', page.body)
    assert match
    assert served.request("GET", match[1].decode()).status == 200


def test_production_settings_hide_debug_pages(served):
    missing = served.request("GET", "/no-such-page/")
    assert missing.status == 404
    assert b"URLconf" not in missing.body  # Django's DEBUG 404 lists the URL patterns


def test_access_log_never_holds_the_token(served):
    token = tokenstring.assemble(
        "tka", tokenstring.generate_key_id(), tokenstring.generate_secret()
    )
    # This server has no tables: the request fails with a logged traceback, which must not
    # hold the token either.
    served.request("GET", "/api/whoami/", headers={"Authorization": f"Bearer {token}"})
    served.wait_for_log('"GET /api/whoami/ HTTP/1.1"')  # written after the response is sent
    log = served.log_text()
    assert "OperationalError" in log
    assert token not in log
    assert token[4:20] not in log
