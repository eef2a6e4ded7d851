"""The hidden part of a grading run stays with the grader.

The sandbox's files hold the visible check calls and the visible cases' inputs only. The hidden calls
and their inputs arrive on a pipe once the student's cells and the visible checks have run; what the
student's code prints from then on goes to the instructor's log only, and events it forges then (a
cell's error, a visible check's result) are not taken. Each test plays one way a notebook could carry
a hidden input, or a hidden call, back to its feedback page.
"""
import csv
import json
import shutil

import numpy as np
import pytest

from autograder.grading import grade
from autograder.paths import SOLUTIONS_DIR
from autograder.protocol import Task
from autograder.references import write_case_inputs
from autograder.sandbox import Limits, run_sandboxed, sandbox_problem
from mha_checks import registry
from mha_checks.cases import case_file

ASSIGNMENT = registry.assignments()[0]
LIMITS = Limits(cell_seconds=10, notebook_seconds=90, memory_bytes=2 * 1024**3,
                file_bytes=16 * 1024**2, output_bytes=256 * 1024)
VISIBLE_CALL = {"index": 0, "method": "softmax", "target": "softmax", "kwargs": {}}
HIDDEN_CALL = {"index": 1, "method": "softmax", "target": "softmax", "kwargs": {"hidden": True}}

# A softmax that prints the first values of what it is given: the inputs of the cases it runs on.
PRINTING_SOFTMAX = """
import numpy as np
def softmax(x, axis=-1):
    print("INPUT", np.asarray(x).ravel()[:4].tolist(), flush=True)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
"""


@pytest.fixture(scope="module", autouse=True)
def needs_bwrap():
    problem = sandbox_problem()
    assert problem is None, f"the grader's sandbox is not usable here: {problem}"


def run_with_hidden_part(tmp_path, *sources):
    task = Task(assignment=ASSIGNMENT, notebook="1_numpy", track="numpy",
                cells=[{"label": f"cell {i + 1}", "source": s} for i, s in enumerate(sources)],
                calls=[VISIBLE_CALL], hidden_calls=[HIDDEN_CALL],
                cell_seconds=LIMITS.cell_seconds, call_seconds=LIMITS.cell_seconds)
    cases = write_case_inputs(ASSIGNMENT, tmp_path / "cases.npz")
    hidden = tmp_path / "hidden.npz"
    write_case_inputs(ASSIGNMENT, hidden, splits=("hidden",))
    return run_sandboxed(tmp_path, cases, ASSIGNMENT, LIMITS, task=task, hidden_inputs=hidden.read_bytes())


def first_inputs(split: str, function: str = "softmax") -> list:
    """The first values of every input array of ``function``'s cases of ``split``, as Python prints them."""
    shown = []
    with np.load(case_file(ASSIGNMENT, split)) as data:
        for key in data.files:
            parts = key.split("/")
            if parts[0] == function and parts[1] == split and parts[3] == "args" and data[key].ndim:
                shown.append(repr(data[key].ravel()[:4].tolist())[1:-1])
    assert shown
    return shown


def calls_reported(run, index) -> list:
    return [e for _, e in run.events if e.get("event") == "call_end" and e.get("index") == index]


def test_the_task_file_and_the_case_file_hold_no_hidden_call_or_input(tmp_path):
    probe = f"""
import numpy as np
print("TASK", open("/task/task.json").read())
with np.load("/course/mha_checks/references/{ASSIGNMENT}.npz") as data:
    print("SPLITS", sorted({{key.split("/")[1] for key in data.files}}))
"""
    run = run_with_hidden_part(tmp_path, probe, PRINTING_SOFTMAX)
    shown = run.output.decode()
    assert run.completed, run.end_reason()
    task = json.loads(shown.split("TASK ", 1)[1].split("\n", 1)[0])
    assert [c["index"] for c in task["calls"]] == [0] and "hidden_calls" not in task
    assert '"hidden": true' not in shown and "SPLITS ['visible']" in shown
    assert calls_reported(run, 0) and calls_reported(run, 1), "both calls still ran"


