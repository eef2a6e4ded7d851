"""Chapter 1 checks: softmax, causal_mask, scaled_dot_product_attention,
single_head_attention, and the pieces the CuPy and PyTorch tracks add.

In a notebook::

    from autograder.ch01_single_head import Checks
    check = Checks("numpy")          # or "cupy", "torch"
    check.softmax(softmax)           # visible cases; prints a tick or fails with a diagnosis
    check.softmax(softmax, hidden=True)

Cases use shapes whose dimensions all differ (B, T_q, T_k, d_k, d_v), so a
transpose or a wrong axis shows up as a wrong shape or wrong values. Expected
outputs come from the stored references (``python -m autograder references``).
"""
import math
import re

import numpy as np

from .backends import ARRAY_TYPE_NAMES, TRACKS, Backend
from .checking import (check_dtype, check_shape, collect_calls, describe_exception, fail,
                       is_close, judge_exception, judge_records, matching_variant, outputs_of,
                       pass_message, plain_result, worst_mismatch)
from .references import load_cases

ASSIGNMENT = "ch01_single_head"
REFERENCE_NOTEBOOK = "1_numpy"

ARGS = {
    "softmax": ("x", "axis"),
    "causal_mask": ("T",),
    "scaled_dot_product_attention": ("q", "k", "v", "mask"),
    "single_head_attention": ("x", "w_q", "w_k", "w_v", "mask"),
}
OUTPUTS = {
    "softmax": ("out",),
    "causal_mask": ("mask",),
    "scaled_dot_product_attention": ("out", "weights"),
    "single_head_attention": ("out", "weights"),
}

# What each known mistake's stored outputs mean, in the student's words.
MISTAKES = {
    "axis_other": "the result is a softmax over another axis than the one asked for: normalise "
                  "along `axis` (use it in max and sum, with keepdims=True).",
    "causal_upper": "True must be on and below the diagonal (query i may attend to keys 0..i); "
                    "you built the upper triangle (np.triu), which lets tokens see the future.",
    "causal_strict": "the diagonal must be True: a token may attend to itself.",
    "no_scale": "the scores were not divided by sqrt(d_k): scale q·kᵀ by 1/sqrt(d_k), with d_k = q.shape[-1].",
    "scale_by_d": "the scores were divided by d_k instead of sqrt(d_k).",
    "mask_flipped": "the mask is used the wrong way round: True means 'may attend', so masked "
                    "(False) keys must get weight 0.",
    "mask_ignored": "the mask was ignored: keys where mask is False must get weight 0.",
    "weights_transposed": "the weights were used transposed: compute q = x @ w_q with w_q of shape "
                          "(d_model, d_k); do not transpose the weight matrices.",
    "scale_d_model": "the scores were divided by sqrt(d_model) = sqrt(x.shape[-1]) instead of "
                     "sqrt(d_k) = sqrt(w_q.shape[1]).",
}


# --------------------------------------------------------------------------
# Cases and reference outputs (run by `python -m autograder references`)
# --------------------------------------------------------------------------

def _normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _random_mask(rng, shape, empty_row=None):
    mask = rng.random(shape) < 0.6
    mask[..., 0] |= ~mask.any(axis=-1)  # every row keeps a key ...
    if empty_row is not None:
        mask[..., empty_row, :] = False  # ... except the one that tests the no-key rule
    return mask


def softmax_inputs():
    rng = np.random.default_rng(101)
    visible = [
        dict(x=_normal(rng, (3, 5), np.float64, 2.0), axis=-1),
        dict(x=_normal(rng, (2, 3, 4), np.float32), axis=-1),
        dict(x=rng.uniform(-1e4, 1e4, (4, 6)), axis=-1),             # large logits
        dict(x=_normal(rng, (5, 3), np.float64), axis=0),            # axis is honoured
    ]
    hidden = [
        dict(x=_normal(rng, (4, 7, 5), np.float64, 3.0), axis=1),
        dict(x=rng.uniform(-1e4, 1e4, (3, 6)).astype(np.float32), axis=-1),
        dict(x=_normal(rng, (2, 3, 5, 7), np.float32, 5.0), axis=-1),
        dict(x=_normal(rng, (6,), np.float64), axis=0),
        dict(x=np.array([[1.0, 1.0, 1.0, 1.0], [3.0, -2.0, 0.5, 1e4], [-1e4, 0.0, 2.0, 2.0]]), axis=-2),
    ]
    return visible, hidden


