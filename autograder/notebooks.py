"""Reading the course's notebooks: the code a student writes, pulled out of a
solution notebook so that reference outputs and tests can run it."""
import ast
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


def defines_only(source: str) -> bool:
    """True for a cell whose top-level statements are definitions (and imports, docstrings)."""
    body = ast.parse(source).body
    allowed = (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    return bool(body) and all(isinstance(node, allowed) or (isinstance(node, ast.Expr) and isinstance(
        node.value, ast.Constant)) for node in body)


def solution_namespace(path: Path, replace: dict = None, definitions_only: bool = False) -> dict:
    """Execute a notebook's locked and solution cells (not setup or tests); return the names they define.

    `replace` maps a cell's grade_id to source that stands in for it, which is
    how the tests plant a known-wrong implementation. A planted mistake may break
    later cells that use it, as it would in a student's notebook: their errors are
    then ignored, while an error in the planted code itself, or in the unchanged
    solution, raises.

    With `definitions_only`, only the imports cell, the replaced cells and the
    solution cells that only define functions and classes run: the functions
    without the notebook's experiments (trainings, MiniLM runs), which is all a
    check of a function or a benchmark needs, in a fraction of the time.
    """
    nb = nbformat.read(str(path), as_version=4)
    namespace = {"__name__": f"solution:{Path(path).stem}"}
    for cell in student_code_cells(nb):
        meta = nbgrader_meta(cell)
        grade_id = meta.get("grade_id")
        source = (replace or {}).get(grade_id, cell.source)
        if definitions_only and not (grade_id == IMPORTS_CELL or grade_id in (replace or {})
                                     or (meta.get("solution") and defines_only(cell.source))):
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # what the cells print is for students
                exec(compile(source, f"{path}#{cell.get('id')}", "exec"), namespace)
        except Exception:
            if not replace or grade_id in replace or grade_id == IMPORTS_CELL:
                raise
    return namespace


_RUNS = {}


def solution_run(path: Path) -> dict:
    """``solution_namespace(path)``, run once per version of the file in this process: the references
    of a chapter (visible, hidden, its generated files) and the tests read the same run of a notebook,
    which for the later chapters trains models and runs MiniLM. Callers must not change it."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _RUNS:
        _RUNS[key] = solution_namespace(path)
    return _RUNS[key]
