"""The layer rule of ``tokens_app``, read from the source with ``ast`` (nothing is imported).

Layers, lowest first (docs/architecture.md says why):

- primitives: ``core/``, ``conf.py``, ``cache.py``, ``invalidation.py``, ``jwt/``; they know
  nothing of models;
- data: ``models.py``, ``lookup.py``, ``migrations/``; they may add primitives;
- services: ``services/``; they may add data, and own every rule;
- adapters: everything else (DRF, admin, commands, checks); they may import anything.

A module may import its own layer and the layers below it, never one above. Every import
counts, wherever it is written (a function-level or ``TYPE_CHECKING`` import is still a
dependency), and so do relative imports. Besides, no module outside ``services`` imports a
private name (leading underscore) of ``services``: adapters use what it exports.

Parsing instead of importing keeps the check honest: an import that only runs inside a
function, or only on one settings profile, is seen all the same.
"""

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "tokens_app"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE

PRIMITIVES, DATA, SERVICES, ADAPTERS = "primitives", "data", "services", "adapters"
RANK = {PRIMITIVES: 0, DATA: 1, SERVICES: 2, ADAPTERS: 3}

# Module prefixes of each layer below the adapters (a prefix covers its submodules).
LAYER_PREFIXES = {
    PRIMITIVES: (
        "tokens_app.core",
        "tokens_app.conf",
        "tokens_app.cache",
        "tokens_app.invalidation",
        "tokens_app.jwt",
    ),
    DATA: ("tokens_app.models", "tokens_app.lookup", "tokens_app.migrations"),
    SERVICES: ("tokens_app.services",),
}

# Known breaches of the layer rule, as (importing module, imported module). Empty: the code
# obeys the rule. An entry here is a debt with a reason written beside it, never a way to
# silence the test; an entry that no longer matches an import fails the test too.
KNOWN_LAYER_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: who imports what, where, and which names."""

    importer: str
    imported: str
    line: int
    names: tuple[str, ...] = ()

    def describe(self) -> str:
        layers = f"({layer_of(self.importer)} -> {layer_of(self.imported)})"
        names = f" [{', '.join(self.names)}]" if self.names else ""
        return f"{self.importer} -> {self.imported}{names}, line {self.line} {layers}"


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """The dotted name of the module at *path* (a package is named by its ``__init__.py``)."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}


def layer_of(module: str) -> str:
    """The layer of a ``tokens_app`` module: what its name starts with, else an adapter."""
    for layer, prefixes in LAYER_PREFIXES.items():
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return layer
    return ADAPTERS


def _absolute(node: ast.ImportFrom, package: str) -> str | None:
    """The module a ``from ... import`` reads from, with relative levels resolved."""
    if not node.level:
        return node.module
    base = package.split(".")
    if node.level - 1 >= len(base):
        return None  # beyond the top package: not ours to judge
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_in(
    module: str, source: str, *, is_package: bool, known: Iterable[str]
) -> Iterator[Import]:
    """Every import of a ``tokens_app`` module in *source*, at any depth of the tree.

    ``from pkg import name`` depends on the submodule ``pkg.name`` when there is one
    (``from tokens_app import services``), else on ``pkg`` itself.
    """
    modules = set(known)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_ours(alias.name):
                    yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            if base is None or not _is_ours(base):
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                target = child if child in modules else base
                yield Import(module, target, node.lineno, (alias.name,))


def _is_ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def all_imports(package_dir: Path = PACKAGE_DIR) -> list[Import]:
    """Every ``tokens_app`` import made by every module of the package."""
    modules = package_modules(package_dir)
    found: list[Import] = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        is_package = path.name == "__init__.py"
        found.extend(imports_in(name, source, is_package=is_package, known=modules))
    return found


def layer_violations(imports: Iterable[Import]) -> list[Import]:
    """The imports of a module from a layer above its own."""
    return [i for i in imports if RANK[layer_of(i.imported)] > RANK[layer_of(i.importer)]]


def private_service_imports(imports: Iterable[Import]) -> list[Import]:
    """Imports, from outside ``services``, of a private name or module of ``services``."""
    found = []
    for i in imports:
        if layer_of(i.importer) == SERVICES or layer_of(i.imported) != SERVICES:
            continue
        path = i.imported.split(".")[1:] + list(i.names)
        if any(part.startswith("_") for part in path):
            found.append(i)
    return found


def _report(title: str, imports: Iterable[Import]) -> str:
    lines = "\n".join(f"  {i.describe()}" for i in imports)
    return f"{title} (see docs/architecture.md):\n{lines}"


def test_tokens_app_obeys_the_layer_rule() -> None:
    imports = all_imports()
    assert imports, f"no tokens_app imports found under {PACKAGE_DIR}: the checker is blind"
    violations = layer_violations(imports)
    new = [i for i in violations if (i.importer, i.imported) not in KNOWN_LAYER_VIOLATIONS]
    assert not new, _report("Imports from a higher layer", new)
    stale = KNOWN_LAYER_VIOLATIONS - {(i.importer, i.imported) for i in violations}
    assert not stale, f"KNOWN_LAYER_VIOLATIONS names edges that are gone: {sorted(stale)}"


def test_only_services_import_private_names_of_services() -> None:
    private = private_service_imports(all_imports())
    assert not private, _report("Private names of services imported from outside", private)


# --- the checker itself: it must see what it is meant to forbid ------------------------

FORBIDDEN_IN_A_PRIMITIVE = """\
import hashlib

from tokens_app.core import clock
from tokens_app.models import APIToken


def later():
    from .. import services
    import tokens_app.authentication
"""


def test_checker_reports_forbidden_imports() -> None:
    known = package_modules()
    imports = list(
        imports_in("tokens_app.core.fake", FORBIDDEN_IN_A_PRIMITIVE, is_package=False, known=known)
    )
    reported = {(i.imported, i.line) for i in layer_violations(imports)}
    assert reported == {
        ("tokens_app.models", 4),  # data, from a primitive
        ("tokens_app.services", 8),  # relative and inside a function: still a dependency
        ("tokens_app.authentication", 9),  # an adapter, by plain ``import``
    }
    assert ("tokens_app.core.clock", 3) in {(i.imported, i.line) for i in imports}


def test_checker_reports_private_service_names() -> None:
    source = (
        "from tokens_app import services\n"
        "from tokens_app.services.credentials import _in_rotation_grace\n"
        "from tokens_app.services import _hidden\n"
    )
    known = package_modules()
    adapter = list(imports_in("tokens_app.api.fake", source, is_package=False, known=known))
    assert [(i.imported, i.line) for i in private_service_imports(adapter)] == [
        ("tokens_app.services.credentials", 2),
        ("tokens_app.services", 3),
    ]
    service = imports_in("tokens_app.services.fake", source, is_package=False, known=known)
    assert private_service_imports(service) == []
