"""The product seen from above: the import graph of ``mha_checks``, ``autograder`` and ``benchmarks``.

The layering is benchmarks → autograder → mha_checks → chapters → engine → cases, registry,
backends, tolerances, transport. Three rules keep it readable as it grows, and each is checked on
the graph drawn from the source with ``ast`` (imports at module level and inside functions alike,
since a deferred import is still a dependency):

- no import cycle: a circle means neither module can be read, tested or changed alone;
- no module imports a name starting with ``_`` from another module of the product: a private
  name is its module's to change, and an importer elsewhere breaks when it does (a dunder such
  as ``__version__`` is public by Python's convention);
- a chapter module (``mha_checks/chapters/chNN_*.py``) imports only earlier chapters and shared
  modules: a later chapter builds on an earlier one, never the other way, and what two chapters
  check alike belongs in a shared module beside them.

No module is exempt: a failure names the file, the line and the import, and says what to do.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from autograder.paths import REPO_ROOT

PACKAGES = ("mha_checks", "autograder", "benchmarks")
CHAPTER_MODULE = re.compile(r"^mha_checks\.chapters\.ch(\d+)_\w+$")


@dataclass(frozen=True)
class Import:
    importer: str        # dotted name of the importing module
    target: str          # dotted name of the product module it depends on
    name: str            # the name taken from it ("" for ``import target``)
    line: int
    path: Path           # the importer's file

    def where(self) -> str:
        taken = f"from {self.target} import {self.name}" if self.name else f"import {self.target}"
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}: {taken}"


def product_modules() -> dict:
    """``{dotted name: file}`` of every module of the product packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(module: str, level: int, importer: str, importer_path: Path) -> str:
    """The dotted name a ``from ... import`` names, relative imports resolved against the importer."""
    if level == 0:
        return module
    package = importer.split(".") if _is_package(importer_path) else importer.split(".")[:-1]
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _owning_module(dotted: str, modules: dict):
    """The product module that defines ``dotted`` (itself, or the longest module prefix of it)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(importer: str, path: Path, modules: dict) -> list:
    """Every import of a product module by ``importer``, at any depth of its source."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owning_module(alias.name, modules)
                if target:
                    found.append(Import(importer, target, "", node.lineno, path))
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module or "", node.level, importer, path)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:            # ``from package import module``
                    found.append(Import(importer, submodule, "", node.lineno, path))
                elif source in modules:
                    found.append(Import(importer, source, alias.name, node.lineno, path))
    return [i for i in found if i.target != importer]


def import_graph() -> list:
    modules = product_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


# --------------------------------------------------------------------------- cycles


def strongly_connected(edges: dict) -> list:
    """Tarjan's components of a graph ``{node: set of nodes}``, those with more than one node."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def one_cycle(component: list, edges: dict) -> list:
    """A closed path through a component's first module, found breadth-first (the shortest)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node] & members):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its own component")


def test_no_import_cycle():
    graph = import_graph()
    edges = {}
    for imp in graph:
        edges.setdefault(imp.importer, set()).add(imp.target)
    problems = []
    for component in strongly_connected(edges):
        cycle = one_cycle(component, edges)
        steps = [next(i for i in graph if i.importer == a and i.target == b).where()
                 for a, b in zip(cycle, cycle[1:])]
        problems.append(" → ".join(cycle) + "\n      " + "\n      ".join(steps)
                        + ("\n    (and with it: " + ", ".join(m for m in component if m not in cycle) + ")"
                           if len(component) > len(cycle) - 1 else ""))
    if problems:
        pytest.fail("import cycles among the product's modules:\n  " + "\n  ".join(problems) + "\n"
                    "Break each circle: move what both sides need into a module of its own that both "
                    "import, so that the arrows run one way (an import deferred into a function is "
                    "still an arrow).", pytrace=False)


# --------------------------------------------------------------------------- private names


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_a_private_name_of_another():
    private = [imp for imp in import_graph() if is_private(imp.name)]
    if private:
        pytest.fail("modules import private names of other modules of the product:\n  "
                    + "\n  ".join(imp.where() for imp in private) + "\n"
                    "A name starting with _ is its module's to change. Make it public in its module "
                    "(rename it, and keep its behaviour), or, when several modules need it, move it to a "
                    "shared module with a public name.", pytrace=False)


# --------------------------------------------------------------------------- chapters depend downward


def chapter_number(module: str):
    match = CHAPTER_MODULE.match(module)
    return int(match.group(1)) if match else None


def test_chapter_modules_depend_only_on_earlier_chapters_and_shared_modules():
    upward = [imp for imp in import_graph()
              if chapter_number(imp.importer) is not None and chapter_number(imp.target) is not None
              and chapter_number(imp.target) >= chapter_number(imp.importer)]
    if upward:
        pytest.fail("chapter modules import chapters that are not earlier than themselves:\n  "
                    + "\n  ".join(imp.where() for imp in upward) + "\n"
                    "A chapter builds on earlier chapters only. Move what both need into the shared kit "
                    "(mha_checks/kit/), and import it from there.", pytrace=False)


def test_the_graph_sees_the_imports_it_checks():
    """The rules above pass vacuously on an empty graph: make sure the walker finds known arrows."""
    edges = {(imp.importer, imp.target) for imp in import_graph()}
    assert ("mha_checks.kit.layers", "mha_checks.engine") in edges, "a relative import was missed"
    assert ("benchmarks.mha", "benchmarks.solutions") in edges, "an absolute import was missed"
    assert any(importer == "benchmarks.heads" and target.startswith("mha_checks.chapters.")
               for importer, target in edges), "an import of a chapter module was missed"
