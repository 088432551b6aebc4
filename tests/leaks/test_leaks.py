"""Leaked tokens: the text scanner, the service and ``manage.py find_leaked_tokens``."""

import io
import json
import os
import random
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, fields
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests import live
from tests.helpers import NOTES, bearer, command_line
from tokens_app import services
from tokens_app.core import tokenstring
from tokens_app.jwt import denylist
from tokens_app.models import APIToken, TokenEvent

pytestmark = pytest.mark.django_db


def make_token(prefix: str = "tka") -> str:
    """A well-formed token that no database knows."""
    return tokenstring.assemble(
        prefix, tokenstring.generate_key_id(), tokenstring.generate_secret()
    )


def key_id_of(token: str) -> str:
    parsed = tokenstring.parse(token, token.partition("_")[0])
    assert parsed is not None
    return parsed.key_id


def secret_of(token: str) -> str:
    parsed = tokenstring.parse(token, token.partition("_")[0])
    assert parsed is not None
    return parsed.secret


def found(text: str, prefix: str = "tka") -> list[tuple[int, str]]:
    return [(offset, parsed.key_id) for offset, parsed in tokenstring.find_tokens(text, prefix)]


def run(*args: str, stdin: Any = None) -> tuple[int, str, str]:
    """Run find_leaked_tokens in-process; return (exit status, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    extra = {"stdin": stdin} if stdin is not None else {}
    try:
        call_command("find_leaked_tokens", *args, stdout=out, stderr=err, **extra)
    except SystemExit as exit_info:
        code = exit_info.code
    else:
        code = 0
    assert isinstance(code, int)
    return code, out.getvalue(), err.getvalue()


def revocations() -> list[tuple[str, str, dict[str, Any]]]:
    events = TokenEvent.objects.filter(kind="revoked").order_by("key_id")
    return list(events.values_list("key_id", "via", "detail"))


def snapshot() -> tuple[list[tuple[str, Any]], list[int]]:
    """What a failed scan must leave alone: every token's revocation, every event."""
    tokens = list(APIToken.objects.order_by("key_id").values_list("key_id", "revoked_at"))
    return tokens, list(TokenEvent.objects.order_by("pk").values_list("pk", flat=True))


# --- tokenstring.find_tokens: the format, found anywhere ---------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        'API_KEY = "{}"\n',
        "API_KEY='{}'",
        "export TOKEN={}",
        "2030-01-01T12:00:00Z INFO request authorised with {} for alice\n",
        '{{"token": "{}", "user": "alice"}}',
        "https://api.example.com/api/notes/?token={}&page=2",
        "curl -H 'Authorization: Bearer {}' https://api.example.com/",
        "{}",
        "({})",
        "<code>{}</code>",
        "{}_",
        # escaped boundaries: a URL inside a URL, a JSON or Python string literal
        "https://example.com/login?next=%2Fcb%3Ftoken%3D{}",
        '{{"log": "first line\\n{}"}}',
        "'\\t{}'",
        '{{"q": "token\\u003d{}"}}',
        "b'\\x3d{}'",
    ],
)
def test_a_token_is_found_wherever_it_is_embedded(template):
    token = make_token()
    text = template.format(token)
    assert found(text) == [(text.index(token), key_id_of(token))]


def test_several_tokens_on_one_line_are_found_in_order_with_their_offsets():
    one, two, three = make_token(), make_token(), make_token()
    text = f'{{"a": "{one}", "b": "{two}"}} ?t={three}&t={one}'
    assert found(text) == [
        (text.index(one), key_id_of(one)),
        (text.index(two), key_id_of(two)),
        (text.index(three), key_id_of(three)),
        (text.rindex(one), key_id_of(one)),
    ]


def test_the_parts_carry_the_secret_for_the_caller_to_drop():
    token = make_token()
    [(_offset, parsed)] = tokenstring.find_tokens(token, "tka")
    assert (parsed.key_id, parsed.secret) == (key_id_of(token), secret_of(token))
    assert parsed.secret not in repr(parsed)


def test_no_false_positive_on_ten_thousand_random_look_alikes():
    # Right shape, right prefix, random checksum: only the checksum can reject them.
    rng = random.Random(20300101)  # fixed: the test must not flake
    bodies = [
        "".join(rng.choices(tokenstring.BASE62, k=tokenstring.BODY_LENGTH)) for _ in range(10_000)
    ]
    with_prefix = [f"tka_{body}" for body in bodies]
    assert all(tokenstring.parse(value, "tka") is None for value in with_prefix)
    assert found(" ".join(with_prefix)) == []
    assert found("\n".join(bodies)) == []
    # and the same noise does not hide a real token
    token = make_token()
    text = " ".join([*with_prefix[:5000], token, *with_prefix[5000:]])
    assert found(text) == [(text.index(token), key_id_of(token))]


