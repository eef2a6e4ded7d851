"""What a hidden check tells a student carries no hidden value.

A hidden check's message goes back to the student on the feedback page. If it quoted the expected
output where the student's differs, a submission that returns zeros with one spike where it likes
would read one hidden output per resubmission. So a hidden check names the function, the case's
shapes and dtypes, an index and the student's own value, and never a number computed from a hidden
output (the expected outputs, or the outputs of a known mistake on the hidden inputs).

The attack is played here on every function check of every CPU notebook: the solution's collected
outputs are replaced by zeros with one spike, and by the solution's outputs scaled by 1.001 (a near
miss), then judged as hidden cases. Each known-wrong implementation is judged on the hidden cases as
well, in tests/test_checks.py, with the same scan of its message.
"""
import functools
import re

import numpy as np
import pytest

from course import checks_for, notebook_params, solution_path
from autograder.notebooks import solution_namespace
from mha_checks import registry
from mha_checks.chapters import chapter
from mha_checks.engine import CheckFailure, Function, first_mismatch, judging_hidden, worst_mismatch

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+|\d+\.?\d*[eE][-+]?\d+)")
SIGNIFICANT_DIGITS = 4   # shorter numbers (0.5, 1.25) are too common to tell a leak from a coincidence
SPIKE = 1e6
# Numbers a message may compute from a case's sizes, which it names anyway (log T_k, sqrt(d_k)).
_SIZES = np.arange(1, 4097, dtype=np.float64)
FROM_SIZES = np.concatenate([np.log(_SIZES[1:]), np.sqrt(_SIZES), 1 / np.sqrt(_SIZES), 1 / _SIZES])


def hidden_outputs(checks, method: str) -> np.ndarray:
    """Every float the hidden cases of ``method`` hold as an output: expected, or a known mistake's."""
    values = []
    for case in checks.cases(method, hidden=True):
        for outputs in [case.expected, *case.variants.values()]:
            values += [np.abs(np.asarray(a, dtype=np.float64)).ravel()
                       for a in outputs.values() if np.asarray(a).dtype.kind == "f"]
    return np.concatenate(values) if values else np.zeros(0)


def every_hidden_output(checks) -> np.ndarray:
    """The hidden outputs of every function of the chapter (a layer's check also judges its parts)."""
    key = checks.chapter.assignment
    if key not in _EVERY:
        _EVERY[key] = np.concatenate([hidden_outputs(checks, f.name) for f in checks.chapter.functions])
    return _EVERY[key]


_EVERY = {}


def leaked(message: str, hidden: np.ndarray, own: np.ndarray = np.zeros(0)) -> list:
    """The numbers of ``message`` that equal, to the digits shown, a hidden value and none of ``own``
    (the student's own outputs, which a message may quote)."""
    found = []
    for token in NUMBER.findall(message):
        mantissa = re.split(r"[eE]", token)[0].lstrip("+-").replace(".", "").lstrip("0")
        digits = len(mantissa)
        if digits < SIGNIFICANT_DIGITS:
            continue
        value, bound = abs(float(token)), 0.5 * 10.0 ** (1 - digits)
        if value == 0 or not np.isfinite(value):
            continue
        def shown_as(values):
            return np.any(np.abs(values - value) <= bound * value)
        if shown_as(hidden) and not shown_as(own) and not shown_as(FROM_SIZES):
            found.append(token)
    return found


def _float_arrays(record, path=()):
    """``(path, array)`` for every float array a collected record holds."""
    if isinstance(record, np.ndarray):
        if record.dtype.kind == "f" and record.size:
            yield path, record
    elif isinstance(record, dict):
        for key, value in record.items():
            yield from _float_arrays(value, path + (key,))
    elif isinstance(record, (list, tuple)):
        for index, value in enumerate(record):
            yield from _float_arrays(value, path + (index,))


