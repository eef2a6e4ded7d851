"""Reading the course's notebooks: the code a student writes, pulled out of a
solution notebook so that reference outputs and tests can run it."""
import contextlib
import io
from pathlib import Path

import nbformat

SETUP_CELL = "setup"      # grade_id of the locked cell that installs the course package and makes `check`
IMPORTS_CELL = "imports"  # grade_id of the locked cell holding a notebook's library imports


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def student_code_cells(nb) -> list:
    """What a notebook's answers are computed from, in notebook order: its solution cells and
    its locked cells (the imports, examples the answers read), without setup and test cells."""
    def wanted(cell):
        meta = nbgrader_meta(cell)
        if cell.cell_type != "code" or meta.get("grade") or meta.get("grade_id") == SETUP_CELL:
            return False
        return bool(meta.get("solution") or meta.get("locked"))
    return [c for c in nb.cells if wanted(c)]


def solution_namespace(path: Path, replace: dict = None) -> dict:
    """Execute a notebook's locked and solution cells (not setup or tests); return the names they define.

    `replace` maps a cell's grade_id to source that stands in for it, which is
    how the tests plant a known-wrong implementation. A planted mistake may break
    later cells that use it, as it would in a student's notebook: their errors are
    then ignored, while an error in the planted code itself, or in the unchanged
    solution, raises.
    """
    nb = nbformat.read(str(path), as_version=4)
    namespace = {"__name__": f"solution:{Path(path).stem}"}
    for cell in student_code_cells(nb):
        meta = nbgrader_meta(cell)
        source = (replace or {}).get(meta.get("grade_id"), cell.source)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # what the cells print is for students
                exec(compile(source, f"{path}#{cell.get('id')}", "exec"), namespace)
        except Exception:
            if not replace or meta.get("grade_id") in replace or meta.get("grade_id") == IMPORTS_CELL:
                raise
    return namespace
