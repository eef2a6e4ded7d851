"""The one description of what the grader, the sandbox and the harness say to each other.

The grader writes a :class:`Task` as ``task.json`` into a folder the sandbox
mounts read-only at ``/task``. The harness (:mod:`autograder.harness`), inside
the sandbox, runs the task's cells, then the *collect* half of each visible
check call, and reports on a pipe, one JSON line per event, encoded with
:mod:`mha_checks.transport` (plain data only; nothing is unpickled).

The hidden part comes last and separately, so that nothing of it can reach the
student. ``task.json`` and the case file the sandbox sees hold the visible calls
and inputs only. Once the visible calls have ended, the harness reports
``visible_done`` and prints the task's ``marker`` on its standard output; when
the grader has seen both, it writes the hidden calls and their case inputs
(:func:`encode_hidden`) to a second pipe, which the harness reads, then collects
the hidden calls. Everything printed after the marker is the instructor's only,
and after the hidden part is sent the grader takes no event but those of hidden
calls and ``done``: code the student left running cannot pass what it reads
there into the feedback, as printed text, as a cell's error, or as the result of
a visible check.

=============  ==============================================================
event          fields
=============  ==============================================================
``started``    ``seconds``: the harness's clock when the first cell starts
``cell_start`` ``index``: position in ``Task.cells``
``cell_end``   ``index``; ``error``: one line describing the exception, or None
``call_start`` ``index``: the call's ``index`` (its position in the test plan)
``call_end``   ``index``; ``data``: one of ``{"collected": <record>}``,
               ``{"undefined": <name>}``, ``{"collect_error": <text>}``
``visible_done`` the visible calls have ended; the harness waits for the hidden part
``done``       everything ran; anything after it is ignored
=============  ==============================================================

The student's code runs in the harness's process and can write anything to
that pipe; the grader reads each line as untrusted plain data and judges the
records itself, so a forged line can only claim what the student's functions
could have returned anyway.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from mha_checks.transport import NotPlainData, dumps, loads

TASK_FILE = "task.json"

STARTED, CELL_START, CELL_END, CALL_START, CALL_END, VISIBLE_DONE, DONE = (
    "started", "cell_start", "cell_end", "call_start", "call_end", "visible_done", "done")
START_OF = {CELL_START: "cell", CALL_START: "call"}
END_OF = {CELL_END: "cell", CALL_END: "call"}

# What a call_end event's data holds
COLLECTED, UNDEFINED, COLLECT_ERROR = "collected", "undefined", "collect_error"


@dataclass
class Task:
    """What one run of the harness must do."""
    assignment: str
    notebook: str
    track: str
    cells: list                      # [{"label": str, "source": str}]
    calls: list                      # the visible calls: [{"index": int, "method": str, "target": str, "kwargs": dict}]
    cell_seconds: float
    call_seconds: float
    skip_cells: list = field(default_factory=list)
    skip_calls: list = field(default_factory=list)
    marker: str = ""                 # printed between the visible and the hidden part
    hidden_calls: list = field(default_factory=list)  # the grader's only: never in task.json

    def write(self, folder: Path) -> Path:
        path = Path(folder) / TASK_FILE
        written = {key: value for key, value in asdict(self).items() if key != "hidden_calls"}
        path.write_text(json.dumps(written), encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder) -> "Task":
        return cls(**json.loads((Path(folder) / TASK_FILE).read_text(encoding="utf-8")))

    def label(self, kind: str, index) -> str:
        """How a cell or a check call is named in notes and logs."""
        if kind == "cell":
            ok = isinstance(index, int) and 0 <= index < len(self.cells)
            return self.cells[index]["label"] if ok else kind
        call = next((c for c in self.calls + self.hidden_calls if c["index"] == index), None)
        return f"check {call['method']}({call['target']})" if call else kind

    def is_hidden_call(self, index) -> bool:
        return any(c["index"] == index for c in self.hidden_calls)


def encode_hidden(calls: list, inputs: bytes) -> bytes:
    """The hidden part: a JSON line with the hidden calls and the size of the inputs, then the
    inputs (an ``.npz`` file's bytes)."""
    return json.dumps({"calls": calls, "inputs": len(inputs)}).encode() + b"\n" + inputs


def decode_hidden(data: bytes) -> tuple:
    """``(calls, inputs)`` from :func:`encode_hidden`'s bytes; ValueError when they are cut short."""
    header, _, inputs = data.partition(b"\n")
    head = json.loads(header.decode("utf-8"))
    if len(inputs) != head["inputs"]:
        raise ValueError(f"the hidden part was cut short ({len(inputs)} of {head['inputs']} bytes)")
    return head["calls"], inputs


def encode_event(kind: str, **fields) -> str:
    """One line of the report (without its newline)."""
    try:
        return dumps({"event": kind, **fields})
    except Exception as err:  # a record that is not plain data (cannot normally happen)
        return dumps({"event": kind, "index": fields.get("index"),
                      "data": {COLLECT_ERROR: f"unsendable result: {type(err).__name__}: {err}"}})


def decode_event(line: bytes) -> Optional[dict]:
    """The event on one line of the report, or None for anything that is not one."""
    try:
        event = loads(line.decode("utf-8"))
    except (NotPlainData, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


def running_after(event: dict, running):
    """What is running once ``event`` has been seen: ``(kind, index)`` or None."""
    kind = event.get("event")
    if kind in START_OF:
        return (START_OF[kind], event.get("index"))
    if kind in END_OF:
        return None
    return running


def call_data(events) -> dict:
    """{call index: data} from the call_end events (the last one for an index wins)."""
    return {e["index"]: e.get("data") for e in events
            if e.get("event") == CALL_END and isinstance(e.get("index"), int)}
