"""How fast is a multi-head attention layer written with NumPy, next to PyTorch's?

Run ``python -m benchmarks.mha`` (``--help`` for the options). In one process,
on the same inputs and the same weights, it times:

- ``loop``: the course's ``multi_head_attention_loop`` (chapter 3's solution
  notebook), a Python loop over heads;
- ``batched``: the course's ``multi_head_attention`` (chapter 4's solution
  notebook), heads as an array axis;
- ``fused``: :func:`fused_multi_head_attention` below, the fastest NumPy form
  we know, with its weights fused once before timing (as ``nn.MultiheadAttention``
  stores ``in_proj_weight``), and ``fused (fuse per call)`` with the fusing inside
  the timed call;
- ``torch nn.MultiheadAttention`` (``batch_first=True``, ``need_weights=False``);
- ``torch SDPA``: one in-projection matmul, a reshape,
  ``F.scaled_dot_product_attention``, the output projection. The baseline.

Threads are pinned (NumPy's BLAS through threadpoolctl, torch through
``torch.set_num_threads``), every form is warmed up, then the forms run in
interleaved rounds (the order rotates each round), so that the machine's noise
hits all of them alike. A form's time is its best round; the table also gives
the median. Compare ratios, not absolute times: the machine is shared.

The course forms return the attention weights too (the course's API); the torch
forms do not. That is the point of the comparison: what a straightforward
NumPy layer costs against a library's, for the same output.
"""
from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from benchmarks import cli
from benchmarks.solutions import REPO, MissingSolution, load_course  # noqa: F401 - MissingSolution is part of this API

# name in the table -> (assignment, notebook, function) of the solution notebook that defines it
COURSE_FORMS = {
    "loop (ch03 solution)": ("ch03_split_heads", "1_numpy", "multi_head_attention_loop"),
    "batched (ch04 solution)": ("ch04_concat_and_wo", "1_numpy", "multi_head_attention"),
}
BASELINE = "torch SDPA"


# --------------------------------------------------------------------------- the fastest NumPy form


def _xp(x):
    """NumPy, or CuPy for a CuPy array: the fused form runs on either."""
    cupy = sys.modules.get("cupy")
    return cupy.get_array_module(x) if cupy is not None else np


