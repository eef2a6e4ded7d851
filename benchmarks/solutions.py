"""Reading the course's functions out of its solution notebooks, for the benchmarks.

A benchmark times or runs the solutions' own code rather than a copy of it. Most
solution notebooks also run experiments in their locked cells (trainings, the
MiniLM model, which needs its weights installed); a benchmark needs none of that,
so :func:`solution_definitions` executes only the imports cell and the solution
cells that only define functions and classes, in notebook order, with the same
cell selection as the grader (setup and tests excluded).

Every benchmark loads through :func:`load_course`: a table names what it runs and
from which notebook, and a missing notebook or function stops it with
:class:`MissingSolution`, which says which.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from autograder.notebooks import solution_namespace
from autograder.paths import SOLUTIONS_DIR

REPO = Path(__file__).resolve().parent.parent


class MissingSolution(RuntimeError):
    """A solution notebook the benchmark times is not there (yet)."""


def _missing_notebook(path: Path, names) -> MissingSolution:
    return MissingSolution(f"{path} does not exist: the benchmark runs its {', '.join(names)}. "
                           "Write that solution notebook first.")


def _require_callables(path: Path, namespace: dict, names) -> None:
    missing = [name for name in names if not callable(namespace.get(name))]
    if missing:
        raise MissingSolution(f"{path} defines no {', '.join(missing)}: the benchmark runs them")


def solution_definitions(path: Path, names) -> dict:
    """``{name: object}`` from a solution notebook: its imports cell and the solution cells that only define.

    The imports cell and the solution cells whose statements are all definitions run, in
    notebook order; nothing else does (see the module's docstring).
    """
    path = Path(path)
    if not path.exists():
        raise _missing_notebook(path, names)
    namespace = solution_namespace(path, definitions_only=True)
    _require_callables(path, namespace, names)
    return {name: namespace[name] for name in names}


def load_course(table: dict, solutions_dir: Optional[Path] = None, definitions_only: bool = True) -> dict:
    """``{label: object}`` for a table mapping each label to ``(assignment, notebook, name)``.

    Each notebook is read once, however many of its names the table lists. By default only its
    definitions run (:func:`solution_definitions`: no experiment, no MiniLM install);
    ``definitions_only=False`` runs every locked and solution cell, for functions that need a
    notebook-level object (a compiled CuPy kernel, say).
    """
    solutions_dir = Path(solutions_dir or SOLUTIONS_DIR)
    wanted = {}
    for assignment, notebook, name in table.values():
        wanted.setdefault(solutions_dir / assignment / f"{notebook}.ipynb", []).append(name)
    for path, names in wanted.items():
        if not path.exists():  # before any notebook runs: a missing one costs no time
            raise _missing_notebook(path, names)
    namespaces = {path: _namespace(path, names, definitions_only) for path, names in wanted.items()}
    return {label: namespaces[solutions_dir / assignment / f"{notebook}.ipynb"][name]
            for label, (assignment, notebook, name) in table.items()}


def _namespace(path: Path, names, definitions_only: bool) -> dict:
    if definitions_only:
        return solution_definitions(path, names)
    namespace = solution_namespace(path)
    _require_callables(path, namespace, names)
    return namespace
