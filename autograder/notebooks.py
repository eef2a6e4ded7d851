"""Reading the course's notebooks: the code a student writes, pulled out of a
solution notebook so that reference outputs and tests can run it."""
from pathlib import Path

import nbformat

IMPORTS_CELL = "imports"  # grade_id of the locked cell holding a notebook's library imports


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def student_code_cells(nb) -> list:
    """The imports cell and every solution cell, in notebook order."""
    return [c for c in nb.cells if c.cell_type == "code" and
            (nbgrader_meta(c).get("solution") or nbgrader_meta(c).get("grade_id") == IMPORTS_CELL)]


def solution_namespace(path: Path, replace: dict = None) -> dict:
    """Execute a notebook's imports and solution cells; return the names they define.

    `replace` maps a cell's grade_id to source that stands in for it, which is
    how the tests plant a known-wrong implementation.
    """
    nb = nbformat.read(str(path), as_version=4)
    namespace = {"__name__": f"solution:{Path(path).stem}"}
    for cell in student_code_cells(nb):
        source = (replace or {}).get(nbgrader_meta(cell).get("grade_id"), cell.source)
        exec(compile(source, f"{path}#{cell.get('id')}", "exec"), namespace)
    return namespace