def fuse_params(params: dict, n_heads: int) -> dict:
    """The layer's weights laid out for :func:`fused_multi_head_attention`; do it once per layer.

    ``w_qkv = [w_q / sqrt(d_k) | w_k | w_v]`` (one matrix, so the three
    projections are one matrix product) with the 1/sqrt(d_k) scale folded into
    the query weights and bias (so the T x T scores are never scaled), all in
    the weights' own dtype.
    """
    xp = _xp(params["w_q"])
    dtype = params["w_q"].dtype
    width = params["w_q"].shape[1]
    if width % n_heads:
        raise ValueError(f"w_q has {width} columns, not a multiple of n_heads={n_heads}")
    scale = dtype.type(1.0 / math.sqrt(width // n_heads))  # a scalar of the weights' dtype: no float64 promotion

    def bias(name, size):
        b = params.get(name)
        return xp.zeros(size, dtype) if b is None else xp.asarray(b, dtype)

    return {
        "fused": True, "n_heads": n_heads,
        "w_qkv": xp.ascontiguousarray(xp.concatenate([params["w_q"] * scale, params["w_k"], params["w_v"]], axis=1)),
        "b_qkv": xp.concatenate([bias("b_q", width) * scale, bias("b_k", width), bias("b_v", width)]),
        "w_o": xp.ascontiguousarray(params["w_o"]),
        "b_o": bias("b_o", params["w_o"].shape[1]),
    }


def fused_multi_head_attention(x, params, n_heads, mask=None):
    """The multi-head layer as few, large, contiguous operations: ``(out, weights)`` as the course's API.

    ``params`` is the course's dict, or what :func:`fuse_params` made of it (then
    nothing is fused per call). One matrix product gives Q, K and V for every
    head; one copy makes them contiguous ``(3, B, H, T, d_k)`` so that the batched
    products run BLAS on contiguous blocks; the softmax works in place on the
    scores; everything stays in ``x``'s dtype. A query with no allowed key gets
    zero weights and a zero output (before ``b_o``), as the course requires.
    """
    if not params.get("fused"):
        params = fuse_params(params, n_heads)
    elif params["n_heads"] != n_heads:
        raise ValueError(f"params were fused for {params['n_heads']} heads, not {n_heads}")
    xp = _xp(x)
    B, T, d_model = x.shape
    width = params["w_o"].shape[0]
    d_k = width // n_heads

    qkv = x.reshape(B * T, d_model) @ params["w_qkv"]
    qkv += params["b_qkv"]
    qkv = xp.ascontiguousarray(qkv.reshape(B, T, 3, n_heads, d_k).transpose(2, 0, 3, 1, 4))
    q, k, v = qkv[0], qkv[1], qkv[2]

    scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, T), already scaled through w_q
    if mask is None:
        row_max = scores.max(axis=-1, keepdims=True)
    else:
        blocked = ~xp.broadcast_to(xp.asarray(mask, dtype=bool), (B, T, T))[:, None]  # (B, 1, T, T)
        xp.copyto(scores, scores.dtype.type(-xp.inf), where=blocked)
        row_max = scores.max(axis=-1, keepdims=True)
        row_max[xp.isinf(row_max)] = 0  # a row with no allowed key: exp(-inf) = 0 everywhere, no NaN
    scores -= row_max
    xp.exp(scores, out=scores)
    total = scores.sum(axis=-1, keepdims=True)
    if mask is not None:
        total[total == 0] = 1  # all-zero row stays zero
    xp.reciprocal(total, out=total)
    scores *= total  # now the weights

    heads = scores @ v  # (B, H, T, d_k)
    out = heads.transpose(0, 2, 1, 3).reshape(B * T, width) @ params["w_o"]
    out += params["b_o"]
    return out.reshape(B, T, -1), scores


# --------------------------------------------------------------------------- inputs and a reference


def make_inputs(batch=8, seq=256, d_model=512, n_heads=8, padding=False, seed=0, dtype=np.float32):
    """``(x, params, mask)``: random float32 inputs, a square layer with biases, optionally a key-padding mask.

    The padding mask ``(B, 1, T)`` gives example b ``T - b`` real tokens (at least one).
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)

    def normal(shape, std):
        return (rng.standard_normal(shape, dtype=np.float64) * std).astype(dtype)

    params = {name: normal((d_model, d_model), 1 / math.sqrt(d_model)) for name in ("w_q", "w_k", "w_v", "w_o")}
    params.update({name: normal((d_model,), 0.1) for name in ("b_q", "b_k", "b_v", "b_o")})
    x = normal((batch, seq, d_model), 1.0)
    mask = None
    if padding:
        lengths = np.maximum(seq - np.arange(batch), 1)
        mask = (np.arange(seq) < lengths[:, None])[:, None, :]
    return x, params, mask


def reference_multi_head_attention(x, params, n_heads, mask=None):
    """The layer in float64, written plainly: what every form is checked against."""
    x = np.asarray(x, np.float64)
    p = {k: np.asarray(v, np.float64) for k, v in params.items() if v is not None}
    B, T, _ = x.shape
    d_k = p["w_q"].shape[1] // n_heads

    def heads(name):
        y = x @ p["w_" + name] + p.get("b_" + name, 0.0)
        return y.reshape(B, T, n_heads, d_k).transpose(0, 2, 1, 3)

    scores = heads("q") @ heads("k").transpose(0, 1, 3, 2) / math.sqrt(d_k)
    if mask is not None:
        scores = np.where(np.broadcast_to(mask, (B, T, T))[:, None], scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - np.where(np.isinf(row_max), 0.0, row_max))
    total = e.sum(axis=-1, keepdims=True)
    weights = e / np.where(total == 0, 1.0, total)
    out = (weights @ heads("v")).transpose(0, 2, 1, 3).reshape(B, T, -1) @ p["w_o"] + p.get("b_o", 0.0)
    return out, weights


# --------------------------------------------------------------------------- the forms timed


@dataclass
class Form:
    """One implementation, bound to its inputs: ``run()`` is what is timed, ``output()`` gives ``out`` as NumPy."""
    name: str
    run: Callable[[], object]
    to_numpy: Callable[[object], np.ndarray]
    note: str = ""

    def output(self) -> np.ndarray:
        return self.to_numpy(self.run())


def course_forms(solutions_dir: Optional[Path] = None, table: Optional[dict] = None,
                 definitions_only: bool = True) -> dict:
    """The course's own functions, read from the solution notebooks; a clear error when one is missing.

    ``table`` maps a label to ``(assignment, notebook, function)`` (default :data:`COURSE_FORMS`); see
    :func:`benchmarks.solutions.load_course`, which every benchmark loads through."""
    return load_course(COURSE_FORMS if table is None else table, solutions_dir, definitions_only)


def torch_weights(params: dict, device="cpu"):
    """The layer's weights in PyTorch's layout: ``nn.Linear`` stores ``(out, in)`` and computes ``x @ W.T``."""
    import torch

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    w_in = np.concatenate([params["w_q"], params["w_k"], params["w_v"]], axis=1).T  # (3*width, d_model)
    b_in = np.concatenate([params["b_q"], params["b_k"], params["b_v"]])
    return {"w_in": t(w_in), "b_in": t(b_in), "w_o": t(params["w_o"].T), "b_o": t(params["b_o"])}


def torch_mha_module(params: dict, n_heads: int, device="cpu"):
    """``nn.MultiheadAttention`` holding the same weights, in eval mode."""
    import torch
    d_model, width = params["w_q"].shape
    if width != d_model:
        raise ValueError("nn.MultiheadAttention needs n_heads * d_k == d_model")
    w = torch_weights(params, device)
    module = torch.nn.MultiheadAttention(d_model, n_heads, bias=True, batch_first=True,
                                         device=device, dtype=w["w_in"].dtype)
    with torch.no_grad():
        module.in_proj_weight.copy_(w["w_in"])
        module.in_proj_bias.copy_(w["b_in"])
        module.out_proj.weight.copy_(w["w_o"])
        module.out_proj.bias.copy_(w["b_o"])
    return module.eval()


def torch_sdpa_attention(x, w: dict, n_heads: int, attn_mask=None):
    """In-projection as one matmul, split into heads, ``F.scaled_dot_product_attention``, output projection."""
    import torch.nn.functional as F
    B, T, _ = x.shape
    width = w["w_o"].shape[1]
    qkv = F.linear(x, w["w_in"], w["b_in"]).view(B, T, 3, n_heads, width // n_heads).permute(2, 0, 3, 1, 4)
    heads = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
    return F.linear(heads.transpose(1, 2).reshape(B, T, width), w["w_o"], w["b_o"])


def build_forms(x, params, n_heads, mask=None, course: Optional[dict] = None) -> list:
    """Every form timed, bound to the same inputs and weights, the baseline last.

    ``course`` maps table names to the course's functions (default: read from the
    solution notebooks by :func:`course_forms`).
    """
    import torch
    course = course_forms() if course is None else course
    forms = [Form(label, (lambda f=f: f(x, params, n_heads, mask)), lambda r: r[0]) for label, f in course.items()]

    fused = fuse_params(params, n_heads)
    forms.append(Form("fused NumPy", lambda: fused_multi_head_attention(x, fused, n_heads, mask), lambda r: r[0],
                      "weights fused once, outside the timed call"))
    forms.append(Form("fused NumPy (fuse per call)", lambda: fused_multi_head_attention(x, params, n_heads, mask),
                      lambda r: r[0], "concatenation and scaling of the weights inside the timed call"))

    xt = torch.from_numpy(x)
    module = torch_mha_module(params, n_heads)
    if mask is not None and np.shape(mask) != (x.shape[0], 1, x.shape[1]):
        raise ValueError(f"mask of shape {np.shape(mask)}: the torch forms here take a key-padding mask (B, 1, T)")
    # nn.MultiheadAttention's key_padding_mask means "ignore" where True: the opposite of the course's mask.
    padding = None if mask is None else ~torch.from_numpy(np.ascontiguousarray(mask[:, 0]))

    def run_module():
        with torch.inference_mode():
            return module(xt, xt, xt, key_padding_mask=padding, need_weights=False)[0]

    w = torch_weights(params)
    sdpa_mask = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))[:, None]  # (B, 1, 1, T)

    def run_sdpa():
        with torch.inference_mode():
            return torch_sdpa_attention(xt, w, n_heads, sdpa_mask)

    forms.append(Form("torch nn.MultiheadAttention", run_module, lambda r: r.numpy()))
    forms.append(Form(BASELINE, run_sdpa, lambda r: r.numpy()))
    return forms


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    name: str
    times: list = field(default_factory=list)
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_forms(forms: list, repeats: int = 15, warmup: int = 2, clock=time.perf_counter, sync=None) -> list:
    """Best-of-``repeats`` times, in interleaved rounds whose order rotates.

    ``sync`` (for a GPU) is called before each clock reading so the clock sees finished work.
    """
    sync = sync or (lambda: None)
    for form in forms:
        for _ in range(warmup):
            form.run()
    sync()
    timings = {f.name: Timing(f.name, note=f.note) for f in forms}
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            shift = r % len(forms)
            for form in forms[shift:] + forms[:shift]:
                start = clock()
                form.run()
                sync()
                timings[form.name].times.append(clock() - start)
    finally:
        gc.enable()
    return [timings[f.name] for f in forms]


def blas_info() -> list:
    """What threadpoolctl sees: which BLAS / OpenMP libraries, their kernels and threads."""
    from threadpoolctl import threadpool_info
    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer", "prefix")
    return [{k: lib[k] for k in keep if k in lib} for lib in threadpool_info()]


def environment() -> dict:
    import torch
    return {
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "machine": platform.machine(), "processor": cpu_name(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)"),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_table(timings: list, baseline: str = BASELINE) -> str:
    base = next(t for t in timings if t.name == baseline).best
    width = max(len(t.name) for t in timings)
    lines = [f"{'form':<{width}}  {'best ms':>9}  {'median ms':>9}  {'x ' + baseline:>14}",
             "-" * (width + 40)]
    for t in timings:
        lines.append(f"{t.name:<{width}}  {t.best * 1e3:9.2f}  {t.median * 1e3:9.2f}  {t.best / base:13.2f}x")
    return "\n".join(lines)


RESULTS = REPO / "benchmarks" / "results" / "mha_cpu.json"  # the run the chapter pages quote


def markdown_table(result: dict) -> str:
    """A ``--json`` result as the Markdown the chapter pages quote: the table, then what was measured where.

    Pages paste this text verbatim, and a test compares it with :data:`RESULTS`,
    so no number on a page is typed by hand.
    """
    config, env = result["config"], result["environment"]
    blas = next((lib for lib in result["threadpoolctl"] if lib.get("user_api") == "blas"), {})
    rows = ["| form | best ms | × torch SDPA |", "| --- | ---: | ---: |"]
    rows += [f"| {t['name']} | {t['best_ms']:.1f} | {t['ratio_to_baseline']:.2f}× |" for t in result["cpu"]]
    mask = "a key-padding mask" if config["padding"] else "no mask"
    caption = (f"B = {config['batch']}, T = {config['seq']}, d_model = {config['d_model']}, H = {config['heads']}, "
               f"float32, {mask}; {config['threads']} threads; best of {config['repeats']} interleaved rounds. "
               f"Measured with `python -m benchmarks.mha` on {env['processor']} ({env['machine']}), NumPy "
               f"{env['numpy']} with {blas.get('internal_api', 'its BLAS')} {blas.get('version', '')} "
               f"(kernel {blas.get('architecture', 'unknown')}), torch {env['torch']}.")
    return "\n".join(rows) + "\n\n" + caption


def check_outputs(forms: list, x, params, n_heads, mask=None, rtol=2e-4, atol=2e-5) -> dict:
    """Max abs error of each form's ``out`` against the float64 reference; raises if one is off."""
    expected, _ = reference_multi_head_attention(x, params, n_heads, mask)
    errors = {}
    for form in forms:
        out = np.asarray(form.output())
        if out.shape != expected.shape:
            raise AssertionError(f"{form.name}: out has shape {out.shape}, expected {expected.shape}")
        if out.dtype != np.float32 and np.asarray(x).dtype == np.float32:
            raise AssertionError(f"{form.name}: float32 in, {out.dtype} out")
        errors[form.name] = float(np.max(np.abs(out - expected)))
        if not np.allclose(out, expected, rtol=rtol, atol=atol):
            raise AssertionError(f"{form.name}: out differs from the float64 reference by {errors[form.name]:.2e}")
    return errors


