"""Grade a folder of submissions with nbgrader, one student at a time.

Input layout (nbgrader's ``submitted/`` layout)::

    SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb

``grade()`` builds one nbgrader course in ``out_dir/nbgrader_course`` whose
source is a copy of the solutions, runs ``generate_assignment`` once per
assignment (this fills the gradebook with the tests and their points), then
runs one ``nbgrader autograde`` subprocess per student and assignment. A broken
submission therefore only fails its own rows: a notebook that crashes nbgrader
is set aside and the student's other notebooks are graded again without it.
Submissions are copied, never modified; a copy whose nbgrader metadata was
damaged (stripped by an editor, a solution cell deleted) is repaired first,
see :func:`repair_submission`.

Output in ``out_dir``: ``grades.csv`` (one row per student x notebook),
``feedback/<student>/<assignment>/<notebook>.html``,
``logs/<student>__<assignment>.log``.

Statuses: ``graded``; ``missing`` (not submitted); ``needs GPU`` (a GPU
notebook where no GPU is available: not graded, never a silent 0);
``failed: <reason>`` (invalid notebook, nbgrader or the kernel died, time
limit). Only ``graded`` rows have a score.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .nbgrader_config import (DEFAULT_CELL_TIMEOUT, db_url, last_error, make_course,
                              run_nbgrader)
from .backends import gpu_available as detect_gpu
from .paths import GPU_NOTEBOOKS, SOLUTIONS_DIR
from .release import IGNORED

COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "status", "seconds")
GRADED, MISSING, NEEDS_GPU, FAILED = "graded", "missing", "needs GPU", "failed"

COURSE_DIRNAME = "nbgrader_course"  # kept after grading: autograded notebooks, gradebook
STARTUP_LIMIT = 180  # seconds nbgrader may take before it reaches the first notebook
MAX_REASON = 160  # characters of a failure reason kept in the CSV

# "[AutogradeApp | INFO] Sanitizing /.../submitted/alice/ch01/1_numpy.ipynb":
# the line nbgrader logs when it starts on a notebook.
_STARTING_NOTEBOOK = re.compile(r"\| INFO\] Sanitizing (.+)\.ipynb\s*$")


class GradingInputError(ValueError):
    """A problem with the grader's input that the user can fix (the CLI shows it, exit 2)."""


@dataclass
class GradeRow:
    student: str
    assignment: str
    notebook: str
    score: Optional[float]
    max_score: Optional[float]
    status: str
    seconds: Optional[float] = None

    def csv_values(self) -> list[str]:
        return [self.student, self.assignment, self.notebook, _number(self.score),
                _number(self.max_score), self.status,
                "" if self.seconds is None else f"{self.seconds:.1f}"]


@dataclass
class Outcome:
    """What happened to one submitted notebook in autograde."""

    status: str
    seconds: Optional[float] = None


# --------------------------------------------------------------------------- input


def known_assignments(solutions_dir: Path = SOLUTIONS_DIR) -> list[str]:
    """Assignments that have solution notebooks, sorted."""
    solutions_dir = Path(solutions_dir)
    if not solutions_dir.is_dir():
        return []
    return sorted(d.name for d in solutions_dir.iterdir()
                  if d.is_dir() and any(d.glob("*.ipynb")))


def assignment_notebooks(assignment: str, solutions_dir: Path = SOLUTIONS_DIR) -> list[str]:
    """Notebook names (without ``.ipynb``) of an assignment, from its solutions."""
    return sorted(p.stem for p in (Path(solutions_dir) / assignment).glob("*.ipynb"))


def sanitize_student_ids(folder_names: Iterable[str]) -> dict[str, str]:
    """Map student folder names to ids safe for nbgrader paths and command lines.

    LMS exports use names like "Ada Lovelace_12345_assignsubmission": keep
    letters, digits, '_', '-' and '.', replace the rest by '_', never start
    with '.' or '-', and keep ids unique.
    """
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(folder_names):
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).lstrip(".-_") or "student"
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        ids[name] = candidate
    return ids


