"""The course's notebooks: solutions execute cleanly, and every notebook is
committed clean (no outputs, stable unique cell ids, the right repository URL)."""
import re

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from autograder.paths import EXERCISES_DIR, REPO_ROOT, SOLUTIONS_DIR
from course import ASSIGNMENTS, notebook_params
from mha_checks import registry

ALL_NOTEBOOKS = sorted(SOLUTIONS_DIR.glob("*/*.ipynb")) + sorted(EXERCISES_DIR.glob("*/*.ipynb"))
PAGE_NOTEBOOKS = sorted((REPO_ROOT / "book").glob("*.ipynb"))  # chapter pages, executed at build time


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_assignment_has_the_notebooks_the_registry_lists(assignment):
    listed = sorted(nb.name for nb in registry.chapter(assignment).notebooks)
    for folder in (SOLUTIONS_DIR, EXERCISES_DIR):
        assert sorted(p.stem for p in (folder / assignment).glob("*.ipynb")) == listed


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_chapter_page_is_a_notebook(assignment):
    """A chapter page opens in Colab from its launch button only if it is an .ipynb."""
    assert (REPO_ROOT / "book" / f"{assignment}.ipynb").is_file()
    assert not (REPO_ROOT / "book" / f"{assignment}.md").exists()


def test_every_notebook_folder_is_a_chapter_of_the_registry():
    for folder in (SOLUTIONS_DIR, EXERCISES_DIR):
        found = {p.parent.name for p in folder.glob("*/*.ipynb")}
        assert found <= set(ASSIGNMENTS), f"{sorted(found - set(ASSIGNMENTS))} not in mha_checks/registry.py"


def run_notebook(path):
    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def printed(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def _gpu_notebooks() -> list:
    return [p for p in notebook_params() if registry.notebook(*p.values).needs_gpu]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("assignment, notebook", _gpu_notebooks())
def test_solution_notebook_runs_and_passes_its_tests(assignment, notebook, monkeypatch):
    """Executing the whole solution notebook of a GPU track raises nowhere (nbclient stops at the
    first error) and every check cell prints its tick. The CPU tracks' solutions run whole in
    test_grading_class.py, in the grader's sandbox, where every test cell must pass (full marks):
    a stronger test than their ticks here, so they do not run twice. The kernel computes on one
    thread, as the grader's sandbox does: on a busy machine a second thread mostly waits for the first."""
    for threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(threads, "1")
    nb = run_notebook(SOLUTIONS_DIR / assignment / f"{notebook}.ipynb")
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded, "a solution notebook without graded cells"
    assert printed(nb).count("\u2714") >= len(graded)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS + PAGE_NOTEBOOKS,
                         ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_committed_clean(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), "every cell needs a unique id"
    assert all(re.fullmatch(r"[a-z0-9_-]+", i) for i in ids), "ids are names, not random strings"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"cell {cell.id} has outputs"
    grade_ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(set(grade_ids)) == len(grade_ids)


def test_release_keeps_the_solution_cell_ids():
    for solution in sorted(SOLUTIONS_DIR.glob("*/*.ipynb")):
        release = EXERCISES_DIR / solution.parent.name / solution.name
        ids = lambda p: [c.id for c in nbformat.read(str(p), as_version=4).cells]
        assert ids(release) == ids(solution)


def test_setup_cells_install_from_the_repository_in_config():
    url = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["repository"]["url"]
    for path in ALL_NOTEBOOKS:
        setup = next(c for c in nbformat.read(str(path), as_version=4).cells if c.id == "setup")
        assert f'COURSE_REPOSITORY = "{url}"' in setup.source, path


def test_setup_cells_name_their_own_notebook():
    """The setup cell asks the registry for its notebook's checks, so the track is stated once."""
    for path in ALL_NOTEBOOKS:
        setup = next(c for c in nbformat.read(str(path), as_version=4).cells if c.id == "setup")
        assert f'check = notebook_checks("{path.parent.name}", "{path.stem}")' in setup.source, path