def test_a_token_with_any_one_character_changed_is_not_found():
    token = make_token()
    start = len("tka_")
    for position in range(start, len(token)):
        replacement = "A" if token[position] != "A" else "B"
        changed = token[:position] + replacement + token[position + 1 :]
        assert found(f"key={changed}") == [], position


@pytest.mark.parametrize("glue", ["{}x", "x{}", "0{}", "{}0", "_{}", "my{}", "{}Z9", "tka_{}"])
def test_a_token_glued_to_more_base62_is_not_found(glue):
    assert found(glue.format(make_token())) == []


def test_a_token_for_another_prefix_is_not_found():
    other = make_token("acme")
    assert found(f"key={other}") == []
    assert found(f"key={other}", "acme") == [(4, key_id_of(other))]
    # the checksum does not cover the prefix: only the boundary stops "mytka_" matching
    body = make_token().partition("_")[2]
    assert found(f"key=mytka_{body}") == []
    assert found(f"key=tk_{body} key=TKA_{body}") == []


def test_a_token_of_the_wrong_length_is_not_found():
    token = make_token()
    assert found(token[:-1]) == []
    assert found(token + token[-1]) == []


# --- the service ------------------------------------------------------------------------


def test_finding_keeps_no_secret_and_is_frozen():
    assert [f.name for f in fields(services.Finding)] == ["source", "line", "key_id", "status"]
    finding = services.Finding(source="a.py", line=1, key_id="k" * 12)
    with pytest.raises(FrozenInstanceError):
        finding.line = 2  # type: ignore[misc]


def test_scan_lines_reports_source_line_and_key_id():
    one, two = make_token(), make_token()
    lines = ["nothing here\n", f"a={one} b={two}\n", "\n", f"again {one}\n"]
    assert services.scan_lines("app.log", lines) == [
        services.Finding("app.log", 2, key_id_of(one)),
        services.Finding("app.log", 2, key_id_of(two)),
        services.Finding("app.log", 4, key_id_of(one)),
    ]


def test_scan_lines_uses_the_configured_prefix(settings):
    settings.API_TOKENS = {**settings.API_TOKENS, "TOKEN_PREFIX": "acme"}
    ours, theirs = make_token("acme"), make_token("tka")
    assert services.scan_lines("x", [f"{ours} {theirs}"]) == [
        services.Finding("x", 1, key_id_of(ours))
    ]
    assert services.scan_lines("x", [theirs], prefix="tka") == [
        services.Finding("x", 1, key_id_of(theirs))
    ]


@pytest.fixture
def leaked(alice, bob, issue, clock):
    """One token of every status, plus one no database knows; each as its plaintext."""
    tokens = {
        "active": issue(alice),
        "revoked": issue(alice),
        "expired": issue(alice, expires_in=timedelta(days=1)),
        "owner_inactive": issue(bob),
    }
    services.revoke_token(tokens["revoked"].token, reason="rotated out")
    clock.advance(days=2)  # the others last the default 30 days
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    plaintexts = {status: issued.plaintext for status, issued in tokens.items()}
    plaintexts["unknown"] = make_token()
    return plaintexts


def test_scan_sources_verifies_every_status_in_one_query(leaked, django_assert_num_queries):
    lines = [f"{plaintext} {plaintext}\n" for plaintext in leaked.values()]
    with django_assert_num_queries(1):
        findings = services.scan_sources([("a.log", lines), ("b.log", lines)])
    expected = [
        services.Finding(source, number, key_id_of(plaintext), status)
        for source in ("a.log", "b.log")
        for number, (status, plaintext) in enumerate(leaked.items(), start=1)
        for _twice in range(2)
    ]
    assert findings == expected


def test_scan_sources_of_nothing_asks_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert services.scan_sources([("a.log", ["clean\n"])]) == []


