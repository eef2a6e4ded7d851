"""Chapter 1 checks: softmax, causal_mask, scaled_dot_product_attention,
single_head_attention, and the pieces the CuPy and PyTorch tracks add.

In a notebook::

    from mha_checks.chapters.ch01_single_head import Checks
    check = Checks("numpy")          # or "cupy", "torch"
    check.softmax(softmax)           # visible cases; prints a tick or fails with a diagnosis

Cases use shapes whose dimensions all differ (B, T_q, T_k, d_k, d_v), so a
transpose or a wrong axis shows up as a wrong shape or wrong values. This
module only declares; :mod:`mha_checks.engine` runs the checks.
"""
import math

import numpy as np

from ..engine import (Chapter, Custom, Function, Inherited, Mistake, Question, describe_exception, fail,
                      is_close, is_near)
from ..engine import collect_calls, judge_exception, judge_records, outputs_of, plain_result
from ..tolerances import named
from ..kit.common import causal as _causal, flip_is_distinct as _flip_is_distinct
from ..kit.common import normal as _normal, random_mask as _random_mask

# --------------------------------------------------------------------------
# Case inputs
# --------------------------------------------------------------------------


def softmax_visible(rng):
    return [
        dict(x=_normal(rng, (3, 5), np.float64, 2.0), axis=-1),
        dict(x=_normal(rng, (2, 3, 4), np.float32), axis=-1),
        dict(x=rng.uniform(-1e4, 1e4, (4, 6)), axis=-1),             # large logits
        dict(x=_normal(rng, (5, 3), np.float64), axis=0),            # axis is honoured
    ]


def softmax_hidden(rng):
    return [
        dict(x=_normal(rng, (4, 7, 5), np.float64, 3.0), axis=1),
        dict(x=rng.uniform(-1e4, 1e4, (3, 6)).astype(np.float32), axis=-1),
        dict(x=_normal(rng, (2, 3, 5, 7), np.float32, 5.0), axis=-1),
        dict(x=_normal(rng, (6,), np.float64), axis=0),
        dict(x=np.array([[1.0, 1.0, 1.0, 1.0], [3.0, -2.0, 0.5, 1e4], [-1e4, 0.0, 2.0, 2.0]]), axis=-2),
    ]


def causal_visible(rng):
    return [dict(T=4), dict(T=1)]


def causal_hidden(rng):
    return [dict(T=7), dict(T=13), dict(T=2)]


def attention_visible(rng):
    f64, f32 = np.float64, np.float32
    return [
        dict(q=_normal(rng, (2, 3, 8), f64), k=_normal(rng, (2, 5, 8), f64), v=_normal(rng, (2, 5, 6), f64)),
        dict(q=_normal(rng, (2, 3, 8), f32), k=_normal(rng, (2, 5, 8), f32), v=_normal(rng, (2, 5, 6), f32),
             mask=_random_mask(rng, (3, 5))),
        dict(q=_normal(rng, (1, 4, 8), f64), k=_normal(rng, (1, 4, 8), f64), v=_normal(rng, (1, 4, 3), f64),
             mask=_causal(4)),
        dict(q=_normal(rng, (2, 3, 8), f64), k=_normal(rng, (2, 5, 8), f64), v=_normal(rng, (2, 5, 6), f64),
             mask=_random_mask(rng, (3, 5), empty_row=1)),             # a query with no key
    ]


def attention_hidden(rng):
    f64, f32 = np.float64, np.float32
    return [
        dict(q=_normal(rng, (2, 3, 4, 6), f64), k=_normal(rng, (2, 3, 7, 6), f64), v=_normal(rng, (2, 3, 7, 5), f64),
             mask=_random_mask(rng, (4, 7), empty_row=2)),
        dict(q=_normal(rng, (3, 5, 4), f32, 40.0), k=_normal(rng, (3, 6, 4), f32, 40.0),   # scores ~1e4
             v=_normal(rng, (3, 6, 2), f32)),
        dict(q=_normal(rng, (5, 3), f32), k=_normal(rng, (6, 3), f32), v=_normal(rng, (6, 4), f32),
             mask=_random_mask(rng, (5, 6))),                          # no batch axis
        dict(q=_normal(rng, (2, 9, 5), f64), k=_normal(rng, (2, 9, 5), f64), v=_normal(rng, (2, 9, 7), f64),
             mask=_random_mask(rng, (2, 1, 9)) & _causal(9)),
        dict(q=_normal(rng, (1, 2, 3), f32), k=_normal(rng, (1, 4, 3), f32), v=_normal(rng, (1, 4, 5), f32),
             mask=np.zeros((2, 4), dtype=bool)),                       # every query masked out
    ]


