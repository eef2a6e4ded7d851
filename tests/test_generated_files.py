"""Generated files (release notebooks, reference outputs) match what one command
produces from the solutions now, and the staleness checks do notice a change."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder.paths import ASSIGNMENTS, REPO_ROOT, SOLUTIONS_DIR
from autograder.references import stale_references, write_references
from autograder.release import stale_release_files

HOW_TO_FIX = "regenerate with `python -m autograder release` and `python -m autograder references`, then commit"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_notebooks_are_up_to_date(assignment):
    assert stale_release_files(assignment) == [], HOW_TO_FIX


def test_reference_outputs_are_up_to_date():
    assert stale_references() == [], HOW_TO_FIX


@pytest.fixture
def edited_solutions(tmp_path):
    """A copy of solutions/ whose NumPy notebook differs from the committed one: its
    softmax (which only the references see) and a paragraph (which the release shows)."""
    copy = tmp_path / "solutions"
    shutil.copytree(SOLUTIONS_DIR, copy)
    path = copy / "ch01_single_head" / "1_numpy.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if c.id == "softmax")
    cell.source = cell.source.replace("return exps / exps.sum(axis=axis, keepdims=True)",
                                      "return 0.5 * exps / exps.sum(axis=axis, keepdims=True)")
    text = next(c for c in nb.cells if c.id == "softmax-task")
    text.source += "\nAn added sentence."
    nbformat.write(nb, str(path))
    return copy


def test_staleness_checks_notice_an_edited_solution(edited_solutions):
    assert stale_release_files("ch01_single_head", solutions_dir=edited_solutions) == [
        "exercises/ch01_single_head/1_numpy.ipynb"]
    stale = stale_references(solutions_dir=edited_solutions)
    assert any("softmax/visible/00/expected/out: values differ" in s for s in stale)


def test_reference_generation_is_deterministic(tmp_path):
    write_references("ch01_single_head", references_dir=tmp_path)
    assert stale_references(references_dir=tmp_path) == []


def test_student_package_ships_reference_data_and_needs_only_numpy(tmp_path):
    """What Colab installs from the repository: the checks, the references, NumPy as the one dependency."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("mha_course-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    for assignment in ASSIGNMENTS:
        assert f"autograder/references/{assignment}.npz" in names
        assert f"autograder/{assignment}.py" in names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert requires == ["Requires-Dist: numpy>=1.22"], requires
    assert not any(n.startswith(("solutions/", "tests/")) for n in names)


def test_nbgrader_itself_releases_the_same_exercises(tmp_path):
    """Instructors who know nbgrader can use it on the repository as it is."""
    course = tmp_path / "course"
    for name in ("solutions", "autograder"):
        shutil.copytree(REPO_ROOT / name, course / name)
    shutil.copy(REPO_ROOT / "nbgrader_config.py", course)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # nbgrader calls alembic
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "ch01_single_head", "--force"],
                   cwd=course, env=env, check=True, capture_output=True)
    assert stale_release_files("ch01_single_head", out_dir=course / "exercises") == []
