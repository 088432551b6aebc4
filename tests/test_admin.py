"""The interim admin: a read-only list, scoped to what each staff user may see."""

import pytest
from django.contrib.auth.models import Permission

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/tokens_app/apitoken/"


@pytest.fixture
def viewer(staff):
    staff.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    return staff


def test_superuser_sees_every_token_but_no_secret(client, superuser, alice, issue):
    issued = issue(alice, name="alice-ci")
    client.force_login(superuser)
    page = client.get(LIST_URL).content.decode()
    assert issued.token.key_id in page
    assert issued.plaintext not in page
    assert issued.token.secret_hash not in page


def test_staff_sees_only_own_tokens(client, viewer, alice, issue):
    own = issue(viewer, name="mine").token
    other = issue(alice, name="theirs").token
    client.force_login(viewer)
    page = client.get(LIST_URL).content.decode()
    assert own.key_id in page
    assert other.key_id not in page
    assert client.get(f"{LIST_URL}{other.pk}/change/").status_code in (302, 404)


def test_tokens_cannot_be_deleted_or_renamed_to_nothing_in_admin(client, superuser, alice, issue):
    token = issue(alice).token
    client.force_login(superuser)
    assert client.post(f"{LIST_URL}{token.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post(f"{LIST_URL}{token.pk}/change/", {"name": "renamed"})
    token.refresh_from_db()
    assert token.name != "renamed"