def _single_head_case(rng, shape_x, d_k, d_v, dtype, mask=None):
    d_model = shape_x[-1]
    w = lambda d_out: _normal(rng, (d_model, d_out), dtype, 1 / math.sqrt(d_model))
    case = dict(x=_normal(rng, shape_x, dtype), w_q=w(d_k), w_k=w(d_k), w_v=w(d_v))
    if mask is not None:
        case["mask"] = mask
    return case


def single_head_visible(rng):
    return [_single_head_case(rng, (2, 3, 7), 4, 5, np.float64),
            _single_head_case(rng, (2, 6, 7), 4, 5, np.float32, _causal(6))]


def single_head_hidden(rng):
    return [
        _single_head_case(rng, (3, 5, 6), 6, 6, np.float64),    # square weights: a transpose changes values, not shapes
        _single_head_case(rng, (1, 8, 10), 4, 3, np.float32, _causal(8)),
        _single_head_case(rng, (4, 9), 6, 2, np.float64, _causal(4)),   # no batch axis
        _single_head_case(rng, (2, 5, 12), 3, 12, np.float32),
    ]


def padding_visible(rng):
    return [dict(lengths=np.array([3, 1, 5]), T=5), dict(lengths=np.array([2]), T=4)]


def padding_hidden(rng):
    return [dict(lengths=np.array([0, 7, 2, 4]), T=7),          # an empty sequence: a row of False
            dict(lengths=rng.integers(1, 9, size=6), T=9),
            dict(lengths=np.array([6, 6]), T=6)]


def _fused_cases(rng, shapes):
    cases = []
    for shape in shapes:
        x = _normal(rng, shape, np.float32, 3.0)
        x[0, 0] = 1e4  # a large logit in every case
        cases.append(dict(x=x))
    return cases


# --------------------------------------------------------------------------
# Known mistakes, produced by the solution on transformed inputs
# --------------------------------------------------------------------------

def _softmax_other_axes(sol, x, axis):
    return [sol["softmax"](x, axis=a) for a in range(x.ndim) if a != axis % x.ndim]


def _sdpa(sol, q, k, v, mask=None):
    return sol["scaled_dot_product_attention"](q, k, v, mask)


def _root_d(q):
    return q.dtype.type(math.sqrt(q.shape[-1]))


def _mask_flipped(sol, q, k, v, mask=None):
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    if mask is None or not _flip_is_distinct(mask, batch, q.shape[-2], k.shape[-2]):
        return None
    return _sdpa(sol, q, k, v, ~mask)


def _shead(sol, x, w_q, w_k, w_v, mask=None):
    return sol["single_head_attention"](x, w_q, w_k, w_v, mask)


def _root_dk(x, w_q):
    return x.dtype.type(math.sqrt(w_q.shape[1]))


def _shead_mask_flipped(sol, x, w_q, w_k, w_v, mask=None):
    T = x.shape[-2]
    if mask is None or not _flip_is_distinct(mask, x.shape[:-2], T, T):
        return None
    return _shead(sol, x, w_q, w_k, w_v, ~mask)


def _scale_d_model(sol, x, w_q, w_k, w_v, mask=None):
    d_model, d_k = w_q.shape
    if d_model == d_k:
        return None
    shrink = x.dtype.type(math.sqrt(d_k / d_model))
    return sol["single_head_attention"](x, w_q * shrink, w_k, w_v, mask)


def _weights_transposed(sol, x, w_q, w_k, w_v, mask=None):
    if w_q.shape[0] != w_q.shape[1] or w_v.shape[0] != w_v.shape[1]:
        return None  # not square: a transpose fails on shapes before any value is wrong
    return sol["single_head_attention"](x, w_q.T.copy(), w_k.T.copy(), w_v.T.copy(), mask)


# --------------------------------------------------------------------------
# Diagnoses of mismatches no known mistake explains
# --------------------------------------------------------------------------

def _large_logits(case) -> bool:
    if "x" in case.args:
        return bool(np.abs(case.args["x"]).max() > 700)
    return bool(np.abs(case.args["q"]).max() * np.abs(case.args["k"]).max() > 700)