def attention_inputs():
    rng = np.random.default_rng(202)
    f64, f32 = np.float64, np.float32
    visible = [
        dict(q=_normal(rng, (2, 3, 8), f64), k=_normal(rng, (2, 5, 8), f64), v=_normal(rng, (2, 5, 6), f64)),
        dict(q=_normal(rng, (2, 3, 8), f32), k=_normal(rng, (2, 5, 8), f32), v=_normal(rng, (2, 5, 6), f32),
             mask=_random_mask(rng, (3, 5))),
        dict(q=_normal(rng, (1, 4, 8), f64), k=_normal(rng, (1, 4, 8), f64), v=_normal(rng, (1, 4, 3), f64),
             mask=np.tril(np.ones((4, 4), dtype=bool))),
        dict(q=_normal(rng, (2, 3, 8), f64), k=_normal(rng, (2, 5, 8), f64), v=_normal(rng, (2, 5, 6), f64),
             mask=_random_mask(rng, (3, 5), empty_row=1)),             # a query with no key
    ]
    hidden = [
        dict(q=_normal(rng, (2, 3, 4, 6), f64), k=_normal(rng, (2, 3, 7, 6), f64), v=_normal(rng, (2, 3, 7, 5), f64),
             mask=_random_mask(rng, (4, 7), empty_row=2)),
        dict(q=_normal(rng, (3, 5, 4), f32, 40.0), k=_normal(rng, (3, 6, 4), f32, 40.0),   # scores ~1e4
             v=_normal(rng, (3, 6, 2), f32)),
        dict(q=_normal(rng, (5, 3), f32), k=_normal(rng, (6, 3), f32), v=_normal(rng, (6, 4), f32),
             mask=_random_mask(rng, (5, 6))),                          # no batch axis
        dict(q=_normal(rng, (2, 9, 5), f64), k=_normal(rng, (2, 9, 5), f64), v=_normal(rng, (2, 9, 7), f64),
             mask=_random_mask(rng, (2, 1, 9), empty_row=None) & np.tril(np.ones((9, 9), dtype=bool))),
        dict(q=_normal(rng, (1, 2, 3), f32), k=_normal(rng, (1, 4, 3), f32), v=_normal(rng, (1, 4, 5), f32),
             mask=np.zeros((2, 4), dtype=bool)),                       # every query masked out
    ]
    return visible, hidden


def single_head_inputs():
    rng = np.random.default_rng(303)
    f64, f32 = np.float64, np.float32

    def case(shape_x, d_k, d_v, dtype, mask=None):
        d_model = shape_x[-1]
        w = lambda d_out: _normal(rng, (d_model, d_out), dtype, 1 / math.sqrt(d_model))
        c = dict(x=_normal(rng, shape_x, dtype), w_q=w(d_k), w_k=w(d_k), w_v=w(d_v))
        if mask is not None:
            c["mask"] = mask
        return c

    causal = lambda T: np.tril(np.ones((T, T), dtype=bool))
    visible = [
        case((2, 3, 7), 4, 5, f64),
        case((2, 6, 7), 4, 5, f32, causal(6)),
    ]
    hidden = [
        case((3, 5, 6), 6, 6, f64),                     # square weights: a transpose changes values, not shapes
        case((1, 8, 10), 4, 3, f32, causal(8)),
        case((4, 9), 6, 2, f64, causal(4)),             # no batch axis
        case((2, 5, 12), 3, 12, f32),
    ]
    return visible, hidden


