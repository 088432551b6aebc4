"""The scope registry: declarations, implications, and the grant policy."""

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Permission
from django.core.exceptions import ImproperlyConfigured

from tokens_app.core import scopes
from tokens_app.core.scopes import (
    ScopeRegistry,
    declaration_problems,
    effective_scopes,
    holdable_scopes,
    may_hold,
    registry,
)

pytestmark = pytest.mark.django_db

POLICY_SCOPES = {
    "notes:read": "Anyone.",
    "notes:write": {"description": "Anyone.", "implies": ["notes:read"]},
    "audit:read": {"description": "Staff.", "requires": "staff"},
    "audit:write": {"description": "Staff.", "requires": "staff", "implies": ["notes:read"]},
    "system:admin": {"description": "Superusers.", "requires": "superuser"},
    "notes:add": {"description": "Permission.", "requires": "notes.add_note"},
    "everything:read": {"description": "Anyone.", "implies": ["notes:read", "audit:read"]},
}


@pytest.fixture
def policy(settings: Any) -> None:
    settings.API_TOKENS = {**settings.API_TOKENS, "SCOPES": POLICY_SCOPES}


def reloaded(user: Any) -> Any:
    # has_perm caches permissions on the instance.
    return type(user).objects.get(pk=user.pk)


# declaration_problems


def test_example_project_declaration_has_no_problems(settings):
    assert declaration_problems(settings.API_TOKENS["SCOPES"]) == []
    assert declaration_problems(POLICY_SCOPES) == []


@pytest.mark.parametrize(
    "name",
    [
        "Notes:read",
        "notes",
        "notes:",
        ":read",
        "notes::read",
        "notes:Read",
        "1notes:read",
        "notes read",
        "",
        "a:" + "b" * 63,
        7,
        None,
        ("notes", "read"),
    ],
)
def test_bad_scope_name_is_a_problem(name):
    problems = declaration_problems({name: "A description."})
    assert problems == [
        f"scope name {name!r} must look like 'resource:action' (lowercase, at most 64)"
    ]


@pytest.mark.parametrize("name", ["notes:read", "a:b:c", "my-app.v2:read_all", "a:" + "b" * 62])
def test_good_scope_name_is_accepted(name):
    assert declaration_problems({name: "A description."}) == []


@pytest.mark.parametrize(
    "declared",
    [
        {"notes:read\n": "Trailing newline."},
        {"notes:read": {"requires": "notes.add_note\n"}},
    ],
)
def test_trailing_newline_is_a_problem(declared):
    assert declaration_problems(declared) != []


@pytest.mark.parametrize("declaration", [42, None, ["notes:read"], b"bytes"])
def test_declaration_neither_str_nor_dict_is_a_problem(declaration):
    assert declaration_problems({"notes:read": declaration}) == [
        "scope 'notes:read' must be declared with a description or a dict"
    ]


def test_unknown_declaration_keys_are_problems():
    declared = {"notes:read": {"description": "x", "scope": "y", "admin": True}}
    assert declaration_problems(declared) == [
        "scope 'notes:read' has unknown key 'admin'",
        "scope 'notes:read' has unknown key 'scope'",
    ]


def test_non_string_description_is_a_problem():
    assert declaration_problems({"notes:read": {"description": 3}}) == [
        "scope 'notes:read': description must be a string"
    ]


@pytest.mark.parametrize(
    "requires", ["admin", "", "notes", "Notes.add_note", "notes.add note", 1, ["staff"], False]
)
def test_bad_requires_is_a_problem(requires):
    assert declaration_problems({"notes:read": {"requires": requires}}) == [
        "scope 'notes:read': requires must be 'staff', 'superuser' or 'app_label.codename'"
    ]


@pytest.mark.parametrize(
    "requires", ["staff", "superuser", "notes.add_note", "auth.Change_1", None]
)
def test_good_requires_is_accepted(requires):
    assert declaration_problems({"notes:read": {"description": "x", "requires": requires}}) == []