def _diagnose_softmax(got, case):
    out = got["out"]
    if not np.isfinite(out).all():
        if _large_logits(case):
            fail(f"{case.describe()} gave NaN or inf: with logits near 1e4, exp overflows. Subtract "
                 "the maximum along the axis before exp (softmax(x) = softmax(x - max)).")
        fail(f"{case.describe()} gave NaN or inf values.")
    axis = int(case.args["axis"]) if "axis" in case.args else -1
    sums = out.sum(axis=axis)
    if not is_near(sums, 1, "row_sum"):
        fail(f"{case.describe()}: the values along axis {axis} sum to {sums.ravel()[:3]}..., not 1: "
             "divide by the sum of the exponentials along the same axis, with keepdims=True.")


def _diagnose_attention(got, case):
    weights, want = got["weights"], case.expected["weights"]
    mask = case.args.get("mask")
    allowed = np.broadcast_to(mask, want.shape) if mask is not None else np.ones(want.shape, bool)
    no_key = ~allowed.any(axis=-1)
    if not np.isfinite(weights).all() or not np.isfinite(got["out"]).all():
        bad_rows = ~np.isfinite(weights).all(axis=-1)
        if no_key.any() and (bad_rows <= no_key).all():
            fail(f"{case.describe()}: a query row whose keys are all masked gave NaN. Such a row must "
                 "get all-zero weights and a zero output: softmax of a row of -inf is 0/0. Give those "
                 "rows any finite scores before the softmax and zero their weights after it.")
        if _large_logits(case):
            fail(f"{case.describe()} gave NaN or inf with scores around 1e4: use a numerically stable "
                 "softmax (subtract the row maximum before exp).")
        fail(f"{case.describe()} gave NaN or inf values.")
    if no_key.any() and not is_near(weights[no_key], 0, "zero_weight"):
        fail(f"{case.describe()}: a query row whose keys are all masked got non-zero weights. It must get "
             "all-zero weights and a zero output (filling masked scores with -1e9 alone makes such a row uniform).")
    if not is_near(weights[~allowed], 0, "zero_weight"):
        fail(f"{case.describe()}: keys where mask is False got non-zero weight. True means 'may attend'; "
             "set the masked scores to -inf (or a very negative number) before the softmax.")
    row_sums = weights.sum(axis=-1)[~no_key]
    if not is_near(row_sums, 1, "row_sum"):
        if mask is not None and (row_sums < 1 - named("row_sum")[1]).any():
            fail(f"{case.describe()}: masked keys have weight 0 but the rows sum to less than 1 "
                 f"(e.g. {row_sums.min():.3f}): was the mask applied after the softmax? Mask the scores "
                 "before the softmax so the remaining weights renormalise.")
        fail(f"{case.describe()}: rows of weights sum to {row_sums.ravel()[:3]}..., not 1: "
             "softmax over the wrong axis? The softmax runs over the keys, axis -1.")
    if is_close(weights, want, case.dtype, "gpu") and not is_close(got["out"], case.expected["out"], case.dtype, "gpu"):
        fail(f"{case.describe()}: the weights are right but out is not: out is weights @ v.")


def _padding_mask_has_query_axis(got, case):
    lengths, T = case.args["lengths"], int(case.args["T"])
    if got["mask"][0].shape == (len(lengths), T):
        fail(f"{case.describe()} has shape (B, T) = {got['mask'][0].shape}; give it the query axis, (B, 1, T) = {(len(lengths), 1, T)}, so that "
             "it broadcasts over every query of the (B, T_q, T_k) scores.")
    _boolean(got, case, "mask")


def _boolean(got, case, name):
    if got[name][1] != "bool":
        fail(f"{case.describe()} returned {name} with dtype {got[name][1]}; "
             "return booleans (True = may attend), e.g. with dtype=bool.")


def _causal_mask_is_boolean(got, case):
    if got["mask"][1] != "bool":
        fail(f"causal_mask({int(case.args['T'])}) has dtype {got['mask'][1]}; "
             "return booleans (True = may attend), e.g. with dtype=bool.")


# --------------------------------------------------------------------------
# Custom checks
# --------------------------------------------------------------------------

