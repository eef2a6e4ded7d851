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
result is saved as soon as it is known (``results/``, see :mod:`results`),
keyed by a digest of everything that decides it (:mod:`instructor`), so an
interrupted run resumes where it stopped and grading again reuses or
reproduces the same grades.

Output in ``out_dir``: ``grades.csv``, ``students.csv`` (how files and LMS
names map to student ids), ``feedback/<student>/<assignment>/<notebook>.html``,
``logs/<student>/<assignment>/<notebook>.log``, ``results/`` (JSON per
notebook). Statuses: ``graded`` (with a score), ``missing``, ``needs GPU``,
``failed: <reason>`` (no score: the file cannot be read, or the notebook
could not be run at all).
"""
from __future__ import annotations

import hashlib
import io
import shutil
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence

from mha_checks.backends import gpu_available as detect_gpu
from mha_checks.chapters import chapter_module
from mha_checks.engine import CheckFailure, building_blocks

from . import program as nbprogram
from . import protocol
from . import shards as sharding
from .instructor import Assignment, load_assignment
from .paths import EXERCISES_DIR, SOLUTIONS_DIR
from .references import write_case_inputs
from .results import (FAILED, GRADED, GRADER_ERROR, MISSING, NEEDS_GPU, NotebookResult, TestResult,
                      describe, finish_class, load_result, result_path, save_result,
                      write_notebook_outputs)
from .sandbox import (NOTEBOOK_TIME_LIMIT, Limits, RunResult, SandboxUnavailable, new_marker,
                      run_sandboxed, sandbox_problem)
from .submissions import GradingInputError, Submission, discover, write_student_map

MAX_ATTEMPTS = 4  # runs of one notebook: the first, and one more per cell or check that broke it
RESULT_VERSION = 3  # 3: what is printed during the hidden checks is kept apart


# --------------------------------------------------------------------------- one notebook


def grade_notebook(sub: Submission, spec: Assignment, limits: Limits, gpu_available: bool,
                   sandboxed: bool, work_dir: Path) -> NotebookResult:
    """Grade one submitted notebook; never raises for anything the submission does."""
    result = NotebookResult(sub.student, sub.assignment, sub.notebook, MISSING,
                            max_score=spec.max_score, source=sub.source)
    if sub.path is None:
        return result
    if spec.entry.needs_gpu and not gpu_available:
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
    run, skipped = _run_until_complete(program, spec, spec.limits(limits), gpu_available, sandboxed,
                                       work_dir, result.notes)
    result.seconds = round(time.monotonic() - started, 1)
    result.output = _output_text(run.output, run.output_dropped)
    result.withheld_output = _output_text(run.withheld, run.withheld_dropped)
    for _, event in run.events:
        if event.get("event") == protocol.CELL_END and isinstance(event.get("index"), int) \
                and 0 <= event["index"] < len(result.cells):
            result.cells[event["index"]]["error"] = event.get("error")
    for index, reason in skipped["cell"].items():
        result.cells[index]["error"] = f"skipped: {reason}"
    if not run.completed:
        result.status = f"{FAILED}: {run.end_reason()}"
        return result
    tests, errors = _score(spec, run, skipped["call"])
    result.tests = [asdict(t) for t in tests]
    if errors:
        # A crash in the course's own judging code is the course's bug: no score, and the
        # instructor finds the traceback in the log, instead of a message blaming the student.
        result.grader_errors = [f"check {method}:\n{trace}" for method, trace in errors]
        result.status = f"{FAILED}: {GRADER_ERROR} in check {', '.join(sorted({m for m, _ in errors}))}"
        return result
    result.score = sum(t["score"] for t in result.tests)
    result.status = GRADED
    return result


def _run_until_complete(program, spec: Assignment, limits: Limits, gpu: bool, sandboxed: bool,
                        work_dir: Path, notes: list):
    """Run the notebook; when a cell or check breaks the run, skip it and run again."""
    skipped = {"cell": {}, "call": {}}
    calls = [({"index": index, "method": c.method, "target": c.target, "kwargs": c.kwargs_dict()},
              test.hidden or c.kwargs_dict().get("hidden") is True)
             for index, (test, c) in enumerate(spec.calls())]
    task = protocol.Task(
        assignment=spec.name, notebook=spec.notebook, track=spec.track,
        cells=[{"label": c.label, "source": c.source} for c in program.cells],
        calls=[call for call, hidden in calls if not hidden],
        hidden_calls=[call for call, hidden in calls if hidden],
        cell_seconds=limits.cell_seconds, call_seconds=limits.cell_seconds, marker=new_marker())
    work_dir.mkdir(parents=True, exist_ok=True)
    cases = write_case_inputs(spec.name, work_dir / "cases.npz")
    hidden_inputs = io.BytesIO()
    write_case_inputs(spec.name, hidden_inputs, splits=("hidden",))
    started = time.monotonic()
    for _ in range(MAX_ATTEMPTS):
        task.skip_cells, task.skip_calls = sorted(skipped["cell"]), sorted(skipped["call"])
        # All runs of a notebook share one time budget, so reruns cannot multiply it.
        left = limits.notebook_seconds - (time.monotonic() - started)
        run = run_sandboxed(work_dir, cases, spec.name, replace(limits, notebook_seconds=max(left, 1)),
                            gpu=gpu, sandboxed=sandboxed, task=task, hidden_inputs=hidden_inputs.getvalue())
        culprit = run.unfinished()
        if run.completed or culprit is None or run.killed_reason == NOTEBOOK_TIME_LIMIT:
            if run.killed_reason == NOTEBOOK_TIME_LIMIT:
                run.killed_reason = f"the notebook ran longer than {limits.notebook_seconds:g} s"
            return run, skipped
        kind, index = culprit
        reason = run.end_reason()
        skipped[kind][index] = reason
        notes.append(f"{task.label(kind, index)}: {reason}; the notebook was run again without it")
    return run, skipped


def _score(spec: Assignment, run: RunResult, skipped_calls: dict) -> tuple:
    """Judge every check call here, in the grader's process; a test scores when all its calls pass.

    A function built on others is judged with what their own checks collected in this run
    (same hidden flag; :func:`engine.building_blocks` decides which), so one bug costs points
    once. Returns the test results and ``(method, traceback)`` for every judge that crashed."""
    data = protocol.call_data(e for _, e in run.events)
    checks = chapter_module(spec.name).Checks(spec.track)
    calls = [call for _, call in spec.calls()]
    collected = {False: {}, True: {}}  # hidden -> {check: the first record it collected}
    for index, call in enumerate(calls):
        if isinstance(data.get(index), dict) and protocol.COLLECTED in data[index]:
            collected[bool(call.kwargs_dict().get("hidden"))].setdefault(
                call.method, data[index][protocol.COLLECTED])
    results, errors, index = [], [], 0
    for test in spec.plan:
        messages, passed = [], True
        for call in test.calls:
            hidden = bool(call.kwargs_dict().get("hidden"))
            blocks = building_blocks(checks.chapter.checks.get(call.method), collected[hidden])
            ok, message, crash = _judge_call(checks, call, data.get(index), skipped_calls.get(index), blocks)
            passed &= ok
            messages.append(message)
            if crash:
                errors.append((call.method, crash))
            index += 1
        results.append(TestResult(test.grade_id, test.points, test.points if passed else 0.0,
                                  test.hidden, messages))
    return results, errors


def _judge_call(checks, call, data, skipped_reason, blocks: dict) -> tuple:
    """``(passed, message, traceback of a crash in the judge or None)``."""
    label = f"check {call.method}({call.target})"
    if skipped_reason is not None:
        return False, f"{label} could not run: {skipped_reason}.", None
    if not isinstance(data, dict):
        return False, f"{label} sent no result.", None
    if protocol.UNDEFINED in data:
        return False, (f"{call.target} is not defined in the notebook: keep the name the exercise "
                       "gives and make sure the cell defining it runs without an error."), None
    if protocol.COLLECT_ERROR in data:
        return False, f"{label} could not call your code: {data[protocol.COLLECT_ERROR]}", None
    kwargs = call.kwargs_dict()
    try:
        if blocks:
            kwargs["blocks"] = blocks
        return True, checks.judge(call.method, data.get(protocol.COLLECTED), **kwargs), None
    except CheckFailure as failure:
        return False, str(failure), None
    except Exception:  # the judge itself failed: the course's bug, not the student's
        return False, f"{label}: {GRADER_ERROR}; the instructor has the details.", traceback.format_exc()


def _output_text(output: bytes, dropped: int) -> str:
    text = output.decode("utf-8", errors="replace")
    if dropped:
        text += f"\n[... {dropped} more bytes of output not kept]"
    return text




def submission_digest(sub: Submission, spec: Assignment, limits: Limits, gpu: bool,
                      sandboxed: bool) -> str:
    """Everything that decides a notebook's grade; a saved result with this digest is reused."""
    digest = hashlib.sha256(f"{RESULT_VERSION}|{spec.digest}|{spec.limits(limits)}|{gpu}|{sandboxed}|".encode())
    if sub.path is not None:
        digest.update(Path(sub.path).read_bytes())
    return digest.hexdigest()