def test_revoke_leaked_revokes_every_verified_unrevoked_token_once(leaked):
    ids = {status: key_id_of(plaintext) for status, plaintext in leaked.items()}
    findings = services.scan_sources([("leak.txt", leaked.values())])
    before = revocations()
    revoked = services.revoke_leaked(findings)
    expected = sorted([ids["active"], ids["expired"], ids["owner_inactive"]])
    assert revoked == expected
    new = [event for event in revocations() if event not in before]
    assert new == [(key_id, "command", {"reason": "leaked"}) for key_id in expected]
    assert APIToken.objects.get(key_id=ids["revoked"]).revoke_reason == "rotated out"
    for key_id in expected:
        token = APIToken.objects.get(key_id=key_id)
        assert (token.revoke_reason, denylist.is_denied(key_id)) == ("leaked", True)
    assert services.revoke_leaked(findings) == []
    assert len(revocations()) == len(before) + 3


# --- the command ------------------------------------------------------------------------


def test_command_reports_path_line_key_id_and_status_and_exits_1(leaked, tmp_path):
    source = tmp_path / "settings.py"
    source.write_text(
        "DEBUG = True\n"
        f'API_KEY = "{leaked["active"]}"\n'
        f'OLD = "{leaked["revoked"]}"  # {leaked["unknown"]}\n'
    )
    code, out, err = run(str(source))
    ids = {status: key_id_of(plaintext) for status, plaintext in leaked.items()}
    assert (code, err) == (1, "")
    assert out == (
        f"{source}:2: key id {ids['active']} (active)\n"
        f"{source}:3: key id {ids['revoked']} (revoked)\n"
        f"{source}:3: key id {ids['unknown']} (unknown)\n"
        "Scanned 1 file: found 3 tokens (3 key ids).\n"
    )


def test_command_reports_each_status_with_one_query(leaked, tmp_path, django_assert_num_queries):
    source = tmp_path / "leak.txt"
    source.write_text("\n".join(leaked.values()) + "\n")
    with django_assert_num_queries(1):
        code, out, _err = run(str(source))
    assert code == 1
    for number, (status, plaintext) in enumerate(leaked.items(), start=1):
        assert f"{source}:{number}: key id {key_id_of(plaintext)} ({status})\n" in out


def test_command_finding_nothing_exits_0(tmp_path, django_assert_num_queries):
    source = tmp_path / "clean.py"
    source.write_text(f"TOKEN = 'tka_{'x' * 50}'\n")
    with django_assert_num_queries(0):
        assert run(str(source)) == (0, "Scanned 1 file: no tokens found.\n", "")


def test_revoke_revokes_active_leaked_tokens_and_they_stop_working(alice, issue, api, tmp_path):
    leaked_token, safe_token = issue(alice), issue(alice)
    for plaintext in (leaked_token.plaintext, safe_token.plaintext):
        assert api.get(NOTES, **bearer(plaintext)).status_code == 200
    (tmp_path / "app.log").write_text(f"GET /api/notes/?token={leaked_token.plaintext}\n")

    code, out, _err = run(str(tmp_path), "--revoke")

    key_id = leaked_token.token.key_id
    assert code == 1
    assert out.endswith(f"found 1 token (1 key id). Revoked 1 token: {key_id}.\n")
    assert f"key id {key_id} (active)" in out  # the status when it was found
    assert api.get(NOTES, **bearer(leaked_token.plaintext)).status_code == 401
    assert api.get(NOTES, **bearer(safe_token.plaintext)).status_code == 200
    assert revocations() == [(key_id, "command", {"reason": "leaked"})]
    leaked_token.token.refresh_from_db()
    assert leaked_token.token.revoke_reason == "leaked"
    assert leaked_token.token.status().value == "revoked"


def test_revoke_leaves_revoked_and_unknown_tokens_alone(leaked, tmp_path):
    source = tmp_path / "leak.txt"
    source.write_text(f"{leaked['revoked']}\n{leaked['unknown']}\n{leaked['revoked']}\n")
    before = snapshot()
    code, out, _err = run(str(source), "--revoke")
    assert code == 1
    assert out.endswith(
        "found 3 tokens (2 key ids). Revoked 0 tokens (none was still unrevoked).\n"
    )
    assert snapshot() == before


def test_revoking_twice_revokes_once(leaked, tmp_path):
    source = tmp_path / "leak.txt"
    source.write_text(" ".join(leaked.values()))
    first = run(str(source), "--revoke", "--json")
    second = run(str(source), "--revoke", "--json")
    assert len(json.loads(first[1])["revoked"]) == 3
    assert json.loads(second[1])["revoked"] == []
    assert [detail for _key_id, _via, detail in revocations()].count({"reason": "leaked"}) == 3