def _collect_gpu_timer(checks, time_gpu):
    if not callable(time_gpu):
        return {"not_callable": type(time_gpu).__name__}
    cp = checks.backend.xp
    small, big = cp.ones((64, 64), cp.float32), cp.ones((2048, 2048), cp.float32)
    try:
        times = [time_gpu(cp.matmul, a, a, repeats=5) for a in (small, big)]
    except Exception as exc:
        return describe_exception(exc)
    return {"types": [type(t).__name__ for t in times],
            "ms": [float(t) if isinstance(t, float) else None for t in times]}


def _judge_gpu_timer(checks, record):
    if "not_callable" in record:
        fail(f"time_gpu is {record['not_callable']}, not a function: run the cell that defines it.")
    if "raised" in record:
        judge_exception(record, "time_gpu(cupy.matmul, a, a, repeats=5)", "time_gpu")
    if record["types"] != ["float", "float"]:
        fail(f"time_gpu must return a float (milliseconds); got {record['types'][0]}. "
             "cupy.cuda.get_elapsed_time(start, end) gives one.")
    t_small, t_big = record["ms"]
    if not 0 < t_small < t_big:
        fail(f"time_gpu measured {t_small:.4f} ms for a 64x64 matmul and {t_big:.4f} ms for a "
             "2048x2048 one; the big one must take longer. Record the end event after the calls "
             "and call end.synchronize() before reading the time: kernel launches return "
             "before the GPU has finished.")
    return f"\u2714 time_gpu: 64x64 matmul {t_small:.4f} ms, 2048x2048 matmul {t_big:.4f} ms per call."


def _sdpa_trials(n_trials, seed):
    """Random attention problems (torch tensors) shared by collect and judge: ``(q, k, v, mask or None)``."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    for trial in range(n_trials):
        dtype = (torch.float32, torch.float64)[trial % 2]
        B, T_q, T_k, d_k, d_v = (int(s) for s in torch.randint(1, 9, (5,), generator=gen))
        q = torch.randn(B, T_q, d_k, generator=gen, dtype=dtype)
        k = torch.randn(B, T_k, d_k, generator=gen, dtype=dtype)
        v = torch.randn(B, T_k, d_v, generator=gen, dtype=dtype)
        mask = torch.rand(T_q, T_k, generator=gen) < 0.7
        mask[:, 0] = True  # torch's own function has given NaN for a row with no key (versions differ)
        for m in ([None, mask] if trial % 3 else [mask]):
            yield q, k, v, m


def _collect_matches_torch_sdpa(checks, fn, n_trials, seed):
    records = []
    for q, k, v, m in _sdpa_trials(n_trials, seed):
        args = (q, k, v, m) if m is not None else (q, k, v)
        records.append(collect_calls(fn, [None], lambda _: args, 2, checks.backend)[0])
        if "values" not in records[-1]:
            break
    return records


def _judge_matches_torch_sdpa(checks, records, n_trials, seed):
    import torch.nn.functional as F
    name = "scaled_dot_product_attention"
    trials = list(_sdpa_trials(n_trials, seed))
    for (q, k, v, m), record in judge_records(records, trials, name):
        ours, _ = outputs_of(record, ("out", "weights"), name, checks.array_type_name)["out"]
        theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=m).numpy()
        dtype = str(q.dtype).replace("torch.", "")
        if ours.shape != theirs.shape or not is_close(ours, theirs, dtype, "cpu"):
            diff = (f"largest difference {np.abs(ours - theirs).max():.3g}"
                    if ours.shape == theirs.shape else f"shape {ours.shape}, expected {theirs.shape}")
            fail(f"your output differs from torch's scaled_dot_product_attention for q "
                 f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, mask "
                 f"{'given' if m is not None else 'None'}, {q.dtype}: {diff}.")
    return f"\u2714 matches torch.nn.functional.scaled_dot_product_attention on {n_trials} random shapes."


def _gradient_problem(seed):
    """Float64 q, k, v, a mask with no empty row, and a random probe defining loss = sum(out * probe)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    k = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 1]], dtype=torch.bool)
    probe = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    return q, k, v, mask, probe


def _reference_gradient(seed, eps=1e-6) -> dict:
    """Central finite differences of loss = sum(attention(q, k, v, mask) * probe), with torch's
    attention as the reference, computed in the grader's process: {"q": dL/dq, ...} as NumPy."""
    import torch
    import torch.nn.functional as F
    q, k, v, mask, probe = _gradient_problem(seed)
    inputs = {"q": q, "k": k, "v": v}

    def loss():
        return (F.scaled_dot_product_attention(inputs["q"], inputs["k"], inputs["v"], attn_mask=mask)
                * probe).sum().item()

    numeric = {}
    for label, tensor in inputs.items():
        flat, grad = tensor.view(-1), torch.zeros(tensor.numel(), dtype=torch.float64)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            grad[i] = (up - down) / (2 * eps)
        numeric[label] = grad.view(tensor.shape).numpy()
    return numeric


