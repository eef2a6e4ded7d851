"""Grade a class: every notebook run in a sandbox, every score decided here.

For each submitted notebook:

1. the file is read as data (:func:`program.read_submission`), never opened
   by Jupyter or nbgrader;
2. the code to run is the student's cells in their order, with the
   instructor's locked cells (setup, imports) in place of the student's copies
   and no test cell at all (:func:`program.build_program`);
3. that code runs in a sandbox (:mod:`sandbox`), and then the *collect* half
   of every check in the instructor's test cells calls the student's
   functions on the case inputs, hidden ones included, and sends back what
   they returned as plain data;
4. the *judge* half of each check compares that data with the reference
   outputs in this process, and a test cell's points are given when all its
   checks pass (:func:`program.test_plan` reads the test cells of the
   instructor's source notebook).

A cell or check that kills or hangs the sandbox is noted and skipped, and the
notebook runs again without it, so the rest is still graded. Each notebook's
result is saved as soon as it is known (``results/``), keyed by a digest of
everything that decides it, so an interrupted run resumes where it stopped
and grading again reuses or reproduces the same grades.

Output in ``out_dir``: ``grades.csv``, ``students.csv`` (how files and LMS
names map to student ids), ``feedback/<student>/<assignment>/<notebook>.html``,
``logs/<student>/<assignment>/<notebook>.log``, ``results/`` (JSON per
notebook). Statuses: ``graded`` (with a score), ``missing``, ``needs GPU``,
``failed: <reason>`` (no score: the file cannot be read, or the notebook
could not be run at all).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from . import program as nbprogram
from .backends import gpu_available as detect_gpu
from .checking import CheckFailure
from .feedback import write_feedback_page
from .paths import EXERCISES_DIR, GPU_NOTEBOOKS, PACKAGE_DIR, REFERENCES_DIR, SOLUTIONS_DIR
from .references import chapter_module, reference_path, write_case_inputs
from .sandbox import (NOTEBOOK_TIME_LIMIT, Limits, RunResult, SandboxUnavailable, run_sandboxed,
                      sandbox_problem)
from .submissions import GradingInputError, Submission, discover, write_student_map

COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "status", "seconds", "notes")
GRADED, MISSING, NEEDS_GPU, FAILED = "graded", "missing", "needs GPU", "failed"
MAX_ATTEMPTS = 4  # runs of one notebook: the first, and one more per cell or check that broke it
RESULT_VERSION = 1


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
    output: str = ""
    source: str = ""
    digest: str = ""

    def csv_values(self) -> list:
        return [self.student, self.assignment, self.notebook, _number(self.score),
                _number(self.max_score), self.status,
                "" if self.seconds is None else f"{self.seconds:.1f}", " | ".join(self.notes)]


# --------------------------------------------------------------------------- the instructor's side


@dataclass
class Assignment:
    """What the grader trusts about one notebook: the instructor's files and test plan."""

    name: str
    notebook: str
    release: dict
    plan: list
    track: str
    digest: str

    @property
    def max_score(self) -> float:
        return nbprogram.max_points(self.plan)

    def calls(self) -> list:
        return [(test, call) for test in self.plan for call in test.calls]


def load_assignment(name: str, notebook: str, solutions_dir: Path = SOLUTIONS_DIR,
                    exercises_dir: Path = EXERCISES_DIR) -> Assignment:
    source_path = Path(solutions_dir) / name / f"{notebook}.ipynb"
    release_path = Path(exercises_dir) / name / f"{notebook}.ipynb"
    source = json.loads(source_path.read_text(encoding="utf-8"))
    release = json.loads(release_path.read_text(encoding="utf-8"))
    track = (source.get("metadata", {}).get("mha_course", {}) or {}).get("track")
    if track is None:
        raise GradingInputError(f"{source_path} has no metadata.mha_course.track: the grader "
                                "does not know which library the notebook uses.")
    digest = hashlib.sha256()
    for path in (source_path, release_path, reference_path(name, REFERENCES_DIR),
                 *sorted(PACKAGE_DIR.glob("*.py"))):
        digest.update(path.read_bytes())
    return Assignment(name, notebook, release, nbprogram.test_plan(source), track, digest.hexdigest())