def build_cases(sol) -> dict:
    """All chapter 1 cases with the reference solution's outputs.

    `sol` is the namespace of the reference solution notebook. Known mistakes
    are produced by the same solution on transformed inputs, so no second
    implementation of attention lives here.
    """
    cases = {}
    sm_vis, sm_hid = softmax_inputs()
    for split, inputs in (("visible", sm_vis), ("hidden", sm_hid)):
        items = []
        for c in inputs:
            x, axis = c["x"], c["axis"]
            own = axis % x.ndim
            variants = {f"variant.axis_other_{a}": {"out": sol["softmax"](x, axis=a)}
                        for a in range(x.ndim) if a != own}
            items.append({"args": {"x": x, "axis": np.int64(axis)},
                          "expected": {"out": sol["softmax"](x, axis=axis)},
                          "flags": {"large_logits": np.bool_(np.abs(x).max() > 700)},
                          **variants})
        cases[("softmax", split)] = items

    for split, sizes in (("visible", (4, 1)), ("hidden", (7, 13, 2))):
        items = []
        for T in sizes:
            mask = sol["causal_mask"](T)
            items.append({"args": {"T": np.int64(T)}, "expected": {"mask": mask},
                          "variant.causal_upper": {"mask": mask.T.copy()},
                          "variant.causal_strict": {"mask": mask & ~np.eye(T, dtype=bool)}})
        cases[("causal_mask", split)] = items

    at_vis, at_hid = attention_inputs()
    for split, inputs in (("visible", at_vis), ("hidden", at_hid)):
        items = []
        for c in inputs:
            q, k, v, mask = c["q"], c["k"], c["v"], c.get("mask")
            sdpa = lambda q_: dict(zip(("out", "weights"), sol["scaled_dot_product_attention"](q_, k, v, mask)))
            root_d = q.dtype.type(math.sqrt(q.shape[-1]))
            item = {"args": dict(c), "expected": sdpa(q),
                    "variant.no_scale": sdpa(q * root_d),
                    "variant.scale_by_d": sdpa(q / root_d),
                    "flags": {"large_logits": np.bool_(np.abs(q).max() * np.abs(k).max() > 700)}}
            if mask is not None:
                full = np.broadcast_to(mask, item["expected"]["weights"].shape)
                if full.any(axis=-1).all() and (~full).any(axis=-1).all():
                    # flipping is only a distinct mistake where it leaves every row a key
                    item["variant.mask_flipped"] = dict(zip(("out", "weights"),
                        sol["scaled_dot_product_attention"](q, k, v, ~mask)))
                item["variant.mask_ignored"] = dict(zip(("out", "weights"),
                    sol["scaled_dot_product_attention"](q, k, v)))
            items.append(item)
        cases[("scaled_dot_product_attention", split)] = items

    sh_vis, sh_hid = single_head_inputs()
    for split, inputs in (("visible", sh_vis), ("hidden", sh_hid)):
        items = []
        for c in inputs:
            x, w_q, w_k, w_v, mask = c["x"], c["w_q"], c["w_k"], c["w_v"], c.get("mask")
            shead = lambda *w: dict(zip(("out", "weights"), sol["single_head_attention"](x, *w, mask)))
            d_model, d_k = w_q.shape
            item = {"args": dict(c), "expected": shead(w_q, w_k, w_v)}
            if d_model != d_k:
                shrink = x.dtype.type(math.sqrt(d_k / d_model))
                item["variant.scale_d_model"] = shead(w_q * shrink, w_k, w_v)
            if w_q.shape[0] == w_q.shape[1] and w_v.shape[0] == w_v.shape[1]:
                item["variant.weights_transposed"] = shead(w_q.T.copy(), w_k.T.copy(), w_v.T.copy())
            items.append(item)
        cases[("single_head_attention", split)] = items

    for split, shapes in (("visible", ((4, 6), (3, 1000))), ("hidden", ((1, 1), (7, 33), (2, 4097)))):
        rng = np.random.default_rng(404 + len(shapes))
        items = []
        for shape in shapes:
            x = _normal(rng, shape, np.float32, 3.0)
            x[0, 0] = 1e4  # a large logit in every case
            items.append({"args": {"x": x}, "expected": {"out": sol["softmax"](x, axis=-1)}})
        cases[("fused_softmax", split)] = items
    return cases


# --------------------------------------------------------------------------
# The checks students and graders call
# --------------------------------------------------------------------------