def test_what_the_students_code_prints_during_the_hidden_checks_is_withheld(tmp_path):
    run = run_with_hidden_part(tmp_path, PRINTING_SOFTMAX)
    shown, withheld = run.output.decode(), run.withheld.decode()
    assert run.completed, run.end_reason()
    assert all(values in shown for values in first_inputs("visible")), "visible checks behave as today"
    assert not any(values in shown for values in first_inputs("hidden")), shown
    assert all(values in withheld for values in first_inputs("hidden")), withheld
    assert "[grader: end of the visible part" not in shown + withheld


def test_code_left_running_cannot_carry_the_hidden_part_back(tmp_path):
    """A thread started in a cell keeps a copy of standard output and of the events pipe, reads the
    hidden part itself when it arrives, and writes what it read to both: as printed text, as a cell's
    error and as the visible check's result. None of it is taken."""
    thief = r"""
import os, threading, json
out = os.dup(1)
events = int(open("/proc/self/cmdline").read().split("main(")[1].split(",")[1])
hidden = int(open("/proc/self/cmdline").read().split("main(")[1].split(",")[2].strip(" )\x00"))
def steal():
    data = os.read(hidden, 1 << 16)
    text = data[:400].decode("latin-1")
    os.write(out, ("STOLEN " + text + "\n").encode())
    os.write(events, (json.dumps({"event": "cell_end", "index": 0, "error": "STOLEN " + text}) + "\n").encode())
    os.write(events, (json.dumps({"event": "call_end", "index": 0,
                                  "data": {"collected": {"forged": "STOLEN " + text}}}) + "\n").encode())
threading.Thread(target=steal, daemon=True).start()
"""
    run = run_with_hidden_part(tmp_path, thief, PRINTING_SOFTMAX)
    shown = run.output.decode()
    assert "STOLEN" not in shown, shown
    errors = [e.get("error") for _, e in run.events if e.get("event") == "cell_end"]
    assert not any("STOLEN" in (error or "") for error in errors), errors
    assert not any("forged" in json.dumps(str(e.get("data"))) for e in calls_reported(run, 0))
    assert not calls_reported(run, 1) or "STOLEN" not in str(calls_reported(run, 1)), \
        "the thief took the hidden part: the hidden check gets nothing, which costs the student, not the course"


def test_printing_the_marker_early_only_withholds_more(tmp_path):
    early = r"""
import json
marker = json.load(open("/task/task.json"))["marker"]
print("BEFORE")
print(marker, end="", flush=True)
print("AFTER")
"""
    run = run_with_hidden_part(tmp_path, early, PRINTING_SOFTMAX)
    shown = run.output.decode()
    assert "BEFORE" in shown and "AFTER" not in shown
    assert not any(values in shown for values in first_inputs("hidden"))


def test_a_graded_notebook_that_prints_during_the_hidden_checks_keeps_its_marks_and_the_log_keeps_the_output(tmp_path):
    nb = json.loads((SOLUTIONS_DIR / ASSIGNMENT / "1_numpy.ipynb").read_text())
    cell = next(c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "softmax")
    cell["source"] = "".join(cell["source"]) + (
        "\n_softmax = softmax\n"
        "def softmax(x, axis=-1):\n"
        "    print('INPUT', np.asarray(x).ravel()[:4].tolist())\n"
        "    return _softmax(x, axis=axis)\n")
    folder = tmp_path / "subs" / "printer" / ASSIGNMENT
    folder.mkdir(parents=True)
    (folder / "1_numpy.ipynb").write_text(json.dumps(nb))
    [result] = [r for r in grade(tmp_path / "subs", tmp_path / "out", gpu_available=False, verbose=False)
                if r.notebook == "1_numpy"]
    assert result.status == "graded" and result.score == result.max_score, (result.status, result.notes)
    page = (tmp_path / "out" / "feedback" / "printer" / ASSIGNMENT / "1_numpy.html").read_text()
    log = (tmp_path / "out" / "logs" / "printer" / ASSIGNMENT / "1_numpy.log").read_text()
    hidden = first_inputs("hidden")
    assert not any(values in page for values in hidden), "a hidden input on the feedback page"
    assert "while the hidden checks ran" in page and "are not shown here" in page
    assert all(values in log for values in hidden), "the instructor's log keeps what was printed"
    assert any(values in page for values in first_inputs("visible")), "what visible checks print is shown"