# --------------------------------------------------------------------------- GPU (CuPy and torch on CUDA)


def gpu_forms(x, params, n_heads, mask=None):
    """The fused form on CuPy, and the two torch forms on CUDA, with the same weights (needs a CUDA GPU)."""
    import cupy
    import torch
    if not cupy.cuda.is_available() or not torch.cuda.is_available():
        raise RuntimeError("--gpu needs a CUDA GPU visible to both CuPy and torch")
    xg = cupy.asarray(x)
    pg = {k: cupy.asarray(v) for k, v in params.items()}
    mg = None if mask is None else cupy.asarray(mask)
    fused = fuse_params(pg, n_heads)
    xt = torch.from_numpy(x).cuda()
    module = torch_mha_module(params, n_heads, device="cuda")
    w = torch_weights(params, device="cuda")
    padding = None if mask is None else ~torch.from_numpy(np.ascontiguousarray(mask[:, 0])).cuda()
    sdpa_mask = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask)).cuda()[:, None]

    def run_module():
        with torch.inference_mode():
            return module(xt, xt, xt, key_padding_mask=padding, need_weights=False)[0]

    def run_sdpa():
        with torch.inference_mode():
            return torch_sdpa_attention(xt, w, n_heads, sdpa_mask)

    return [
        Form("fused CuPy", lambda: fused_multi_head_attention(xg, fused, n_heads, mg), lambda r: cupy.asnumpy(r[0])),
        Form("torch nn.MultiheadAttention (CUDA)", run_module, lambda r: r.cpu().numpy()),
        Form(BASELINE + " (CUDA)", run_sdpa, lambda r: r.cpu().numpy()),
    ]


