"""The check engine: what every chapter's checks share.

A chapter module *declares* its checks (:class:`Function` for a function
called on stored cases, :class:`Custom` for anything else) and builds its
``Checks`` class with :meth:`Chapter.checks_class`. This module runs them.

Every check is two halves. ``collect`` calls the student's code on the case
inputs and records what came back as plain data (dicts, lists, strings,
numbers and NumPy arrays). ``judge`` compares that record with the reference
outputs and fails with a diagnosis. In a notebook, ``check.softmax(softmax)``
runs both, with the record sent through the same transport the grader uses
(:mod:`mha_checks.transport`), so a check that passes in the notebook cannot
fail in grading for a reason of form. The grader runs ``collect`` in a
sandbox and ``judge`` in its own process, so nothing the student's code does
can change a verdict.
"""
from __future__ import annotations

import contextvars
import inspect
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from . import transport
from .backends import TRACKS, Backend, backend_class
from .cases import Case, grouped_args, load_cases, plain_arg, plain_args
from .tolerances import named, tolerance


class CheckFailure(AssertionError):
    """A check failed; the message says what is wrong and what to try."""

    def _render_traceback_(self):
        # IPython calls this instead of printing a traceback: the student sees
        # the diagnosis, not the engine's internals.
        return [f"\x1b[1;31mCheck failed:\x1b[0m {line}" if i == 0 else line
                for i, line in enumerate(str(self).splitlines())]


class MistakeFound(CheckFailure):
    """A check failed because the outputs match a known mistake (``label``)."""

    def __init__(self, message: str, label: str, reason: str):
        super().__init__(message)
        self.label, self.reason = label, reason


# Set while the grader judges a hidden case. The messages of a hidden check go back to the student,
# so they name the case, the index and the student's own value, never an expected value: otherwise a
# submission that plants a spike where it likes reads one hidden output per resubmission.
_JUDGING_HIDDEN = contextvars.ContextVar("judging_hidden", default=False)


def judging_hidden() -> bool:
    """True while a hidden check is judged: its message may quote nothing computed from a hidden output."""
    return _JUDGING_HIDDEN.get()


def fail(message: str):
    # No line breaks inside a sentence: the notebook, the log and the feedback
    # page each wrap long lines to their own width.
    raise CheckFailure(message)


def number(value) -> str:
    """A value as a reader expects it: 0.63009, not np.float64(0.630087527659489)."""
    value = np.asarray(value)
    if value.dtype == bool:
        return str(bool(value))
    if value.dtype.kind in "iu":
        return str(int(value))
    return f"{float(value):.6g}"


# --------------------------------------------------------------------------
# Declarations: what a chapter module states
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Mistake:
    """A known mistake: the outputs it gives, made by the reference solution on
    transformed inputs, and what the student is told when theirs match.

    ``outputs(sol, **args)`` returns the mistaken outputs (a value, a tuple in
    the function's output order, or a dict), a list of them when the mistake
    has several forms, or None where it is not a distinct mistake for these
    inputs.
    """
    label: str
    message: str
    outputs: Callable


@dataclass(frozen=True)
class Inherited:
    """What this function returns when it correctly calls a building block (``block``,
    another function of the chapter) that has the known mistake ``label``.
    ``outputs(sol, **args)`` makes those outputs from the reference solution on
    transformed inputs, as for a :class:`Mistake`."""
    block: str
    label: str
    outputs: Callable
    message: str = ""  # said when this function has the block's mistake but the block itself passes

    @property
    def key(self) -> str:
        return f"{self.block}.{self.label}"


