"""Reading the course's functions out of its solution notebooks, for the benchmarks.

A benchmark times or runs the solutions' own code rather than a copy of it. Most
solution notebooks also run experiments in their locked cells (trainings, the
MiniLM model, which needs its weights installed); a benchmark needs none of that,
so :func:`solution_definitions` executes only the imports cell and the solution
cells that only define functions and classes, in notebook order, with the same
cell selection as the grader (setup and tests excluded).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class MissingSolution(RuntimeError):
    """A solution notebook the benchmark times is not there (yet)."""


def solution_definitions(path: Path, names) -> dict:
    """``{name: object}`` from a solution notebook: its imports cell and the solution cells that only define.

    The imports cell and the solution cells whose statements are all definitions run, in
    notebook order; nothing else does (see the module's docstring).
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from autograder.notebooks import solution_namespace

    path = Path(path)
    if not path.exists():
        raise MissingSolution(f"{path} does not exist: the benchmark runs its {', '.join(names)}. "
                              "Write that solution notebook first.")
    namespace = solution_namespace(path, definitions_only=True)
    missing = [name for name in names if not callable(namespace.get(name))]
    if missing:
        raise MissingSolution(f"{path} defines no {', '.join(missing)}: the benchmark runs them")
    return {name: namespace[name] for name in names}