# --------------------------------------------------------------------------- one notebook


def grade_notebook(sub: Submission, spec: Assignment, limits: Limits, gpu_available: bool,
                   sandboxed: bool, work_dir: Path) -> NotebookResult:
    """Grade one submitted notebook; never raises for anything the submission does."""
    result = NotebookResult(sub.student, sub.assignment, sub.notebook, MISSING,
                            max_score=spec.max_score, source=sub.source)
    if sub.path is None:
        return result
    if sub.notebook in GPU_NOTEBOOKS and not gpu_available:
        result.status = f"{NEEDS_GPU}"
        result.notes.append("not graded: this notebook needs a CUDA GPU and the grader has none")
        return result
    try:
        submission = nbprogram.read_submission(sub.path)
    except nbprogram.InvalidNotebook as err:
        result.status = f"{FAILED}: {err}"
        return result
    program = nbprogram.build_program(submission, spec.release)
    result.notes += program.notes
    result.cells = [{"label": c.label, "origin": c.origin, "source": c.source, "error": None}
                    for c in program.cells]
    started = time.monotonic()
    run, skipped = _run_until_complete(program, spec, limits, gpu_available, sandboxed, work_dir,
                                       result.notes)
    result.seconds = round(time.monotonic() - started, 1)
    result.output = _output_text(run)
    for _, event in run.events:
        if event.get("event") == "cell_end" and isinstance(event.get("index"), int) \
                and 0 <= event["index"] < len(result.cells):
            result.cells[event["index"]]["error"] = event.get("error")
    for index, reason in skipped["cell"].items():
        result.cells[index]["error"] = f"skipped: {reason}"
    if not run.completed:
        result.status = f"{FAILED}: {run.end_reason()}"
        return result
    result.tests = [asdict(t) for t in _score(spec, run, skipped["call"])]
    result.score = sum(t["score"] for t in result.tests)
    result.status = GRADED
    return result


def _run_until_complete(program, spec: Assignment, limits: Limits, gpu: bool, sandboxed: bool,
                        work_dir: Path, notes: list):
    """Run the notebook; when a cell or check breaks the run, skip it and run again."""
    skipped = {"cell": {}, "call": {}}
    calls = spec.calls()
    task = {"assignment": spec.name, "track": spec.track,
            "cells": [{"label": c.label, "source": c.source} for c in program.cells],
            "calls": [{"method": c.method, "target": c.target, "kwargs": c.kwargs_dict()}
                      for _, c in calls],
            "cell_seconds": limits.cell_seconds, "call_seconds": limits.cell_seconds}
    work_dir.mkdir(parents=True, exist_ok=True)
    cases = work_dir / "cases.npz"
    write_case_inputs(spec.name, cases)
    started = time.monotonic()
    for _ in range(MAX_ATTEMPTS):
        task["skip_cells"], task["skip_calls"] = sorted(skipped["cell"]), sorted(skipped["call"])
        (work_dir / "task.json").write_text(json.dumps(task), encoding="utf-8")
        # All runs of a notebook share one time budget, so reruns cannot multiply it.
        left = limits.notebook_seconds - (time.monotonic() - started)
        run = run_sandboxed(work_dir, cases, spec.name, replace(limits, notebook_seconds=max(left, 1)),
                            gpu=gpu, sandboxed=sandboxed)
        culprit = run.unfinished()
        if run.completed or culprit is None or run.killed_reason == NOTEBOOK_TIME_LIMIT:
            if run.killed_reason == NOTEBOOK_TIME_LIMIT:
                run.killed_reason = f"the notebook ran longer than {limits.notebook_seconds:g} s"
            return run, skipped
        kind, index = culprit
        reason = run.end_reason()
        skipped[kind][index] = reason
        label = task["cells"][index]["label"] if kind == "cell" else \
            f"check {task['calls'][index]['method']}({task['calls'][index]['target']})"
        notes.append(f"{label}: {reason}; the notebook was run again without it")
    return run, skipped