@dataclass(frozen=True)
class Function:
    """A student function checked against stored cases.

    ``visible(rng)`` and ``hidden(rng)`` build the cases' arguments (dicts of
    NumPy arrays and numbers; an optional argument left out is not passed; an
    argument that is itself a dict of arrays, a layer's ``params``, reaches the
    student's function as a dict of the track's arrays).
    ``reference(sol, **args)`` gives the expected outputs from the solution
    namespace ``sol`` (default: ``sol[name](*args)``). ``validate(got, case)``
    runs property checks before the comparison; ``diagnose(got, case)``
    explains a mismatch no known mistake explains. Both fail with a message.

    ``uses`` names the chapter's functions this one is built on. One bug costs
    once: when a building block fails its own check with a known mistake and
    this function's outputs are what a correct composition gives on top of it
    (``inherited``), this function passes, and its message says which block to
    fix; when a block fails otherwise, the message says to fix that block first.
    """
    name: str
    args: tuple
    outputs: tuple
    doc: str
    visible: Callable
    hidden: Callable
    tracks: tuple = TRACKS
    reference: Optional[Callable] = None
    mistakes: tuple = ()
    validate: Optional[Callable] = None
    diagnose: Optional[Callable] = None
    uses: tuple = ()
    inherited: tuple = ()
    returns: str = "arrays"   # or "int": a count, returned as a Python int in every track
    # The named bound within which regenerated reference outputs must equal the committed ones
    # (``autograder.references.same_array``): outputs that amplify rounding name a looser one.
    reproducible: str = "reproducible"
    # How the check calls the student's function on one case, for results that are not arrays (a
    # params dict, a list of pairs): ``call(fn, args, kwargs, backend)`` returns the outputs in
    # ``outputs``' order, as the track's arrays. It runs in the student's process. Default:
    # ``fn(*args, **kwargs)``.
    call: Optional[Callable] = None

    def expected(self, sol: dict, args: dict) -> dict:
        args = plain_args(args)
        produced = (self.reference(sol, **args) if self.reference is not None
                    else sol[self.name](*(args[n] for n in self.args if n in args)))
        return self.as_outputs(produced)

    def as_outputs(self, produced) -> dict:
        if isinstance(produced, dict):
            return {n: np.asarray(produced[n]) for n in self.outputs}
        if len(self.outputs) == 1:
            return {self.outputs[0]: np.asarray(produced)}
        return {n: np.asarray(v) for n, v in zip(self.outputs, produced)}

    def mistake(self, label: str):
        """The Mistake or Inherited entry a stored variant's label stands for."""
        base = re.sub(r"_\d+$", "", label)  # axis_other_2 and the like share one message
        return next(m for m in (*self.mistakes, *self.inherited)
                    if (m.key if isinstance(m, Inherited) else m.label) == base)


@dataclass(frozen=True)
class FromRun:
    """Where a question's answer comes from a run the student makes in the notebook (a training
    run): what a run gives differs between CPUs, kernels and thread counts, so no answer to it can be
    stored. ``names`` are the notebook variables that hold the run; ``summary(**variables)`` turns
    them into plain numbers in the student's process, and the question's ``answer`` and its
    mistakes' ``outputs`` are computed from that summary when the answer is judged."""
    names: tuple
    summary: Callable

    @property
    def shown(self) -> str:
        return ", ".join(f"`{n}`" for n in self.names)


@dataclass(frozen=True)
class Question:
    """A question about what the student observed or computed, answered by a value in
    the notebook (``kind`` "number", or "choice" among ``choices``).

    The expected answer, ``answer(sol)``, comes from the reference solution notebook
    and is stored with the hidden cases only: the visible check confirms the answer's
    form, the graded one its value. Numbers are compared with the named bound
    ``tolerance`` of the tolerance policy. ``mistakes`` are known wrong answers
    (``Mistake(label, message, outputs=lambda sol: value)``); ``hint`` is said for
    any other wrong answer. ``sol`` is the namespace of ``notebook``'s solution.

    A question about the student's own run (``run``, a :class:`FromRun`) is judged against that
    run: ``answer`` and the mistakes' ``outputs`` then take the run's summary instead of ``sol``,
    and nothing is stored for it.
    """
    name: str
    doc: str
    notebook: str            # the notebook that asks it; its solution holds the answer
    answer: Callable
    kind: str = "number"
    choices: tuple = ()
    tolerance: str = "answer"
    mistakes: tuple = ()
    hint: str = ""
    tracks: tuple = TRACKS
    run: Optional[FromRun] = None


@dataclass(frozen=True)
class Custom:
    """A check that is not "call a function on stored cases": a gradient check,
    a module check, a timer... ``collect(checks, target, **kwargs)`` returns
    plain data; ``judge(checks, record, **kwargs)`` returns the pass message or
    fails. ``options`` are the keyword arguments the check takes, with their
    defaults.

    ``reference(sol)``, when given, returns ``{name: array}`` computed by the
    reference solution; it is stored as the check's one visible case, and
    ``judge`` reads it with ``checks.cases(name)[0].expected``. It serves
    checks whose inputs are loaded at run time (a real model's weights) rather
    than stored."""
    name: str
    doc: str
    collect: Callable
    judge: Callable
    tracks: tuple = TRACKS
    target: str = "fn"
    options: dict = field(default_factory=dict)
    reference: Optional[Callable] = None