def test_json_output_shape(leaked, tmp_path):
    source = tmp_path / "leak.json"
    source.write_text(f'{{\n  "token": "{leaked["active"]}",\n  "old": "{leaked["unknown"]}"\n}}')
    code, out, err = run(str(source), "--json", "--revoke")
    active, unknown = key_id_of(leaked["active"]), key_id_of(leaked["unknown"])
    assert (code, err, out.count("\n")) == (1, "", 1)
    assert json.loads(out) == {
        "findings": [
            {"path": str(source), "line": 2, "key_id": active, "status": "active"},
            {"path": str(source), "line": 3, "key_id": unknown, "status": "unknown"},
        ],
        "revoked": [active],
    }


def test_json_output_when_clean():
    assert run("-", "--json", stdin=StringIO("nothing\n")) == (
        0,
        '{"findings": [], "revoked": []}\n',
        "",
    )


def test_stdin_is_read_for_dash(leaked):
    log = StringIO(f"line one\nAuthorization: Bearer {leaked['expired']}\n")
    code, out, _err = run("-", stdin=log)
    assert code == 1
    assert out.splitlines()[0] == f"<stdin>:2: key id {key_id_of(leaked['expired'])} (expired)"


def test_stdin_bytes_that_are_not_utf8_do_not_stop_the_scan(leaked):
    raw = io.TextIOWrapper(io.BytesIO(b"\xff\xfe\x00garbage\n\x80" + leaked["active"].encode()))
    code, out, _err = run("-", stdin=raw)
    assert code == 1
    assert f"<stdin>:2: key id {key_id_of(leaked['active'])} (active)" in out


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project tree with tokens in files that are scanned and in files that are not."""
    tokens = {name: make_token() for name in ("src", "deep", "binary", "skipped", "outside")}
    (tmp_path / "src" / "deep" / "deeper").mkdir(parents=True)
    (tmp_path / "src" / "b.py").write_text(f"KEY = '{tokens['src']}'\n")
    (tmp_path / "src" / "a.py").write_text("print('hello')\n")
    (tmp_path / "src" / "deep" / "deeper" / "notes.md").write_text(f"\n\n`{tokens['deep']}`\n")
    blob = b"\x00\xff\xfe\x89PNG\x00" + tokens["binary"].encode() + b"\x00\xc3\x28\n"
    (tmp_path / "src" / "image.bin").write_bytes(blob)
    for skipped in (".git", ".venv", "node_modules", "__pycache__", "src/node_modules"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "leak.txt").write_text(tokens["skipped"])
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text(tokens["outside"])
    (tmp_path / "src" / "link.txt").symlink_to(outside)
    (tmp_path / "src" / "linked-dir").symlink_to(tmp_path / ".git", target_is_directory=True)
    with socket.socket(socket.AF_UNIX) as sock:  # not a regular file: not read
        sock.bind(str(tmp_path / "src" / "s.sock"))
        yield tmp_path, tokens
    outside.unlink()


def test_a_directory_is_walked_recursively_skipping_tool_directories(tree):
    root, tokens = tree
    code, out, err = run(str(root), "--offline")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"{root}/src/b.py:1: key id {key_id_of(tokens['src'])}",
        f"{root}/src/deep/deeper/notes.md:3: key id {key_id_of(tokens['deep'])}",
        f"{root}/src/image.bin:1: key id {key_id_of(tokens['binary'])}",
        "Scanned 4 files: found 3 tokens (3 key ids). "
        "Checksum only: the database was not consulted.",
    ]


def test_several_paths_and_stdin_in_one_run(tree):
    root, tokens = tree
    single = make_token()
    (root / "single.txt").write_text(single)
    code, out, _err = run(
        str(root / "single.txt"), "-", str(root / "src" / "deep"), stdin=StringIO(tokens["src"])
    )
    assert code == 1
    assert [line.split(": key id")[0] for line in out.splitlines()[:-1]] == [
        f"{root}/single.txt:1",
        "<stdin>:1",
        f"{root}/src/deep/deeper/notes.md:3",
    ]
    assert out.splitlines()[-1] == "Scanned 3 files: found 3 tokens (3 key ids)."


def test_a_missing_path_is_an_error_and_nothing_is_revoked(leaked, tmp_path):
    source = tmp_path / "leak.txt"
    source.write_text(leaked["active"])
    before = snapshot()
    with pytest.raises(CommandError) as error:
        run(str(source), str(tmp_path / "nope.txt"), "--revoke")
    assert str(error.value) == f"{tmp_path / 'nope.txt'}: no such file or directory"
    assert error.value.returncode == 2
    assert snapshot() == before


def test_an_unreadable_file_is_an_error_and_nothing_is_revoked(leaked, tmp_path):
    # A socket exists but cannot be opened, even by root: a real read failure.
    source = tmp_path / "leak.txt"
    source.write_text(leaked["active"])
    before = snapshot()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s"))
        with pytest.raises(CommandError) as error:
            run(str(source), str(tmp_path / "s"), "--revoke")
    assert str(error.value).startswith(f"cannot read {tmp_path / 's'}: ")
    assert "\n" not in str(error.value)
    assert error.value.returncode == 2
    assert snapshot() == before


def test_offline_with_revoke_is_an_error(leaked):
    before = snapshot()
    with pytest.raises(CommandError, match="cannot be used with --offline") as error:
        run("-", "--offline", "--revoke", stdin=StringIO(leaked["active"]))
    assert error.value.returncode == 2
    assert snapshot() == before


def test_offline_makes_no_database_query(leaked, tmp_path, django_assert_num_queries):
    source = tmp_path / "leak.txt"
    source.write_text(f"{leaked['active']} {leaked['unknown']}\n")
    with django_assert_num_queries(0):
        code, out, _err = run(str(source), "--offline", "--json")
    assert code == 1
    assert json.loads(out) == {
        "findings": [
            {"path": str(source), "line": 1, "key_id": key_id_of(value), "status": None}
            for value in (leaked["active"], leaked["unknown"])
        ],
        "revoked": [],
    }
    with django_assert_num_queries(0):
        assert run("-", "--offline", stdin=StringIO("clean\n"))[0] == 0


@pytest.mark.parametrize(
    "args", [(), ("--json",), ("--revoke",), ("--offline",), ("--json", "--revoke")]
)
def test_no_secret_and_no_full_token_is_ever_printed(leaked, tmp_path, args):
    source = tmp_path / "leak.txt"
    source.write_text("\n".join(leaked.values()))
    _code, out, err = run(str(source), *args)
    printed = out + err
    for plaintext in leaked.values():
        assert key_id_of(plaintext) in out
        assert secret_of(plaintext) not in printed
        assert plaintext not in printed
        assert plaintext.partition("_")[2][tokenstring.KEY_ID_LENGTH :] not in printed


def test_help_documents_the_exit_status(capsys):
    assert command_line("find_leaked_tokens", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("0 nothing found, 1 tokens found, 2 error", "--offline", "--revoke", "--json"):
        assert part in text


# --- a real manage.py process, as a pre-commit hook runs it ------------------------------


def test_manage_py_offline_scan_of_stdin_in_a_child_process(tmp_path):
    db = tmp_path / "db.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",  # never created: --offline opens no connection
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }

    def manage(*args: str, stdin: str | bytes) -> subprocess.CompletedProcess[bytes]:
        return live.run_python(
            "manage.py",
            "find_leaked_tokens",
            *args,
            env=env,
            timeout=120,
            stdin=stdin if isinstance(stdin, bytes) else stdin.encode(),
        )

    token = make_token()
    diff = (
        "diff --git a/settings.py b/settings.py\n"
        "+++ b/settings.py\n"
        "@@ -1,0 +2 @@\n"
        f'+API_KEY = "{token}"\n'
    ).encode() + b"+\xff\xfe not utf-8\n"
    leak = manage("--offline", "-", stdin=diff)
    assert leak.returncode == 1, leak.stderr
    assert leak.stdout.decode().splitlines() == [
        f"<stdin>:4: key id {key_id_of(token)}",
        "Scanned 1 file: found 1 token (1 key id). Checksum only: the database was not consulted.",
    ]
    assert secret_of(token).encode() not in leak.stdout + leak.stderr

    clean = manage("--offline", "-", stdin=f"+TOKEN = 'tka_{'0' * 50}'\n")
    assert (clean.returncode, clean.stdout) == (0, b"Scanned 1 file: no tokens found.\n")

    missing = manage("--offline", str(tmp_path / "nope"), stdin="")
    assert (missing.returncode, missing.stdout) == (2, b"")
    assert len(missing.stderr.splitlines()) == 1
    assert b"no such file or directory" in missing.stderr

    assert not db.exists()
