"""What every chapter's checks share: calling the student's function on stored
cases, comparing with the reference outputs, and failing with a message that
names the likely mistake.

A chapter module lists its cases and its diagnoses; this module runs them.
"""
import textwrap

import numpy as np

from .tolerances import tolerance


class CheckFailure(AssertionError):
    """A check failed; the message says what is wrong and what to try."""

    def _render_traceback_(self):
        # IPython calls this instead of printing a traceback: the student sees
        # the diagnosis, not the checks module's internals.
        return [f"\x1b[1;31mCheck failed:\x1b[0m {line}" if i == 0 else line
                for i, line in enumerate(str(self).splitlines())]


def fail(message: str):
    # Wrapped here because notebook error outputs and nbgrader's feedback pages
    # show long lines unwrapped, with the diagnosis scrolled out of sight.
    raise CheckFailure("\n".join(
        textwrap.fill(line, width=100, break_long_words=False, break_on_hyphens=False)
        for line in message.splitlines()))


class Case:
    """One stored test case: the arguments, the expected outputs, and the outputs
    that known mistakes would give (``variants``, label -> outputs)."""

    def __init__(self, function, split, index, args, expected, variants, flags):
        self.function, self.split, self.index = function, split, index
        self.args, self.expected, self.variants, self.flags = args, expected, variants, flags

    @property
    def has_floats(self) -> bool:
        return any(a.dtype.kind == "f" for a in self.args.values())

    @property
    def dtype(self) -> str:
        floats = [a.dtype for a in self.args.values() if a.dtype.kind == "f"]
        return str(floats[0]) if floats else "float64"

    def describe(self) -> str:
        parts = []
        for name, a in self.args.items():
            if a.ndim == 0:
                parts.append(f"{name}={a.item()!r}")
            else:
                parts.append(f"{name}: {a.dtype} {tuple(a.shape)}")
        return f"{self.function}({', '.join(parts)})"


# --------------------------------------------------------------------------
# Collecting: run in the student's process, returns plain data only
# --------------------------------------------------------------------------
# A check is two halves. ``collect`` calls the student's code on the case
# inputs and records what came back as plain data: dicts, lists, strings,
# numbers and NumPy arrays. ``judge`` compares that record with the reference
# outputs and fails with a diagnosis. In a notebook both halves run in the
# student's kernel; the grader runs ``collect`` in a sandbox and ``judge`` in
# its own process, so nothing the student's code does can change a verdict.

MAX_MESSAGE = 500  # characters of a student's exception message kept in a record


def describe_exception(exc: BaseException) -> dict:
    return {"raised": type(exc).__name__, "message": str(exc)[:MAX_MESSAGE],
            "not_implemented": isinstance(exc, NotImplementedError)}


def plain_value(value, backend) -> dict:
    """One returned value: its type, and as a NumPy array when it is the track's array type."""
    entry = {"type": f"{type(value).__module__}.{type(value).__name__}",
             "native": bool(backend.is_native(value))}
    if entry["native"]:
        try:
            entry["array"] = np.ascontiguousarray(backend.to_numpy(value))
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
            result = fn(*positional(case))
        except Exception as exc:  # anything the student's code raises
            records.append(describe_exception(exc))
            break
        records.append(plain_result(result, n_outputs, backend))
    return records


# --------------------------------------------------------------------------
# Judging: runs wherever the reference outputs are (the grader's process)
# --------------------------------------------------------------------------

def judge_records(records: list, cases: list, name: str):
    """Yield ``(case, record)`` pairs, failing on records that say the call did not work."""
    if records and "not_callable" in records[0]:
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
         + exception_hint(record["message"]))


def exception_hint(message: str) -> str:
    text = message.lower()
    if any(s in text for s in ("matmul", "shapes", "size mismatch", "mat1 and mat2", "cannot be multiplied", "broadcast")):
        return ("Hint: check the shapes. Weights are (d_in, d_out) and act on row vectors (q = x @ w_q); "
                "transpose keys with swapaxes(-1, -2) (NumPy, CuPy) or transpose(-2, -1) (torch), "
                "not .T, which on 3-D arrays reverses the batch axis too.")
    return "Hint: run the function on the example above and read the traceback."


def outputs_of(record: dict, names: tuple, call: str, function: str, array_type_name: str) -> dict:
    """``{label: (array, dtype)}`` from a record, after checking it holds the track's arrays."""
    if "values" not in record or len(record["values"]) != len(names):
        fail(f"{function} must return a tuple {tuple(names)}; got {record.get('structure', 'something else')}"
             + (f" of length {record['length']}" if record.get("length") is not None else "") + ".")
    out = {}
    for label, value in zip(names, record["values"]):
        if not value.get("native") or not isinstance(value.get("array"), np.ndarray):
            fail(f"{function} returned {label} as {value.get('type')}; this notebook works with "
                 f"{array_type_name}, so return one (no conversion to or from other libraries).")
        out[label] = (value["array"], str(value.get("dtype")))
    return out


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
    rtol, atol = tolerance(dtype, device)
    return bool(np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=False))


def worst_mismatch(got: np.ndarray, want: np.ndarray) -> str:
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    return (f"largest difference at index {tuple(int(i) for i in idx)}: "
            f"got {got[idx]!r}, expected {want[idx]!r}")


def matching_variant(outputs: dict, case: Case, device: str):
    """The label of the known mistake whose stored outputs the student's match, if any."""
    for label, variant in case.variants.items():
        if all(name in outputs and outputs[name][0].shape == v.shape
               and is_close(outputs[name][0], v, case.dtype, device)
               for name, v in variant.items()):
            return label
    return None


def pass_message(function: str, cases: list, hidden: bool) -> str:
    kind = "hidden" if hidden else "visible"
    dtypes = sorted({c.dtype for c in cases if c.has_floats})
    detail = f" ({', '.join(dtypes)})" if dtypes else ""
    return (f"\u2714 {function}: all {len(cases)} {kind} cases match the reference outputs{detail}.")
