"""The token console in a real browser: headless Chromium (Debian package) driven by Playwright.

Issue a token through the admin form, read it from ``#issued-token``, call the API with it,
revoke it with the bulk action, and see the API refuse it. Skipped with a reason when the
browser or Playwright is missing, except in CI (``CI=true``), where that is a failure.

``UPDATE_SCREENSHOTS=1`` also writes the screenshots shown in README under ``docs/``.
"""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tokens_app import services
from tokens_app.models import APIToken
from tokens_app.services.caller import Caller, Via

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
PASSWORD = "browser-pw-123"  # a throwaway test account


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _whoami(base_url: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 -- the live_server's http URL
        f"{base_url}/api/whoami/", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _log_in(browser: Any, base_url: str, username: str) -> Any:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{base_url}/admin/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    return page


def _screenshot(page: Any, name: str) -> None:
    if UPDATE_SCREENSHOTS:
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name))


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", PASSWORD)


@pytest.fixture
def status_rows(admin_user: Any, django_user_model: Any) -> None:
    """One token per status, owned by two users (the change-list screenshot)."""
    alice = django_user_model.objects.create_user("alice", "alice@example.com", "pw")
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw")
    issue = services.issue_token
    scopes = ["notes:read", "notes:write"]
    laptop = issue(
        alice, name="laptop", scopes=scopes, caller=Caller(user=admin_user, via=Via.ADMIN)
    )
    services.authenticate_token(laptop.plaintext, ip="203.0.113.7")  # fills "last used"
    issue(
        alice,
        name="ci-deploy",
        scopes=scopes[:1],
        expires_in=timedelta(days=3),
        caller=Caller(user=admin_user),
    )
    issue(
        bob,
        name="reporting",
        scopes=scopes[:1],
        expires_in=timedelta(days=90),
        caller=Caller(user=admin_user),
    )
    lost = issue(bob, name="old-laptop", scopes=scopes[1:], caller=Caller(user=admin_user)).token
    services.revoke_token(lost, caller=Caller(user=admin_user, via=Via.ADMIN), reason="laptop lost")
    expired = issue(
        alice, name="2023-import", scopes=scopes[:1], caller=Caller(user=admin_user)
    ).token
    APIToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=2))


# The rows are written before the browser starts (``browser`` comes last in each signature):
# the ORM refuses to run while Playwright's event loop is running in this thread.


@pytest.mark.django_db(transaction=True)
def test_issue_call_and_revoke_in_the_browser(
    live_server: Any, admin_user: Any, browser: Any
) -> None:
    page = _log_in(browser, live_server.url, "admin")

    page.goto(f"{live_server.url}/admin/tokens_app/apitoken/add/")
    assert page.is_checked("input[name=expiry][value='30']")  # the default preset
    page.fill("input[name=name]", "deploy-bot")
    page.check("input[name=scopes][value='notes:read']")
    with page.expect_navigation():
        page.click("input[name=_issue]")
    token = page.input_value("#issued-token")
    assert token.startswith("tka_")
    _screenshot(page, "admin-issued-token.png")

    status, body = _whoami(live_server.url, token)
    assert status == 200
    assert body["username"] == "admin"
    assert body["scopes"] == ["notes:read"]

    page.goto(f"{live_server.url}/admin/tokens_app/apitoken/")
    assert token not in page.content()
    page.check("input[name=_selected_action]")
    page.select_option("select[name=action]", "revoke_selected")
    with page.expect_navigation():
        page.click("button[name=index]")
    assert "deploy-bot" in page.inner_text("#content-main")
    page.fill("#revoke-form [name=reason]", "browser test")
    with page.expect_navigation():
        page.click("#revoke-form input[type=submit]")
    assert "Revoked 1 token." in page.inner_text(".messagelist")
    assert "Revoked" in page.inner_text("#result_list")

    status, _body = _whoami(live_server.url, token)
    assert status == 401
    page.close()


@pytest.mark.django_db(transaction=True)
def test_change_list_shows_each_status(live_server: Any, status_rows: None, browser: Any) -> None:
    page = _log_in(browser, live_server.url, "admin")
    page.goto(f"{live_server.url}/admin/tokens_app/apitoken/")
    badges = page.locator("#result_list .token-status").all_inner_texts()
    assert sorted(badges) == sorted(["Active", "Expiring soon", "Active", "Revoked", "Expired"])
    page.click("#toggle-nav-sidebar")  # room for every column in the screenshot
    _screenshot(page, "admin-change-list.png")
    page.close()
