"""What the grader runs for a submission, and how it scores it.

A student's notebook is untrusted: its metadata can be edited, broken or copied
around, and its test cells can be edited, deleted or duplicated. So nothing in
it decides what counts as a test or what runs as instructor code. The grader
runs the code cells that :func:`build_program` returns (in a sandbox, elsewhere)
and scores the result in its own process with the checks that :func:`test_plan`
reads from the instructor's source notebook.
"""
from __future__ import annotations

import ast
import json
import math
import stat
from dataclasses import dataclass
from pathlib import Path

import nbformat

MAX_NOTEBOOK_BYTES = 200 * 1024 * 1024

HIDDEN_TESTS_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_TESTS_END = "### END HIDDEN TESTS"

_MIB = 1024 * 1024
_LABEL_LIMIT = 60  # student-chosen names end up in notes and the CSV: keep them short


# --------------------------------------------------------------------------- reading


class InvalidNotebook(ValueError):
    """A submitted file that cannot be read as a Jupyter notebook; str() is a short reason for the CSV."""


def read_submission(path: Path) -> dict:
    """The submission at ``path`` as a v4 notebook dict; never executes anything.

    Only the structure this module uses is required: students' notebooks often
    fail the nbformat schema in harmless ways, so it is not validated.
    """
    data = _read_bounded(Path(path))
    text = _decode_utf8(data)
    if not text.strip():
        raise InvalidNotebook("empty file")
    return _as_v4_notebook(_parse_json(text))


def _read_bounded(path: Path) -> bytes:
    # A link could point at the solutions or at another student's work, and the
    # grader would read that as this student's submission.
    if path.is_symlink():
        raise InvalidNotebook("a symbolic link, not a file: submit the notebook itself")
    try:
        info = path.stat()
        # A FIFO or device would block or never end: only plain files are read.
        if not stat.S_ISREG(info.st_mode):
            raise InvalidNotebook("not a regular file")
        if info.st_size > MAX_NOTEBOOK_BYTES:
            raise _too_large()
        with path.open("rb") as stream:
            # The file can grow between stat and read: never read more than the limit.
            data = stream.read(MAX_NOTEBOOK_BYTES + 1)
    except OSError as err:
        raise InvalidNotebook(f"cannot be read ({err.strerror or type(err).__name__})") from None
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise _too_large()
    return data


def _too_large() -> InvalidNotebook:
    return InvalidNotebook(f"file larger than {_size_text(MAX_NOTEBOOK_BYTES)}")


def _size_text(n_bytes: int) -> str:
    return f"{n_bytes // _MIB} MB" if n_bytes % _MIB == 0 else f"{n_bytes} bytes"


def _decode_utf8(data: bytes) -> str:
    try:
        # utf-8-sig: some Windows editors save notebooks with a byte-order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidNotebook("not UTF-8 text") from None