def _collect_gradient(checks, fn, seed):
    import torch
    q, k, v, mask, probe = _gradient_problem(seed)
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    if not callable(fn):
        return {"not_callable": type(fn).__name__}
    try:
        result = fn(q, k, v, mask)
    except Exception as exc:
        return describe_exception(exc)
    out = result[0] if isinstance(result, (tuple, list)) and len(result) == 2 else None
    if not isinstance(out, torch.Tensor):
        return {"structure": type(result).__name__}
    if not out.requires_grad:
        return {"connected": False}
    try:
        (out * probe).sum().backward()
    except Exception as exc:
        return {"backward": describe_exception(exc)}
    return {"connected": True, "grads": {n: None if t.grad is None else t.grad.detach().cpu().numpy()
                                         for n, t in (("q", q), ("k", k), ("v", v))}}


def _judge_gradient(checks, record, seed):
    name = "scaled_dot_product_attention"
    if "not_callable" in record:
        fail(f"{name} is {record['not_callable']}, not a function: run the cell that defines it.")
    if "raised" in record:
        judge_exception(record, f"{name}(q, k, v, mask) on float64 tensors that require grad", name)
    if "structure" in record:
        fail(f"{name} must return (out, weights) as tensors; got {record['structure']}.")
    if not record["connected"]:
        fail("the output is not connected to q, k and v (it has no grad_fn), so autograd can't "
             "differentiate it. Did you go through .numpy(), .item(), .detach() or torch.tensor(...)?")
    if "backward" in record:
        fail(f"backward() through your attention failed: {record['backward']['message']}\nHint: an "
             "in-place change (masked_fill_, +=) to a tensor autograd needs, or a detour through "
             "NumPy, breaks the graph.")
    numeric = _reference_gradient(seed)
    for label in ("q", "k", "v"):
        got = record["grads"].get(label)
        if got is None:
            fail(f"{label}.grad is None after backward(): the output is not connected to {label}. "
                 "Did you go through .numpy(), .item() or torch.tensor(...) on an intermediate value?")
        want = numeric[label]
        if got.shape != want.shape or not is_near(got, want, "finite_differences"):
            gap = np.abs(got - want).max() if got.shape == want.shape else float("nan")
            fail(f"the autograd gradient with respect to {label} differs from the finite-difference "
                 f"estimate by up to {gap:.3g}. Look for operations autograd can't see "
                 "(.detach(), .data, NumPy) or in-place edits.")
    return "\u2714 gradients with respect to q, k and v match central finite differences (float64)."


def _collect_module(checks, module_class):
    import torch
    records = []
    for case in checks.cases("single_head_attention"):
        x, w_q, w_k, w_v = (case.args[n] for n in ("x", "w_q", "w_k", "w_v"))
        d_model, d_k = w_q.shape
        record = {"shapes": {}}
        records.append(record)
        try:
            layer = module_class(d_model, d_k, w_v.shape[1])
            params = dict(layer.named_parameters())
        except Exception as exc:
            record.update(describe_exception(exc))
            break
        record["shapes"] = {n: list(p.shape) for n, p in params.items()}
        if any(n not in params or tuple(params[n].shape) != w.shape
               for n, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v))):
            break
        try:
            layer = layer.to(torch.float64 if x.dtype == np.float64 else torch.float32)
            with torch.no_grad():
                for n, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)):
                    params[n].copy_(torch.from_numpy(w))
            mask = case.args.get("mask")
            result = layer(torch.from_numpy(x.copy()), torch.from_numpy(mask) if mask is not None else None)
        except Exception as exc:
            record.update(describe_exception(exc))
            break
        record.update(plain_result(result, 2, checks.backend))
    return records