@dataclass(frozen=True)
class Generated:
    """A data file the chapter's notebooks read, built from one of its solution notebooks
    (a trained model and what it computed): ``build(sol)`` returns ``{name: array}``.

    ``python -m autograder references`` writes it before the cases (the cases may read
    it), and the staleness check rebuilds it and compares, like the cases (a trained one:
    see ``behaviour``). It ships in the course package, so every name in it is public: no
    answer goes here."""
    path: object                      # a pathlib.Path inside the package
    notebook: str
    build: Callable
    # A trained artifact (a model): training gives other numbers on another CPU, kernel or thread
    # count, so the file is rebuilt only when asked (``references --retrain``) and checked by what it
    # does, never by equality with a new run: ``behaviour(arrays, solution)`` returns the problems
    # found (``solution(notebook)`` is a solution notebook's namespace), empty when it does what the
    # chapter says.
    behaviour: Optional[Callable] = None

    @property
    def trained(self) -> bool:
        return self.behaviour is not None


@dataclass(frozen=True)
class Chapter:
    """A chapter's checks: its functions and custom checks."""
    assignment: str
    functions: tuple
    custom: tuple = ()
    questions: tuple = ()
    reference_notebook: str = "1_numpy"   # the solution notebook that produces the references
    generated: tuple = ()                 # data files built from the solutions before the cases

    @property
    def checks(self) -> dict:
        return {c.name: c for c in (*self.functions, *self.questions, *self.custom)}

    def function(self, name: str) -> Function:
        return next(f for f in self.functions if f.name == name)

    def checks_class(self) -> type:
        """A ``Checks`` class with one method per declared check, for ``check.<name>(...)``."""
        methods = {"chapter": self, "__module__": f"mha_checks.chapters.{self.assignment}",
                   "__qualname__": "Checks", "__doc__": f"Checks of {self.assignment} for one track: "
                   f"\"numpy\", \"cupy\" or \"torch\".\n\n" + "\n".join(
                       f"- {c.name}: {c.doc}" for c in self.checks.values())}
        for check in self.checks.values():
            methods[check.name] = _check_method(check)
        return type("Checks", (Checks,), methods)


def _check_method(check) -> Callable:
    if isinstance(check, Question):
        def method(self, fn, hidden=False, namespace=None):
            # A question about the student's run reads the run from the notebook's variables: by
            # default where the check is called (``namespace`` when it is called from elsewhere).
            self.run(check.name, fn, hidden=hidden, namespace=namespace if namespace is not None
                     else sys._getframe(1).f_globals)
    elif isinstance(check, Function):
        def method(self, fn, hidden=False):
            self.run(check.name, fn, hidden=hidden)
    else:
        def method(self, target, **options):
            self.run(check.name, target, **options)
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  inspect.Parameter(check.target, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                   for k, v in check.options.items()]
        method.__signature__ = inspect.Signature(params)
    method.__name__ = method.__qualname__ = check.name
    method.__doc__ = check.doc
    return method


# --------------------------------------------------------------------------
# The checks students and graders call
# --------------------------------------------------------------------------

def building_blocks(check, available) -> dict:
    """The building blocks ``check`` is judged on top of, so that one bug costs once: of
    ``available`` (a mapping from a block's name to what there is of it in the same run: the
    student's function in a notebook, the record its own check collected with the same hidden flag
    in grading), the entries of the blocks the check declares (``uses``), in that order. The
    notebook's check and the grader both decide here."""
    return {block: available[block] for block in getattr(check, "uses", ()) if block in available}


class Arguments(list):
    """Positional arguments of one call, and ``keywords`` for those after a left-out one."""

    def __init__(self, *args):
        super().__init__(*args)
        self.keywords = {}