def _parse_json(text: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidNotebook("invalid JSON (nested too deeply)") from None
    except ValueError as err:
        raise InvalidNotebook(f"invalid JSON ({str(err)[:80]})") from None


def _as_v4_notebook(data) -> dict:
    if not isinstance(data, dict):
        raise _not_a_notebook()
    version = data.get("nbformat")
    if version is not None and (not _is_int(version) or version not in (3, 4)):
        shown = version if _is_int(version) else repr(_printable(str(version), 20))
        raise InvalidNotebook(f"nbformat {shown} is not supported")
    if version == 3:
        data = _upgrade_v3(data)
    if not isinstance(data.get("cells"), list):
        raise _not_a_notebook()
    return data


def _not_a_notebook() -> InvalidNotebook:
    return InvalidNotebook("not a Jupyter notebook (no list of cells)")


def _upgrade_v3(data: dict) -> dict:
    # The converter would turn a v3 dict without worksheets into an empty notebook.
    if not isinstance(data.get("worksheets"), list):
        raise _not_a_notebook()
    try:
        notebook = nbformat.convert(nbformat.versions[3].to_notebook_json(data), 4)
        return json.loads(json.dumps(notebook))
    except Exception as err:  # noqa: BLE001 - the converter fails in many ways on malformed input
        raise InvalidNotebook(
            f"nbformat 3 notebook could not be converted ({type(err).__name__})") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- cells as JSON
# Every accessor treats a malformed part as absent, so no submission can crash the grader.


def _cells(notebook) -> list:
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    return cells if isinstance(cells, list) else []


def _cell_type(cell) -> str | None:
    kind = cell.get("cell_type") if isinstance(cell, dict) else None
    return kind if isinstance(kind, str) else None


def _nbgrader(cell) -> dict:
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return nbgrader if isinstance(nbgrader, dict) else {}


def _grade_id(cell) -> str | None:
    grade_id = _nbgrader(cell).get("grade_id")
    return grade_id if isinstance(grade_id, str) and grade_id else None


def _cell_id(cell) -> str | None:
    cell_id = cell.get("id") if isinstance(cell, dict) else None
    return cell_id if isinstance(cell_id, str) and cell_id else None


def _source(cell) -> str:
    source = cell.get("source") if isinstance(cell, dict) else None
    if isinstance(source, str):
        return source
    if isinstance(source, list):
        return "".join(part for part in source if isinstance(part, str))
    return ""


def _printable(text: str, limit: int = _LABEL_LIMIT) -> str:
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _same_code(a: str, b: str) -> bool:
    """Equal up to trailing whitespace, which editors add and strip on their own."""
    return _without_trailing_space(a) == _without_trailing_space(b)


def _without_trailing_space(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.rstrip().splitlines())


# --------------------------------------------------------------------------- the program


@dataclass(frozen=True)
class ProgramCell:
    label: str      # for messages: "cell 7 (softmax)", or "setup (instructor)"
    source: str     # code as one string
    origin: str     # "student" or "instructor"


@dataclass
class Program:
    cells: list[ProgramCell]
    notes: list[str]     # human-readable notes for the feedback page


def instructor_role(cell) -> str:
    """"test", "locked", "solution" or "plain" for a cell of the (trusted) instructor notebook.

    Only code cells have a role: a read-only markdown cell is nothing to run.
    A cell with grade and solution is nbgrader's manually graded answer: the
    student writes there, so it is a solution, not a test.
    """
    if _cell_type(cell) != "code":
        return "plain"
    nbgrader = _nbgrader(cell)
    if nbgrader.get("solution") is True:
        return "solution"
    if nbgrader.get("grade") is True:
        return "test"
    if nbgrader.get("locked") is True:
        return "locked"
    return "plain"


def build_program(submission: dict, instructor: dict) -> Program:
    """The code cells to run for ``submission``, in order, and notes for the student.

    Test cells are skipped (the grader scores with its own test plan), locked
    cells run as the instructor wrote them, everything else as the student did.
    """
    matching = _Matching.of(_cells(submission), _cells(instructor))
    program, notes, position_after = _walk_submission(matching)
    insertions, restore_notes = _restore_locked_cells(matching, position_after)
    program = _insert(program, insertions)
    notes += restore_notes + _uncoded_answer_notes(matching) + _language_notes(submission)
    if not any(cell.origin == "student" and cell.source.strip() for cell in program):
        notes.append("the submission has no code of its own")
    return Program(program, notes)


@dataclass
class _Matching:
    """Which instructor cell each submission cell stands for."""
    student_cells: list
    instructor_cells: list
    roles: list[str]                  # instructor_role of each instructor cell
    identified: list[int | None]   # per submission cell: instructor index or None
    first_match: dict[int, int]       # instructor index -> first submission cell identified with it

    @classmethod
    def of(cls, student_cells: list, instructor_cells: list) -> _Matching:
        identified = identify_cells(student_cells, instructor_cells)
        return cls(student_cells, instructor_cells,
                   [instructor_role(cell) for cell in instructor_cells],
                   identified, _first_matches(identified))

    def is_code(self, index: int) -> bool:
        return _cell_type(self.student_cells[index]) == "code"

    def found_as_code(self, match: int) -> bool:
        """False for a locked cell whose first match is markdown: its code copies were skipped."""
        return match in self.first_match and self.is_code(self.first_match[match])

    def matched_by_code(self) -> set[int]:
        return {match for index, match in enumerate(self.identified)
                if match is not None and self.is_code(index)}


def _walk_submission(matching: _Matching) -> tuple[list[ProgramCell], list[str], dict[int, int]]:
    """The program from the submission's own code cells, its notes, and where each
    identified instructor cell sits in it (deleted locked cells are put back after it)."""
    program: list[ProgramCell] = []
    notes: list[str] = []
    position_after: dict[int, int] = {}
    for index, cell in enumerate(matching.student_cells):
        match = matching.identified[index]
        is_first = match is not None and matching.first_match[match] == index
        role = matching.roles[match] if match is not None else "plain"
        if matching.is_code(index) and role == "locked":
            program_cell, note = _locked_cell(cell, index, matching.instructor_cells[match],
                                              match, is_first)
            program.extend([program_cell] if program_cell else [])
            notes.extend([note] if note else [])
        elif matching.is_code(index) and role != "test":
            program.append(ProgramCell(_student_label(cell, index), _source(cell), "student"))
        if is_first:
            position_after[match] = len(program)
    return program, notes, position_after


def _restore_locked_cells(matching: _Matching, position_after: dict[int, int]
                          ) -> tuple[list[tuple[int, ProgramCell]], list[str]]:
    """(position, cell) for each locked cell not found as code: right after the
    previous instructor cell that was found, or at the start."""
    insertions, notes = [], []
    position = 0
    for match, cell in enumerate(matching.instructor_cells):
        if matching.roles[match] == "locked" and not matching.found_as_code(match):
            insertions.append((position, _instructor_cell(cell, match)))
            notes.append(_missing_locked_note(cell, match, matching))
        elif match in position_after:
            position = position_after[match]
    return insertions, notes


def _uncoded_answer_notes(matching: _Matching) -> list[str]:
    notes = []
    matched_by_code = matching.matched_by_code()
    for match, cell in enumerate(matching.instructor_cells):
        if (matching.roles[match] == "solution" and match in matching.first_match
                and match not in matched_by_code):
            kind = _kind_of_cell(matching.student_cells[matching.first_match[match]])
            notes.append(f"the answer cell {_instructor_name(cell, match)} is a {kind}, "
                         "so it was not run")
    return notes


def identify_cells(student_cells: list, instructor_cells: list) -> list[int | None]:
    """For each submission cell, the index of the instructor cell it stands for, or None.

    By nbgrader grade_id when the instructor has that grade_id, else by cell id:
    tools that drop metadata keep the cell id, and a renamed grade_id is caught too.
    """
    by_grade_id: dict[str, int] = {}
    by_cell_id: dict[str, int] = {}
    for index, cell in enumerate(instructor_cells):
        if _grade_id(cell):
            by_grade_id.setdefault(_grade_id(cell), index)
        if _cell_id(cell):
            by_cell_id.setdefault(_cell_id(cell), index)
    identified = []
    for cell in student_cells:
        grade_id = _grade_id(cell)
        if grade_id in by_grade_id:
            identified.append(by_grade_id[grade_id])
        else:
            identified.append(by_cell_id.get(_cell_id(cell)))
    return identified


def _first_matches(identified: list[int | None]) -> dict[int, int]:
    """Instructor index -> the first submission cell identified with it (later ones are copies)."""
    first: dict[int, int] = {}
    for index, match in enumerate(identified):
        if match is not None:
            first.setdefault(match, index)
    return first


def _locked_cell(cell, index: int, instructor_cell, match: int,
                 is_first: bool) -> tuple[ProgramCell | None, str | None]:
    """The instructor's cell in place of a student's locked cell, or nothing for a copy."""
    name = _instructor_name(instructor_cell, match)
    edited = not _same_code(_source(cell), _source(instructor_cell))
    if is_first:
        note = f"the locked cell {name} was edited: the instructor's version ran instead"
        return _instructor_cell(instructor_cell, match), (note if edited else None)
    # A copy of a locked cell keeps its metadata, so code typed into it is lost: say so.
    note = f"{_student_label(cell, index)} is a copy of the locked cell {name}, so it was not run"
    return None, (note if edited else None)


def _instructor_cell(cell, index: int) -> ProgramCell:
    return ProgramCell(f"{_instructor_name(cell, index)} (instructor)", _source(cell), "instructor")


def _instructor_name(cell, index: int) -> str:
    return _grade_id(cell) or _cell_id(cell) or f"#{index + 1}"


def _student_label(cell, index: int) -> str:
    name = _grade_id(cell) or _cell_id(cell)
    return f"cell {index + 1} ({_printable(name)})" if name else f"cell {index + 1}"


def _missing_locked_note(cell, match: int, matching: _Matching) -> str:
    name = _instructor_name(cell, match)
    if match in matching.first_match:
        kind = _kind_of_cell(matching.student_cells[matching.first_match[match]])
        return f"the locked cell {name} is a {kind} in the submission: the instructor's version ran"
    return f"the locked cell {name} was deleted: the instructor's version ran in its place"


def _kind_of_cell(cell) -> str:
    kind = _cell_type(cell)
    return f"{_printable(kind, 20)} cell" if kind else "cell with no type"


def _insert(program: list[ProgramCell],
            insertions: list[tuple[int, ProgramCell]]) -> list[ProgramCell]:
    """``program`` with each (position, cell) inserted before program[position], in list order."""
    result = []
    pending = sorted(insertions, key=lambda item: item[0])  # stable: instructor order kept
    for position in range(len(program) + 1):
        while pending and pending[0][0] == position:
            result.append(pending.pop(0)[1])
        if position < len(program):
            result.append(program[position])
    return result


def _language_notes(submission) -> list[str]:
    metadata = submission.get("metadata") if isinstance(submission, dict) else None
    if not isinstance(metadata, dict):
        return []
    declared = []
    for section, key in (("kernelspec", "language"), ("language_info", "name")):
        part = metadata.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, str) and value.strip():
            declared.append(value.strip())
    for language in declared:
        if not language.lower().startswith(("python", "ipython")):
            shown = _printable(language, 20)
            return [f"the notebook is set up for {shown}, but it was run as Python"]
    return []