def time_gpu_forms(forms: list, repeats: int, warmup: int) -> list:
    """Like :func:`time_forms`, timed with CUDA events on the current streams (device time, not host time)."""
    import cupy
    import torch
    timings = {f.name: Timing(f.name) for f in forms}
    for form in forms:
        for _ in range(warmup):
            form.run()
    cupy.cuda.Device().synchronize()
    torch.cuda.synchronize()
    for r in range(repeats):
        shift = r % len(forms)
        for form in forms[shift:] + forms[:shift]:
            if "torch" in form.name:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                form.run()
                end.record()
                end.synchronize()
                ms = start.elapsed_time(end)
            else:
                start, end = cupy.cuda.Event(), cupy.cuda.Event()
                start.record()
                form.run()
                end.record()
                end.synchronize()
                ms = cupy.cuda.get_elapsed_time(start, end)
            timings[form.name].times.append(ms / 1e3)
    return [timings[f.name] for f in forms]


# --------------------------------------------------------------------------- command line


def parse_args(argv=None):
    p = cli.parser("mha", __doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="BLAS and torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds; a form's time is its best round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--padding", action="store_true", help="time with a key-padding mask (B, 1, T)")
    p.add_argument("--gpu", action="store_true", help="also time CuPy and torch on CUDA (needs a GPU and CuPy)")
    cli.add_json_option(p)
    return p.parse_args(argv)