class Checks:
    """The engine behind a chapter's ``Checks``: dispatch, collect, judge."""

    chapter: Chapter = None  # set by Chapter.checks_class

    def __init__(self, track: str = "numpy", torch_device: str = "cpu"):
        backend = backend_class(track)  # a ValueError for a track the course does not have
        self.track, self.torch_device = track, torch_device
        self.device = backend.device_for(torch_device)
        self.array_type_name = backend.array_type_name
        self._backend = None

    @property
    def backend(self) -> Backend:
        # Created on first use: judging needs no array library, so a grader
        # without a GPU can judge what a CuPy notebook returned.
        if self._backend is None:
            self._backend = backend_class(self.track)(self.torch_device)
        return self._backend

    def cases(self, function: str, hidden: bool = False) -> list:
        split = "hidden" if hidden else "visible"
        cases = load_cases(self.chapter.assignment).get((function, split))
        if not cases:
            if hidden:
                fail(f"the hidden cases of {function} are not in the course package students "
                     "install: they run when your notebook is graded.")
            raise RuntimeError(f"no {split} cases for {function} in {self.chapter.assignment}'s "
                               "references: regenerate them with `python -m autograder references`.")
        return cases

    def _declared(self, method: str):
        check = self.chapter.checks.get(method)
        if check is None:
            raise ValueError(f"{self.chapter.assignment} has no check named {method!r}; "
                             f"it has {', '.join(self.chapter.checks)}")
        if self.track not in check.tracks:
            raise ValueError(f"check.{method} belongs to the {' and '.join(check.tracks)} "
                             f"notebook(s), not the {self.track} one.")
        return check

    # -- the two halves ------------------------------------------------------
    def collect(self, method: str, target, namespace: dict = None, **kwargs):
        """Plain data: what the student's ``target`` gives on this check's inputs. ``namespace`` is
        the notebook's, where a question about the student's run finds that run."""
        check = self._declared(method)
        if isinstance(check, Question):
            record = collect_answer(target)
            if check.run is not None:
                record["run"] = collect_run(check.run, namespace or {})
            return record
        if isinstance(check, Function):
            cases = self.cases(method, kwargs.get("hidden", False))
            results = INTS if check.returns == "int" else self.backend
            if check.call is not None and callable(target):
                student, backend = target, self.backend
                target = lambda *args, **kwargs: check.call(student, args, kwargs, backend)  # noqa: E731
            return collect_calls(target, cases, lambda case: self.positional(case, check.args),
                                 len(check.outputs), results)
        return check.collect(self, target, **{**check.options, **kwargs})

    def judge(self, method: str, record, blocks: dict = None, **kwargs) -> str:
        """The pass message; raises CheckFailure with a diagnosis otherwise.

        ``blocks`` holds what the checks of this function's building blocks collected
        (``{name: record}``), where they ran: a function on top of a block with a known
        mistake is judged on top of it, so one bug costs once."""
        check = self._declared(method)
        token = _JUDGING_HIDDEN.set(bool(kwargs.get("hidden", False)))
        try:
            if isinstance(check, Question):
                return self._judge_answer(check, record, kwargs.get("hidden", False))
            if isinstance(check, Function):
                return self._judge_function(check, record, kwargs.get("hidden", False), blocks or {})
            return check.judge(self, record, **{**check.options, **kwargs})
        finally:
            _JUDGING_HIDDEN.reset(token)

    def run(self, method: str, target, namespace: dict = None, **kwargs):
        """Both halves, as in a notebook: the records cross the grader's transport first.
        The building blocks are collected only when the function itself fails."""
        def crossed(record):
            return transport.loads(transport.dumps(record))

        record = crossed(self.collect(method, target, namespace=namespace, **kwargs))
        check = self._declared(method)
        try:
            message = self.judge(method, record, **kwargs)
        except CheckFailure:
            # The student's building blocks, where the student's function was defined.
            functions = building_blocks(check, getattr(target, "__globals__", {}))
            if not functions:
                raise
            blocks = {block: crossed(self.collect(block, fn, hidden=kwargs.get("hidden", False)))
                      for block, fn in functions.items()}
            message = self.judge(method, record, blocks=blocks, **kwargs)
        print(message)

    # -- functions called on stored cases -------------------------------------
    def positional(self, case: Case, names: tuple) -> list:
        """The case's arguments in the order of ``names``. An optional argument not given in this
        case is left out (mask=None); the ones after it are then passed by name (``.keywords``)."""
        given = grouped_args(case.args)
        args = Arguments()
        for name in names:
            if name not in given:
                continue
            if args.keywords or len(args) < names.index(name):
                args.keywords[name] = self._track_arg(given[name])
            else:
                args.append(self._track_arg(given[name]))
        return args

    def _track_arg(self, value):
        if isinstance(value, dict):  # a layer's params: a dict of the track's arrays
            return {k: self._track_arg(v) for k, v in value.items()}
        if isinstance(value, list):  # a model's layers: a list of params dicts
            return [self._track_arg(v) for v in value]
        return plain_arg(value) if value.ndim == 0 else self.backend.asarray(value)

    def _judge_function(self, check: Function, records, hidden: bool, blocks: dict) -> str:
        cases = self.cases(check.name, hidden)
        try:
            self._judge_cases(check, records, cases, {})
            return pass_message(check.name, cases, hidden)
        except CheckFailure as failure:
            failing = self._failing_blocks(check, blocks, hidden)
            if not failing:
                raise
            accepted = {block: label for block, (label, _) in failing.items() if label}
            if accepted:
                try:
                    inherited = self._judge_cases(check, records, cases, accepted)
                except CheckFailure as again:
                    failure = again
                else:
                    blocks = " and ".join(sorted(inherited))
                    return (f"\u2714 {check.name}: all {len(cases)} {'hidden' if hidden else 'visible'} "
                            f"cases match what a correct {check.name} gives on top of your {blocks}, "
                            f"whose own check fails: fix {blocks}, and {check.name} needs no change.")
            block, (_, reason) = next(iter(failing.items()))
            fail(f"{failure}\nFix {block} first: its own check fails ({reason}). {check.name} "
                 "calls it, so it is judged again once that passes.")

    def _judge_cases(self, check: Function, records, cases: list, accepted: dict) -> set:
        inherited = set()
        returned = INTS.array_type_name if check.returns == "int" else self.array_type_name
        for case, case_record in judge_records(records, cases, check.name):
            got = outputs_of(case_record, check.outputs, check.name, returned)
            if check.validate is not None:
                check.validate(got, case)
            inherited |= compare(got, case, check, self.device, accepted)
        return inherited

    def _failing_blocks(self, check: Function, blocks: dict, hidden: bool) -> dict:
        """{block: (the known mistake's label or None, why it fails)} for the building blocks
        whose own check fails on what the student's notebook defines."""
        failing = {}
        for block in check.uses:
            if block not in blocks:
                continue  # not collected (not checked in this notebook, or its check could not run)
            try:
                self._judge_function(self.chapter.function(block), blocks[block], hidden, {})
            except MistakeFound as found:
                failing[block] = (found.label, found.reason)
            except CheckFailure as failure:
                failing[block] = (None, str(failure).splitlines()[0])
        return failing

    # -- questions --------------------------------------------------------------
    def _judge_answer(self, question: "Question", record, hidden: bool) -> str:
        value = read_answer(question, record)
        shown = number(value) if question.kind == "number" else value  # compared unrounded, shown rounded
        if question.run is not None:
            self._run_summary(question, record)  # a missing run is said now, not only at grading
        if not hidden:
            return (f"\u2714 {question.name}: your answer, {shown}, is recorded. Questions are "
                    "marked when the notebook is graded.")
        expected, variants = self._expected_answers(question, record)
        if answer_matches(question, value, expected):
            return f"\u2714 {question.name}: {shown} is right."
        for label, variant in variants.items():
            if answer_matches(question, value, variant):
                fail(f"{question.name}: {shown} is not the answer. "
                     + next(m for m in question.mistakes if m.label == label).message)
        fail(f"{question.name}: {shown} is not the answer. {question.hint}".strip())

    @staticmethod
    def _run_summary(question: "Question", record: dict):
        run = record.get("run")
        if not isinstance(run, dict) or "summary" not in run:
            problem = run.get("problem") if isinstance(run, dict) else None
            fail(f"{question.name} is judged against your own run, {question.run.shown}, and "
                 f"{problem or 'the check found no run'}: run the cells above this one in order, "
                 "then this check again.")
        return run["summary"]

    def _expected_answers(self, question: "Question", record: dict) -> tuple:
        """The right answer and the known wrong ones ``{label: value}``: stored with the hidden
        cases, or for a question about the student's run computed from that run."""
        if question.run is None:
            case = self.cases(question.name, hidden=True)[0]
            return case.expected["answer"], {label: v["answer"] for label, v in case.variants.items()}
        summary = self._run_summary(question, record)
        try:
            return (question.answer(summary),
                    {m.label: m.outputs(summary) for m in question.mistakes})
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            fail(f"{question.name} is judged against your own run, {question.run.shown}, which does not "
                 f"hold what the locked cell above makes ({type(exc).__name__}: {exc}): run that cell "
                 "again, and don't reuse its names for something else.")


