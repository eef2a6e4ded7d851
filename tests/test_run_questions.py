"""A question about the student's own run (``Question(..., run=FromRun(...))``) is judged against
that run, never against a stored answer: a training run gives other numbers on another CPU, kernel
or thread count, so the right answer is computed, when the answer is graded, from the run the
student's notebook made.

Proved on a tiny chapter declared here, and on every run question of the registry: an answer equal
to the run's value is right, one equal to a declared mistake is marked wrong with that mistake's
message, any other gets the hint; a run of other numbers gets its own answer judged right; a missing
or malformed run fails with a message, not a traceback; the visible check only records the answer;
the run is read from the notebook's variables (the caller's globals, or ``namespace=``, which the
grader's harness passes); the record crosses the grader's transport intact; and nothing is stored
for a run question, in a fresh build or in the committed hidden case files."""
import signal
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from autograder import harness, protocol
from autograder.paths import HIDDEN_CASES_DIR, VISIBLE_CASES_DIR
from mha_checks import registry, transport
from mha_checks.cases import build_cases, load_cases
from mha_checks.chapters import chapter
from mha_checks.engine import Chapter, CheckFailure, Checks, FromRun, Mistake, Question

# --------------------------------------------------------------------------
# A tiny chapter with one question about the student's run and one plain question
# --------------------------------------------------------------------------

def _last_accuracies(history) -> dict:
    """What a training cell's ``history`` says at its last step, as plain numbers."""
    return {name: float(history[name][-1]) for name in ("one", "two")}


RUN = FromRun(("history",), _last_accuracies)
MISTAKE_MESSAGE = "That is the one-head model's accuracy."
HINT = "Read the last value of history['two']."


RUN_QUESTION = Question(
    "two_heads_accuracy", doc="The two-head model's last accuracy?", notebook="1_numpy", run=RUN,
    answer=lambda run: run["two"],
    mistakes=(Mistake("one_head", MISTAKE_MESSAGE, lambda run: run["one"]),),
    hint=HINT)
PLAIN_QUESTION = Question("plain_number", doc="A number the solution computes?", notebook="1_numpy",
                          answer=lambda sol: sol["plain_number"])
TOY = Chapter("toy_run_chapter", functions=(), questions=(RUN_QUESTION, PLAIN_QUESTION))

# Two runs of the same cell on two machines: the digits differ, and so does the right answer.
THIS_MACHINE = {"one": [0.31, 0.52], "two": [0.80, 0.97]}
ANOTHER_MACHINE = {"one": [0.29, 0.45], "two": [0.78, 0.91]}


@pytest.fixture
def check(monkeypatch):
    """The tiny chapter's checks; reading any stored case is an error."""
    def no_stored_cases(self, function, hidden=False):
        raise AssertionError(f"{function}: a stored case was read")
    monkeypatch.setattr(Checks, "cases", no_stored_cases)
    return TOY.checks_class()("numpy")


def _judged(check, answer, namespace, hidden=True):
    """The graded check's verdict: its message, or the failure's."""
    try:
        check.two_heads_accuracy(answer, hidden=hidden, namespace=namespace)
    except CheckFailure as failure:
        return " ".join(str(failure).split())
    return None


# --------------------------------------------------------------------------
# (a) the right answer, a known mistake and any other answer, from the student's own run
# --------------------------------------------------------------------------

def test_an_answer_equal_to_the_students_run_is_right(check, capsys):
    check.two_heads_accuracy(0.97, hidden=True, namespace={"history": THIS_MACHINE})
    assert "two_heads_accuracy: 0.97 is right" in capsys.readouterr().out


def test_an_answer_within_the_questions_tolerance_of_the_run_is_right(check, capsys):
    check.two_heads_accuracy(0.973, hidden=True, namespace={"history": THIS_MACHINE})   # "answer": +-0.006
    assert "is right" in capsys.readouterr().out
    assert "is not the answer" in _judged(check, 0.99, {"history": THIS_MACHINE})


def test_an_answer_equal_to_a_declared_mistake_gets_that_mistakes_message(check):
    message = _judged(check, 0.52, {"history": THIS_MACHINE})
    assert message.startswith("two_heads_accuracy: 0.52 is not the answer.") and MISTAKE_MESSAGE in message
    assert HINT not in message


def test_any_other_answer_gets_the_hint(check):
    message = _judged(check, 0.7, {"history": THIS_MACHINE})
    assert message == f"two_heads_accuracy: 0.7 is not the answer. {HINT}"


# --------------------------------------------------------------------------
# (b) another machine's run: its own answer is right, nothing stored decides
# --------------------------------------------------------------------------

