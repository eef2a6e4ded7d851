"""Grading Chapter 1 as an instructor would: the solutions get full marks, the
blank release gets 0, and every known-wrong implementation loses points,
with a diagnosis on its feedback page.

One `grade` run covers the whole class (a student per mutant), as in a course.
"""
import csv
import html

import nbformat
import pytest

from mha_checks.backends import gpu_available
from autograder.grading import grade
from autograder.paths import EXERCISES_DIR, NOTEBOOKS, SOLUTIONS_DIR
from mutants.ch01_single_head import MUTANTS

ASSIGNMENT = "ch01_single_head"


def student_notebook(notebook: str, replace: dict = None):
    """The release notebook with the solution's code typed into its answer cells,
    as a student who solved it would submit it; `replace` plants other code."""
    release = nbformat.read(str(EXERCISES_DIR / ASSIGNMENT / f"{notebook}.ipynb"), as_version=4)
    solution = nbformat.read(str(SOLUTIONS_DIR / ASSIGNMENT / f"{notebook}.ipynb"), as_version=4)
    answers = {c.id: c.source for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in release.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if (replace or {}).get(grade_id) is not None:
            cell.source = replace[grade_id]
        elif cell.id in answers:
            cell.source = answers[cell.id]
    return release


def submit(root, student, notebooks):
    folder = root / student / ASSIGNMENT
    folder.mkdir(parents=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, str(folder / f"{name}.ipynb"))


@pytest.fixture(scope="module")
def class_grades(tmp_path_factory):
    root = tmp_path_factory.mktemp("submissions")
    submit(root, "solution", {n: student_notebook(n) for n in NOTEBOOKS})
    submit(root, "blank", {n: nbformat.read(str(EXERCISES_DIR / ASSIGNMENT / f"{n}.ipynb"), as_version=4)
                           for n in NOTEBOOKS})
    for mutant in MUTANTS:
        submit(root, f"mutant-{mutant.name}", {mutant.notebook: student_notebook(
            mutant.notebook, {mutant.cell: mutant.source})})
    out = tmp_path_factory.mktemp("graded")
    grade(root, out, jobs=2, verbose=False)
    with open(out / "grades.csv", newline="") as f:
        rows = {(r["student"], r["notebook"]): r for r in csv.DictReader(f)}
    return rows, out


@pytest.mark.timeout(900)
def test_solution_gets_full_marks(class_grades):
    rows, _ = class_grades
    for notebook in NOTEBOOKS:
        row = rows[("solution", notebook)]
        if notebook == "2_cupy" and not gpu_available():
            assert row["status"] == "needs GPU" and row["score"] == ""
            continue
        assert row["status"] == "graded", row
        assert float(row["score"]) == float(row["max_score"]) > 0, row


def test_blank_release_gets_zero(class_grades):
    rows, _ = class_grades
    for notebook in NOTEBOOKS:
        row = rows[("blank", notebook)]
        if notebook == "2_cupy" and not gpu_available():
            assert row["status"] == "needs GPU"
            continue
        assert row["status"] == "graded" and float(row["score"]) == 0, row


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_known_wrong_implementation_loses_points(class_grades, mutant):
    rows, out = class_grades
    row = rows[(f"mutant-{mutant.name}", mutant.notebook)]
    assert row["status"] == "graded", row
    assert float(row["score"]) < float(row["max_score"]), row
    page = (out / "feedback" / f"mutant-{mutant.name}" / ASSIGNMENT / f"{mutant.notebook}.html").read_text()
    assert mutant.message in " ".join(html.unescape(page).split()), "the diagnosis is on the feedback page"
    others = [n for n in NOTEBOOKS if n != mutant.notebook]
    assert all(rows[(f"mutant-{mutant.name}", n)]["status"] == "missing" for n in others)


def test_feedback_hides_hidden_tests(class_grades):
    _, out = class_grades
    pages = list((out / "feedback").rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text, page