def _score(spec: Assignment, run: RunResult, skipped_calls: dict) -> list:
    """Judge every check call here, in the grader's process; a test scores when all its calls pass."""
    data = {e["index"]: e.get("data") for _, e in run.events
            if e.get("event") == "call_end" and isinstance(e.get("index"), int)}
    checks = chapter_module(spec.name).Checks(spec.track)
    results, index = [], 0
    for test in spec.plan:
        messages, passed = [], True
        for call in test.calls:
            ok, message = _judge_call(checks, call, data.get(index), skipped_calls.get(index))
            passed &= ok
            messages.append(message)
            index += 1
        results.append(TestResult(test.grade_id, test.points, test.points if passed else 0.0,
                                  test.hidden, messages))
    return results


def _judge_call(checks, call, data, skipped_reason) -> tuple[bool, str]:
    if skipped_reason is not None:
        return False, f"check {call.method}({call.target}) could not run: {skipped_reason}."
    if not isinstance(data, dict):
        return False, f"check {call.method}({call.target}) sent no result."
    if "undefined" in data:
        return False, (f"{call.target} is not defined in the notebook: keep the name the exercise "
                       "gives and make sure the cell defining it runs without an error.")
    if "collect_error" in data:
        return False, f"check {call.method}({call.target}) could not call your code: {data['collect_error']}"
    try:
        return True, checks.judge(call.method, data.get("collected"), **call.kwargs_dict())
    except CheckFailure as failure:
        return False, str(failure)
    except Exception as exc:  # data in a shape no honest collect produces
        return False, (f"check {call.method}({call.target}) got a result it cannot read "
                       f"({type(exc).__name__}): it does not come from the course's checks.")


def _output_text(run: RunResult) -> str:
    text = run.output.decode("utf-8", errors="replace")
    if run.output_dropped:
        text += f"\n[... {run.output_dropped} more bytes of output not kept]"
    return text


# --------------------------------------------------------------------------- saving results


def submission_digest(sub: Submission, spec: Assignment, limits: Limits, gpu: bool,
                      sandboxed: bool) -> str:
    """Everything that decides a notebook's grade; a saved result with this digest is reused."""
    digest = hashlib.sha256(f"{RESULT_VERSION}|{spec.digest}|{limits}|{gpu}|{sandboxed}|".encode())
    if sub.path is not None:
        digest.update(Path(sub.path).read_bytes())
    return digest.hexdigest()


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


# --------------------------------------------------------------------------- a class