def _judge_module(checks, records):
    cases = checks.cases("single_head_attention")
    for case, record in judge_records(records, cases, "SingleHeadAttention"):
        missing = [n for n in ("w_q", "w_k", "w_v") if n not in record["shapes"]]
        if missing:
            fail(f"SingleHeadAttention has no parameters named {missing}: store the weights as "
                 "nn.Parameter attributes w_q, w_k, w_v so optimisers and state_dict see them.")
        for n in ("w_q", "w_k", "w_v"):
            want = case.args[n].shape
            if tuple(record["shapes"][n]) != want:
                fail(f"{n} has shape {tuple(record['shapes'][n])}, expected {want} "
                     "= (d_in, d_out) as in the rest of the course.")
        out, _ = outputs_of(record, ("out", "weights"), "SingleHeadAttention.forward",
                            checks.array_type_name)["out"]
        if out.shape != case.expected["out"].shape or not is_close(out, case.expected["out"], case.dtype, "cpu"):
            fail(f"SingleHeadAttention's output for {case.describe()} differs from the reference; "
                 "forward should return single_head_attention(x, self.w_q, self.w_k, self.w_v, mask).")
    return "\u2714 SingleHeadAttention reproduces the reference outputs with its own parameters."


# --------------------------------------------------------------------------
# The chapter
# --------------------------------------------------------------------------

NO_SCALE = ("the scores were not divided by sqrt(d_k): scale q·kᵀ by 1/sqrt(d_k), "
            "with d_k = q.shape[-1].")
SCALE_BY_D = "the scores were divided by d_k instead of sqrt(d_k)."
MASK_FLIPPED = ("the mask is used the wrong way round: True means 'may attend', so masked (False) "
                "keys must get weight 0.")
MASK_IGNORED = "the mask was ignored: keys where mask is False must get weight 0."

SOFTMAX = Function(
    "softmax", args=("x", "axis"), outputs=("out",),
    doc="softmax(x, axis=-1): shape, dtype, stability at 1e4, the axis argument.",
    visible=softmax_visible, hidden=softmax_hidden,
    mistakes=(Mistake("axis_other", "the result is a softmax over another axis than the one asked for: "
                      "normalise along `axis` (use it in max and sum, with keepdims=True).",
                      _softmax_other_axes),),
    diagnose=_diagnose_softmax)

CAUSAL_MASK = Function(
    "causal_mask", args=("T",), outputs=("mask",),
    doc="causal_mask(T): boolean (T, T), True on and below the diagonal.",
    visible=causal_visible, hidden=causal_hidden,
    mistakes=(
        Mistake("causal_upper", "True must be on and below the diagonal (query i may attend to keys 0..i); "
                "you built the upper triangle, which lets tokens see the future.",
                lambda sol, T: sol["causal_mask"](T).T.copy()),
        Mistake("causal_strict", "the diagonal must be True: a token may attend to itself.",
                lambda sol, T: sol["causal_mask"](T) & ~np.eye(T, dtype=bool)),
    ),
    validate=_causal_mask_is_boolean)

SCALED_DOT_PRODUCT_ATTENTION = Function(
    "scaled_dot_product_attention", args=("q", "k", "v", "mask"), outputs=("out", "weights"),
    doc="scaled_dot_product_attention(q, k, v, mask=None) -> (out, weights).",
    visible=attention_visible, hidden=attention_hidden,
    mistakes=(
        Mistake("no_scale", NO_SCALE, lambda sol, q, k, v, mask=None: _sdpa(sol, q * _root_d(q), k, v, mask)),
        Mistake("scale_by_d", SCALE_BY_D, lambda sol, q, k, v, mask=None: _sdpa(sol, q / _root_d(q), k, v, mask)),
        Mistake("mask_flipped", MASK_FLIPPED, _mask_flipped),
        Mistake("mask_ignored", MASK_IGNORED,
                lambda sol, q, k, v, mask=None: None if mask is None else _sdpa(sol, q, k, v)),
    ),
    diagnose=_diagnose_attention,
    uses=("softmax",))

