"""The sandbox and the plain-data boundary, tried directly.

Each test runs a small task in the real sandbox (bubblewrap, the same
``run_sandboxed`` the grader uses) with cells that try something they must not
manage, and reads back what they printed and reported.
"""
import io
import json
import shutil

import numpy as np
import pytest

from autograder import cli, sandbox
from autograder.instructor import load_assignment
from autograder.grading import grade
from autograder.paths import REPO_ROOT, SOLUTIONS_DIR
from mha_checks.transport import NotPlainData, dumps, loads
from autograder.protocol import Task
from autograder.references import write_case_inputs
from mha_checks import registry
from autograder.sandbox import Limits, SandboxUnavailable, run_sandboxed, sandbox_problem

ASSIGNMENT = registry.assignments()[0]
LIMITS = Limits(cell_seconds=5, notebook_seconds=60, memory_bytes=2 * 1024**3,
                file_bytes=16 * 1024**2, output_bytes=64 * 1024)


@pytest.fixture(scope="module", autouse=True)
def needs_bwrap():
    problem = sandbox_problem()
    assert problem is None, f"the grader's sandbox is not usable here: {problem}"


def run_cells(tmp_path, *sources, calls=(), limits=LIMITS, sandboxed=True):
    Task(assignment=ASSIGNMENT, notebook="1_numpy", track="numpy",
         cells=[{"label": f"cell {i + 1}", "source": s} for i, s in enumerate(sources)],
         calls=list(calls), cell_seconds=limits.cell_seconds,
         call_seconds=limits.cell_seconds).write(tmp_path)
    cases = write_case_inputs(ASSIGNMENT, tmp_path / "cases.npz")
    return run_sandboxed(tmp_path, cases, ASSIGNMENT, limits, sandboxed=sandboxed)


def cell_errors(run):
    return {e["index"]: e["error"] for _, e in run.events if e.get("event") == "cell_end"}


# --------------------------------------------------------------------------- plain data


def test_plain_data_round_trip():
    record = {"values": [{"array": np.arange(6, dtype=np.float32).reshape(2, 3), "dtype": "float32"}],
              "flag": True, "n": 3, "x": 1.5, "none": None}
    back = loads(dumps(record))
    assert back["values"][0]["array"].dtype == np.float32
    np.testing.assert_array_equal(back["values"][0]["array"], record["values"][0]["array"])
    assert back["flag"] is True and back["n"] == 3 and back["none"] is None


def test_plain_data_refuses_pickles_and_objects():
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    import base64
    crafted = json.dumps({"__ndarray__": base64.b64encode(buffer.getvalue()).decode()})
    with pytest.raises(NotPlainData):
        loads(crafted)
    with pytest.raises(NotPlainData):
        dumps({"x": object()})
    with pytest.raises(NotPlainData):
        loads(json.dumps({"__ndarray__": "not base64 !"}))
    with pytest.raises(NotPlainData):
        loads("[" * 100 + "]" * 100)


# --------------------------------------------------------------------------- isolation


def test_sandbox_blocks_files_network_and_references(tmp_path):
    secret = SOLUTIONS_DIR / ASSIGNMENT / "1_numpy.ipynb"
    probe = f"""
import os, socket
def attempt(what, fn):
    try:
        fn()
        print("ALLOWED", what)
    except Exception as exc:
        print("BLOCKED", what, type(exc).__name__)
attempt("read solutions", lambda: open({str(secret)!r}).read())
attempt("list repo", lambda: print("REPO HOLDS", [n for n in os.listdir({str(REPO_ROOT)!r}) if n != ".venv"]))
attempt("write repo", lambda: open({str(REPO_ROOT / 'HACKED')!r}, "w").write("x"))
attempt("write /usr", lambda: open("/usr/HACKED", "w").write("x"))
attempt("read /etc/passwd", lambda: open("/etc/passwd").read())
attempt("network", lambda: socket.create_connection(("1.1.1.1", 80), timeout=2))
attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443))
print("REFERENCES", sorted(os.listdir("/course/mha_checks/references")))
print("HIDDEN", sorted(os.listdir("/course/autograder/hidden_cases")))
import numpy as np
with np.load("/course/mha_checks/references/{ASSIGNMENT}.npz") as data:
    print("GROUPS", sorted({{key.split("/")[3] for key in data.files}}))
    print("SPLITS", sorted({{key.split("/")[1] for key in data.files}}))
attempt("write scratch", lambda: open("/scratch/ok.txt", "w").write("x"))
"""
    run = run_cells(tmp_path, probe)
    out = run.output.decode()
    assert run.completed, out
    assert "REPO HOLDS" not in out or "REPO HOLDS []" in out, out  # at most the venv's mount point
    # "write repo" may succeed when the checkout lives under /tmp: it then writes into the
    # sandbox's own in-memory /tmp, which the last assertion shows never reaches the host.
    for what in ("read solutions", "write /usr", "read /etc/passwd",
                 "network", "dns"):
        assert f"BLOCKED {what}" in out, out
    assert "ALLOWED write scratch" in out
    assert f"REFERENCES ['{ASSIGNMENT}.npz']" in out and "GROUPS ['args']" in out, out
    # The hidden cases' inputs are not in its files: they arrive after the cells ran (test_hidden_part.py)
    assert "HIDDEN []" in out and "SPLITS ['visible']" in out, out
    assert not (REPO_ROOT / "HACKED").exists()