@pytest.mark.parametrize("implies", ["notes:read", {"notes:read"}, None, [1], ["notes:read", None]])
def test_implies_not_a_list_of_names_is_a_problem(implies):
    declared = {"notes:read": "x", "notes:write": {"implies": implies}}
    assert declaration_problems(declared) == [
        "scope 'notes:write': implies must be a list of scope names"
    ]


def test_implies_tuple_is_accepted():
    assert (
        declaration_problems({"notes:read": "x", "notes:write": {"implies": ("notes:read",)}}) == []
    )


def test_implying_an_undeclared_scope_is_a_problem():
    declared = {"notes:read": "x", "notes:write": {"implies": ["notes:read", "notes:raed"]}}
    assert declaration_problems(declared) == [
        "scope 'notes:write' implies undeclared scope 'notes:raed'"
    ]


def test_every_scope_problem_is_reported_at_once():
    declared = {"Bad": "x", "notes:read": 1, "notes:write": {"requires": "root"}}
    assert len(declaration_problems(declared)) == 3


# registry


@pytest.mark.parametrize(
    "declared",
    [
        {"notes": "No action."},
        {"notes:read": {"implies": ["notes:raed"]}},
        {"notes:read": {"requires": "root"}},
    ],
)
def test_unsound_scopes_make_registry_raise(settings, declared):
    settings.API_TOKENS = {**settings.API_TOKENS, "SCOPES": declared}
    with pytest.raises(ImproperlyConfigured, match=r"^API_TOKENS\['SCOPES'\]: scope"):
        registry()


def test_registry_reloads_when_settings_change(settings):
    assert "reports:read" not in registry()
    settings.API_TOKENS = {**settings.API_TOKENS, "SCOPES": {"reports:read": "Reports."}}
    assert "reports:read" in registry()
    assert "notes:read" not in registry()


def test_registry_describes_declared_scopes(policy):
    reg = registry()
    assert reg.get("notes:read") == scopes.Scope("notes:read", "Anyone.")
    assert reg.get("audit:write") == scopes.Scope(
        "audit:write", "Staff.", requires="staff", implies=("notes:read",)
    )
    assert reg.get("notes:raed") is None
    assert "notes:read" in reg
    assert "notes:raed" not in reg
    assert [scope.name for scope in reg] == sorted(POLICY_SCOPES)


def test_undeclared_returns_unknown_names_sorted_once(policy):
    names = ["notes:read", "zz:top", "aa:bb", "zz:top"]
    assert registry().undeclared(names) == ["aa:bb", "zz:top"]


def test_expand_is_transitive():
    reg = ScopeRegistry(
        [
            scopes.Scope("a:a", "", implies=("b:b",)),
            scopes.Scope("b:b", "", implies=("c:c",)),
            scopes.Scope("c:c", ""),
            scopes.Scope("d:d", ""),
        ]
    )
    assert reg.expand(["a:a"]) == {"a:a", "b:b", "c:c"}
    assert reg.expand(["b:b", "d:d"]) == {"b:b", "c:c", "d:d"}
    assert reg.expand([]) == frozenset()


def test_expand_handles_cycles(settings):
    settings.API_TOKENS = {
        **settings.API_TOKENS,
        "SCOPES": {
            "x:x": {"implies": ["y:y"]},
            "y:y": {"implies": ["z:z"]},
            "z:z": {"implies": ["x:x"]},
            "self:self": {"implies": ["self:self"]},
        },
    }
    assert registry().expand(["y:y"]) == {"x:x", "y:y", "z:z"}
    assert registry().expand(["self:self"]) == {"self:self"}


def test_expand_drops_undeclared_names(policy):
    assert registry().expand(["notes:write", "notes:wirte"]) == {"notes:write", "notes:read"}


# may_hold


