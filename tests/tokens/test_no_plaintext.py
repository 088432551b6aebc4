"""The plaintext token exists once, in the response that created it: not in the DB, not in logs."""

import logging
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from tests.helpers import bearer
from tokens_app import services
from tokens_app.core import tokenstring

pytestmark = pytest.mark.django_db(transaction=True)


def _dump_every_table() -> str:
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            chunks.append(repr(cursor.fetchall()))
    return "\n".join(chunks)


def test_plaintext_and_secret_never_reach_database_or_logs(api, caplog, settings, alice, staff):
    settings.DEBUG = True  # Django logs every SQL statement with its parameters at DEBUG
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    out = StringIO()
    call_command("issue_token", "alice", "--name", "cli", "--scopes", "notes:read", stdout=out)
    from_command = out.getvalue().strip()
    from_service = services.issue_token(staff, name="svc", scopes=["audit:read"]).plaintext

    for token in (from_command, from_service):
        assert api.get("/api/whoami/", **bearer(token)).status_code == 200
        wrong = tokenstring.assemble("tka", token[4:16], tokenstring.generate_secret())
        assert api.get("/api/whoami/", **bearer(wrong)).status_code == 401
    call_command("revoke_token", from_command, "--reason", "test", stdout=StringIO())
    assert api.get("/api/whoami/", **bearer(from_command)).status_code == 401
    call_command("list_tokens", stdout=StringIO())

    dump = _dump_every_table()
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert "SELECT" in log_text  # the SQL log was really captured
    for token in (from_command, from_service):
        parsed = tokenstring.parse(token, "tka")
        assert parsed is not None
        assert parsed.key_id in dump  # the public id is stored ...
        for secret_part in (token, parsed.secret):
            assert secret_part not in dump  # ... the secret is not
            assert secret_part not in log_text
    assert apps.get_model("tokens_app", "APIToken").objects.count() == 2