def test_a_run_of_other_numbers_gets_its_own_answer_judged_right(check, capsys):
    check.two_heads_accuracy(0.91, hidden=True, namespace={"history": ANOTHER_MACHINE})
    assert "0.91 is right" in capsys.readouterr().out
    # This machine's answer is wrong for that run, and that run's one-head value is the mistake there.
    assert "is not the answer" in _judged(check, 0.97, {"history": ANOTHER_MACHINE})
    assert MISTAKE_MESSAGE in _judged(check, 0.45, {"history": ANOTHER_MACHINE})


def test_every_run_question_of_the_registry_is_judged_from_the_run_alone(monkeypatch):
    """With no stored case readable, each run question's answer computed from a made-up run (every
    name it reads holds its own number) is right, and each declared mistake's value gets its message."""
    monkeypatch.setattr(Checks, "cases", lambda self, function, hidden=False: pytest.fail(f"{function}: stored case read"))

    class MadeUpRun(dict):
        """Each name holds its own number, or for a choice question one of its choices."""
        def __init__(self, question):
            super().__init__()
            self.question = question

        def __missing__(self, key):
            draw = zlib.crc32(str(key).encode()) % 997
            if self.question.kind == "choice":
                return self.question.choices[draw % len(self.question.choices)]
            return 0.05 + 0.9 * draw / 997

    def answered(question, value) -> dict:
        return {"number": float(value)} if question.kind == "number" else {"text": str(value)}

    questions = run_questions()
    assert questions, "the registry declares no question about the student's run"
    for assignment, question in questions:
        check = chapter(assignment).checks_class()(question.tracks[0])
        run = {"summary": MadeUpRun(question)}
        record = {**answered(question, question.answer(run["summary"])), "run": run}
        assert check.judge(question.name, record, hidden=True).endswith("is right.")
        for mistake in question.mistakes:
            record = {**answered(question, mistake.outputs(run["summary"])), "run": run}
            with pytest.raises(CheckFailure, match="is not the answer") as failure:
                check.judge(question.name, record, hidden=True)
            assert mistake.message in str(failure.value), f"{assignment}.{question.name}: {failure.value}"


# --------------------------------------------------------------------------
# (c) a missing or malformed run: a message, not a traceback
# --------------------------------------------------------------------------

def test_a_missing_run_variable_fails_naming_it_and_saying_to_run_the_cells_above(check):
    message = _judged(check, 0.97, {})
    assert "`history` is not defined" in message, message
    assert "run the cells above this one in order" in message, message


@pytest.mark.parametrize("history", [
    [0.1, 0.2, 0.3],                          # a list, not the cell's dict
    {"one": [0.3]},                           # the two-head run left out
    {"one": [0.3], "two": []},                # no step recorded
    {"one": [0.3], "two": ["high"]},          # not a number
    None,
], ids=["list", "missing-key", "empty", "text", "none"])
def test_a_run_variable_of_the_wrong_shape_or_type_fails_with_a_message(check, history):
    message = _judged(check, 0.97, {"history": history})
    assert message is not None, "a malformed run was judged right"
    assert "is judged against your own run, `history`" in message, message
    assert "does not hold what the cell above makes" in message, message


@pytest.mark.parametrize("record", [
    {"number": 0.97},                                        # no run sent
    {"number": 0.97, "run": "history"},                      # not a dict
    {"number": 0.97, "run": {}},                             # neither a summary nor a problem
    {"number": 0.97, "run": {"summary": {"one": 0.5}}},      # a summary without what the answer reads
    {"number": 0.97, "run": {"summary": [0.5, 0.97]}},       # a summary of another form
], ids=["no-run", "text", "empty", "missing-key", "list"])
def test_a_crafted_record_is_judged_with_a_message_not_a_traceback(check, record):
    with pytest.raises(CheckFailure, match="is judged against your own run, `history`"):
        check.judge("two_heads_accuracy", record, hidden=True)


# --------------------------------------------------------------------------
# (d) the visible check records the answer and tells nothing of the run
# --------------------------------------------------------------------------

def test_the_visible_check_only_records_the_answer(check, capsys):
    check.two_heads_accuracy(0.52, namespace={"history": THIS_MACHINE})   # the mistake's value: only recorded
    out = capsys.readouterr().out
    assert "two_heads_accuracy: your answer, 0.52, is recorded" in out
    assert "0.97" not in out and "not the answer" not in out


def test_the_visible_check_says_when_the_run_is_missing_before_grading_does(check):
    with pytest.raises(CheckFailure, match=r"`history` is not defined: run the cells above"):
        check.two_heads_accuracy(0.52, namespace={})


# --------------------------------------------------------------------------
# (e) where the run is read: the notebook's globals, or the namespace given
# --------------------------------------------------------------------------