SINGLE_HEAD_ATTENTION = Function(
    "single_head_attention", args=("x", "w_q", "w_k", "w_v", "mask"), outputs=("out", "weights"),
    doc="single_head_attention(x, w_q, w_k, w_v, mask=None) -> (out, weights).",
    visible=single_head_visible, hidden=single_head_hidden,
    mistakes=(
        Mistake("scale_d_model", "the scores were divided by sqrt(d_model) = sqrt(x.shape[-1]) instead "
                "of sqrt(d_k) = sqrt(w_q.shape[1]).", _scale_d_model),
        Mistake("weights_transposed", "the weights were used transposed: compute q = x @ w_q with w_q of "
                "shape (d_model, d_k); do not transpose the weight matrices.", _weights_transposed),
    ),
    diagnose=_diagnose_attention,
    # One bug costs once: a correct single head on top of an attention function with one
    # of these mistakes passes, and its message points at scaled_dot_product_attention.
    uses=("scaled_dot_product_attention",),
    inherited=(
        Inherited("scaled_dot_product_attention", "no_scale",
                  lambda sol, x, w_q, w_k, w_v, mask=None: _shead(sol, x, w_q * _root_dk(x, w_q), w_k, w_v, mask),
                  message=NO_SCALE),
        Inherited("scaled_dot_product_attention", "scale_by_d",
                  lambda sol, x, w_q, w_k, w_v, mask=None: _shead(sol, x, w_q / _root_dk(x, w_q), w_k, w_v, mask),
                  message=SCALE_BY_D),
        Inherited("scaled_dot_product_attention", "mask_flipped", _shead_mask_flipped, message=MASK_FLIPPED),
        Inherited("scaled_dot_product_attention", "mask_ignored",
                  lambda sol, x, w_q, w_k, w_v, mask=None: None if mask is None else _shead(sol, x, w_q, w_k, w_v),
                  message=MASK_IGNORED),
    ))

PADDING_MASK = Function(
    "padding_mask", args=("lengths", "T"), outputs=("mask",), tracks=("numpy",),
    doc="padding_mask(lengths, T) (stretch): boolean (B, 1, T), True where key j < lengths[b].",
    visible=padding_visible, hidden=padding_hidden,
    mistakes=(
        Mistake("one_too_many", "one padding key too many is allowed: positions 0 .. length-1 are real "
                "tokens, so key j is real when j < length.",
                lambda sol, lengths, T: sol["padding_mask"](np.minimum(lengths + 1, T), T)),
        Mistake("flipped", "True must mark the real tokens (they may be attended to) and False the padding.",
                lambda sol, lengths, T: ~sol["padding_mask"](lengths, T)),
    ),
    validate=_padding_mask_has_query_axis)

FUSED_SOFTMAX = Function(
    "fused_softmax", args=("x",), outputs=("out",), tracks=("cupy",),
    doc="fused_softmax(x): a custom-kernel softmax over the last axis of a 2-D float32 CuPy array.",
    visible=lambda rng: _fused_cases(rng, ((4, 6), (3, 1000))),
    hidden=lambda rng: _fused_cases(rng, ((1, 1), (7, 33), (2, 4097))),
    reference=lambda sol, x: sol["softmax"](x, axis=-1),
    diagnose=_diagnose_softmax)


# --------------------------------------------------------------------------
# Questions: numbers and choices about what the student observed
# --------------------------------------------------------------------------

def _cat_sleeps_head_1(sol, soundly=True):
    """The weights of head 1 (the first two features) on "Cat sleeps (soundly)", by the solution."""
    X = np.array([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]][:3 if soundly else 2])
    first_two = np.eye(4)[:, :2]
    return sol["single_head_attention"](X, first_two, first_two, first_two)[1]


READ_ROW_SLEEPS = "Rows are the tokens attending, columns the tokens attended to: read row 'sleeps', column 'Cat'."

