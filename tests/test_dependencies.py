"""The runtime dependencies in pyproject.toml are exactly the third-party packages that
qmpgmem/ imports.

Why: a dependency nothing imports is installed (and, for a pytest plugin, loaded) in every
user's environment for nothing; an import that no dependency provides works in the dev venv
and fails in a fresh install of the wheel.

The one exception is pytest: only qmpgmem/pytest_plugin/ imports it, and that plugin is
loaded by pytest itself (entry point pytest11), so whoever runs it has pytest already.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "qmpgmem"
#: Distribution -> the only part of qmpgmem/ allowed to import it without declaring it.
UNDECLARED_ALLOWED = {"pytest": PACKAGE / "pytest_plugin"}

_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def normalize(name: str) -> str:
    """A distribution name in canonical form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = set()
    for requirement in project["dependencies"]:
        match = _NAME.match(requirement)
        assert match, f"cannot read a name from dependency {requirement!r}"
        names.add(normalize(match.group(1)))
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST) -> set[str]:
    """Top-level names of absolute imports, at any depth except under ``if TYPE_CHECKING:``."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def third_party_imports() -> dict[str, set[Path]]:
    """Top-level module name -> the files of qmpgmem/ that import it (stdlib and ours left out)."""
    found: dict[str, set[Path]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _imported(ast.parse(path.read_bytes(), filename=str(path))):
            if name != "qmpgmem" and name not in sys.stdlib_module_names:
                found[name].add(path)
    return found


def test_the_walk_sees_imports_at_any_depth_but_not_type_checking_only() -> None:
    tree = ast.parse(
        "import numpy.linalg\n"
        "from ruamel.yaml import YAML\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n    import typeshed_only\nelse:\n    import runtime_too\n"
        "def f():\n    import lazy\n"
    )
    assert _imported(tree) == {"numpy", "ruamel", "runtime_too", "lazy"}


def test_runtime_dependencies_are_what_qmpgmem_imports() -> None:
    providers = packages_distributions()
    imports = third_party_imports()
    assert "numpy" in imports and "click" in imports  # the walk found real imports
    needed: dict[str, set[Path]] = defaultdict(set)  # distribution -> importing files
    unknown = {}
    for module, files in imports.items():
        dists = {normalize(d) for d in providers.get(module, [])}
        if not dists:
            unknown[module] = sorted(str(f.relative_to(REPO)) for f in files)
            continue
        # A namespace such as ruamel is shared by several distributions: the declared one.
        chosen = dists & declared() or dists
        for dist in chosen:
            needed[dist] |= files
    assert not unknown, f"imported, but no installed distribution provides them: {unknown}"

    for dist, root in UNDECLARED_ALLOWED.items():
        outside = sorted(str(f.relative_to(REPO)) for f in needed.pop(dist, set()))
        outside = [f for f in outside if not (REPO / f).is_relative_to(root)]
        assert not outside, f"{dist} is imported outside {root.relative_to(REPO)}: {outside}"

    missing = {
        dist: sorted(str(f.relative_to(REPO)) for f in files)
        for dist, files in needed.items()
        if dist not in declared()
    }
    assert not missing, f"imported by qmpgmem/ but not in [project].dependencies: {missing}"
    unused = declared() - set(needed)
    assert not unused, f"in [project].dependencies but nothing in qmpgmem/ imports them: {unused}"