# --------------------------------------------------------------------------
# Collecting: runs in the student's process, returns plain data only
# --------------------------------------------------------------------------

MAX_MESSAGE = 500  # characters of a student's exception message kept in a record


def describe_exception(exc: BaseException) -> dict:
    return {"raised": type(exc).__name__, "message": str(exc)[:MAX_MESSAGE],
            "not_implemented": isinstance(exc, NotImplementedError)}


class _Ints:
    """What a counting function returns in every track: a Python int (NumPy's integers pass too)."""
    array_type_name = "a Python int"

    @staticmethod
    def is_native(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

    @staticmethod
    def to_numpy(value) -> np.ndarray:
        return np.asarray(int(value), dtype=np.int64)

    @staticmethod
    def dtype_name(value) -> str:
        return "int64"


INTS = _Ints()


def plain_value(value, backend) -> dict:
    """One returned value: its type, and as a NumPy array when it is the track's array type."""
    entry = {"type": f"{type(value).__module__}.{type(value).__name__}",
             "native": bool(backend.is_native(value))}
    if entry["native"]:
        try:
            array = backend.to_numpy(value)
            entry["array"] = np.ascontiguousarray(array).reshape(array.shape)  # a 0-d result stays 0-d
            entry["dtype"] = backend.dtype_name(value)
        except Exception as exc:  # e.g. a bfloat16 tensor NumPy cannot hold
            entry["native"] = False
            entry["type"] += f" ({type(exc).__name__}: {str(exc)[:100]})"
    return entry


def plain_result(result, n_outputs: int, backend) -> dict:
    """What a function returned: its values, or the structure when it is not n_outputs values."""
    if n_outputs == 1:
        return {"values": [plain_value(result, backend)]}
    if not isinstance(result, (tuple, list)) or len(result) != n_outputs:
        return {"structure": type(result).__name__,
                "length": len(result) if isinstance(result, (tuple, list)) else None}
    return {"values": [plain_value(v, backend) for v in result]}


def collect_calls(fn, cases: list, positional, n_outputs: int, backend) -> list:
    """One record per case of calling ``fn``; stops at the first exception, as the judge would."""
    if not callable(fn):
        return [{"not_callable": f"{type(fn).__module__}.{type(fn).__name__}"}]
    records = []
    for case in cases:
        try:
            args = positional(case)
            result = fn(*args, **getattr(args, "keywords", {}))
        except Exception as exc:  # anything the student's code raises
            records.append(describe_exception(exc))
            break
        records.append(plain_result(result, n_outputs, backend))
    return records


# --------------------------------------------------------------------------
# Judging: runs wherever the reference outputs are (the grader's process)
# --------------------------------------------------------------------------

def judge_records(records, cases: list, name: str):
    """Yield ``(case, record)`` pairs, failing on records that say the call did not work."""
    if not isinstance(records, list):
        fail(f"the check of {name} sent no readable result.")
    if records and isinstance(records[0], dict) and "not_callable" in records[0]:
        fail(f"{name} is {records[0]['not_callable']}, not a function: run the cell that defines it, "
             "and don't reuse its name for something else.")
    for i, case in enumerate(cases):
        call = case.describe() if isinstance(case, Case) else f"{name} (trial {i})"
        if i >= len(records) or not isinstance(records[i], dict):
            fail(f"no result for {call}: the check stopped before this case.")
        if "raised" in records[i]:
            judge_exception(records[i], call, name)
        yield case, records[i]


def judge_exception(record: dict, call: str, name: str):
    if record.get("not_implemented"):
        fail(f"{name} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    fail(f"calling {call} raised {record['raised']}: {record['message']}\n"
         + exception_hint(str(record["message"])))


def exception_hint(message: str) -> str:
    text = message.lower()
    if any(s in text for s in ("matmul", "shapes", "size mismatch", "mat1 and mat2", "cannot be multiplied", "broadcast")):
        return ("Hint: check the shapes. Weights are (d_in, d_out) and act on row vectors (q = x @ w_q); "
                "transpose keys with swapaxes(-1, -2) (NumPy, CuPy) or transpose(-2, -1) (torch), "
                "not .T, which on 3-D arrays reverses the batch axis too.")
    return "Hint: run the function on the example above and read the traceback."


def outputs_of(record: dict, names: tuple, function: str, array_type_name: str) -> dict:
    """``{label: (array, dtype)}`` from a record, after checking it holds the track's arrays."""
    if "values" not in record or len(record["values"]) != len(names):
        fail(f"{function} must return a tuple {tuple(names)}; got {record.get('structure', 'something else')}"
             + (f" of length {record['length']}" if record.get("length") is not None else "") + ".")
    out = {}
    for label, value in zip(names, record["values"]):
        if not isinstance(value, dict) or not value.get("native") \
                or not isinstance(value.get("array"), np.ndarray):
            shown = value.get("type") if isinstance(value, dict) else type(value).__name__
            if array_type_name == INTS.array_type_name:
                fail(f"{function} returned {label} as {shown}; a count is {array_type_name}: keep the "
                     "arithmetic in integers (// rather than /, no float factors), or convert with int().")
            fail(f"{function} returned {label} as {shown}; this notebook works with "
                 f"{array_type_name}, so return one (no conversion to or from other libraries).")
        out[label] = (value["array"], str(value.get("dtype")))
    return out


def compare(got: dict, case: Case, check: Function, device: str, accepted: dict = None) -> set:
    """Fail unless ``got`` matches the case's expected outputs; name the mistake when one fits.

    ``accepted`` maps a building block to the known mistake its own check found: outputs
    that a correct composition gives on top of that mistake pass. Returns the blocks
    whose mistake the outputs carry (empty when they match the reference itself).
    """
    if not case.expected:
        raise RuntimeError(f"no reference outputs for {case.describe()}: the grader must judge "
                           "with the full references, not the inputs a sandbox sees.")
    for name, want in case.expected.items():
        check_shape(got[name][0], want, name, case)
    for name, want in case.expected.items():
        check_dtype(got[name][1], want, name, case)
    arrays = {name: value for name, (value, _) in got.items()}
    if all(is_close(arrays[n], w, case.dtype, device) for n, w in case.expected.items()):
        return set()
    labels = matching_variants(got, case, device)
    for label in labels:  # a function's own mistake and a block's can give the same outputs
        mistake = check.mistake(label)
        if isinstance(mistake, Inherited) and (accepted or {}).get(mistake.block) == mistake.label:
            return {mistake.block}
    if labels:
        mistake = check.mistake(labels[0])
        if isinstance(mistake, Inherited):
            reason = mistake.message or mistake.label
            raise MistakeFound(f"{case.describe()}: {reason}", labels[0], reason)
        raise MistakeFound(f"{case.describe()}: {mistake.message}", mistake.label, mistake.message)
    if check.diagnose is not None:
        check.diagnose(arrays, case)
    name = next(n for n, w in case.expected.items() if not is_close(arrays[n], w, case.dtype, device))
    fail(f"{name} of {case.describe()} differs from the reference output; "
         f"{worst_mismatch(arrays[name], case.expected[name])}.")


def check_shape(got: np.ndarray, want: np.ndarray, what: str, case: Case):
    if got.shape == want.shape:
        return
    hint = ""
    if got.ndim >= 2 and got.shape[:-2] + got.shape[-2:][::-1] == want.shape:
        hint = " The last two axes are swapped: did you transpose the result, or compute k·qᵀ instead of q·kᵀ?"
    elif got.ndim == want.ndim and sorted(got.shape) == sorted(want.shape):
        hint = " Same sizes in another order: a transpose or reshape went wrong."
    fail(f"{what} of {case.describe()} has shape {got.shape}, expected {want.shape}.{hint}")


def check_dtype(got_dtype: str, want: np.ndarray, what: str, case: Case):
    want_dtype = str(want.dtype)
    if got_dtype == want_dtype:
        return
    if want_dtype == "float32" and got_dtype == "float64":
        fail(f"{what} of {case.describe()} is float64, but the inputs are float32: the result must keep "
             "the input's dtype. A NumPy float64 scalar (np.sqrt(d), np.float64(...)) or a float64 "
             "array silently promotes float32 arrays; use math.sqrt(d) or x.dtype to build constants.")
    fail(f"{what} of {case.describe()} has dtype {got_dtype}, expected {want_dtype}.")


def is_close(got: np.ndarray, want: np.ndarray, dtype: str, device: str) -> bool:
    if want.dtype == bool:
        return got.dtype == bool and np.array_equal(got, want)
    if want.dtype.kind in "iu":  # counts are exact
        return got.dtype.kind in "iu" and np.array_equal(got, want)
    rtol, atol = tolerance(dtype, device)
    return bool(np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=False))