def test_the_check_reads_the_run_from_the_globals_of_the_cell_that_calls_it(check, capsys):
    cell = {"check": check, "history": ANOTHER_MACHINE}
    exec("check.two_heads_accuracy(0.91, hidden=True)", cell)   # a notebook cell: its globals hold the run
    assert "0.91 is right" in capsys.readouterr().out
    exec("check.two_heads_accuracy(0.97, hidden=True)", {"check": check, "history": THIS_MACHINE})
    assert "0.97 is right" in capsys.readouterr().out


def test_a_namespace_given_replaces_the_callers_globals(check, capsys):
    cell = {"check": check, "history": THIS_MACHINE, "other": {"history": ANOTHER_MACHINE}}
    exec("check.two_heads_accuracy(0.91, hidden=True, namespace=other)", cell)
    assert "0.91 is right" in capsys.readouterr().out
    with pytest.raises(CheckFailure, match="`history` is not defined"):
        exec("check.two_heads_accuracy(0.97, hidden=True, namespace={})", cell)


def test_the_graders_harness_collects_the_run_from_the_notebooks_namespace(check):
    """In the sandbox the harness collects the record with the notebook's namespace; the grader judges
    it in its own process, from the run that record carries."""
    calls = [{"index": 0, "method": "two_heads_accuracy", "target": "two_heads_accuracy", "kwargs": {"hidden": True}}]
    task = SimpleNamespace(skip_calls=[], call_seconds=30)
    sent = []
    report = SimpleNamespace(send=lambda kind, **fields: sent.append((kind, fields)))
    previous = signal.getsignal(signal.SIGALRM)
    try:
        harness.collect_check_results(check, {"two_heads_accuracy": 0.91, "history": ANOTHER_MACHINE}, calls, task,
                                      report)
    finally:
        signal.signal(signal.SIGALRM, previous)
    data = next(fields["data"] for kind, fields in sent if kind == protocol.CALL_END)
    record = transport.loads(transport.dumps(data[protocol.COLLECTED]))
    assert record["run"] == {"summary": {"one": 0.45, "two": 0.91}}
    assert check.judge("two_heads_accuracy", record, hidden=True).endswith("0.91 is right.")


# --------------------------------------------------------------------------
# (f) nothing is stored for a run question
# --------------------------------------------------------------------------

def run_questions() -> list:
    """(assignment, question) for every question of the registry judged against the student's run."""
    return [(a, q) for a in registry.assignments() for q in chapter(a).questions if q.run is not None]


def test_a_build_of_the_cases_stores_nothing_for_a_run_question():
    def solution(notebook):
        return {"plain_number": 2.5}   # no run: a run question's answer cannot come from here

    assert build_cases(TOY, solution, "visible", seed=0) == {}
    hidden = build_cases(TOY, solution, "hidden", seed=0)
    assert set(hidden) == {("plain_number", "hidden")}, sorted(hidden)
    assert float(hidden[("plain_number", "hidden")][0]["expected"]["answer"]) == 2.5


@pytest.mark.parametrize("assignment", registry.assignments())
def test_the_committed_hidden_cases_hold_no_case_of_a_run_question(assignment):
    cases = load_cases(assignment, str(VISIBLE_CASES_DIR), str(HIDDEN_CASES_DIR))
    stored = {name for name, _ in cases}
    run = {q.name for a, q in run_questions() if a == assignment}
    assert not run & stored, f"stored cases for questions judged against the student's run: {sorted(run & stored)}"
    plain = {q.name for q in chapter(assignment).questions if q.run is None}
    assert plain <= stored, f"the hidden file lacks the answers of {sorted(plain - stored)}"


def test_every_run_question_names_the_variables_it_reads():
    for assignment, question in run_questions():
        assert question.run.names and all(isinstance(n, str) and n.isidentifier() for n in question.run.names)
        assert callable(question.run.summary), f"{assignment}.{question.name}"


# --------------------------------------------------------------------------
# (g) the record crosses the grader's transport intact
# --------------------------------------------------------------------------

def test_the_record_crosses_the_transport_intact(check):
    history = {"one": np.array([0.31, 0.52]), "two": np.array([0.80, 0.97], dtype=np.float32)}  # arrays, as a run keeps
    record = check.collect("two_heads_accuracy", np.float64(0.97), namespace={"history": history})
    crossed = transport.loads(transport.dumps(record))
    assert crossed == record == {"number": 0.97, "run": {"summary": {"one": 0.52, "two": float(np.float32(0.97))}}}
    assert check.judge("two_heads_accuracy", crossed, hidden=True).endswith("is right.")


def test_a_record_of_a_missing_run_crosses_the_transport_and_still_says_what_is_missing(check):
    crossed = transport.loads(transport.dumps(check.collect("two_heads_accuracy", 0.97, namespace={})))
    assert crossed == {"number": 0.97, "run": {"problem": "`history` is not defined"}}
    with pytest.raises(CheckFailure, match="`history` is not defined"):
        check.judge("two_heads_accuracy", crossed, hidden=True)