# --------------------------------------------------------------------------- a class


def grade(submissions, out_dir, assignments: Optional[Sequence[str]] = None, jobs: int = 1,
          limits: Limits = Limits(), gpu_available: Optional[bool] = None, unsandboxed: bool = False,
          feedback: bool = True, fresh: bool = False, verbose: bool = True,
          solutions_dir: Path = SOLUTIONS_DIR, exercises_dir: Path = EXERCISES_DIR,
          shard=None) -> list:
    """Grade ``submissions`` (a folder or an LMS zip) into ``out_dir``; return the results.

    ``shard``: ``(K, N)`` or ``"K/N"``, 1 <= K <= N, grades only shard K of a
    split of the class into N (see :mod:`autograder.shards`, which also merges
    the shards' outputs into one).
    """
    say = print if verbose else (lambda *a, **k: None)
    shard = None if shard is None else sharding.parse_shard(shard)
    submissions, out_dir = Path(submissions).resolve(), Path(out_dir).resolve()
    _check_out_dir(submissions, out_dir)
    if not unsandboxed:
        problem = sandbox_problem()
        if problem:
            raise SandboxUnavailable(problem)
    known = {a.name: sorted(p.stem for p in a.glob("*.ipynb"))
             for a in sorted(Path(solutions_dir).iterdir()) if a.is_dir() and any(a.glob("*.ipynb"))}
    out_dir.mkdir(parents=True, exist_ok=True)
    sharding.clear_manifest(out_dir)  # written again only when this run finishes as a shard
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
    todo = found.submissions if shard is None else sharding.select(found.submissions, *shard)
    say((f"Shard {shard[0]}/{shard[1]}: grading {len(todo)} of the {len(found.submissions)} "
         if shard else f"Grading {len(todo)} ")
        + f"notebooks of {len(found.students)} students "
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
        write_notebook_outputs(result, out_dir, feedback)
        with lock:
            done[0] += 1
            say(f"[{done[0]}/{len(todo)}] {sub.student} {sub.assignment} "
                f"{sub.notebook}: {describe(result)}" + (" (saved result reused)" if reused else ""))
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, todo))
    shutil.rmtree(out_dir / "work", ignore_errors=True)
    results = finish_class(results, out_dir, feedback, say)
    if shard is not None:
        settings = {"limits": repr(limits), "gpu_available": bool(gpu_available),
                    "sandboxed": not unsandboxed,
                    "grader": {f"{a}/{nb}": spec.digest for (a, nb), spec in sorted(specs.items())}}
        say(f"Shard record: {sharding.write_manifest(out_dir, shard, found.submissions, results, settings)}")
    return results


def _check_out_dir(submissions: Path, out_dir: Path) -> None:
    if out_dir == submissions or submissions in out_dir.parents or out_dir in submissions.parents:
        raise GradingInputError(
            f"the output folder {out_dir} overlaps the submissions {submissions}. Choose an --out "
            "folder outside SUBMISSIONS (and not containing it).")