def test_limits_memory_file_size_processes_and_output(tmp_path):
    run = run_cells(
        tmp_path,
        "x = bytearray(10**11)",                                   # memory
        "open('/scratch/big', 'wb').write(b'0' * (64 * 1024**2))",  # file size
        "import threading, time\n"
        "threads = [threading.Thread(target=time.sleep, args=(3,)) for _ in range(2000)]\n"
        "[t.start() for t in threads]",                            # processes/threads
        "print('y' * (10 * 1024**2))",                             # output
        "while True:\n    pass",                                   # soft time limit
        "print('still running')")
    errors = cell_errors(run)
    assert run.completed, run.end_reason()
    assert errors[0].startswith("MemoryError"), errors
    assert errors[1] and ("File too large" in errors[1] or "No space" in errors[1]), errors
    assert errors[2] and "can't start new thread" in errors[2], errors
    assert errors[3] is None and run.output_dropped > 9 * 1024**2
    assert errors[4].startswith("TimeoutError") and errors[5] is None
    assert b"still running" not in run.output  # past the kept part; the cell itself ran fine


@pytest.mark.parametrize("source, reason", [
    ("import os\nos._exit(0)", "exited early with code 0"),
    ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
    ("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
     "did not stop when interrupted"),
])
def test_a_run_that_dies_names_the_cell_and_the_cause(tmp_path, source, reason):
    run = run_cells(tmp_path, "a = 1", source, "b = 2")
    assert not run.completed
    assert run.unfinished() == ("cell", 1)
    assert reason in run.end_reason()


# --------------------------------------------------------------------------- no sandbox


def test_grading_refuses_without_sandbox_unless_asked(tmp_path, monkeypatch, capsys):
    subs = tmp_path / "subs" / "alice" / ASSIGNMENT
    subs.mkdir(parents=True)
    shutil.copy(SOLUTIONS_DIR / ASSIGNMENT / "1_numpy.ipynb", subs)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    assert "bubblewrap (bwrap) is not installed" in sandbox_problem()
    with pytest.raises(SandboxUnavailable, match="--unsandboxed"):
        grade(tmp_path / "subs", tmp_path / "out", verbose=False)
    assert cli.main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out")]) == 2
    assert "--unsandboxed" in capsys.readouterr().err
    results = grade(tmp_path / "subs", tmp_path / "out2", unsandboxed=True, verbose=False,
                    gpu_available=False)
    by_notebook = {r.notebook: r for r in results}
    full_marks = load_assignment(ASSIGNMENT, "1_numpy").max_score
    assert by_notebook["1_numpy"].score == full_marks and by_notebook["1_numpy"].status == "graded"


def test_cli_input_errors_say_what_to_do(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "subs").mkdir()
    assert cli.main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "subs" / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "overlaps" in err and "Traceback" not in err


def test_a_notebook_too_slow_in_all_fails_once_without_reruns(tmp_path):
    """Cells that each keep within their limit but together overrun the notebook's:
    one status that says so, and no rerun that would multiply the time spent."""
    nb = json.loads((SOLUTIONS_DIR / ASSIGNMENT / "1_numpy.ipynb").read_text())
    nb["cells"] += [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "id": f"slow-{i}", "source": "import time\ntime.sleep(2)"} for i in range(5)]
    folder = tmp_path / "subs" / "slowpoke" / ASSIGNMENT
    folder.mkdir(parents=True)
    (folder / "1_numpy.ipynb").write_text(json.dumps(nb))
    limits = Limits(cell_seconds=5, notebook_seconds=6)
    result = {r.notebook: r for r in grade(tmp_path / "subs", tmp_path / "out", limits=limits,
                                           gpu_available=False, verbose=False)}["1_numpy"]
    assert result.status == "failed: the notebook ran longer than 6 s", result.status
    assert result.score is None and result.seconds < 12


def test_a_crash_in_the_courses_judge_is_a_grader_error_not_the_students_fault(tmp_path, monkeypatch):
    from mha_checks import engine

    def broken_compare(*args, **kwargs):
        raise ZeroDivisionError("a bug in the course's checks")
    monkeypatch.setattr(engine, "compare", broken_compare)
    subs = tmp_path / "subs" / "alice" / ASSIGNMENT
    subs.mkdir(parents=True)
    shutil.copy(SOLUTIONS_DIR / ASSIGNMENT / "1_numpy.ipynb", subs)
    result = {r.notebook: r for r in grade(tmp_path / "subs", tmp_path / "out", gpu_available=False,
                                           verbose=False)}["1_numpy"]
    assert result.status.startswith("failed: grader error in check "), result.status
    assert result.score is None
    log = (tmp_path / "out" / "logs" / "alice" / ASSIGNMENT / "1_numpy.log").read_text()
    assert "ZeroDivisionError: a bug in the course's checks" in log and "Traceback" in log
    page = (tmp_path / "out" / "feedback" / "alice" / ASSIGNMENT / "1_numpy.html").read_text()
    assert "grader error" in page and "ZeroDivisionError" not in page
