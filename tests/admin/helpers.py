"""Helpers of the token console tests: its URLs, and what a page shows or offers.

Not collected (no ``test_`` prefix).
"""

import re

from django.contrib.messages import get_messages
from rest_framework.test import APIClient

from tests.helpers import bearer

ADMIN = "/admin/"
LIST_URL = "/admin/tokens_app/apitoken/"
ADD_URL = f"{LIST_URL}add/"
EVENTS_URL = "/admin/tokens_app/tokenevent/"
MISSING_PK = 987654


def token_url(token_or_pk, action="change"):
    pk = getattr(token_or_pk, "pk", token_or_pk)
    return f"{LIST_URL}{pk}/{action}/"


def issued_token(response):
    match = re.search(r'id="issued-token" value="([^"]+)"', response.content.decode())
    assert match, "no #issued-token on the page"
    return match.group(1)


def page(client, url):
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def choices(response, field):
    form = response.context["adminform"].form if "adminform" in response.context else None
    form = form or response.context["form"]
    return [value for value, _label in form.fields[field].choices]


def message_texts(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def whoami(plaintext):
    return APIClient().get("/api/whoami/", **bearer(plaintext)).status_code