class Checks:
    """Chapter 1 checks for one track: "numpy", "cupy" or "torch".

    Every check is ``collect`` (call the student's code, record plain data)
    followed by ``judge`` (compare with the references); see ``checking``.
    A notebook calls ``check.softmax(softmax)``, which does both; the grader
    calls ``collect`` in the sandbox and ``judge`` in its own process.
    """

    def __init__(self, track: str = "numpy", torch_device: str = "cpu"):
        if track not in TRACKS:
            raise ValueError(f"unknown track {track!r}: use one of {TRACKS}")
        self.track, self.torch_device = track, torch_device
        self.device = "gpu" if track == "cupy" or torch_device.startswith("cuda") else "cpu"
        self.array_type_name = ARRAY_TYPE_NAMES[track]
        self._backend = None

    @property
    def backend(self) -> Backend:
        # Created on first use: judging needs no array library, so a grader
        # without a GPU can judge what a CuPy notebook returned.
        if self._backend is None:
            self._backend = Backend(self.track, self.torch_device)
        return self._backend

    # -- the two halves ------------------------------------------------------
    def collect(self, method: str, target, **kwargs):
        """Plain data: what the student's ``target`` gives on this check's inputs."""
        if method in FUNCTION_CHECKS:
            return self._collect_function(method, target, kwargs.get("hidden", False))
        collector = getattr(self, f"_collect_{method}", None)
        if collector is None:
            raise ValueError(f"no check named {method!r}")
        return collector(target, **kwargs)

    def judge(self, method: str, collected, **kwargs) -> str:
        """The pass message; raises CheckFailure with a diagnosis otherwise."""
        if method in FUNCTION_CHECKS:
            return self._judge_function(method, collected, kwargs.get("hidden", False))
        return getattr(self, f"_judge_{method}")(collected, **kwargs)

    def _check(self, method: str, target, **kwargs):
        print(self.judge(method, self.collect(method, target, **kwargs), **kwargs))

    # -- chapter 1 functions -------------------------------------------------
    def softmax(self, fn, hidden=False):
        """softmax(x, axis=-1): shape, dtype, stability at 1e4, the axis argument."""
        self._check("softmax", fn, hidden=hidden)

    def causal_mask(self, fn, hidden=False):
        """causal_mask(T): boolean (T, T), True on and below the diagonal."""
        self._check("causal_mask", fn, hidden=hidden)

    def scaled_dot_product_attention(self, fn, hidden=False):
        """scaled_dot_product_attention(q, k, v, mask=None) -> (out, weights)."""
        self._check("scaled_dot_product_attention", fn, hidden=hidden)

    def single_head_attention(self, fn, hidden=False):
        """single_head_attention(x, w_q, w_k, w_v, mask=None) -> (out, weights)."""
        self._check("single_head_attention", fn, hidden=hidden)

    def fused_softmax(self, fn, hidden=False):
        """fused_softmax(x): a custom-kernel softmax over the last axis of a 2-D float32 CuPy array."""
        self._check("fused_softmax", fn, hidden=hidden)

    def gpu_timer(self, time_gpu):
        """time_gpu(fn, *args, repeats=...) -> milliseconds per call, measured with CUDA events."""
        self._check("gpu_timer", time_gpu)

    def matches_torch_sdpa(self, fn, n_trials=20, seed=0):
        """The student's attention agrees with torch.nn.functional.scaled_dot_product_attention."""
        self._check("matches_torch_sdpa", fn, n_trials=n_trials, seed=seed)

    def gradient(self, fn, seed=0):
        """Autograd gradients through the student's attention match central finite differences."""
        self._check("gradient", fn, seed=seed)

    def module(self, module_class):
        """SingleHeadAttention(d_model, d_k, d_v) gives single_head_attention's results with its own weights."""
        self._check("module", module_class)

    # -- functions called on stored cases -------------------------------------
    def _cases(self, function, hidden):
        return load_cases(ASSIGNMENT)[(function, "hidden" if hidden else "visible")]

    def _positional(self, case, names):
        args = []
        for name in names:
            if name not in case.args:
                continue  # optional argument not given in this case (mask=None)
            value = case.args[name]
            args.append(int(value) if value.ndim == 0 else self.backend.asarray(value))
        return args

    def _collect_function(self, function, fn, hidden):
        cases = self._cases(function, hidden)
        names = ARGS.get(function, tuple(cases[0].args))
        return collect_calls(fn, cases, lambda case: self._positional(case, names),
                             len(OUTPUTS[function]), self.backend)

    def _judge_function(self, function, records, hidden):
        cases = self._cases(function, hidden)
        for case, record in judge_records(records, cases, function):
            got = outputs_of(record, OUTPUTS[function], case.describe(), function, self.array_type_name)
            if function == "causal_mask" and got["mask"][1] != "bool":
                fail(f"causal_mask({int(case.args['T'])}) has dtype {got['mask'][1]}; "
                     "return booleans (True = may attend), e.g. with dtype=bool.")
            self._compare(got, case, DIAGNOSES.get(function))
        return pass_message(function, cases, hidden)

    def _compare(self, got, case, diagnose):
        device = self.device
        for name, want in case.expected.items():
            check_shape(got[name][0], want, name, case)
        for name, want in case.expected.items():
            check_dtype(got[name][1], want, name, case)
        arrays = {name: value for name, (value, _) in got.items()}
        if all(is_close(arrays[n], w, case.dtype, device) for n, w in case.expected.items()):
            return
        label = matching_variant(got, case, device)
        if label is not None:
            fail(f"{case.describe()}: {mistake_message(label)}")
        if diagnose is not None:
            diagnose(arrays, case)
        name = next(n for n, w in case.expected.items() if not is_close(arrays[n], w, case.dtype, device))
        fail(f"{name} of {case.describe()} differs from the reference output; "
             f"{worst_mismatch(arrays[name], case.expected[name])}.")

    # -- CuPy track: the timer ------------------------------------------------
    def _collect_gpu_timer(self, time_gpu):
        if not callable(time_gpu):
            return {"not_callable": type(time_gpu).__name__}
        cp = self.backend.xp
        small, big = cp.ones((64, 64), cp.float32), cp.ones((2048, 2048), cp.float32)
        try:
            times = [time_gpu(cp.matmul, a, a, repeats=5) for a in (small, big)]
        except Exception as exc:
            return describe_exception(exc)
        return {"types": [type(t).__name__ for t in times],
                "ms": [float(t) if isinstance(t, float) else None for t in times]}

    def _judge_gpu_timer(self, record):
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

    # -- PyTorch track --------------------------------------------------------
    def _collect_matches_torch_sdpa(self, fn, n_trials=20, seed=0):
        records = []
        for q, k, v, m in _sdpa_trials(n_trials, seed):
            args = (q, k, v, m) if m is not None else (q, k, v)
            records.append(collect_calls(fn, [None], lambda _: args, 2, self.backend)[0])
            if "values" not in records[-1]:
                break
        return records

    def _judge_matches_torch_sdpa(self, records, n_trials=20, seed=0):
        import torch
        import torch.nn.functional as F
        name = "scaled_dot_product_attention"
        trials = list(_sdpa_trials(n_trials, seed))
        for (q, k, v, m), record in judge_records(records, trials, name):
            ours, _ = outputs_of(record, ("out", "weights"), name, name, self.array_type_name)["out"]
            theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=m).numpy()
            rtol, atol = (2e-5, 2e-6) if q.dtype == torch.float32 else (1e-9, 1e-12)
            if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=rtol, atol=atol):
                diff = (f"largest difference {np.abs(ours - theirs).max():.3g}"
                        if ours.shape == theirs.shape else f"shape {ours.shape}, expected {theirs.shape}")
                fail(f"your output differs from torch's scaled_dot_product_attention for q "
                     f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, mask "
                     f"{'given' if m is not None else 'None'}, {q.dtype}: {diff}.")
        return f"\u2714 matches torch.nn.functional.scaled_dot_product_attention on {n_trials} random shapes."

    def _collect_gradient(self, fn, seed=0):
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

    def _judge_gradient(self, record, seed=0):
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
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-7):
                gap = np.abs(got - want).max() if got.shape == want.shape else float("nan")
                fail(f"the autograd gradient with respect to {label} differs from the finite-difference "
                     f"estimate by up to {gap:.3g}. Look for operations autograd can't see "
                     "(.detach(), .data, NumPy) or in-place edits.")
        return "\u2714 gradients with respect to q, k and v match central finite differences (float64)."

    def _collect_module(self, module_class):
        import torch
        records = []
        for case in self._cases("single_head_attention", hidden=False):
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
            record.update(plain_result(result, 2, self.backend))
        return records

    def _judge_module(self, records):
        cases = self._cases("single_head_attention", hidden=False)
        for case, record in judge_records(records, cases, "SingleHeadAttention"):
            d_model, d_k = case.args["w_q"].shape
            missing = [n for n in ("w_q", "w_k", "w_v") if n not in record["shapes"]]
            if missing:
                fail(f"SingleHeadAttention has no parameters named {missing}: store the weights as "
                     "nn.Parameter attributes w_q, w_k, w_v so optimisers and state_dict see them.")
            for n in ("w_q", "w_k", "w_v"):
                want = case.args[n].shape
                if tuple(record["shapes"][n]) != want:
                    fail(f"{n} has shape {tuple(record['shapes'][n])}, expected {want} "
                         "= (d_in, d_out) as in the rest of the course.")
            out, _ = outputs_of(record, ("out", "weights"), case.describe(), "SingleHeadAttention.forward",
                                self.array_type_name)["out"]
            if out.shape != case.expected["out"].shape or not is_close(out, case.expected["out"], case.dtype, "cpu"):
                fail(f"SingleHeadAttention's output for {case.describe()} differs from the reference; "
                     "forward should return single_head_attention(x, self.w_q, self.w_k, self.w_v, mask).")
        return "\u2714 SingleHeadAttention reproduces the reference outputs with its own parameters."