# --------------------------------------------------------------------------- the test plan


@dataclass(frozen=True)
class CheckCall:
    method: str          # e.g. "softmax", "module", "matches_torch_sdpa"
    target: str          # name of the student's object passed first
    kwargs: tuple        # sorted ((name, literal value), ...)

    def kwargs_dict(self) -> dict:
        return dict(self.kwargs)


@dataclass(frozen=True)
class TestSpec:
    __test__ = False  # not a pytest test class, though its name starts with "Test"

    grade_id: str
    points: float
    calls: tuple[CheckCall, ...]
    hidden: bool        # any call has hidden=True, or the cell has ### BEGIN HIDDEN TESTS


class PlanError(ValueError):
    """The instructor's notebook has a test cell the grader cannot turn into checks; the message names the cell."""


def test_plan(instructor_source: dict, checker_name: str = "check") -> list[TestSpec]:
    """The checks of every test cell of the instructor's SOURCE notebook, in order.

    A test cell may only hold calls ``check.<method>(<name>, keyword=literal, ...)``:
    the grader makes those calls itself, so nothing else an instructor writes in a
    test cell would be scored, and it must say so rather than skip it.
    """
    cells = _cells(instructor_source)
    _reject_duplicate_grade_ids(cells)
    plan = []
    for number, cell in enumerate(cells, start=1):
        nbgrader = _nbgrader(cell)
        if nbgrader.get("grade") is not True:
            continue
        grade_id = _grade_id(cell)
        if grade_id is None:
            raise PlanError(f"cell {number} is a test cell without a grade_id")
        if instructor_role(cell) != "test":
            raise PlanError(f"test cell {grade_id} is a manually graded answer: "
                            "this grader scores only check calls")
        source = _source(cell)
        calls = check_calls(source, grade_id, checker_name)
        hidden = _has_hidden_marker(source) or any(
            call.kwargs_dict().get("hidden") is True for call in calls)
        plan.append(TestSpec(grade_id, _points(nbgrader, grade_id), calls, hidden))
    return plan