def is_near(got, want, name: str) -> bool:
    """``allclose`` with a named bound of the tolerance policy."""
    rtol, atol = named(name)
    return bool(np.allclose(got, want, rtol=rtol, atol=atol))


def worst_mismatch(got: np.ndarray, want: np.ndarray) -> str:
    """Where ``got`` misses ``want``: the largest difference with both values, or, for a hidden case,
    the first value outside the tolerance with the student's value only."""
    if judging_hidden():
        return first_mismatch(got, want)
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    return (f"largest difference at index {tuple(int(i) for i in idx)}: "
            f"got {number(got[idx])}, expected {number(want[idx])}")


def shown_expected(value) -> str:
    """``", expected <value>"`` in a visible case's message; nothing in a hidden one's."""
    return "" if judging_hidden() else f", expected {value}"


def first_mismatch(got: np.ndarray, want: np.ndarray) -> str:
    """The first index (in row-major order) where ``got`` is outside the tolerance of ``want``, and the
    student's value there. The first rather than the largest: the largest difference would point at the
    largest hidden value when a submission returns zeros."""
    got, want = np.asarray(got), np.broadcast_to(np.asarray(want), np.shape(got))
    dtype = str(want.dtype) if str(want.dtype) in ("float32", "float64") else "float64"
    rtol, atol = tolerance(dtype, "gpu")  # the looser bound: a value shown is certainly outside it
    if want.dtype.kind in "fc":
        outside = ~np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
    else:
        outside = got != want
    where = np.argwhere(outside)
    if not where.size:  # judged by a tighter bound than the GPU's: the first value that differs at all
        where = np.argwhere(got != want)
    idx = tuple(int(i) for i in where[0]) if where.size else tuple(0 for _ in got.shape)
    return (f"the first value outside the tolerance is at index {idx}, where you returned "
            f"{number(got[idx])} (a hidden case's expected values are not shown)")


