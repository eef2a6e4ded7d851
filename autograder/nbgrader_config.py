"""The nbgrader configuration of the course, stated once, and how to run nbgrader.

Every nbgrader step (release, autograde, feedback) runs in a throw-away course
directory that :func:`make_course` creates. It writes this module's
:func:`build_config` into that directory as ``nbgrader_config.py``, so the
``nbgrader`` subprocesses started by :func:`run_nbgrader` read exactly the same
settings as the Python code that inspects their results.

This module is instructor-side: it imports nbgrader, which students never need.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets.config import Config

from .paths import REPO_ROOT

DEFAULT_CELL_TIMEOUT = 60  # seconds one cell may run during autograding

# nbgrader's own delimiters (the defaults of ClearSolutions / ClearHiddenTests),
# repeated here because the feedback preprocessor below must find them too.
BEGIN_HIDDEN_TESTS = "BEGIN HIDDEN TESTS"
END_HIDDEN_TESTS = "END HIDDEN TESTS"

# What a student finds in place of a solution region of a code cell.
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"

# The feedback HTML is built from the autograded notebook, which contains the
# hidden tests again (autograde restores locked cells from the gradebook).
# ClearHiddenTests removes them from the cell sources; the traceback of a
# failing hidden test would still quote its lines, so hidden-test cells get
# their tracebacks condensed first.
FEEDBACK_PREPROCESSORS = [
    "nbgrader.preprocessors.GetGrades",
    "autograder.nbgrader_config.CondenseHiddenTestErrors",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]


class CondenseHiddenTestErrors(NbGraderPreprocessor):
    """Reduce errors of cells holding hidden tests to one line, ``Name: message``.

    An IPython traceback prints the failing source line and its neighbours, so
    in feedback it would reveal hidden test code. The error's name and message
    stay: hidden tests are written to say what went wrong without showing how
    it was checked.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code" or BEGIN_HIDDEN_TESTS not in cell.source:
            return cell, resources
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".rstrip(": ")
                output["traceback"] = [
                    message + "\n(raised by a hidden test; its code is not shown)"
                ]
        return cell, resources


def build_config(course_root: Path, cell_timeout: int = DEFAULT_CELL_TIMEOUT) -> Config:
    """The nbgrader configuration for a course directory at ``course_root``.

    Values are plain literals (str, int, bool, list, dict) so that
    :func:`write_config_file` can write them out with ``repr``.
    """
    root = Path(course_root).resolve()
    c = Config()

    # Layout: the standard nbgrader step names, all under one root, and the
    # gradebook next to them (never in the repository or the user's cwd).
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.source_directory = "source"
    c.CourseDirectory.release_directory = "release"
    c.CourseDirectory.submitted_directory = "submitted"
    c.CourseDirectory.autograded_directory = "autograded"
    c.CourseDirectory.feedback_directory = "feedback"
    c.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    c.CourseDirectory.course_id = "mha_course"

    # Release: solutions become stubs, outputs are cleared, hidden tests are
    # removed (ClearHiddenTests is in GenerateAssignment's default pipeline).
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    c.ClearSolutions.enforce_metadata = True
    c.ClearOutput.enabled = True
    c.ClearOutput.remove_metadata_fields = ["collapsed", "execution", "scrolled"]

    # Autograde: a test cell a student deleted (or whose metadata they broke)
    # is put back from the gradebook, so deleting a failing test never helps.
    c.OverwriteCells.add_missing_cells = True
    c.Autograde.create_student = True
    # Per-cell time limit; on timeout the kernel is interrupted, the cell gets a
    # CellTimeoutError (0 points if it is a test cell) and grading continues.
    c.Execute.timeout = int(cell_timeout)
    c.Execute.interrupt_on_timeout = True
    c.Execute.startup_timeout = 120
    # The kernel is thrown away after each notebook; a graceful shutdown only
    # adds about 3 s per notebook.
    c.Execute.shutdown_kernel = "immediate"

    # Feedback: never show hidden test source (see FEEDBACK_PREPROCESSORS).
    c.GenerateFeedback.preprocessors = list(FEEDBACK_PREPROCESSORS)
    return c