FUNCTION_CHECKS = ("softmax", "causal_mask", "scaled_dot_product_attention", "single_head_attention",
                   "fused_softmax")


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
        mask[:, 0] = True  # torch's own function gives NaN for a row with no key
        for m in ([None, mask] if trial % 3 else [mask]):
            yield q, k, v, m


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


def mistake_message(label: str) -> str:
    """The message for a stored variant; `axis_other_2` and the like share one."""
    return MISTAKES[re.sub(r"_\d+$", "", label)]


def _diagnose_softmax(got, case):
    out = got["out"]
    if not np.isfinite(out).all():
        if case.flags.get("large_logits", True):
            fail(f"{case.describe()} gave NaN or inf: with logits near 1e4, exp overflows. Subtract "
                 "the maximum along the axis before exp (softmax(x) = softmax(x - max)).")
        fail(f"{case.describe()} gave NaN or inf values.")
    axis = int(case.args["axis"]) if "axis" in case.args else -1
    sums = out.sum(axis=axis)
    if not np.allclose(sums, 1, atol=1e-4):
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
        if case.flags.get("large_logits"):
            fail(f"{case.describe()} gave NaN or inf with scores around 1e4: use a numerically stable "
                 "softmax (subtract the row maximum before exp).")
        fail(f"{case.describe()} gave NaN or inf values.")
    if no_key.any() and np.abs(weights[no_key]).max() > 1e-6:
        fail(f"{case.describe()}: a query row whose keys are all masked got non-zero weights. It must get "
             "all-zero weights and a zero output (filling masked scores with -1e9 alone makes such a row uniform).")
    if np.abs(weights[~allowed]).max(initial=0) > 1e-6:
        fail(f"{case.describe()}: keys where mask is False got non-zero weight. True means 'may attend'; "
             "set the masked scores to -inf (or a very negative number) before the softmax.")
    row_sums = weights.sum(axis=-1)[~no_key]
    if not np.allclose(row_sums, 1, atol=1e-4):
        if mask is not None and (row_sums < 1 - 1e-4).any():
            fail(f"{case.describe()}: masked keys have weight 0 but the rows sum to less than 1 "
                 f"(e.g. {row_sums.min():.3f}): was the mask applied after the softmax? Mask the scores "
                 "before the softmax so the remaining weights renormalise.")
        fail(f"{case.describe()}: rows of weights sum to {row_sums.ravel()[:3]}..., not 1: "
             "softmax over the wrong axis? The softmax runs over the keys, axis -1.")
    if is_close(weights, want, case.dtype, "gpu") and not is_close(got["out"], case.expected["out"], case.dtype, "gpu"):
        fail(f"{case.describe()}: the weights are right but out is not: out is weights @ v.")


DIAGNOSES = {"softmax": _diagnose_softmax, "fused_softmax": _diagnose_softmax,
             "scaled_dot_product_attention": _diagnose_attention,
             "single_head_attention": _diagnose_attention}
