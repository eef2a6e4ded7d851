"""Checking a central difference: ``central_difference(f, xi, eps=1e-3)`` on functions whose
gradients are known (a quadratic, a cubic, ``sin`` and ``exp`` of a matrix product, scalar
and vector valued), with a diagnosis of the usual slips (a forward difference, a factor 2,
the sign, every entry moved at once). Chapter 7 builds head importance on it.
"""
import numpy as np

from ..engine import describe_exception, fail, is_near, judge_exception, outputs_of, plain_result, worst_mismatch


def _quadratic(c, b):
    return (lambda xi: float((c * xi ** 2).sum() + (b * xi).sum()),
            lambda xi: 2 * c * xi + b)


def _cubic():
    return lambda xi: float((xi ** 3).sum()), lambda xi: 3 * xi ** 2


def _sin_of_product(A):
    """f(xi) = sin(A @ xi.ravel()), a vector (N,): the gradient is (N,) + xi.shape."""
    return (lambda xi: np.sin(A @ xi.ravel()),
            lambda xi: (np.cos(A @ xi.ravel())[:, None] * A).reshape((A.shape[0],) + xi.shape))


def _exp_of_product(A):
    return (lambda xi: np.exp(A @ xi.ravel() * 0.5),
            lambda xi: (0.5 * np.exp(A @ xi.ravel() * 0.5)[:, None] * A).reshape((A.shape[0],) + xi.shape))


def _difference_problems():
    """(label, f, analytic gradient, xi, eps or None for the default). Built the same way on every call."""
    rng = np.random.default_rng(7)
    problems = []
    c, b = rng.standard_normal(5), rng.standard_normal(5)
    f, g = _quadratic(c, b)
    problems.append(("a quadratic of a vector (5,)", f, g, rng.standard_normal(5), None))
    f, g = _cubic()
    problems.append(("sum(xi**3) of a matrix (2, 3)", f, g, rng.standard_normal((2, 3)), 1e-4))
    A = rng.standard_normal((4, 6)) * 0.5
    f, g = _sin_of_product(A)
    problems.append(("sin(A @ xi.ravel()), (4,) values of xi (2, 3)", f, g, rng.standard_normal((2, 3)), 1e-4))
    A = rng.standard_normal((3, 12)) * 0.3
    f, g = _exp_of_product(A)
    problems.append(("exp(A @ xi.ravel() / 2), (3,) values of xi (3, 4)", f, g, np.ones((3, 4)), 1e-4))
    return problems


def collect_central_difference(checks, fn):
    records = []
    for label, f, _, xi, eps in _difference_problems():
        given = xi.copy()
        record = {}
        records.append(record)
        try:
            result = fn(f, given) if eps is None else fn(f, given, eps)
            record.update(plain_result(result, 1, checks.backend))
            record["xi_after"] = np.asarray(given)
        except Exception as exc:
            record.update(describe_exception(exc))
            break
    return records


def judge_central_difference(checks, records):
    name = "central_difference"
    problems = _difference_problems()
    if not isinstance(records, list) or not records:
        fail(f"the check of {name} sent no readable result.")
    for i, (label, f, g, xi, eps) in enumerate(problems):
        call = f"{name}(f, xi) for f = {label}" + ("" if eps is None else f", eps={eps}")
        if i >= len(records):
            fail(f"no result for {call}: the check stopped before this case.")
        record = records[i]
        if "raised" in record:
            judge_exception(record, call, name)
        got = outputs_of(record, ("gradient",), name, checks.array_type_name)["gradient"][0]
        want = g(xi)
        if not np.allclose(record["xi_after"], xi, rtol=0, atol=1e-12):
            fail(f"{call} changed xi itself: perturb a copy (xi.copy()), or put every entry back exactly; the "
                 "caller's xi must come back as it was.")
        if got.shape != want.shape:
            extra = (" When f returns an array, the gradient has shape f(xi).shape + xi.shape: one gradient of "
                     "xi's shape per value of f." if np.ndim(f(xi)) else "")
            fail(f"{call} returned shape {got.shape}, expected {want.shape}.{extra}")
        if is_near(got, want, "finite_differences"):
            continue
        step = 1e-3 if eps is None else eps
        forward = _forward_difference(f, xi, step)
        if np.allclose(got, forward, rtol=1e-6, atol=1e-9):
            fail(f"{call}: that is the forward difference (f(xi + eps e_i) - f(xi)) / eps, off by about eps "
                 "times the second derivative. The central difference evaluates both sides: (f(xi + eps e_i) - "
                 "f(xi - eps e_i)) / (2 eps), exact for quadratics.")
        if np.allclose(got, 2 * want, rtol=1e-4, atol=1e-7):
            fail(f"{call} is twice the gradient: the two points are 2 eps apart, so divide by 2 eps, not eps.")
        if np.allclose(got, -want, rtol=1e-4, atol=1e-7):
            fail(f"{call} has the wrong sign: f(xi + eps e_i) - f(xi - eps e_i), in that order.")
        together = _all_at_once(f, xi, step)
        if np.allclose(got, together, rtol=1e-4, atol=1e-7):
            fail(f"{call}: every entry of xi was moved at once, which gives the derivative along (1, 1, ...) in "
                 "every slot. Move one entry at a time (xi + eps e_i, with e_i the i-th unit array).")
        fail(f"{call} differs from the analytic gradient; {worst_mismatch(got, want)}.")
    return (f"\u2714 {name}: the gradients of {len(problems)} functions with known derivatives (a quadratic, a "
            "cubic, sin and exp of a matrix product, scalar and vector valued) match, and xi is left as it was.")


def _forward_difference(f, xi, eps):
    base = np.asarray(f(xi))
    out = []
    for i in np.ndindex(xi.shape):
        up = xi.copy()
        up[i] += eps
        out.append((np.asarray(f(up)) - base) / eps)
    out = np.stack(out, axis=-1)
    return out.reshape(out.shape[:-1] + xi.shape)


def _all_at_once(f, xi, eps):
    d = (np.asarray(f(xi + eps)) - np.asarray(f(xi - eps))) / (2 * eps)
    return np.broadcast_to(np.asarray(d)[..., None], np.shape(d) + (xi.size,)).reshape(np.shape(d) + xi.shape)

