"""What the grader trusts about one notebook: the instructor's files, its test plan, and
the digest of everything its grade depends on.

:func:`load_assignment` reads the instructor's source and release notebooks of
a notebook in the course registry; :func:`grading_inputs` finds every file its
grade depends on (those notebooks, the chapter's cases, the code that grades
it and the data files that code reads), whose digest keys the saved results.
Grading (:mod:`grading`) grades with it and the merge of shards (:mod:`shards`)
checks saved scores against it.
"""
from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

from mha_checks import registry
from mha_checks.cases import case_file
from mha_checks.chapters import chapter_module

from . import program as nbprogram
from .paths import CHECKS_DIR, EXERCISES_DIR, PACKAGE_DIR, SOLUTIONS_DIR
from .sandbox import Limits
from .submissions import GradingInputError


@dataclass
class Assignment:
    """What the grader trusts about one notebook: the instructor's files and test plan."""

    name: str
    notebook: str
    release: dict
    plan: list
    entry: registry.Notebook
    digest: str

    @property
    def track(self) -> str:
        return self.entry.track

    @property
    def max_score(self) -> float:
        return nbprogram.max_points(self.plan)

    def calls(self) -> list:
        return [(test, call) for test in self.plan for call in test.calls]

    def limits(self, limits: Limits) -> Limits:
        """The instructor's limits, with the notebook's own time limits where none were given."""
        return limits.resolved(self.entry)


def load_assignment(name: str, notebook: str, solutions_dir: Path = SOLUTIONS_DIR,
                    exercises_dir: Path = EXERCISES_DIR) -> Assignment:
    try:
        entry = registry.notebook(name, notebook)
    except KeyError as err:
        raise GradingInputError(f"{err.args[0]}: add it to mha_checks/registry.py first.") from None
    source_path = Path(solutions_dir) / name / f"{notebook}.ipynb"
    release_path = Path(exercises_dir) / name / f"{notebook}.ipynb"
    source = json.loads(source_path.read_text(encoding="utf-8"))
    release = json.loads(release_path.read_text(encoding="utf-8"))
    digest = hashlib.sha256()
    for path in grading_inputs(name, source_path, release_path):
        digest.update(_portable_name(path).encode() + b"\0" + path.read_bytes())
    return Assignment(name, notebook, release, nbprogram.test_plan(source), entry, digest.hexdigest())


def _portable_name(path: Path) -> str:
    """A file's name in the digest: the same in every checkout, wherever it lives."""
    for root in (CHECKS_DIR.parent, PACKAGE_DIR.parent):
        if root in path.parents:
            return str(path.relative_to(root))
    return "/".join(path.parts[-2:])


# The modules a grade starts from on the grader's side: this one judges, and the harness runs
# the checks' collect halves in the sandbox, which starts it by name on a command line, so no
# import statement leads to it.
GRADER_ENTRY_MODULES = ("autograder.grading", "autograder.harness")


def grading_inputs(assignment: str, source: Path, release: Path) -> list:
    """Every file a notebook's grade depends on: its instructor notebooks, its chapter's case
    files, the code that grades it and the data files that code reads.

    The code is found by reading import statements, not by running them: starting from the
    chapter's module and the grader's entry modules, every module of the repository's own
    packages that they import counts, recursively, in whatever folder it lives and wherever the
    statement is (inside a function too). So the engine, the shared helpers and every earlier
    chapter whose helpers this one reuses count, and a chapter this one does not import is left
    out: editing it keeps this chapter's saved grades. A data file of those packages counts when
    one of these modules names it in a string, as a module that reads the file does. Read from
    the files, the set is the same in a normal and a shard run, whatever the process imported."""
    roots = _package_roots()
    # Named as chapter_module imports it, so no list of chapters is kept here.
    chapter = f"{chapter_module.__module__}.{assignment}"
    modules = _imported_closure([chapter, *GRADER_ENTRY_MODULES], roots)
    code = sorted(set(modules.values()))
    cases = [case_file(assignment, split) for split in ("visible", "hidden")]
    data = [path for path in _data_files_named_in(code, roots) if path not in cases]
    return [source, release, *cases, *code, *data]


def _package_roots() -> dict:
    """The repository's own packages by import name; imports of anything else (NumPy, the
    standard library) are outside the course and not followed."""
    return {folder.name: folder for folder in (CHECKS_DIR, PACKAGE_DIR)}


def _imported_closure(modules: Sequence[str], roots: dict) -> dict:
    """``{module name: file}`` for ``modules`` and everything they import, recursively."""
    found, seen, todo = {}, set(), list(modules)
    while todo:
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first: they count too.
        for name in _with_parent_packages(todo.pop()):
            if name in seen:
                continue
            seen.add(name)
            path = _module_file(name, roots)
            if path is not None:
                found[name] = path
                todo.extend(_modules_imported_by(path, name))
    return found


def _with_parent_packages(module: str) -> list:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _module_file(module: str, roots: dict) -> Optional[Path]:
    top, *rest = module.split(".")
    if top not in roots:
        return None
    base = roots[top].joinpath(*rest)
    for candidate in (base / "__init__.py", base.parent / f"{base.name}.py"):
        if candidate.is_file():
            return candidate
    return None


def _modules_imported_by(path: Path, module: str) -> set:
    """The absolute names of the modules ``path`` imports. ``from p import n`` names both ``p``
    and ``p.n``, as ``n`` may be a submodule; a name that is no module's file is dropped later."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for level, imported, members in _read_code(path.read_bytes())[0]:
        base = _absolute_module(level, imported, package)
        if base:
            names.add(base)
            names.update(f"{base}.{member}" for member in members if member != "*")
    return names


def _absolute_module(level: int, module: str, package: str) -> str:
    """``from ..engine import x`` (level 2, ``engine``) in package ``a.b`` reads ``a.engine``."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return ""  # above the top package: Python refuses it too
    return ".".join(filter(None, (*parts[:len(parts) - (level - 1)], module)))


@lru_cache(maxsize=None)
def _read_code(source: bytes) -> tuple:
    """``(imports, strings)`` in a module's source: every import statement as ``(level, module,
    imported names)``, functions included (they import when called, and grading calls them),
    and every string constant. Cached by content: a class loads every notebook's assignment."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        # The module's bytes still count; grading reports the error as a grader error per notebook
        # rather than the whole class stopping here.
        return (), frozenset()
    imports, strings = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    return tuple(imports), frozenset(strings)


def _data_files_named_in(code: Sequence[Path], roots: dict) -> list:
    """The packages' data files (anything but code) whose name a module of ``code`` writes in a
    string, e.g. ``Path(__file__).parent / "data" / "model.npz"``."""
    named = {PurePosixPath(text).name for path in code for text in _read_code(path.read_bytes())[1] if text}
    return sorted(path for root in roots.values() for path in root.rglob("*")
                  if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts
                  and path.name in named)