test_plan.__test__ = False  # a test module importing it must not collect it as a test


def max_points(plan) -> float:
    return float(sum(spec.points for spec in plan))


def _reject_duplicate_grade_ids(cells: list) -> None:
    seen = set()
    for cell in cells:
        grade_id = _grade_id(cell)
        if grade_id in seen:
            raise PlanError(f"two cells have the grade_id {grade_id}")
        if grade_id:
            seen.add(grade_id)


def _points(nbgrader: dict, grade_id: str) -> float:
    points = nbgrader.get("points")
    if points is None:
        return 0.0
    is_number = isinstance(points, (int, float)) and not isinstance(points, bool)
    if not is_number or not math.isfinite(points):
        raise PlanError(f"test cell {grade_id}: points {points!r} is not a number")
    if points < 0:
        raise PlanError(f"test cell {grade_id}: points {points} is negative")
    return float(points)


def _has_hidden_marker(source: str) -> bool:
    return any(line.strip() == HIDDEN_TESTS_BEGIN for line in source.splitlines())


def _without_hidden_markers(source: str) -> str:
    # Blank lines rather than removed ones, so that line numbers in messages stay right.
    return "\n".join("" if line.strip() in (HIDDEN_TESTS_BEGIN, HIDDEN_TESTS_END) else line
                     for line in source.split("\n"))


