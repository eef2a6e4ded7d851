"""Grading each chapter as an instructor would: the solutions get full marks, the
blank release gets 0, and every known-wrong implementation of the chapter's
library loses points, with its diagnosis on its feedback page.

One `grade` run per chapter covers its whole class (a student per graded mutant), as in a course;
``MHA_ALL_MUTANTS=1`` grades every mutant of the library, the default a few per notebook
(see ``course.graded_mutants``).
"""
import csv
import html
import os

import nbformat
import pytest

from course import ASSIGNMENTS, all_graded_mutants, graded_mutants, release_path, student_notebook, submit
from autograder.grading import grade
from mha_checks import registry
from mha_checks.chapters import chapter
from mha_checks.backends import gpu_available


def notebooks(assignment):
    return registry.chapter(assignment).notebooks


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """``graded(assignment)``: the chapter's class graded once, on first use."""
    classes = {}

    def grade_class(assignment):
        if assignment not in classes:
            classes[assignment] = _grade_class(assignment, tmp_path_factory.mktemp(assignment))
        return classes[assignment]
    return grade_class


def _grade_class(assignment, work):
    root, out = work / "submissions", work / "graded"
    submit(root, "solution", assignment, {nb.name: student_notebook(assignment, nb.name)
                                          for nb in notebooks(assignment)})
    submit(root, "blank", assignment, {nb.name: nbformat.read(str(release_path(assignment, nb.name)),
                                                              as_version=4) for nb in notebooks(assignment)})
    for mutant in graded_mutants(assignment):
        submit(root, f"mutant-{mutant.name}", assignment, {mutant.notebook: student_notebook(
            assignment, mutant.notebook, {mutant.cell: mutant.source})})
    grade(root, out, jobs=2, verbose=False)
    with open(out / "grades.csv", newline="") as f:
        rows = {(r["student"], r["notebook"]): r for r in csv.DictReader(f)}
    return rows, out


def _not_gradable_here(nb, row) -> bool:
    if nb.needs_gpu and not gpu_available():
        assert row["status"] == "needs GPU" and row["score"] == "", row
        return True
    return False


@pytest.mark.timeout(900)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_gets_full_marks(graded, assignment):
    rows, _ = graded(assignment)
    for nb in notebooks(assignment):
        row = rows[("solution", nb.name)]
        if not _not_gradable_here(nb, row):
            assert row["status"] == "graded", row
            assert float(row["score"]) == float(row["max_score"]) > 0, row


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_release_gets_zero(graded, assignment):
    rows, _ = graded(assignment)
    for nb in notebooks(assignment):
        row = rows[("blank", nb.name)]
        if not _not_gradable_here(nb, row):
            assert row["status"] == "graded" and float(row["score"]) == 0, row


@pytest.mark.timeout(900)
@pytest.mark.parametrize("assignment, mutant", all_graded_mutants())
def test_known_wrong_implementation_loses_points(graded, assignment, mutant):
    rows, out = graded(assignment)
    row = rows[(f"mutant-{mutant.name}", mutant.notebook)]
    if _not_gradable_here(registry.notebook(assignment, mutant.notebook), row):
        pytest.skip(f"{mutant.notebook} needs a CUDA GPU to be graded; none here")
    assert row["status"] == "graded", row
    assert float(row["score"]) < float(row["max_score"]), row
    page = (out / "feedback" / f"mutant-{mutant.name}" / assignment / f"{mutant.notebook}.html").read_text()
    assert mutant.message in " ".join(html.unescape(page).split()), "the diagnosis is on the feedback page"
    others = [nb.name for nb in notebooks(assignment) if nb.name != mutant.notebook]
    assert all(rows[(f"mutant-{mutant.name}", n)]["status"] == "missing" for n in others)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_feedback_hides_hidden_tests(graded, assignment):
    _, out = graded(assignment)
    pages = list((out / "feedback").rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text, page


def _notebooks_asking_about_a_run() -> list:
    """``(assignment, notebook)`` for the notebooks with a question about the student's own run: the first
    two in the default run (each takes a minute or more to grade on a busy machine), every one with
    ``MHA_ALL_SETTINGS=1``."""
    found = sorted({(assignment, q.notebook) for assignment in ASSIGNMENTS
                    for q in chapter(assignment).questions if q.run is not None})
    return found if os.environ.get("MHA_ALL_SETTINGS") == "1" else found[:2]


@pytest.mark.timeout(900)
def test_solutions_that_train_get_full_marks_under_other_cpu_kernels(tmp_path, monkeypatch):
    """A grader on another machine: other PyTorch CPU kernels and MKL's compatible mode, passed on to
    the sandbox. The runs in the notebooks give other digits there; the marks do not change."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    root, out = tmp_path / "submissions", tmp_path / "graded"
    trained = _notebooks_asking_about_a_run()
    assert trained, "no question is judged against the student's run any more: drop this test"
    for assignment, notebook in trained:
        submit(root, "solution", assignment, {notebook: student_notebook(assignment, notebook)})
    grade(root, out, jobs=2, verbose=False)
    with open(out / "grades.csv", newline="") as f:
        rows = {(r["assignment"], r["notebook"]): r for r in csv.DictReader(f)}
    for key in trained:
        assert rows[key]["status"] == "graded" and float(rows[key]["score"]) == float(rows[key]["max_score"]), rows[key]