def matching_variants(outputs: dict, case: Case, device: str) -> list:
    """The labels of the known mistakes whose stored outputs the student's match."""
    return [label for label, variant in case.variants.items()
            if all(name in outputs and outputs[name][0].shape == v.shape
                   and is_close(outputs[name][0], v, case.dtype, device)
                   for name, v in variant.items())]


def collect_answer(value) -> dict:
    """A question's answer as plain data: a number, a text, or what else it was."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a 0-d array or tensor
        try:
            value = value.item()
        except Exception:  # e.g. a tensor on a device that cannot be read
            pass
    if isinstance(value, (bool, np.bool_)):
        return {"other": "bool"}
    if isinstance(value, (int, float, np.integer, np.floating)):
        return {"number": float(value)}
    if isinstance(value, str):
        return {"text": value[:MAX_MESSAGE]}
    return {"other": f"{type(value).__module__}.{type(value).__name__}"}


def collect_run(run: FromRun, namespace: dict) -> dict:
    """The summary of the student's run, as plain data, or what is wrong with it."""
    missing = [n for n in run.names if n not in namespace]
    if missing:
        return {"problem": f"{', '.join(f'`{n}`' for n in missing)} is not defined"}
    try:
        summary = run.summary(**{n: namespace[n] for n in run.names})
    except Exception as exc:  # the student's variables can hold anything
        return {"problem": f"{run.shown} does not hold what the cell above makes "
                           f"({type(exc).__name__}: {str(exc)[:200]})"}
    return {"summary": summary}


