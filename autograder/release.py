"""Generate the student notebooks (exercises/) from the solutions (solutions/).

``release(assignment)`` runs ``nbgrader generate_assignment`` in a throw-away
course directory and copies the result into ``exercises/<assignment>/``.
``stale_release_files(assignment)`` does the same into a temporary folder and
lists the committed files that differ, so a test can fail when someone edits a
solution and forgets to regenerate.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .nbgrader_config import last_error, make_course, run_nbgrader
from .paths import EXERCISES_DIR, REPO_ROOT, SOLUTIONS_DIR

# Editor and OS debris that must never reach students.
IGNORED = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc", ".DS_Store")


class ReleaseError(RuntimeError):
    """A problem with the solution notebooks that the instructor has to fix."""


def source_notebooks(assignment: str, solutions_dir: Path = SOLUTIONS_DIR) -> list[Path]:
    """The solution notebooks of ``assignment``, sorted by name."""
    return sorted((Path(solutions_dir) / assignment).glob("*.ipynb"))


def check_cell_ids(notebook: Path) -> None:
    """Refuse notebooks whose cells lack ids.

    nbformat invents random ids for such cells when it reads them, which would
    make every release differ from the last one.
    """
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    missing = [i for i, cell in enumerate(nb.get("cells", [])) if not cell.get("id")]
    if missing:
        raise ReleaseError(
            f"{notebook}: cells {missing} have no 'id' (nbformat {nb.get('nbformat')}."
            f"{nb.get('nbformat_minor')}). Open and save the notebook in Jupyter "
            "(nbformat >= 4.5 adds ids), or run `python -c \"import nbformat as n; "
            f"p='{notebook}'; n.write(n.read(p, 4), p)\"`, then commit it.")


def generate_release(assignment: str, dest: Path, solutions_dir: Path = SOLUTIONS_DIR) -> list[Path]:
    """Run ``nbgrader generate_assignment`` on ``assignment``; write the release into ``dest``.

    ``dest`` is replaced entirely. Returns the files written, sorted.
    """
    notebooks = source_notebooks(assignment, solutions_dir)
    if not notebooks:
        raise ReleaseError(f"no notebooks in {Path(solutions_dir) / assignment}: "
                           "write the solution notebooks there first.")
    for notebook in notebooks:
        check_cell_ids(notebook)

    with tempfile.TemporaryDirectory(prefix="mha-release-") as tmp:
        course = Path(tmp)
        make_course(course)
        shutil.copytree(Path(solutions_dir) / assignment, course / "source" / assignment,
                        ignore=IGNORED)
        # --no-db: the release needs no gradebook, and skipping it saves seconds.
        run = run_nbgrader(["generate_assignment", assignment, "--force", "--no-db"], course)
        if not run.ok:
            raise ReleaseError(f"nbgrader could not generate {assignment}: {last_error(run.output)}"
                               f"\n--- nbgrader log ---\n{run.output}")
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(course / "release" / assignment, dest, ignore=IGNORED)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def release(assignment: str, out_dir: Path = EXERCISES_DIR,
            solutions_dir: Path = SOLUTIONS_DIR) -> list[Path]:
    """Regenerate ``out_dir/<assignment>/`` from ``solutions_dir/<assignment>/``.

    Deterministic: the same solutions give byte-identical files, cell ids kept.
    """
    return generate_release(assignment, Path(out_dir) / assignment, solutions_dir)


def stale_release_files(assignment: str, out_dir: Path = EXERCISES_DIR,
                        solutions_dir: Path = SOLUTIONS_DIR) -> list[str]:
    """Files of ``out_dir/<assignment>/`` that a fresh release would change.

    Notebooks are compared as parsed JSON, so formatting noise does not count;
    files missing from or extra in ``out_dir`` count as stale. Returns display
    paths (relative to the repository when inside it), sorted.
    """
    committed_dir = Path(out_dir) / assignment
    committed = {p.relative_to(committed_dir) for p in _files(committed_dir)}
    if not source_notebooks(assignment, solutions_dir):
        # Nothing to release: every committed file is a leftover.
        return [_display(committed_dir / p) for p in sorted(committed)]

    with tempfile.TemporaryDirectory(prefix="mha-stale-") as tmp:
        fresh_dir = Path(tmp) / assignment
        generate_release(assignment, fresh_dir, solutions_dir)
        fresh = {p.relative_to(fresh_dir) for p in _files(fresh_dir)}
        stale = [p for p in sorted(committed | fresh)
                 if p not in committed or p not in fresh
                 or not _same_content(committed_dir / p, fresh_dir / p)]
    return [_display(committed_dir / p) for p in stale]


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts)


def _same_content(a: Path, b: Path) -> bool:
    if a.suffix == ".ipynb":
        try:
            return json.loads(a.read_text(encoding="utf-8")) == json.loads(b.read_text(encoding="utf-8"))
        except ValueError:  # a broken committed notebook is stale, not a crash
            return False
    return a.read_bytes() == b.read_bytes()


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