@cli.reports_missing_solution("mha")
def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    x, params, mask = make_inputs(args.batch, args.seq, args.d_model, args.heads, padding=args.padding)
    course = course_forms()
    with threadpool_limits(limits=args.threads):
        forms = build_forms(x, params, args.heads, mask, course)
        errors = check_outputs(forms, x, params, args.heads, mask)
        timings = time_forms(forms, args.repeats, args.warmup)
        info, env = blas_info(), environment()

    shape = f"B={args.batch} T={args.seq} d_model={args.d_model} H={args.heads} float32"
    print(f"Multi-head attention layer, {shape}, mask: {'key padding' if args.padding else 'none'}; "
          f"best of {args.repeats} interleaved rounds after {args.warmup} warm-up calls each")
    print(format_table(timings))
    print("\nfused NumPy: weights fused once outside the timed call; '(fuse per call)' fuses inside it.")
    print("Max abs error of out against a float64 reference: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    print(f"\nnumpy {env['numpy']}, torch {env['torch']} ({env['torch_threads']} threads), {env['processor']}")
    print(f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}; "
          f"load average after the run (1, 5, 15 min): {env['load_average']} on {os.cpu_count()} CPUs")
    for lib in info:
        print("threadpoolctl: " + ", ".join(f"{k}={v}" for k, v in lib.items()))

    result = {"config": vars(args), "environment": env, "threadpoolctl": info, "errors": errors,
              "cpu": [{"name": t.name, "best_ms": t.best * 1e3, "median_ms": t.median * 1e3,
                       "ratio_to_baseline": t.best / timings[-1].best, "note": t.note} for t in timings]}
    if args.gpu:
        gforms = gpu_forms(x, params, args.heads, mask)
        result["gpu_errors"] = check_outputs(gforms, x, params, args.heads, mask)
        gtimings = time_gpu_forms(gforms, args.repeats, args.warmup)
        print("\nGPU (CUDA events, device time):")
        print(format_table(gtimings, baseline=BASELINE + " (CUDA)"))
        result["gpu"] = [{"name": t.name, "best_ms": t.best * 1e3, "median_ms": t.median * 1e3,
                          "ratio_to_baseline": t.best / gtimings[-1].best} for t in gtimings]
    if args.json:
        cli.write_json(args.json, cli.json_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
