"""What the tests know about the course, read from its registry: every test
that walks chapters or notebooks goes through here, so adding a chapter to
``mha_checks/registry.py`` makes the suite cover it."""
import importlib
import importlib.util
import os

import nbformat
import pytest

from autograder.instructor import load_assignment
from autograder.notebooks import solution_run
from autograder.paths import EXERCISES_DIR, SOLUTIONS_DIR
from mha_checks import registry
from mha_checks.backends import gpu_available
from mha_checks.chapters import chapter

NEEDS_GPU = pytest.mark.skipif(
    not gpu_available(),
    reason="needs a CUDA GPU: CuPy is installed but cupy.is_available() is False on this machine")

ASSIGNMENTS = registry.assignments()
FIRST = ASSIGNMENTS[0]  # the chapter tests use as an example class when any chapter would do


def notebook_params(runnable_only: bool = False) -> list:
    """``pytest.param(assignment, notebook)`` for every notebook of the course; GPU ones skip here."""
    params = []
    for ch, nb in registry.all_notebooks():
        marks = [NEEDS_GPU] if nb.needs_gpu else []
        if runnable_only and nb.needs_gpu and not gpu_available():
            continue
        params.append(pytest.param(ch.assignment, nb.name, marks=marks, id=f"{ch.assignment}/{nb.name}"))
    return params


def solution_path(assignment: str, notebook: str):
    return SOLUTIONS_DIR / assignment / f"{notebook}.ipynb"


def release_path(assignment: str, notebook: str):
    return EXERCISES_DIR / assignment / f"{notebook}.ipynb"


def solution(assignment: str, notebook: str) -> dict:
    """The names a solution notebook defines (its imports and solution cells executed), run once per
    process, shared with the references the same process builds."""
    return solution_run(solution_path(assignment, notebook))


def full_marks(assignment: str, notebook: str) -> float:
    """A notebook's points, as the grader reads them from the instructor's notebook."""
    return load_assignment(assignment, notebook).max_score


def checks_for(assignment: str, notebook: str):
    entry = registry.notebook(assignment, notebook)
    return chapter(assignment).checks_class()(entry.track)


def mutants(assignment: str) -> list:
    """The chapter's known-wrong implementations (``tests/mutants/<assignment>.py``)."""
    return importlib.import_module(f"mutants.{assignment}").MUTANTS


def has_mutants(assignment: str) -> bool:
    return importlib.util.find_spec(f"mutants.{assignment}") is not None


def all_mutants() -> list:
    """Every chapter's mutants; a chapter without its module fails
    ``test_every_chapter_has_known_wrong_implementations...`` rather than the collection."""
    return [pytest.param(assignment, m, id=f"{assignment}:{m.name}")
            for assignment in ASSIGNMENTS if has_mutants(assignment) for m in mutants(assignment)]


GRADED_PER_NOTEBOOK = 2   # mutants the class-grading test grades per notebook, unless MHA_ALL_MUTANTS=1


def graded_mutants(assignment: str) -> list:
    """The mutants whose notebooks the class-grading test grades end to end.

    Every mutant is caught by its checks in ``test_checks.py`` (the visible check naming its
    mistake, the hidden one too), which call the same checks the grader runs. Grading a
    notebook per mutant re-executes it whole, so by default the class-grading test takes, per
    notebook, the first mutant of each of its first ``GRADED_PER_NOTEBOOK`` checks: every path
    through the grader (functions, questions, custom checks, each track) without a notebook
    run per mutant. ``MHA_ALL_MUTANTS=1`` grades them all (a few minutes more per chapter)."""
    every = mutants(assignment)
    if os.environ.get("MHA_ALL_MUTANTS") == "1":
        return list(every)
    chosen, checks = [], {}
    for m in every:
        taken = checks.setdefault(m.notebook, set())
        if m.check not in taken and len(taken) < GRADED_PER_NOTEBOOK:
            taken.add(m.check)
            chosen.append(m)
    return chosen


def all_graded_mutants() -> list:
    return [pytest.param(assignment, m, id=f"{assignment}:{m.name}")
            for assignment in ASSIGNMENTS if has_mutants(assignment) for m in graded_mutants(assignment)]


def student_notebook(assignment: str, notebook: str, replace: dict = None):
    """The release notebook with the solution's code typed into its answer cells,
    as a student who solved it would submit it; ``replace`` plants other code."""
    release = nbformat.read(str(release_path(assignment, notebook)), as_version=4)
    answers = {c.id: c.source for c in nbformat.read(str(solution_path(assignment, notebook)), as_version=4).cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in release.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if (replace or {}).get(grade_id) is not None:
            cell.source = replace[grade_id]
        elif cell.id in answers:
            cell.source = answers[cell.id]
    return release


def submit(root, student: str, assignment: str, notebooks: dict):
    folder = root / student / assignment
    folder.mkdir(parents=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, str(folder / f"{name}.ipynb"))
