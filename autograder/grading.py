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

import ast
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

from mha_checks import registry
from mha_checks.backends import gpu_available as detect_gpu
from mha_checks.cases import case_file
from mha_checks.chapters import chapter_module
from mha_checks.engine import CheckFailure

from . import program as nbprogram
from . import protocol
from .feedback import write_feedback_page
from .paths import CHECKS_DIR, EXERCISES_DIR, PACKAGE_DIR, SOLUTIONS_DIR
from .references import write_case_inputs
from .sandbox import (NOTEBOOK_TIME_LIMIT, Limits, RunResult, SandboxUnavailable, new_marker,
                      run_sandboxed, sandbox_problem)
from .spreadsheet import write_rows
from .submissions import GradingInputError, Submission, discover, write_student_map

COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "status", "seconds", "notes")
GRADED, MISSING, NEEDS_GPU, FAILED = "graded", "missing", "needs GPU", "failed"
MAX_ATTEMPTS = 4  # runs of one notebook: the first, and one more per cell or check that broke it
RESULT_VERSION = 3  # 3: what is printed during the hidden checks is kept apart
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


# --------------------------------------------------------------------------- the instructor's side


@dataclass
class Assignment:
    """What the grader trusts about one notebook: the instructor's files and test plan."""

    name: str
    notebook: str
    release: dict
    plan: list
    entry: registry.Notebook
    digest: str

    @property
    def track(self) -> str:
        return self.entry.track

    @property
    def max_score(self) -> float:
        return nbprogram.max_points(self.plan)

    def calls(self) -> list:
        return [(test, call) for test in self.plan for call in test.calls]

    def limits(self, limits: Limits) -> Limits:
        """The instructor's limits, with the notebook's own time limits where none were given."""
        return replace(limits, cell_seconds=limits.cell_seconds or self.entry.cell_seconds,
                       notebook_seconds=limits.notebook_seconds or self.entry.notebook_seconds)


def load_assignment(name: str, notebook: str, solutions_dir: Path = SOLUTIONS_DIR,
                    exercises_dir: Path = EXERCISES_DIR) -> Assignment:
    try:
        entry = registry.notebook(name, notebook)
    except KeyError as err:
        raise GradingInputError(f"{err.args[0]}: add it to mha_checks/registry.py first.") from None
    source_path = Path(solutions_dir) / name / f"{notebook}.ipynb"
    release_path = Path(exercises_dir) / name / f"{notebook}.ipynb"
    source = json.loads(source_path.read_text(encoding="utf-8"))
    release = json.loads(release_path.read_text(encoding="utf-8"))
    digest = hashlib.sha256()
    for path in grading_inputs(name, source_path, release_path):
        digest.update(_portable_name(path).encode() + b"\0" + path.read_bytes())
    return Assignment(name, notebook, release, nbprogram.test_plan(source), entry, digest.hexdigest())


def _portable_name(path: Path) -> str:
    """A file's name in the digest: the same in every checkout, wherever it lives."""
    for root in (CHECKS_DIR.parent, PACKAGE_DIR.parent):
        if root in path.parents:
            return str(path.relative_to(root))
    return "/".join(path.parts[-2:])


# The modules a grade starts from on the grader's side: this one judges, and the harness runs
# the checks' collect halves in the sandbox, which starts it by name on a command line, so no
# import statement leads to it.
GRADER_ENTRY_MODULES = ("autograder.grading", "autograder.harness")


def grading_inputs(assignment: str, source: Path, release: Path) -> list:
    """Every file a notebook's grade depends on: its instructor notebooks, its chapter's case
    files, the code that grades it and the data files that code reads.

    The code is found by reading import statements, not by running them: starting from the
    chapter's module and the grader's entry modules, every module of the repository's own
    packages that they import counts, recursively, in whatever folder it lives and wherever the
    statement is (inside a function too). So the engine, the shared helpers and every earlier
    chapter whose helpers this one reuses count, and a chapter this one does not import is left
    out: editing it keeps this chapter's saved grades. A data file of those packages counts when
    one of these modules names it in a string, as a module that reads the file does. Read from
    the files, the set is the same in a normal and a shard run, whatever the process imported."""
    roots = _package_roots()
    # Named as chapter_module imports it, so no list of chapters is kept here.
    chapter = f"{chapter_module.__module__}.{assignment}"
    modules = _imported_closure([chapter, *GRADER_ENTRY_MODULES], roots)
    code = sorted(set(modules.values()))
    cases = [case_file(assignment, split) for split in ("visible", "hidden")]
    data = [path for path in _data_files_named_in(code, roots) if path not in cases]
    return [source, release, *cases, *code, *data]


def _package_roots() -> dict:
    """The repository's own packages by import name; imports of anything else (NumPy, the
    standard library) are outside the course and not followed."""
    return {folder.name: folder for folder in (CHECKS_DIR, PACKAGE_DIR)}


def _imported_closure(modules: Sequence[str], roots: dict) -> dict:
    """``{module name: file}`` for ``modules`` and everything they import, recursively."""
    found, seen, todo = {}, set(), list(modules)
    while todo:
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first: they count too.
        for name in _with_parent_packages(todo.pop()):
            if name in seen:
                continue
            seen.add(name)
            path = _module_file(name, roots)
            if path is not None:
                found[name] = path
                todo.extend(_modules_imported_by(path, name))
    return found


def _with_parent_packages(module: str) -> list:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _module_file(module: str, roots: dict) -> Optional[Path]:
    top, *rest = module.split(".")
    if top not in roots:
        return None
    base = roots[top].joinpath(*rest)
    for candidate in (base / "__init__.py", base.parent / f"{base.name}.py"):
        if candidate.is_file():
            return candidate
    return None


