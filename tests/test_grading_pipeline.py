"""The instructor pipeline (release, autograde, feedback, CLI) on a dummy assignment.

The dummy assignment is built here, in a temporary folder, so these tests do
not depend on the course's real notebooks: one solution cell ``def add(a, b)``,
a visible test cell (1 point) and a test cell with hidden tests (2 points),
copied as ``1_numpy``, ``2_cupy`` (a GPU notebook) and ``3_pytorch``.

nbgrader costs a few seconds per call, so one batch of students is graded once
(module fixture) and the tests read its results.
"""
import hashlib
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import cli
from autograder.grading import (COLUMNS, GradingInputError, find_submissions, grade,
                                notebook_seconds, read_csv, repair_submission,
                                sanitize_student_ids, summary, _notebook_watchdog, _short)
from autograder.nbgrader_config import last_error
from autograder.release import ReleaseError, release, stale_release_files

ASSIGNMENT = "dummy"
NOTEBOOKS = ("1_numpy", "2_cupy", "3_pytorch")
HIDDEN_SNIPPET = "add(-7, 12) == 5"  # must never reach a student or a feedback page
SOLUTION_LINE = "return a + b"
CELL_TIMEOUT = 5

CORRECT = "def add(a, b):\n    return a + b"
PASSES_VISIBLE_ONLY = "def add(a, b):\n    return abs(a) + b"  # fails the hidden test
INFINITE_LOOP = "while True:\n    pass"
KERNEL_CRASH = "import os\nos._exit(1)"

pytestmark = pytest.mark.timeout(300)


# --------------------------------------------------------------------------- builders


