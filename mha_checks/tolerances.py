"""The one tolerance policy of the course: how close is "equal to the reference".

Reference outputs are computed by the NumPy solution on the CPU in the case's own
dtype. A student's result is compared with ``allclose(got, want, rtol, atol)``
using the row for its dtype and the device it ran on. GPU and torch kernels sum
in other orders than NumPy, so float32 on a GPU gets a looser bound; every bound
is still far tighter than any mistake the checks look for (the smallest, a wrong
scale, moves values by tens of percent).

A check that needs another kind of bound names it here (``NAMED``) and asks for
it by name, so no chapter states a number of its own.
"""

TOLERANCES = {
    # (dtype, device): (rtol, atol)
    ("float64", "cpu"): (1e-9, 1e-12),
    ("float32", "cpu"): (2e-5, 2e-6),
    ("float64", "gpu"): (1e-8, 1e-11),
    ("float32", "gpu"): (1e-4, 1e-5),
}

NAMED = {
    # A float64 autograd gradient against central finite differences with eps = 1e-6:
    # the estimate itself is off by about eps**2 times the third derivative.
    "finite_differences": (1e-5, 1e-7),
    # Diagnostics, not verdicts: how far a row sum may be from 1, and how large a
    # weight may be and still count as zero, when a check explains a mismatch.
    "row_sum": (0.0, 1e-4),
    "zero_weight": (0.0, 1e-6),
    # A question's numeric answer: given to two decimals ("answer"), or a quantity the
    # student measures with their own random draws ("estimate", within 10 %).
    "answer": (0.0, 0.006),
    "estimate": (0.1, 0.0),
    # A whole float32 model run by two frameworks (NumPy against PyTorch's recorded logits):
    # two layers of sums in other orders drift by a few 1e-6 on logits of size 10; a real
    # mistake (a bias left out, no residual) moves them by 0.1 or more.
    "across_frameworks": (1e-4, 2e-5),
    # Regenerated reference outputs against the committed ones (``references.same_array``), in
    # units of the dtype's machine epsilon times the array's largest magnitude: another CPU or BLAS
    # build sums in another order. Between an Intel Xeon (AVX-512) and an AMD EPYC (AVX2) the
    # reference outputs of chapters 1-8 differ by at most 16 such units.
    "reproducible": (256.0, 0.0),
    # The same for central finite differences, which divide the forward pass's rounding by their
    # step (1e-3): between those two machines, at most 3,400 units.
    "reproducible_finite_differences": (1e5, 0.0),
}


def tolerance(dtype: str, device: str = "cpu") -> tuple:
    """(rtol, atol) for arrays of `dtype` ("float32", "float64") computed on `device`."""
    try:
        return TOLERANCES[(dtype, device)]
    except KeyError:
        raise ValueError(
            f"no tolerance for dtype {dtype!r} on device {device!r}; "
            f"known: {sorted(TOLERANCES)}"
        ) from None


def named(name: str) -> tuple:
    """(rtol, atol) of a named bound in ``NAMED``."""
    try:
        return NAMED[name]
    except KeyError:
        raise ValueError(f"no tolerance named {name!r}; known: {sorted(NAMED)}") from None