def _modules_imported_by(path: Path, module: str) -> set:
    """The absolute names of the modules ``path`` imports. ``from p import n`` names both ``p``
    and ``p.n``, as ``n`` may be a submodule; a name that is no module's file is dropped later."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for level, imported, members in _read_code(path.read_bytes())[0]:
        base = _absolute_module(level, imported, package)
        if base:
            names.add(base)
            names.update(f"{base}.{member}" for member in members if member != "*")
    return names


def _absolute_module(level: int, module: str, package: str) -> str:
    """``from ..engine import x`` (level 2, ``engine``) in package ``a.b`` reads ``a.engine``."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return ""  # above the top package: Python refuses it too
    return ".".join(filter(None, (*parts[:len(parts) - (level - 1)], module)))


@lru_cache(maxsize=None)
def _read_code(source: bytes) -> tuple:
    """``(imports, strings)`` in a module's source: every import statement as ``(level, module,
    imported names)``, functions included (they import when called, and grading calls them),
    and every string constant. Cached by content: a class loads every notebook's assignment."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        # The module's bytes still count; grading reports the error as a grader error per notebook
        # rather than the whole class stopping here.
        return (), frozenset()
    imports, strings = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    return tuple(imports), frozenset(strings)


def _data_files_named_in(code: Sequence[Path], roots: dict) -> list:
    """The packages' data files (anything but code) whose name a module of ``code`` writes in a
    string, e.g. ``Path(__file__).parent / "data" / "model.npz"``."""
    named = {PurePosixPath(text).name for path in code for text in _read_code(path.read_bytes())[1] if text}
    return sorted(path for root in roots.values() for path in root.rglob("*")
                  if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts
                  and path.name in named)


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
    (same hidden flag), so one bug costs points once. Returns the test results and
    ``(method, traceback)`` for every judge that crashed."""
    data = protocol.call_data(e for _, e in run.events)
    checks = chapter_module(spec.name).Checks(spec.track)
    calls = [call for _, call in spec.calls()]
    collected = {}
    for index, call in enumerate(calls):
        if isinstance(data.get(index), dict) and protocol.COLLECTED in data[index]:
            collected.setdefault((call.method, bool(call.kwargs_dict().get("hidden"))),
                                 data[index][protocol.COLLECTED])
    results, errors, index = [], [], 0
    for test in spec.plan:
        messages, passed = [], True
        for call in test.calls:
            hidden = bool(call.kwargs_dict().get("hidden"))
            blocks = {block: collected[(block, hidden)] for block in _uses(checks, call.method)
                      if (block, hidden) in collected}
            ok, message, crash = _judge_call(checks, call, data.get(index), skipped_calls.get(index), blocks)
            passed &= ok
            messages.append(message)
            if crash:
                errors.append((call.method, crash))
            index += 1
        results.append(TestResult(test.grade_id, test.points, test.points if passed else 0.0,
                                  test.hidden, messages))
    return results, errors


def _uses(checks, method: str) -> tuple:
    declared = checks.chapter.checks.get(method)
    return getattr(declared, "uses", ())


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


# --------------------------------------------------------------------------- saving results


def submission_digest(sub: Submission, spec: Assignment, limits: Limits, gpu: bool,
                      sandboxed: bool) -> str:
    """Everything that decides a notebook's grade; a saved result with this digest is reused."""
    digest = hashlib.sha256(f"{RESULT_VERSION}|{spec.digest}|{spec.limits(limits)}|{gpu}|{sandboxed}|".encode())
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
          solutions_dir: Path = SOLUTIONS_DIR, exercises_dir: Path = EXERCISES_DIR,
          shard=None) -> list:
    """Grade ``submissions`` (a folder or an LMS zip) into ``out_dir``; return the results.

    ``shard``: ``(K, N)`` or ``"K/N"``, 1 <= K <= N, grades only shard K of a
    split of the class into N (see :mod:`autograder.shards`, which also merges
    the shards' outputs into one).
    """
    from . import shards as sharding  # imported here: it imports this module
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
                f"{sub.notebook}: {_describe(result)}" + (" (saved result reused)" if reused else ""))
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
    for error in result.grader_errors:
        lines += ["", f"--- {GRADER_ERROR} (a bug in the course's checks, not in the submission) ---", error]
    lines += ["", "--- output ---", result.output]
    if result.withheld_output:
        lines += ["", "--- printed while the hidden checks ran (not on the student's feedback page) ---",
                  result.withheld_output]
    path.write_text("\n".join(lines), encoding="utf-8")


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


def _describe(result: NotebookResult) -> str:
    if result.status == GRADED:
        return f"{_number(result.score)}/{_number(result.max_score)} ({result.seconds or 0:.1f} s)"
    return result.status


def _number(x) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


# --------------------------------------------------------------------------- outputs grade and merge share


def write_notebook_outputs(result: NotebookResult, out_dir: Path, feedback: bool = True) -> None:
    """One notebook's log and, with ``feedback``, its student's page."""
    _write_log(result, out_dir)
    if feedback:
        write_feedback_page(result, out_dir / "feedback" / result.student / result.assignment
                            / f"{result.notebook}.html")


def finish_class(results: Sequence[NotebookResult], out_dir: Path, feedback: bool, say) -> list:
    """Sort the results as grades.csv lists them, write grades.csv, report; return the sorted list."""
    results = sorted(results, key=lambda r: (r.student.casefold(), r.student, r.assignment, r.notebook))
    write_csv(results, out_dir / "grades.csv")
    say(summary(results))
    say(f"Grades: {out_dir / 'grades.csv'}; student ids: {out_dir / 'students.csv'}; logs: "
        f"{out_dir / 'logs'}" + (f"; feedback: {out_dir / 'feedback'}" if feedback else ""))
    return results