def _nbgrader(grade_id, *, grade=False, solution=False, locked=False, points=None):
    meta = {"grade": grade, "solution": solution, "locked": locked,
            "grade_id": grade_id, "schema_version": 3}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def dummy_source_notebook():
    nb = new_notebook(cells=[
        new_markdown_cell("# Dummy assignment", id="intro"),
        new_code_cell("import math", id="setup", metadata=_nbgrader("setup", locked=True)),
        new_code_cell(f"def add(a, b):\n    ### BEGIN SOLUTION\n    {SOLUTION_LINE}\n"
                      "    ### END SOLUTION", id="add-solution",
                      metadata=_nbgrader("add_solution", solution=True)),
        new_code_cell("assert add(1, 2) == 3, 'add(1, 2) should be 3'", id="test-visible",
                      metadata=_nbgrader("test_add_visible", grade=True, locked=True, points=1)),
        new_code_cell("assert add(0, 0) == 0\n### BEGIN HIDDEN TESTS\n"
                      f"assert {HIDDEN_SNIPPET}, 'hidden: negative numbers'\n"
                      "### END HIDDEN TESTS", id="test-hidden",
                      metadata=_nbgrader("test_add_hidden", grade=True, locked=True, points=2)),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def student_notebook(release_nb: Path, solution=None, delete_cells=()) -> str:
    """A student's version of a release notebook: solution filled in, cells deleted."""
    nb = json.loads(release_nb.read_text())
    if solution is not None:
        cell = next(c for c in nb["cells"] if c["id"] == "add-solution")
        cell["source"] = solution
    nb["cells"] = [c for c in nb["cells"] if c["id"] not in delete_cells]
    return json.dumps(nb)


def metadata_stripped(release_nb: Path, solution: str) -> str:
    """Saved by an editor that drops cell metadata, the solution typed into a new cell.

    Unrepaired, nbgrader 0.9 crashes on this (KeyError while restoring test cells).
    """
    nb = json.loads(release_nb.read_text())
    for cell in nb["cells"]:
        cell["metadata"].pop("nbgrader", None)
    index = next(i for i, c in enumerate(nb["cells"]) if c["id"] == "add-solution")
    nb["cells"][index] = new_code_cell(solution, id="student-typed-this")
    return json.dumps(nb)


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Dummy solutions and their release (in temporary folders)."""
    root = tmp_path_factory.mktemp("course")
    solutions = root / "solutions"
    (solutions / ASSIGNMENT).mkdir(parents=True)
    for name in NOTEBOOKS:
        nbformat.write(dummy_source_notebook(), solutions / ASSIGNMENT / f"{name}.ipynb")
    exercises = root / "exercises"
    release(ASSIGNMENT, out_dir=exercises, solutions_dir=solutions)
    return {"root": root, "solutions": solutions, "exercises": exercises}


@pytest.fixture(scope="module")
def graded(course):
    """One batch of students covering every status, graded once."""
    released = course["exercises"] / ASSIGNMENT
    subs = course["root"] / "submissions"

    def submit(student, notebook, text):
        path = subs / student / ASSIGNMENT / f"{notebook}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    for name in NOTEBOOKS:  # alice: everything right
        submit("alice", name, student_notebook(released / f"{name}.ipynb", CORRECT))
    submit("bob", "1_numpy", (released / "1_numpy.ipynb").read_text())  # blank release
    submit("carol", "1_numpy", '{"cells": [')  # truncated upload
    submit("carol", "3_pytorch", metadata_stripped(released / "3_pytorch.ipynb", CORRECT))
    submit("dave", "1_numpy", student_notebook(  # deleted the test he fails
        released / "1_numpy.ipynb", PASSES_VISIBLE_ONLY, delete_cells={"test-hidden"}))
    submit("erin", "1_numpy", student_notebook(released / "1_numpy.ipynb", INFINITE_LOOP))
    submit("frank", "1_numpy", student_notebook(released / "1_numpy.ipynb", KERNEL_CRASH))
    submit("frank", "3_pytorch", student_notebook(released / "3_pytorch.ipynb", CORRECT))
    (subs / "Zoe Smith" / ASSIGNMENT).mkdir(parents=True)  # an empty upload

    before = tree_digest(subs)
    out = course["root"] / "out"
    rows = grade(subs, out, cell_timeout=CELL_TIMEOUT, gpu_available=False,
                 solutions_dir=course["solutions"])
    return {"rows": {(r.student, r.notebook): r for r in rows}, "list": rows, "out": out,
            "subs": subs, "unchanged": tree_digest(subs) == before}


# --------------------------------------------------------------------------- release


def test_release_hides_solutions_and_hidden_tests_and_keeps_cell_ids(course):
    source = nbformat.read(course["solutions"] / ASSIGNMENT / "1_numpy.ipynb", 4)
    for name in NOTEBOOKS:
        path = course["exercises"] / ASSIGNMENT / f"{name}.ipynb"
        text = path.read_text()
        assert SOLUTION_LINE not in text and HIDDEN_SNIPPET not in text
        assert "raise NotImplementedError()" in text
        assert [c.id for c in nbformat.read(path, 4).cells] == [c.id for c in source.cells]


def test_release_is_byte_identical_when_repeated(course, tmp_path):
    release(ASSIGNMENT, out_dir=tmp_path, solutions_dir=course["solutions"])
    for name in NOTEBOOKS:
        again = (tmp_path / ASSIGNMENT / f"{name}.ipynb").read_bytes()
        assert again == (course["exercises"] / ASSIGNMENT / f"{name}.ipynb").read_bytes()


def test_stale_release_files_ignores_formatting_and_reports_changes(course, tmp_path):
    committed = tmp_path / ASSIGNMENT
    shutil.copytree(course["exercises"] / ASSIGNMENT, committed)
    reformatted = committed / "1_numpy.ipynb"  # same JSON, other layout: not stale
    reformatted.write_text(json.dumps(json.loads(reformatted.read_text()), indent=4))
    edited = committed / "2_cupy.ipynb"  # hand-edited: stale
    edited.write_text(edited.read_text().replace("Dummy assignment", "Edited by hand"))
    (committed / "3_pytorch.ipynb").unlink()  # missing: stale

    stale = stale_release_files(ASSIGNMENT, out_dir=tmp_path, solutions_dir=course["solutions"])
    assert stale == [str(edited), str(committed / "3_pytorch.ipynb")]


def test_release_refuses_cells_without_ids(tmp_path):
    nb = dummy_source_notebook()
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    (tmp_path / "sol" / ASSIGNMENT).mkdir(parents=True)
    (tmp_path / "sol" / ASSIGNMENT / "1_numpy.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ReleaseError, match="no 'id'"):
        release(ASSIGNMENT, out_dir=tmp_path / "out", solutions_dir=tmp_path / "sol")


# --------------------------------------------------------------------------- grading


def test_correct_submission_gets_full_marks(graded):
    for name in ("1_numpy", "3_pytorch"):
        row = graded["rows"][("alice", name)]
        assert (row.status, row.score, row.max_score) == ("graded", 3, 3)
        assert row.seconds is not None and row.seconds > 0


def test_gpu_notebook_without_gpu_is_not_graded(graded):
    row = graded["rows"][("alice", "2_cupy")]
    assert (row.status, row.score, row.max_score) == ("needs GPU", None, 3)


def test_blank_release_scores_zero(graded):
    row = graded["rows"][("bob", "1_numpy")]
    assert (row.status, row.score, row.max_score) == ("graded", 0, 3)


def test_missing_notebooks(graded):
    for key in [("bob", "2_cupy"), ("bob", "3_pytorch")] + [("Zoe_Smith", n) for n in NOTEBOOKS]:
        row = graded["rows"][key]
        assert (row.status, row.score, row.max_score) == ("missing", None, 3)


def test_invalid_json_fails_alone(graded):
    row = graded["rows"][("carol", "1_numpy")]
    assert row.status.startswith("failed: invalid notebook JSON") and row.score is None
    assert graded["rows"][("dave", "1_numpy")].status == "graded"  # the next student


def test_notebook_without_nbgrader_metadata_is_repaired_and_graded(graded):
    row = graded["rows"][("carol", "3_pytorch")]  # metadata stripped, solution cell replaced
    assert (row.status, row.score, row.max_score) == ("graded", 3, 3)
    log = (graded["out"] / "logs" / f"carol__{ASSIGNMENT}.log").read_text()
    assert "restored nbgrader metadata of cell test_add_hidden" in log
    assert "cell add_solution was deleted" in log


def test_repair_puts_placeholders_where_deleted_cells_were(course):
    release_nb = json.loads((course["exercises"] / ASSIGNMENT / "1_numpy.ipynb").read_text())
    nb = json.loads(json.dumps(release_nb))
    nb["cells"] = [c for c in nb["cells"] if c["id"] not in ("setup", "add-solution", "test-hidden")]
    notes = repair_submission(nb, release_nb)
    assert [c["metadata"].get("nbgrader", {}).get("grade_id") for c in nb["cells"]] == [
        None, "setup", "add_solution", "test_add_visible"]  # nbgrader itself restores tests
    assert all(c["source"] == "" for c in nb["cells"][1:3]) and len(notes) == 2


def test_deleted_test_cell_is_restored_and_still_fails(graded):
    row = graded["rows"][("dave", "1_numpy")]
    assert (row.status, row.score, row.max_score) == ("graded", 1, 3)
    autograded = graded["out"] / "nbgrader_course" / "autograded" / "dave" / ASSIGNMENT
    nb = nbformat.read(autograded / "1_numpy.ipynb", 4)
    restored = [c for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "test_add_hidden"]
    assert len(restored) == 1 and "was missing from the submission" in restored[0].source
    assert any(o.output_type == "error" for o in restored[0].outputs)


def test_infinite_loop_is_stopped_by_the_cell_timeout(graded):
    row = graded["rows"][("erin", "1_numpy")]
    assert row.status.startswith("failed") or (row.status, row.score) == ("graded", 0)
    assert row.seconds is not None and row.seconds < CELL_TIMEOUT + 25


def test_kernel_crash_fails_that_notebook_only(graded):
    crashed = graded["rows"][("frank", "1_numpy")]
    assert crashed.status.startswith("failed: ") and "DeadKernelError" in crashed.status
    assert crashed.score is None and crashed.max_score == 3
    assert graded["rows"][("frank", "3_pytorch")].score == 3


def test_grades_csv_logs_and_untouched_submissions(graded):
    rows = read_csv(graded["out"] / "grades.csv")
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 7 * len(NOTEBOOKS)
    keys = [(r["student"], r["assignment"], r["notebook"]) for r in rows]
    assert keys == sorted(keys, key=lambda k: (k[0].casefold(),) + k)  # alphabetical
    bob = {r["notebook"]: r for r in rows if r["student"] == "bob"}
    assert (bob["1_numpy"]["score"], bob["2_cupy"]["score"], bob["2_cupy"]["max_score"]) == ("0", "", "3")
    for student in ("alice", "bob", "carol", "dave", "erin", "frank", "Zoe_Smith"):
        assert (graded["out"] / "logs" / f"{student}__{ASSIGNMENT}.log").is_file()
    assert graded["unchanged"], "grading modified the submissions folder"
    assert summary(graded["list"]) == "21 notebooks: graded: 7, missing: 11, needs GPU: 1, failed: 2"


def test_feedback_never_shows_hidden_tests(graded):
    feedback = graded["out"] / "feedback"
    pages = sorted(feedback.rglob("*.html"))
    assert feedback / "alice" / ASSIGNMENT / "1_numpy.html" in pages
    dave = (feedback / "dave" / ASSIGNMENT / "1_numpy.html").read_text()
    assert "hidden: negative numbers" in dave  # the failing hidden test's message is shown
    for page in pages:
        assert HIDDEN_SNIPPET not in page.read_text(), page


# --------------------------------------------------------------------------- input and helpers


def test_student_ids_are_sanitized_and_unique():
    ids = sanitize_student_ids(["Ada Lovelace", "Ada_Lovelace", "-x", ".hidden", "ok.id"])
    assert ids == {"-x": "x", ".hidden": "hidden", "Ada Lovelace": "Ada_Lovelace",
                   "Ada_Lovelace": "Ada_Lovelace_2", "ok.id": "ok.id"}


def test_wrong_layout_says_what_to_do(tmp_path, course):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "1_numpy.ipynb").write_text("{}")
    with pytest.raises(GradingInputError, match="must sit in an assignment folder"):
        find_submissions(tmp_path, course["solutions"])
    with pytest.raises(GradingInputError, match="unknown assignment nope"):
        find_submissions(tmp_path, course["solutions"], ["nope"])


def test_grading_never_clears_folders_it_did_not_write(graded, course, tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "mine.txt").write_text("keep me")
    with pytest.raises(GradingInputError, match="new or empty --out folder"):
        grade(graded["subs"], tmp_path, gpu_available=False, solutions_dir=course["solutions"])
    assert (tmp_path / "logs" / "mine.txt").read_text() == "keep me"


def test_cli_reports_input_errors_without_traceback(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "subs" / "alice").mkdir(parents=True)
    assert cli.main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "o")]) == 2
    assert cli.main(["release", "no_such_assignment"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "holds no submission" in err and "unknown assignment" in err
    assert "Traceback" not in err


def test_failure_reason_is_the_exception_line():
    log = ("[AutogradeApp | ERROR] Kernel died while waiting for execute reply.\n"
           "[AutogradeApp | ERROR] Traceback (most recent call last):\n"
           "      File \"x.py\", line 1, in f\n"
           "    nbclient.exceptions.DeadKernelError: Kernel died\n"
           "[AutogradeApp | ERROR] There was an error processing assignment 'a' for student 's'\n")
    assert _short(last_error(log)) == "DeadKernelError: Kernel died"


def test_notebook_timings_and_watchdog():
    lines = [(2.0, "[AutogradeApp | INFO] Sanitizing /c/submitted/s/a/1_numpy.ipynb\n"),
             (5.5, "[AutogradeApp | INFO] Sanitizing /c/submitted/s/a/3_pytorch.ipynb\n")]
    assert notebook_seconds(lines, 9.0) == {"1_numpy": 3.5, "3_pytorch": 3.5}
    watchdog = _notebook_watchdog(10)
    assert watchdog(lines, 15.0) is None
    assert "3_pytorch ran longer than 10 s" in watchdog(lines, 16.0)
