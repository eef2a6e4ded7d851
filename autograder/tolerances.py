"""The one tolerance policy of the course: how close is "equal to the reference".

Reference outputs are computed by the NumPy solution on the CPU in the case's own
dtype. A student's result is compared with ``allclose(got, want, rtol, atol)``
using the row for its dtype and the device it ran on. GPU and torch kernels sum
in other orders than NumPy, so float32 on a GPU gets a looser bound; every bound
is still far tighter than any mistake the checks look for (the smallest, a wrong
scale, moves values by tens of percent).
"""

TOLERANCES = {
    # (dtype, device): (rtol, atol)
    ("float64", "cpu"): (1e-9, 1e-12),
    ("float32", "cpu"): (2e-5, 2e-6),
    ("float64", "gpu"): (1e-8, 1e-11),
    ("float32", "gpu"): (1e-4, 1e-5),
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