def returned(record) -> np.ndarray:
    """The magnitudes of every float a collected record holds: the student's own outputs."""
    arrays = [np.abs(a.astype(np.float64)).ravel() for _, a in _float_arrays(record)]
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _replace_arrays(record, change):
    if isinstance(record, np.ndarray):
        return change(record) if record.dtype.kind == "f" and record.size else record
    if isinstance(record, dict):
        return {key: _replace_arrays(value, change) for key, value in record.items()}
    if isinstance(record, list):
        return [_replace_arrays(value, change) for value in record]
    if isinstance(record, tuple):
        return tuple(_replace_arrays(value, change) for value in record)
    return record


def zeros_with_a_spike(array):
    out = np.zeros_like(array)
    out.reshape(-1)[array.size // 2] = SPIKE
    return out


def near_miss(array):
    return array * array.dtype.type(1.001)


ATTACKS = {"zeros with a spike": zeros_with_a_spike, "a near miss": near_miss}


def cpu_function_checks():
    params = []
    for p in notebook_params():
        assignment, notebook = p.values
        entry = registry.notebook(assignment, notebook)
        if entry.needs_gpu:
            continue
        names = [f.name for f in chapter(assignment).functions if entry.track in f.tracks]
        params += [pytest.param(assignment, notebook, name, id=f"{assignment}/{notebook}/{name}") for name in names]
    return params


@functools.lru_cache(maxsize=None)
def _definitions(assignment, notebook):
    return solution_namespace(solution_path(assignment, notebook), definitions_only=True)


@pytest.mark.parametrize("assignment, notebook, function", cpu_function_checks())
def test_a_hidden_check_quotes_no_hidden_output(assignment, notebook, function):
    checks = checks_for(assignment, notebook)
    target = _definitions(assignment, notebook)[function]
    record = checks.collect(function, target, hidden=True)
    hidden = hidden_outputs(checks, function)
    for attack, change in ATTACKS.items():
        forged = _replace_arrays(record, change)
        own = returned(forged)
        try:
            message = checks.judge(function, forged, hidden=True)
        except CheckFailure as failure:
            message = str(failure)
        assert not leaked(message, hidden, own), (attack, leaked(message, hidden, own), message)


def test_the_scan_finds_an_expected_value_quoted_as_the_old_messages_did():
    want = np.array([[0.1, 0.360222131], [0.25, 0.5]])
    got = np.zeros_like(want)
    got[0, 1] = SPIKE
    shown = worst_mismatch(got, want)      # outside a hidden judge: a visible case's message
    assert not judging_hidden() and "0.360222" in shown
    assert leaked(shown, want.ravel(), got.ravel()) == ["0.360222"]
    assert leaked(first_mismatch(got, want), want.ravel(), got.ravel()) == []


def test_a_hidden_mismatch_names_the_first_index_outside_the_tolerance_and_the_students_value():
    want = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    got = want.copy()
    got[1, 0], got[1, 1] = 3.5, 400.0           # the largest difference is at (1, 1), the first at (1, 0)
    message = first_mismatch(got, want)
    assert "index (1, 0)" in message and "you returned 3.5" in message
    assert "expected" not in message.replace("expected values are not shown", "")


def test_a_function_check_on_hidden_cases_answers_with_the_first_mismatch():
    assignment = next(a for a in registry.assignments() if "split_heads" in chapter(a).checks)
    notebook = "1_numpy"
    checks = checks_for(assignment, notebook)
    record = checks.collect("split_heads", _definitions(assignment, notebook)["split_heads"], hidden=True)
    with pytest.raises(CheckFailure) as hidden:
        checks.judge("split_heads", _replace_arrays(record, zeros_with_a_spike), hidden=True)
    assert "are not shown" in str(hidden.value) and "expected" not in str(hidden.value).split("(a hidden")[0]
    visible = checks.collect("split_heads", _definitions(assignment, notebook)["split_heads"])
    with pytest.raises(CheckFailure) as shown:
        checks.judge("split_heads", _replace_arrays(visible, zeros_with_a_spike))
    assert "expected" in str(shown.value)       # a visible case's expected values are public