def find_submissions(submissions: Path, solutions_dir: Path = SOLUTIONS_DIR,
                     assignments: Optional[Sequence[str]] = None):
    """Check the layout; return ``(assignments, {student_id: folder}, warnings)``.

    Raises :class:`GradingInputError` with what to do when the input is unusable.
    """
    submissions = Path(submissions)
    layout = "SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb"
    if not submissions.is_dir():
        raise GradingInputError(
            f"{submissions} is not a folder. Give the folder that holds one folder per "
            f"student: {layout}.")
    known = known_assignments(solutions_dir)
    if not known:
        raise GradingInputError(f"no solution notebooks in {solutions_dir}: nothing to grade against.")
    if assignments:
        unknown = [a for a in assignments if a not in known]
        if unknown:
            raise GradingInputError(
                f"unknown assignment {', '.join(unknown)}. Known assignments: {', '.join(known)}.")

    student_dirs = [d for d in sorted(submissions.iterdir())
                    if d.is_dir() and not d.name.startswith((".", "__"))]
    found = sorted({d.name for s in student_dirs for d in s.iterdir() if d.is_dir()} & set(known))
    chosen = list(assignments) if assignments else found
    if not student_dirs or not (set(chosen) & set(found)):
        raise GradingInputError(_layout_hint(submissions, student_dirs, chosen or known, layout))

    warnings = []
    for s in student_dirs:
        stray = sorted(d.name for d in s.iterdir() if d.is_dir() and d.name not in known
                       and not d.name.startswith((".", "__")))
        if stray:
            warnings.append(f"{s.name}: ignored folder(s) {', '.join(stray)} "
                            f"(not an assignment; known: {', '.join(known)})")
    ids = sanitize_student_ids(d.name for d in student_dirs)
    for folder, sid in ids.items():
        if folder != sid:
            warnings.append(f"student folder {folder!r} is graded as {sid!r}")
    return chosen, {ids[d.name]: d for d in student_dirs}, warnings


def _layout_hint(submissions: Path, student_dirs: list, assignments: list, layout: str) -> str:
    """Explain a layout that holds nothing to grade, with an example of what was found."""
    loose = sorted(submissions.glob("*.ipynb")) or sorted(submissions.glob("*/*.ipynb"))
    found = (f" Found {loose[0].relative_to(submissions)}: notebooks must sit in an "
             f"assignment folder." if loose else "")
    return (f"{submissions} holds no submission of {', '.join(assignments)}.{found} "
            f"Expected {layout}, for example "
            f"{submissions}/alice/{assignments[0]}/<notebook>.ipynb.")


class InvalidNotebook(ValueError):
    """A submitted file that is not a readable Jupyter notebook."""


