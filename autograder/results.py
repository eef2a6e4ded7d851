"""The result store: what grading decided about each notebook, and the files a class's results make.

A notebook's result (:class:`NotebookResult`, its tests' :class:`TestResult`) is
saved as JSON under ``results/`` as soon as it is known (:func:`save_result`,
atomically) and read back when its digest still matches (:func:`load_result`).
From the results come the instructor's files: one log per notebook, the
student's feedback page (:func:`write_notebook_outputs`), and for the class
``grades.csv`` and the summary printed at the end (:func:`finish_class`).
Grading (:mod:`grading`) and the merge of shards (:mod:`shards`) both write
through these functions, so a merged class is written exactly as one run.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .feedback import write_feedback_page
from .spreadsheet import write_rows

COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "status", "seconds", "notes")
GRADED, MISSING, NEEDS_GPU, FAILED = "graded", "missing", "needs GPU", "failed"
GRADER_ERROR = "grader error"


@dataclass
class TestResult:
    grade_id: str
    points: float
    score: float
    hidden: bool
    messages: list


@dataclass
class NotebookResult:
    student: str
    assignment: str
    notebook: str
    status: str
    score: Optional[float] = None
    max_score: Optional[float] = None
    seconds: Optional[float] = None
    notes: list = field(default_factory=list)
    tests: list = field(default_factory=list)      # TestResult as dicts
    cells: list = field(default_factory=list)      # {"label", "origin", "source", "error"}
    output: str = ""               # printed before the hidden checks: on the feedback page
    withheld_output: str = ""      # printed while they ran: in the instructor's log only
    source: str = ""
    digest: str = ""
    grader_errors: list = field(default_factory=list)  # tracebacks of checks that crashed in the judge

    def csv_values(self) -> list:
        return [self.student, self.assignment, self.notebook, _number(self.score),
                _number(self.max_score), self.status,
                "" if self.seconds is None else f"{self.seconds:.1f}", " | ".join(self.notes)]


# --------------------------------------------------------------------------- one notebook's files


def result_path(out_dir: Path, student: str, assignment: str, notebook: str) -> Path:
    return out_dir / "results" / student / assignment / f"{notebook}.json"


def save_result(result: NotebookResult, path: Path) -> None:
    """Write atomically: a run killed mid-write leaves the old file or none, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False,
                                     encoding="utf-8") as f:
        json.dump(asdict(result), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def load_result(path: Path, digest: str) -> Optional[NotebookResult]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return NotebookResult(**saved) if saved.get("digest") == digest else None
    except (OSError, ValueError, TypeError):
        return None

def _write_log(result: NotebookResult, out_dir: Path) -> None:
    path = out_dir / "logs" / result.student / result.assignment / f"{result.notebook}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{result.student} {result.assignment} {result.notebook}: {describe(result)}",
             f"source: {result.source}"] + [f"note: {n}" for n in result.notes]
    for cell in result.cells:
        if cell["error"]:
            lines.append(f"{cell['label']}: {cell['error']}")
    for test in result.tests:
        lines.append(f"{test['grade_id']}: {test['score']:g}/{test['points']:g}")
        lines += [f"    {m}" for m in test["messages"]]
    for error in result.grader_errors:
        lines += ["", f"--- {GRADER_ERROR} (a bug in the course's checks, not in the submission) ---", error]
    lines += ["", "--- output ---", result.output]
    if result.withheld_output:
        lines += ["", "--- printed while the hidden checks ran (not on the student's feedback page) ---",
                  result.withheld_output]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_notebook_outputs(result: NotebookResult, out_dir: Path, feedback: bool = True) -> None:
    """One notebook's log and, with ``feedback``, its student's page."""
    _write_log(result, out_dir)
    if feedback:
        write_feedback_page(result, out_dir / "feedback" / result.student / result.assignment
                            / f"{result.notebook}.html")



# --------------------------------------------------------------------------- a class's files


def write_csv(results: Sequence[NotebookResult], path: Path) -> None:
    write_rows(path, COLUMNS, (r.csv_values() for r in results))


def read_csv(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def summary(results: Sequence[NotebookResult]) -> str:
    """Counts per status, then one line per notebook that was not graded for a reason to look at."""
    counts = Counter(FAILED if r.status.startswith(FAILED) else r.status for r in results)
    parts = [f"{s}: {counts[s]}" for s in (GRADED, MISSING, NEEDS_GPU, FAILED) if counts[s]]
    lines = [f"{len(results)} notebooks: " + (", ".join(parts) or "none")]
    lines += [f"  {r.student} {r.assignment} {r.notebook}: {r.status}"
              for r in results if r.status.startswith(FAILED)]
    noted = sum(1 for r in results if r.status == GRADED and any("run again" in n for n in r.notes))
    if noted:
        lines.append(f"  {noted} graded notebook(s) had a cell or check skipped after it broke "
                     "the run (see the notes column)")
    return "\n".join(lines)



def finish_class(results: Sequence[NotebookResult], out_dir: Path, feedback: bool, say) -> list:
    """Sort the results as grades.csv lists them, write grades.csv, report; return the sorted list."""
    results = sorted(results, key=lambda r: (r.student.casefold(), r.student, r.assignment, r.notebook))
    write_csv(results, out_dir / "grades.csv")
    say(summary(results))
    say(f"Grades: {out_dir / 'grades.csv'}; student ids: {out_dir / 'students.csv'}; logs: "
        f"{out_dir / 'logs'}" + (f"; feedback: {out_dir / 'feedback'}" if feedback else ""))
    return results


def describe(result: NotebookResult) -> str:
    if result.status == GRADED:
        return f"{_number(result.score)}/{_number(result.max_score)} ({result.seconds or 0:.1f} s)"
    return result.status


def _number(x) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