def check_calls(source: str, grade_id: str, checker_name: str = "check") -> tuple[CheckCall, ...]:
    """The check calls of one test cell's source; PlanError for anything else in it."""
    code = _without_hidden_markers(source)
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as err:
        line = _line(code, getattr(err, "lineno", None) or 1)
        raise PlanError(f"test cell {grade_id}: not valid Python ({line})") from None
    calls = tuple(_check_call(statement, code, grade_id, checker_name) for statement in tree.body)
    if not calls:
        raise PlanError(f"test cell {grade_id} has no {checker_name}.<method>(...) call "
                        "(is this the release notebook? the plan needs the source one, "
                        "with its hidden tests)")
    return calls


def _check_call(statement: ast.stmt, code: str, grade_id: str, checker_name: str) -> CheckCall:
    def problem(reason: str) -> PlanError:
        return PlanError(f"test cell {grade_id}, line {statement.lineno}: {reason}: "
                         f"{_line(code, statement.lineno)}")

    call = statement.value if isinstance(statement, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name) and call.func.value.id == checker_name):
        raise problem(f"only calls {checker_name}.<method>(<name>, keyword=literal, ...) "
                      "are allowed in a test cell")
    if call.func.attr.startswith("_"):
        raise problem(f"{checker_name}.{call.func.attr} is private, not a check")
    if len(call.args) != 1 or not isinstance(call.args[0], ast.Name):
        raise problem("a check takes exactly one positional argument, "
                      "the plain name of the student's object")
    kwargs = []
    for keyword in call.keywords:
        if keyword.arg is None:
            raise problem("** arguments are not allowed: write each keyword out")
        try:
            value = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise problem(f"the value of {keyword.arg} is not a literal") from None
        kwargs.append((keyword.arg, value))
    return CheckCall(call.func.attr, call.args[0].id, tuple(sorted(kwargs, key=lambda kv: kv[0])))


def _line(code: str, lineno: int) -> str:
    lines = code.splitlines()
    text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
    return _printable(text, 120)