def read_notebook(path: Path) -> dict:
    """The notebook at ``path`` as JSON; :class:`InvalidNotebook` says why it cannot be graded."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InvalidNotebook("invalid notebook: not UTF-8 text") from None
    except ValueError as err:
        raise InvalidNotebook(f"invalid notebook JSON ({err})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise InvalidNotebook("invalid notebook: no list of cells (is this a Jupyter notebook?)")
    if nb.get("nbformat") != 4:
        raise InvalidNotebook(f"invalid notebook: nbformat {nb.get('nbformat')}, expected 4")
    return nb


def repair_submission(nb: dict, release_nb: dict) -> list[str]:
    """Undo the metadata damage that makes nbgrader crash; return notes for the log.

    Works on our copy of a submission, in place. Two known failure modes of
    nbgrader 0.9 (jupyter/nbgrader#1398, #1941):

    - a tool dropped the cells' nbgrader metadata (some editors do): it is put
      back from the release cell with the same cell id;
    - the student deleted a solution cell (and wrote the code elsewhere) or a
      locked cell: restoring a deleted *test* cell then fails with a KeyError.
      An empty placeholder carrying the deleted cell's metadata takes its place:
      nbgrader refills a locked one from the gradebook, an empty solution cell
      does nothing. Deleted test cells are left to nbgrader, which restores them.
    """
    notes = []
    release_cells = [c for c in release_nb.get("cells", []) if _grade_id(c)]
    by_cell_id = {c.get("id"): c for c in release_cells if c.get("id")}
    present = {_grade_id(c) for c in nb["cells"]}
    for cell in nb["cells"]:
        if isinstance(cell, dict) and not _grade_id(cell):
            source = by_cell_id.get(cell.get("id") or (cell.get("metadata") or {}).get("id"))
            if source is not None and _grade_id(source) not in present:
                cell.setdefault("metadata", {})["nbgrader"] = dict(source["metadata"]["nbgrader"])
                present.add(_grade_id(source))
                notes.append(f"restored nbgrader metadata of cell {_grade_id(source)} (by cell id)")

    position = 0  # insert placeholders after the cell that preceded them in the release
    for source in release_nb.get("cells", []):
        index = _find_cell(nb["cells"], source)
        if index is not None:
            position = index + 1
        elif _grade_id(source) and not source["metadata"]["nbgrader"].get("grade"):
            placeholder = {"cell_type": source["cell_type"], "metadata": dict(source["metadata"]),
                           "source": ""}
            if nb.get("nbformat_minor", 0) >= 5:  # cell ids are required from 4.5 on
                placeholder["id"] = re.sub(r"[^A-Za-z0-9_-]", "-", f"restored-{_grade_id(source)}")[:64]
            if source["cell_type"] == "code":
                placeholder.update(execution_count=None, outputs=[])
            nb["cells"].insert(position, placeholder)
            position += 1
            notes.append(f"cell {_grade_id(source)} was deleted: put back an empty placeholder")
    return notes


def _find_cell(cells: list, release_cell: dict) -> Optional[int]:
    """Index of ``release_cell`` in a submission: by nbgrader grade id, else by cell id."""
    grade_id, cell_id = _grade_id(release_cell), release_cell.get("id")
    for i, cell in enumerate(cells):
        if (grade_id and _grade_id(cell) == grade_id) or (
                not grade_id and cell_id and isinstance(cell, dict) and cell.get("id") == cell_id):
            return i
    return None


def _grade_id(cell) -> Optional[str]:
    """The nbgrader grade id of a cell given as JSON (None for plain or malformed cells)."""
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None


# --------------------------------------------------------------------------- course


def prepare_course(course: Path, assignments: Sequence[str], solutions_dir: Path,
                   cell_timeout: int) -> None:
    """A fresh nbgrader course with the solutions as source and a filled gradebook."""
    if course.exists():
        shutil.rmtree(course)
    make_course(course, cell_timeout=cell_timeout)
    for assignment in assignments:
        shutil.copytree(Path(solutions_dir) / assignment, course / "source" / assignment,
                        ignore=IGNORED)
        run = run_nbgrader(["generate_assignment", assignment, "--force"], course, timeout=600)
        if not run.ok:
            raise RuntimeError(f"nbgrader generate_assignment {assignment} failed: "
                               f"{last_error(run.output)}\n{run.output}")


def max_scores(course: Path, assignments: Sequence[str]) -> dict[tuple[str, str], float]:
    """``{(assignment, notebook): points}`` from the gradebook."""
    from nbgrader.api import Gradebook
    with Gradebook(db_url(course)) as gb:
        return {(a, nb.name): float(nb.max_score)
                for a in assignments for nb in gb.find_assignment(a).notebooks}


def submitted_scores(course: Path, student: str, assignment: str,
                     notebooks: Iterable[str]) -> dict[str, float]:
    """``{notebook: score}`` of a student's autograded notebooks, from the gradebook."""
    from nbgrader.api import Gradebook
    with Gradebook(db_url(course)) as gb:
        return {nb: float(gb.find_submission_notebook(nb, assignment, student).score)
                for nb in notebooks}


# --------------------------------------------------------------------------- autograde


def autograde_student(course: Path, student: str, assignment: str, notebooks: list[str],
                      notebook_timeout: float, log) -> dict[str, Outcome]:
    """Autograde the notebooks already copied to ``submitted/``; one outcome per notebook.

    When nbgrader fails (a kernel death, a time limit, an unreadable file) it
    drops the whole assignment. The notebook it was working on is then set
    aside as failed and the others are graded again, so one bad notebook does
    not cost the student the rest.
    """
    submitted = course / "submitted" / student / assignment
    outcomes: dict[str, Outcome] = {}
    remaining = list(notebooks)
    while remaining:
        log.write(f"\n=== nbgrader autograde {assignment} --student {student} "
                  f"({', '.join(remaining)})\n")
        run = run_nbgrader(["autograde", assignment, f"--student={student}", "--force"], course,
                           timeout=STARTUP_LIMIT + notebook_timeout * len(remaining) + 60,
                           watchdog=_notebook_watchdog(notebook_timeout), log_file=log)
        timings = notebook_seconds(run.lines, run.seconds)
        if run.ok:
            autograded = course / "autograded" / student / assignment
            for nb in remaining:
                written = (autograded / f"{nb}.ipynb").exists()
                outcomes[nb] = Outcome(GRADED if written else
                                       f"{FAILED}: nbgrader wrote no autograded notebook",
                                       timings.get(nb))
            break
        reason = _short(run.killed_reason or last_error(run.output))
        culprit = next(reversed(timings), None)  # the notebook nbgrader was on
        if culprit not in remaining:  # failed before any notebook: nothing can be graded
            for nb in remaining:
                outcomes[nb] = Outcome(f"{FAILED}: {reason}")
            break
        outcomes[culprit] = Outcome(f"{FAILED}: {reason}", timings.get(culprit))
        remaining.remove(culprit)
        (submitted / f"{culprit}.ipynb").unlink()
    return outcomes


def _notebook_watchdog(notebook_timeout: float):
    """Stop nbgrader when one notebook runs past ``notebook_timeout`` seconds."""
    def watchdog(lines, elapsed):
        starts = notebook_starts(lines)
        if not starts:
            return (f"nbgrader did not start within {STARTUP_LIMIT} s"
                    if elapsed > STARTUP_LIMIT else None)
        notebook, started = starts[-1]
        if elapsed - started > notebook_timeout:
            return f"time limit: {notebook} ran longer than {notebook_timeout:g} s"
        return None
    return watchdog


def notebook_starts(lines) -> list[tuple[str, float]]:
    """``[(notebook, seconds since start)]`` in the order nbgrader reached them."""
    starts = []
    for seconds, text in lines:
        match = _STARTING_NOTEBOOK.search(text)
        if match:
            starts.append((Path(match.group(1)).name, seconds))
    return starts


def notebook_seconds(lines, total: float) -> dict[str, float]:
    """Seconds nbgrader spent on each notebook (ordered as processed)."""
    starts = notebook_starts(lines)
    ends = [s for _, s in starts[1:]] + [total]
    return {nb: round(end - start, 1) for (nb, start), end in zip(starts, ends)}


def _short(reason: str) -> str:
    """One readable line: no module path before the exception name, bounded length."""
    reason = " ".join(reason.split())
    reason = re.sub(r"^(?:[A-Za-z_][\w]*\.)+([A-Za-z_]\w*(?:Error|Exception)\b)", r"\1", reason)
    return reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "..."


# --------------------------------------------------------------------------- one student


def copy_submission(path: Path, dest: Path, release_nb: Path) -> list[str]:
    """Copy a submitted notebook into the course, repaired if needed; return repair notes.

    The student's file is only read. Raises :class:`InvalidNotebook`.
    """
    nb = read_notebook(path)
    notes = repair_submission(nb, json.loads(release_nb.read_text(encoding="utf-8")))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if notes:
        dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    else:
        shutil.copyfile(path, dest)  # byte for byte what the student sent
    return notes



def grade_student(course: Path, student: str, folder: Optional[Path], assignment: str,
                  notebooks: list[str], max_points: dict, gpu_available: bool,
                  notebook_timeout: float, log_path: Path) -> list[GradeRow]:
    """Rows for one student and one assignment; the submission itself is only read."""
    statuses: dict[str, Outcome] = {}
    notes: dict[str, list[str]] = {}
    to_grade = []
    submitted = course / "submitted" / student / assignment
    for nb in notebooks:
        path = folder / assignment / f"{nb}.ipynb" if folder else None
        if path is None or not path.is_file():
            statuses[nb] = Outcome(MISSING)
        elif nb in GPU_NOTEBOOKS and not gpu_available:
            statuses[nb] = Outcome(NEEDS_GPU)
        else:
            try:
                notes[nb] = copy_submission(path, submitted / f"{nb}.ipynb",
                                            course / "release" / assignment / f"{nb}.ipynb")
                to_grade.append(nb)
            except InvalidNotebook as err:
                statuses[nb] = Outcome(f"{FAILED}: {_short(str(err))}")

    with open(log_path, "w", encoding="utf-8") as log:
        for nb, outcome in statuses.items():
            log.write(f"{nb}: {outcome.status} (not autograded)\n")
        for nb, lines in notes.items():
            log.writelines(f"{nb}: {line}\n" for line in lines)
        if to_grade:
            statuses.update(autograde_student(course, student, assignment, to_grade,
                                              notebook_timeout, log))
    graded = [nb for nb in notebooks if statuses[nb].status == GRADED]
    scores = submitted_scores(course, student, assignment, graded) if graded else {}
    return [GradeRow(student, assignment, nb, scores.get(nb), max_points.get((assignment, nb)),
                     statuses[nb].status, statuses[nb].seconds) for nb in notebooks]


# --------------------------------------------------------------------------- feedback


def write_feedback(course: Path, assignment: str, out_dir: Path, students: int) -> list[str]:
    """Feedback HTML for every autograded student of ``assignment``; returns problems."""
    if not (course / "autograded").is_dir():
        return []
    run = run_nbgrader(["generate_feedback", assignment, "--force"], course,
                       timeout=120 + 30 * students)
    problems = [] if run.ok else [f"generate_feedback {assignment}: {last_error(run.output)}"]
    for html in sorted((course / "feedback").glob(f"*/{assignment}/*.html")):
        dest = out_dir / "feedback" / html.relative_to(course / "feedback")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(html, dest)
    return problems


# --------------------------------------------------------------------------- main


def grade(submissions, out_dir, assignments: Optional[Sequence[str]] = None,
          cell_timeout: int = DEFAULT_CELL_TIMEOUT, notebook_timeout: float = 600,
          gpu_available: Optional[bool] = None, solutions_dir: Path = SOLUTIONS_DIR,
          feedback: bool = True, verbose: bool = True) -> list[GradeRow]:
    """Grade ``submissions`` into ``out_dir``; return the rows written to ``grades.csv``.

    ``cell_timeout``: seconds one cell may run (then it is interrupted and its
    test scores 0). ``notebook_timeout``: seconds a whole notebook may take
    before nbgrader is stopped (status ``failed``). ``gpu_available``: None
    means detect with CuPy.
    """
    say = print if verbose else (lambda *a, **k: None)
    submissions, out_dir = Path(submissions).resolve(), Path(out_dir).resolve()
    _check_out_dir(submissions, out_dir)
    chosen, students, warnings = find_submissions(submissions, solutions_dir, assignments)
    for warning in warnings:
        say(f"warning: {warning}")
    if gpu_available is None:
        gpu_available = detect_gpu()

    course = out_dir / COURSE_DIRNAME
    _clear_previous_results(out_dir)
    say(f"Preparing nbgrader course for {', '.join(chosen)} in {course} ...")
    prepare_course(course, chosen, solutions_dir, cell_timeout)
    points = max_scores(course, chosen)

    rows: list[GradeRow] = []
    for i, (student, folder) in enumerate(sorted(students.items(), key=lambda s: s[0].casefold()), 1):
        for assignment in chosen:
            notebooks = assignment_notebooks(assignment, solutions_dir)
            student_rows = grade_student(
                course, student, folder, assignment, notebooks, points, gpu_available,
                notebook_timeout, out_dir / "logs" / f"{student}__{assignment}.log")
            rows += student_rows
            say(f"[{i}/{len(students)}] {student} {assignment}: " +
                "; ".join(_describe(r) for r in student_rows))

    if feedback:
        for assignment in chosen:
            for problem in write_feedback(course, assignment, out_dir, len(students)):
                say(f"warning: {problem}")
    rows.sort(key=lambda r: (r.student.casefold(), r.student, r.assignment, r.notebook))
    write_csv(rows, out_dir / "grades.csv")
    say(summary(rows))
    say(f"Grades: {out_dir / 'grades.csv'}; logs: {out_dir / 'logs'}"
        + (f"; feedback: {out_dir / 'feedback'}" if feedback else ""))
    return rows


def _check_out_dir(submissions: Path, out_dir: Path) -> None:
    """Refuse an output folder that overlaps the submissions (we delete inside it)."""
    if out_dir == submissions or submissions in out_dir.parents or out_dir in submissions.parents:
        raise GradingInputError(
            f"the output folder {out_dir} overlaps the submissions folder {submissions}. "
            "Choose an --out folder outside SUBMISSIONS (and not containing it).")


def _clear_previous_results(out_dir: Path) -> None:
    """Empty the folders a previous grading run wrote, so no stale feedback lingers.

    Only a folder that holds an earlier run's results (its nbgrader course or
    grades.csv) is cleared; someone else's ``logs/`` or ``feedback/`` is not ours.
    """
    managed = [out_dir / name for name in (COURSE_DIRNAME, "feedback", "logs")]
    ours = (out_dir / COURSE_DIRNAME).is_dir() or (out_dir / "grades.csv").is_file()
    if not ours and any(p.exists() for p in managed):
        raise GradingInputError(
            f"{out_dir} already has a feedback/ or logs/ folder that a grading run did not "
            "write. Choose a new or empty --out folder.")
    for path in managed:
        shutil.rmtree(path, ignore_errors=True)
    (out_dir / "grades.csv").unlink(missing_ok=True)
    (out_dir / "logs").mkdir(parents=True)


def write_csv(rows: Sequence[GradeRow], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(row.csv_values() for row in rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def summary(rows: Sequence[GradeRow]) -> str:
    """``graded: 3, missing: 1, needs GPU: 1, failed: 1`` (failure reasons grouped)."""
    counts = Counter(FAILED if r.status.startswith(FAILED) else r.status for r in rows)
    order = [GRADED, MISSING, NEEDS_GPU, FAILED]
    parts = [f"{status}: {counts[status]}" for status in order if counts[status]]
    return f"{len(rows)} notebooks: " + (", ".join(parts) or "none")


def _describe(row: GradeRow) -> str:
    if row.status == GRADED:
        return f"{row.notebook} {_number(row.score)}/{_number(row.max_score)} ({row.seconds or 0:.1f} s)"
    return f"{row.notebook} {row.status}"


def _number(x: Optional[float]) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"