@pytest.mark.parametrize(
    ("user_fixture", "scope", "expected"),
    [
        ("alice", "notes:read", True),
        ("alice", "audit:read", False),
        ("alice", "system:admin", False),
        ("alice", "notes:add", False),
        ("staff", "notes:read", True),
        ("staff", "audit:read", True),
        ("staff", "system:admin", False),
        ("staff", "notes:add", False),
        ("superuser", "notes:read", True),
        ("superuser", "audit:read", True),
        ("superuser", "system:admin", True),
        ("superuser", "notes:add", True),
    ],
)
def test_may_hold_follows_requires(request, policy, user_fixture, scope, expected):
    user = request.getfixturevalue(user_fixture)
    assert may_hold(user, scope) is expected


def test_user_with_permission_may_hold_permission_scope(policy, alice):
    alice.user_permissions.add(Permission.objects.get_by_natural_key("add_note", "notes", "note"))
    assert may_hold(reloaded(alice), "notes:add") is True


def test_user_with_permission_through_group_may_hold_permission_scope(policy, alice):
    group = alice.groups.create(name="writers")
    group.permissions.add(Permission.objects.get_by_natural_key("add_note", "notes", "note"))
    assert may_hold(reloaded(alice), "notes:add") is True


@pytest.mark.parametrize("user_fixture", ["alice", "staff", "superuser"])
@pytest.mark.parametrize("scope", ["notes:read", "audit:read", "system:admin"])
def test_inactive_user_holds_nothing(request, policy, user_fixture, scope):
    user = request.getfixturevalue(user_fixture)
    user.is_active = False
    assert may_hold(user, scope) is False


@pytest.mark.parametrize("user", [None, AnonymousUser(), object()])
def test_non_user_holds_nothing(policy, user):
    assert may_hold(user, "notes:read") is False


def test_undeclared_scope_is_held_by_nobody(policy, superuser):
    assert may_hold(superuser, "notes:wirte") is False


def test_holdable_scopes_follow_the_grant_policy(policy, alice, staff, superuser):
    anyone = ["everything:read", "notes:read", "notes:write"]
    assert [s.name for s in holdable_scopes(alice)] == anyone
    assert [s.name for s in holdable_scopes(staff)] == sorted(
        [*anyone, "audit:read", "audit:write"]
    )
    assert [s.name for s in holdable_scopes(superuser)] == sorted(POLICY_SCOPES)


# effective_scopes


def test_effective_scopes_expand_implications(policy, alice):
    assert effective_scopes(["notes:write"], alice) == {"notes:write", "notes:read"}


def test_effective_scopes_drop_undeclared_names(policy, alice):
    assert effective_scopes(["notes:read", "notes:wirte"], alice) == {"notes:read"}


def test_demoted_user_loses_staff_scopes(policy, staff):
    granted = ["audit:read", "notes:read"]
    assert effective_scopes(granted, staff) == {"audit:read", "notes:read"}
    staff.is_staff = False
    staff.save()
    assert effective_scopes(granted, staff) == {"notes:read"}


def test_dropped_scope_grants_none_of_its_implications(policy, staff):
    assert effective_scopes(["audit:write"], staff) == {"audit:write", "notes:read"}
    staff.is_staff = False
    assert effective_scopes(["audit:write"], staff) == frozenset()


def test_implication_never_grants_a_scope_the_user_may_not_hold(policy, alice, staff):
    assert effective_scopes(["everything:read"], alice) == {"everything:read", "notes:read"}
    assert effective_scopes(["everything:read"], staff) == {
        "everything:read",
        "notes:read",
        "audit:read",
    }


def test_permission_scope_lapses_with_the_permission(policy, alice):
    permission = Permission.objects.get_by_natural_key("add_note", "notes", "note")
    alice.user_permissions.add(permission)
    assert effective_scopes(["notes:add"], reloaded(alice)) == {"notes:add"}
    alice.user_permissions.remove(permission)
    assert effective_scopes(["notes:add"], reloaded(alice)) == frozenset()


def test_inactive_user_has_no_effective_scopes(policy, alice):
    alice.is_active = False
    assert effective_scopes(["notes:write"], alice) == frozenset()