def write_config_file(course_root: Path, config: Config) -> Path:
    """Write ``config`` as ``course_root/nbgrader_config.py``, for nbgrader subprocesses."""
    lines = ["# Written by autograder.nbgrader_config; do not edit, it is regenerated.",
             "c = get_config()  # noqa: F821"]
    for section in sorted(config):
        for key in sorted(config[section]):
            lines.append(f"c.{section}.{key} = {config[section][key]!r}")
    path = Path(course_root) / "nbgrader_config.py"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_course(course_root: Path, cell_timeout: int = DEFAULT_CELL_TIMEOUT) -> Config:
    """Create ``course_root`` with its ``nbgrader_config.py``; return the config."""
    course_root = Path(course_root)
    course_root.mkdir(parents=True, exist_ok=True)
    config = build_config(course_root, cell_timeout=cell_timeout)
    write_config_file(course_root, config)
    return config


def db_url(course_root: Path) -> str:
    """The gradebook URL of the course at ``course_root``."""
    return build_config(course_root).CourseDirectory.db_url


def nbgrader_env() -> dict:
    """Environment for nbgrader and the kernels it starts.

    nbgrader calls ``alembic`` through PATH, so the interpreter's bin directory
    goes first. The repository goes on PYTHONPATH so that the kernels (setup
    cells ``import autograder``) and the feedback preprocessor import this
    checkout's package even when it is not pip-installed.
    """
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # log lines arrive when they happen (timings)
    env.pop("JUPYTER_CONFIG_DIR", None)  # a user's Jupyter config must not leak in
    return env


@dataclass
class NbgraderRun:
    """What one nbgrader subprocess did."""

    args: list
    returncode: Optional[int] = None
    killed_reason: Optional[str] = None  # set when it was stopped for running too long
    seconds: float = 0.0
    lines: list = field(default_factory=list)  # (seconds since start, text)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None

    @property
    def output(self) -> str:
        return "".join(text for _, text in self.lines)

    def check(self) -> "NbgraderRun":
        """Raise ``RuntimeError`` with the log's tail when the run did not succeed."""
        if not self.ok:
            tail = "".join(text for _, text in self.lines[-30:])
            why = self.killed_reason or f"exit status {self.returncode}"
            raise RuntimeError(f"`nbgrader {' '.join(self.args)}` failed ({why}):\n{tail}")
        return self


def run_nbgrader(args: Sequence[str], course_root: Path, *, timeout: float = 3600) -> NbgraderRun:
    """Run ``nbgrader ARGS`` in ``course_root``, capture its log with timestamps.

    The process runs in its own session; on timeout it is killed together
    with its kernels, so a notebook's infinite loop cannot outlive the run.
    """
    run = NbgraderRun(args=list(args))
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbgrader", *args], cwd=str(course_root), env=nbgrader_env(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace", start_new_session=True)

    def read_lines():
        for text in proc.stdout:
            run.lines.append((time.monotonic() - start, text))

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                run.killed_reason = f"timed out after {elapsed:.0f} s"
                _kill_tree(proc)
                break
            time.sleep(0.1)
    except BaseException:  # Ctrl-C: its own session does not get the signal
        _kill_tree(proc)
        raise
    proc.wait()
    reader.join(timeout=5)
    run.returncode = proc.returncode
    run.seconds = time.monotonic() - start
    return run


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill nbgrader and every process below it (kernels run in their own session)."""
    try:
        import psutil  # an ipykernel dependency, so normally present
        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # psutil missing or the process already gone
        children = []
    for child in children:
        try:
            child.kill()
        except Exception:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def last_error(log: str) -> str:
    """The most useful line of an nbgrader log: the last exception or ERROR line.

    An exception line (``SomeError: message``, the end of a traceback) says more
    than nbgrader's closing "There was an error processing ..." summary.
    """
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    exception_lines = [line for line in lines if _looks_like_exception(line)]
    if exception_lines:
        return exception_lines[-1]
    error_lines = [line for line in lines if "| ERROR]" in line or "| CRITICAL]" in line]
    if error_lines:
        return error_lines[-1].split("]", 1)[-1].strip()
    return lines[-1] if lines else "no output"


def _looks_like_exception(line: str) -> bool:
    head, sep, _ = line.partition(":")
    if not sep or " " in head or head.startswith("["):
        return False
    name = head.rsplit(".", 1)[-1]
    return name.endswith(("Error", "Exception", "Interrupt", "Exit")) or name == "Timeout"