def read_answer(question, record):
    """The answer in a record, after checking its form; fails with what to write instead."""
    if not isinstance(record, dict):
        fail(f"the check of {question.name} sent no readable answer.")
    if question.kind == "number":
        value = record.get("number")
        if not isinstance(value, float) or not np.isfinite(value):
            fail(f"{question.name} must be a number (like 2.5); got "
                 f"{record.get('text') or record.get('other') or value}.")
        return value
    text = record.get("text")
    options = ", ".join(repr(c) for c in question.choices)
    if not isinstance(text, str) or text.strip().lower() not in [c.lower() for c in question.choices]:
        fail(f"{question.name} must be one of {options}; got {text if text is not None else record.get('other')}.")
    return text.strip().lower()


def answer_matches(question, value, expected) -> bool:
    expected = np.asarray(expected)
    if question.kind == "number":
        return is_near(float(value), float(expected), question.tolerance)
    return str(value).lower() == str(expected.item()).lower()


def pass_message(function: str, cases: list, hidden: bool) -> str:
    kind = "hidden" if hidden else "visible"
    dtypes = sorted({c.dtype for c in cases if c.has_floats})
    detail = f" ({', '.join(dtypes)})" if dtypes else ""
    return (f"\u2714 {function}: all {len(cases)} {kind} cases match the reference outputs{detail}.")