def grade(submissions, out_dir, assignments: Optional[Sequence[str]] = None, jobs: int = 1,
          limits: Limits = Limits(), gpu_available: Optional[bool] = None, unsandboxed: bool = False,
          feedback: bool = True, fresh: bool = False, verbose: bool = True,
          solutions_dir: Path = SOLUTIONS_DIR, exercises_dir: Path = EXERCISES_DIR) -> list:
    """Grade ``submissions`` (a folder or an LMS zip) into ``out_dir``; return the results."""
    say = print if verbose else (lambda *a, **k: None)
    submissions, out_dir = Path(submissions).resolve(), Path(out_dir).resolve()
    _check_out_dir(submissions, out_dir)
    if not unsandboxed:
        problem = sandbox_problem()
        if problem:
            raise SandboxUnavailable(problem)
    known = {a.name: sorted(p.stem for p in a.glob("*.ipynb"))
             for a in sorted(Path(solutions_dir).iterdir()) if a.is_dir() and any(a.glob("*.ipynb"))}
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "unpacked", ignore_errors=True)  # a zip is unpacked afresh each run
    found = discover(submissions, known, assignments, workdir=out_dir / "unpacked")
    for warning in found.warnings:
        say(f"warning: {warning}")
    write_student_map(found, out_dir / "students.csv")
    if gpu_available is None:
        gpu_available = detect_gpu()
    specs = {(s.assignment, s.notebook): None for s in found.submissions}
    for key in specs:
        specs[key] = load_assignment(*key, solutions_dir=solutions_dir, exercises_dir=exercises_dir)
    say(f"Grading {len(found.submissions)} notebooks of {len(found.students)} students "
        f"({found.layout}) with {jobs} job(s); "
        + ("NO SANDBOX (--unsandboxed)" if unsandboxed else "sandbox: bubblewrap")
        + f"; limits: {limits.describe()}.")

    lock, done = threading.Lock(), [0]

    def one(sub: Submission) -> NotebookResult:
        spec = specs[(sub.assignment, sub.notebook)]
        digest = submission_digest(sub, spec, limits, gpu_available, not unsandboxed)
        path = result_path(out_dir, sub.student, sub.assignment, sub.notebook)
        result = None if fresh else load_result(path, digest)
        reused = result is not None
        if result is None:
            work = out_dir / "work" / sub.student / sub.assignment / sub.notebook
            try:
                result = grade_notebook(sub, spec, limits, gpu_available, not unsandboxed, work)
            except Exception as exc:  # a grader bug must not cost the other students their grades
                result = NotebookResult(sub.student, sub.assignment, sub.notebook,
                                        f"{FAILED}: grader error {type(exc).__name__}: {exc}",
                                        max_score=spec.max_score, source=sub.source)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            result.digest = digest
            save_result(result, path)
        _write_log(result, out_dir)
        if feedback:
            write_feedback_page(result, out_dir / "feedback" / sub.student / sub.assignment
                                / f"{sub.notebook}.html")
        with lock:
            done[0] += 1
            say(f"[{done[0]}/{len(found.submissions)}] {sub.student} {sub.assignment} "
                f"{sub.notebook}: {_describe(result)}" + (" (saved result reused)" if reused else ""))
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, found.submissions))
    shutil.rmtree(out_dir / "work", ignore_errors=True)
    results.sort(key=lambda r: (r.student.casefold(), r.student, r.assignment, r.notebook))
    write_csv(results, out_dir / "grades.csv")
    say(summary(results))
    say(f"Grades: {out_dir / 'grades.csv'}; student ids: {out_dir / 'students.csv'}; logs: "
        f"{out_dir / 'logs'}" + (f"; feedback: {out_dir / 'feedback'}" if feedback else ""))
    return results


def _check_out_dir(submissions: Path, out_dir: Path) -> None:
    if out_dir == submissions or submissions in out_dir.parents or out_dir in submissions.parents:
        raise GradingInputError(
            f"the output folder {out_dir} overlaps the submissions {submissions}. Choose an --out "
            "folder outside SUBMISSIONS (and not containing it).")


def _write_log(result: NotebookResult, out_dir: Path) -> None:
    path = out_dir / "logs" / result.student / result.assignment / f"{result.notebook}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{result.student} {result.assignment} {result.notebook}: {_describe(result)}",
             f"source: {result.source}"] + [f"note: {n}" for n in result.notes]
    for cell in result.cells:
        if cell["error"]:
            lines.append(f"{cell['label']}: {cell['error']}")
    for test in result.tests:
        lines.append(f"{test['grade_id']}: {test['score']:g}/{test['points']:g}")
        lines += [f"    {m}" for m in test["messages"]]
    lines += ["", "--- output ---", result.output]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_csv(results: Sequence[NotebookResult], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(r.csv_values() for r in results)


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


def _describe(result: NotebookResult) -> str:
    if result.status == GRADED:
        return f"{_number(result.score)}/{_number(result.max_score)} ({result.seconds or 0:.1f} s)"
    return result.status


def _number(x) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"
