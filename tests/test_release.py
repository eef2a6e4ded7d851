"""Releasing an assignment (nbgrader generate_assignment) on a dummy assignment.

The dummy assignment is built here, in a temporary folder, so these tests do
not depend on the course's real notebooks: one solution cell ``def add(a, b)``,
a visible test cell (1 point) and a test cell with hidden tests (2 points),
copied as ``1_numpy``, ``2_cupy`` and ``3_pytorch``.
"""
import json
import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.release import ReleaseError, release, stale_release_files

ASSIGNMENT = "dummy"
NOTEBOOKS = ("1_numpy", "2_cupy", "3_pytorch")
HIDDEN_SNIPPET = "add(-7, 12) == 5"  # must never reach a student or a feedback page
SOLUTION_LINE = "return a + b"

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