QUESTIONS = (
    Question(
        "variance_growth", notebook="1_numpy", tracks=("numpy",), tolerance="estimate",
        doc="By what factor does the variance of q·k grow from d_k = 16 to d_k = 64 (your measurement)?",
        answer=lambda sol: sol["variance_growth"],
        mistakes=(Mistake("std_growth", "That is how much the standard deviation grows; the variance of a "
                          "sum of d_k independent unit-variance products grows like d_k itself.",
                          lambda sol: math.sqrt(sol["variance_growth"])),),
        hint="Measure Var(q·k) over many random pairs for each width and divide the two."),
    Question(
        "sleeps_cat_weight", notebook="1_numpy", tracks=("numpy",),
        doc="In 'Cat sleeps soundly', head 1: what weight does 'sleeps' give to 'Cat' (two decimals)?",
        answer=lambda sol: sol["sleeps_cat_weight"],
        mistakes=(
            Mistake("two_tokens", "That is the answer for the two-token sentence of the chapter page; with a "
                    "third token the same reasoning gives another number.",
                    lambda sol: _cat_sleeps_head_1(sol, soundly=False)[1, 0]),
            Mistake("cat_self", "That is the weight 'Cat' gives itself. " + READ_ROW_SLEEPS,
                    lambda sol: _cat_sleeps_head_1(sol)[0, 0]),
            Mistake("cat_to_sleeps", "That is what 'Cat' gives 'sleeps'. " + READ_ROW_SLEEPS,
                    lambda sol: _cat_sleeps_head_1(sol)[0, 1]),
        ),
        hint="In this head the query of 'sleeps' is zero: what are its scores, and what does the softmax "
             "make of equal scores?"),
    Question(
        "masked_first_weight", notebook="1_numpy", tracks=("numpy",),
        doc="Scores [2, 1, 0] with the last key masked: what weight does the first key get (two decimals)?",
        answer=lambda sol: sol["masked_first_weight"],
        mistakes=(Mistake("mask_after_softmax", "That is the first weight when the mask is applied after the "
                          "softmax (or not at all): the masked key's share is removed but the row is not "
                          "renormalised.", lambda sol: sol["softmax"](np.array([2.0, 1.0, 0.0]))[0]),),
        hint="Mask the scores, then take the softmax of what is left."),
    Question(
        "weights_mib", notebook="2_cupy", tracks=("cupy",),
        doc="How many MiB does one head's float32 weights array take for 8 sequences of 1,024 tokens?",
        answer=lambda sol: sol["weights_mib"],
        mistakes=(
            Mistake("float64", "That is for float64; these arrays are float32, 4 bytes a number.",
                    lambda sol: 2 * sol["weights_mib"]),
            Mistake("megabytes", "That is in MB (10^6 bytes); a MiB is 2^20 bytes.",
                    lambda sol: sol["weights_mib"] * 2**20 / 1e6),
            Mistake("one_sequence", "That is for one sequence; the batch holds 8.",
                    lambda sol: sol["weights_mib"] / 8),
        ),
        hint="The weights are (B, T, T); multiply the sizes and the bytes per number."),
    Question(
        "asnumpy_waits", notebook="2_cupy", tracks=("cupy",), kind="choice", choices=("yes", "no"),
        doc="Does cp.asnumpy(out) wait for the GPU to finish computing out? ('yes' or 'no')",
        answer=lambda sol: sol["asnumpy_waits"],
        hint="A result can only be copied to the host once it exists."),
    Question(
        "weight_grad_shape", notebook="3_pytorch", tracks=("torch",), kind="choice", choices=("a", "b"),
        doc="After backward() through out = x @ w, with x (3, 8) and w (8, 4): w.grad has shape (a) (8, 4) "
            "or (b) (3, 4)?",
        answer=lambda sol: sol["weight_grad_shape"],
        hint="A gradient says how the loss changes with each number of the tensor it belongs to."),
    Question(
        "head_parameter_count", notebook="3_pytorch", tracks=("torch",),
        doc="How many numbers does SingleHeadAttention(16, 4, 6) learn?",
        answer=lambda sol: sol["head_parameter_count"],
        mistakes=(Mistake("d_v_equals_d_k", "That counts w_v as (d_model, d_k); here d_v = 6, so w_v is (16, 6).",
                          lambda sol: 3 * 16 * 4),),
        hint="Add up numel() over the module's parameters: w_q, w_k and w_v."),
)

CHAPTER = Chapter(
    "ch01_single_head",
    functions=(SOFTMAX, CAUSAL_MASK, SCALED_DOT_PRODUCT_ATTENTION, SINGLE_HEAD_ATTENTION, PADDING_MASK,
               FUSED_SOFTMAX),
    questions=QUESTIONS,
    custom=(
        Custom("gpu_timer", "time_gpu(fn, *args, repeats=...) -> milliseconds per call, measured with CUDA events.",
               _collect_gpu_timer, _judge_gpu_timer, tracks=("cupy",), target="time_gpu"),
        Custom("matches_torch_sdpa", "The student's attention agrees with "
               "torch.nn.functional.scaled_dot_product_attention.",
               _collect_matches_torch_sdpa, _judge_matches_torch_sdpa, tracks=("torch",),
               options={"n_trials": 20, "seed": 0}),
        Custom("gradient", "Autograd gradients through the student's attention match central "
               "finite differences.", _collect_gradient, _judge_gradient, tracks=("torch",),
               options={"seed": 0}),
        Custom("module", "SingleHeadAttention(d_model, d_k, d_v) gives single_head_attention's results "
               "with its own weights.", _collect_module, _judge_module, tracks=("torch",),
               target="module_class"),
    ))

Checks = CHAPTER.checks_class()
