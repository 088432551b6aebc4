"""The scope registry, scope implications, and who may hold which scope.

Scopes are declared in ``API_TOKENS["SCOPES"]``::

    "SCOPES": {
        "notes:read": "Read your notes.",
        "notes:write": {"description": "Create notes.", "implies": ["notes:read"]},
        "audit:read": {"description": "Read the audit log.", "requires": "staff"},
    }

``requires`` is ``"staff"``, ``"superuser"`` or a Django permission
(``"app_label.codename"``); without it anyone may hold the scope. ``implies``
lists scopes that holding this one also grants (transitively). Implied scopes
are still subject to their own ``requires``: an implication never lets a user
hold what they could not be granted directly.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from tokens_app.conf import cached_until_settings_change, token_settings

SCOPE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*(:[a-z][a-z0-9_.-]*)+$")
MAX_SCOPE_NAME_LENGTH = 64
PERMISSION_NAME = re.compile(r"^[a-z_][a-z0-9_]*\.[A-Za-z0-9_]+$")
ROLE_REQUIREMENTS = ("staff", "superuser")


@dataclass(frozen=True)
class Scope:
    """One declared scope."""

    name: str
    description: str
    requires: str | None = None
    implies: tuple[str, ...] = ()


def _declaration_problems(name: Any, declaration: Any) -> list[str]:
    if (
        not isinstance(name, str)
        or len(name) > MAX_SCOPE_NAME_LENGTH
        or not SCOPE_NAME.fullmatch(name)
    ):
        return [f"scope name {name!r} must look like 'resource:action' (lowercase, at most 64)"]
    if isinstance(declaration, str):
        return []
    if not isinstance(declaration, Mapping):
        return [f"scope {name!r} must be declared with a description or a dict"]
    problems = [
        f"scope {name!r} has unknown key {key!r}"
        for key in sorted(set(declaration) - {"description", "requires", "implies"})
    ]
    if not isinstance(declaration.get("description", ""), str):
        problems.append(f"scope {name!r}: description must be a string")
    requires = declaration.get("requires")
    if requires is not None and not (
        requires in ROLE_REQUIREMENTS
        or (isinstance(requires, str) and PERMISSION_NAME.fullmatch(requires))
    ):
        problems.append(
            f"scope {name!r}: requires must be 'staff', 'superuser' or 'app_label.codename'"
        )
    implies = declaration.get("implies", [])
    if not isinstance(implies, list | tuple) or not all(isinstance(i, str) for i in implies):
        problems.append(f"scope {name!r}: implies must be a list of scope names")
    return problems


def declaration_problems(declared: Mapping[Any, Any]) -> list[str]:
    """Return every problem with a ``SCOPES`` setting (empty when it is sound)."""
    problems = [p for name, decl in declared.items() for p in _declaration_problems(name, decl)]
    if problems:
        return problems
    for name, decl in declared.items():
        for implied in decl.get("implies", []) if isinstance(decl, Mapping) else []:
            if implied not in declared:
                problems.append(f"scope {name!r} implies undeclared scope {implied!r}")
    return problems


class ScopeRegistry:
    """The declared scopes, with the transitive closure of their implications."""

    def __init__(self, scopes: Iterable[Scope]) -> None:
        self._scopes = {scope.name: scope for scope in scopes}
        self._closure = {name: self._close(name) for name in self._scopes}

    def _close(self, name: str) -> frozenset[str]:
        seen: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(self._scopes[current].implies)
        return frozenset(seen)

    def __contains__(self, name: object) -> bool:
        return name in self._scopes

    def __iter__(self) -> Any:
        return iter(sorted(self._scopes.values(), key=lambda scope: scope.name))

    def get(self, name: str) -> Scope | None:
        """Return the declared scope called *name*, or ``None``."""
        return self._scopes.get(name)

    def undeclared(self, names: Iterable[str]) -> list[str]:
        """Return the names among *names* that are not declared, sorted."""
        return sorted({name for name in names if name not in self._scopes})

    def expand(self, names: Iterable[str]) -> frozenset[str]:
        """Return *names* plus every scope they imply; undeclared names are dropped."""
        result: set[str] = set()
        for name in names:
            result |= self._closure.get(name, frozenset())
        return frozenset(result)


@cached_until_settings_change
def registry() -> ScopeRegistry:
    """Return the registry built from settings; raise ``ImproperlyConfigured`` if unsound."""
    declared = token_settings().scopes
    problems = declaration_problems(declared)
    if problems:
        raise ImproperlyConfigured("API_TOKENS['SCOPES']: " + "; ".join(problems) + ".")
    return ScopeRegistry(
        Scope(name=name, description=decl, requires=None)
        if isinstance(decl, str)
        else Scope(
            name=name,
            description=decl.get("description", ""),
            requires=decl.get("requires"),
            implies=tuple(decl.get("implies", ())),
        )
        for name, decl in declared.items()
    )


def may_hold(user: Any, name: str) -> bool:
    """Return whether *user* may hold scope *name* today (the grant policy).

    Undeclared scopes and inactive users hold nothing. Permission-based scopes
    consult ``user.has_perm``, which may query the database once per request.
    """
    scope = registry().get(name)
    if scope is None or user is None or not getattr(user, "is_active", False):
        return False
    if scope.requires is None:
        return True
    if getattr(user, "is_superuser", False):
        return True
    if scope.requires == "staff":
        return bool(getattr(user, "is_staff", False))
    if scope.requires == "superuser":
        return False
    return bool(user.has_perm(scope.requires))


def holdable_scopes(user: Any) -> list[Scope]:
    """Return the declared scopes *user* may hold, sorted by name (for forms and docs)."""
    return [scope for scope in registry() if may_hold(user, scope.name)]


def effective_scopes(granted: Iterable[str], user: Any) -> frozenset[str]:
    """Return what a credential granted *granted* may do for *user* right now.

    Granted scopes the user may no longer hold are dropped (a demoted user's
    tokens lose staff-only scopes at once), implications are expanded, and the
    result is filtered by the grant policy again.
    """
    held = [name for name in granted if may_hold(user, name)]
    return frozenset(name for name in registry().expand(held) if may_hold(user, name))
