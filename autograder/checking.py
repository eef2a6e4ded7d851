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


def call_student(fn, case: Case, positional: list):
    """Call the student's function; turn exceptions into a helpful failure."""
    name = case.function
    try:
        return fn(*positional)
    except NotImplementedError:
        fail(f"{name} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailure:
        raise
    except Exception as exc:  # anything the student's code raises
        fail(f"calling {case.describe()} raised {type(exc).__name__}: {exc}\n"
             + exception_hint(exc))


def exception_hint(exc: Exception) -> str:
    text = str(exc).lower()
    if any(s in text for s in ("matmul", "shapes", "size mismatch", "mat1 and mat2", "cannot be multiplied", "broadcast")):
        return ("Hint: check the shapes. Weights are (d_in, d_out) and act on row vectors (q = x @ w_q); "
                "transpose keys with swapaxes(-1, -2) (NumPy, CuPy) or transpose(-2, -1) (torch), "
                "not .T, which on 3-D arrays reverses the batch axis too.")
    return "Hint: run the function on the example above and read the traceback."


def as_outputs(result, case: Case, backend, names: tuple):
    """The result as a dict of NumPy arrays named like the expected outputs,
    after checking it is a tuple of the right length and of the track's type."""
    name = case.function
    if len(names) == 1:
        result = (result,)
    elif not isinstance(result, (tuple, list)) or len(result) != len(names):
        fail(f"{name} must return a tuple {tuple(names)}; got {type(result).__name__}.")
    out = {}
    for label, value in zip(names, result):
        if not backend.is_native(value):
            fail(f"{name} returned {label} as {type(value).__module__}.{type(value).__name__}; "
                 f"this notebook works with {backend.array_type_name}, so return one "
                 "(no conversion to or from other libraries).")
        out[label] = (backend.to_numpy(value), backend.dtype_name(value))
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


def report_pass(function: str, cases: list, hidden: bool):
    kind = "hidden" if hidden else "visible"
    dtypes = sorted({c.dtype for c in cases if c.has_floats})
    detail = f" ({', '.join(dtypes)})" if dtypes else ""
    print(f"\u2714 {function}: all {len(cases)} {kind} cases match the reference outputs{detail}.")
