"""What runs inside the sandbox: the student's cells, then the checks' collect halves.

Started by :mod:`autograder.sandbox` as
``python -I -c "...; main('/task', events_fd, hidden_fd)"``; the task it reads,
the events it reports on ``events_fd`` and the hidden part it reads from
``hidden_fd`` after the visible one are described once, in
:mod:`autograder.protocol`.

Nothing here decides a score: the grader judges the collected data in its own
process. The student's code runs in this process and can tamper with anything
in it, including this module; all it can change is the data it reports, which
is what its functions compute anyway. The reference outputs are not in the
sandbox, so there is nothing to copy them from.
"""
import os
import signal
import sys
import time
import traceback

from autograder import protocol


class _Reporter:
    def __init__(self, fd: int):
        self.stream = os.fdopen(fd, "w", encoding="utf-8", closefd=False)

    def send(self, kind: str, **fields):
        self.stream.write(protocol.encode_event(kind, **fields) + "\n")
        self.stream.flush()


def _alarm(seconds: float, what: str):
    """A soft time limit: raise TimeoutError in the running code after ``seconds``.

    Code that swallows it or blocks signals is stopped from outside instead
    (the grader kills the sandbox a little later).
    """
    def expire(signum, frame):
        raise TimeoutError(f"{what} ran longer than {seconds:g} s and was interrupted")
    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _cancel_alarm():
    signal.setitimer(signal.ITIMER_REAL, 0)


def _error_text(error) -> str:
    if error is None:
        return None
    return "".join(traceback.format_exception_only(type(error), error)).strip()[:1000]


def run_cells(shell, task: protocol.Task, report):
    skip = set(task.skip_cells)
    for index, cell in enumerate(task.cells):
        if index in skip:
            continue
        report.send(protocol.CELL_START, index=index)
        _alarm(task.cell_seconds, cell["label"])
        try:
            result = shell.run_cell(cell["source"], store_history=False)
            error = result.error_before_exec or result.error_in_exec
        except BaseException as exc:  # noqa: B902 - the student's code may raise anything
            error = exc
        finally:
            _cancel_alarm()
        report.send(protocol.CELL_END, index=index, error=_error_text(error))


def collect_check_results(checks, namespace, calls: list, task: protocol.Task, report):
    skip = set(task.skip_calls)
    for call in calls:
        index = call["index"]
        if index in skip:
            continue
        report.send(protocol.CALL_START, index=index)
        _alarm(task.call_seconds, f"check {call['method']}")
        try:
            if call["target"] not in namespace:
                data = {protocol.UNDEFINED: call["target"]}
            else:
                # The namespace goes along: a question about the student's run reads that run from it.
                data = {protocol.COLLECTED: checks.collect(call["method"], namespace[call["target"]],
                                                           namespace=namespace, **call["kwargs"])}
        except BaseException as exc:  # noqa: B902
            data = {protocol.COLLECT_ERROR: _error_text(exc)}
        finally:
            _cancel_alarm()
        report.send(protocol.CALL_END, index=index, data=data)


def mark_end_of_visible_output(marker: str):
    """Print the marker after everything printed so far: what comes after it is not shown to the student."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # the student's code may have replaced or closed them
            pass
    try:
        os.write(1, marker.encode())
    except OSError:  # standard output closed: the grader never sends the hidden part, and says so
        pass


def receive_hidden_part(fd: int, task: protocol.Task) -> list:
    """The hidden calls, once the grader sends them; their case inputs join the visible ones."""
    from mha_checks.cases import add_case_inputs
    _alarm(task.call_seconds, "waiting for the hidden checks")
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        calls, inputs = protocol.decode_hidden(b"".join(chunks))
        add_case_inputs(task.assignment, inputs)
        return calls
    except Exception as exc:  # noqa: BLE001 - the hidden checks then report no result
        print(f"grader: the hidden checks did not arrive ({_error_text(exc)})", file=sys.stderr)
        return []
    finally:
        _cancel_alarm()


def main(task_dir: str, events_fd: int, hidden_fd: int):
    # Everything the grader's side needs is imported before the student's code runs.
    from mha_checks.chapters import chapter_module
    task = protocol.Task.read(task_dir)
    report = _Reporter(events_fd)
    checks = chapter_module(task.assignment).Checks(task.track)
    try:
        # Import the track's library (torch takes seconds) before the first cell's clock starts,
        # and before the student's code could interfere with the import.
        checks.backend
    except Exception as exc:  # e.g. CuPy without a GPU: the checks will say so
        print(f"grader: cannot load the {task.track} track: {exc}", file=sys.stderr)
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    try:
        shell.colors = "nocolor"  # tracebacks go to a log file, not a terminal
    except Exception:  # older IPython spells it NoColor
        shell.colors = "NoColor"
    report.send(protocol.STARTED, seconds=time.monotonic())
    run_cells(shell, task, report)
    collect_check_results(checks, shell.user_ns, task.calls, task, report)
    report.send(protocol.VISIBLE_DONE)
    mark_end_of_visible_output(task.marker)
    hidden_calls = receive_hidden_part(hidden_fd, task)
    collect_check_results(checks, shell.user_ns, hidden_calls, task, report)
    report.send(protocol.DONE)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip atexit handlers and finalizers the student's code may have left behind
