"""Attention without the T x T matrix: chapter 5's online softmax against the T x T form and PyTorch's SDPA.

Run ``python -m benchmarks.online`` (``--help`` for the options). In one process,
on the same inputs (B = 1, one head, d_k = d_v = 64, float32), for T = 1024 ...
16384 it measures:

- ``naive``: the course's ``scaled_dot_product_attention`` (chapter 1, pasted
  into chapter 5's NumPy solution notebook), which builds the (T, T) weights;
- ``online``: the course's ``online_softmax_attention`` (chapter 5's NumPy
  solution notebook), which walks over blocks of keys with a running maximum
  and a running sum and never holds more than a (T, block) slice of scores,
  at several block sizes;
- ``torch SDPA``: ``torch.nn.functional.scaled_dot_product_attention`` on the
  CPU, the baseline.

For each: the best time of interleaved rounds (as ``benchmarks.mha`` times its
forms) and the peak extra memory of one call, measured in a separate call so
that measuring does not slow the timed ones. Outputs are checked to agree
before anything is timed. The block size of the online form is the fastest one
whose memory still grows linearly in T (``--block-size`` fixes it).

``--scale`` also runs the online form at a T where one (T, T) float32 matrix
is larger than this machine's memory, and records the T x T form's
``MemoryError`` there. ``--gpu`` instead times chapter 5's CuPy kernel
``tiled_attention`` against torch's SDPA on CUDA.

Threads are pinned (NumPy's BLAS through threadpoolctl, torch through
``torch.set_num_threads``). Compare ratios, not absolute times: the machine is
shared.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from benchmarks import cli, mha
from benchmarks.mha import Form
from benchmarks.solutions import REPO, MissingSolution, load_course  # noqa: F401 - MissingSolution is part of this API

CHAPTER = "ch05_cost_and_scale"
# key -> (assignment, notebook, function) of the solution notebook that defines it
COURSE_FUNCTIONS = {
    "naive": (CHAPTER, "1_numpy", "scaled_dot_product_attention"),
    "online": (CHAPTER, "1_numpy", "online_softmax_attention"),
}
GPU_FUNCTIONS = {"tiled": (CHAPTER, "2_cupy", "tiled_attention")}

SIZES = (1024, 2048, 4096, 8192, 16384)
BLOCK_SIZES = (64, 128, 256, 512)
D_K = 64
NAIVE = "naive NumPy (T x T)"
BASELINE = mha.BASELINE  # "torch SDPA"
TILED = "tiled_attention (CuPy)"

LINEAR_EXPONENT = 1.15      # a fitted memory exponent at most this is "linear"
GOAL_VS_NAIVE = 1.5         # online time / naive time, wherever both run
GOAL_VS_SDPA = 2.0          # online time / torch SDPA time ...
GOAL_SDPA_SEQ = 4096        # ... at this T
GOAL_GPU = 1.5              # tiled_attention time / torch SDPA on CUDA
RTOL, ATOL = 1e-4, 1e-5     # float32 agreement on the CPU
GPU_RTOL, GPU_ATOL = 1e-3, 1e-4  # the GPU's exp and summation order differ more

RESULTS = REPO / "benchmarks" / "results" / "online_cpu.json"  # the run the chapter 5 page quotes
MIB = 2 ** 20


# --------------------------------------------------------------------------- the course's functions


def course_functions(solutions_dir: Optional[Path] = None, functions: Optional[dict] = None) -> dict:
    """The course's functions named in ``functions`` (default :data:`COURSE_FUNCTIONS`), read from the
    solution notebooks by the benchmarks' loader; ``MissingSolution`` names a missing notebook or function."""
    return load_course(dict(functions or COURSE_FUNCTIONS), solutions_dir, definitions_only=False)


# --------------------------------------------------------------------------- inputs, forms, agreement


def make_qkv(seq: int, d_k: int = D_K, heads: int = 1, seed: int = 0) -> tuple:
    """``(q, k, v)``, each ``(1, heads, seq, d_k)`` float32, standard normal: one example, ``heads`` heads."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((1, heads, seq, d_k), dtype=np.float32) for _ in range(3))


def online_label(block_size: int) -> str:
    return f"online NumPy, block {block_size}"


def torch_sdpa(q, k, v) -> Callable[[], object]:
    """A call of torch's SDPA on the same (zero-copy) data; 4-D, so that torch may pick its fused CPU kernel."""
    import torch
    import torch.nn.functional as F
    qt, kt, vt = (torch.from_numpy(a) for a in (q, k, v))

    def run():
        with torch.inference_mode():
            return F.scaled_dot_product_attention(qt, kt, vt)

    return run


def cpu_forms(q, k, v, course: dict, block_sizes, naive: bool = True) -> list:
    """The forms timed at one T: the T x T form (when ``naive``), the online form per block size, SDPA last."""
    forms = []
    if naive:
        forms.append(Form(NAIVE, lambda: course["naive"](q, k, v), lambda r: r[0]))
    for b in block_sizes:
        forms.append(Form(online_label(b), lambda b=b: course["online"](q, k, v, block_size=b), np.asarray))
    forms.append(Form(BASELINE, torch_sdpa(q, k, v), lambda r: r.numpy()))
    return forms


def check_agreement(forms: list, rtol: float = RTOL, atol: float = ATOL) -> dict:
    """Max abs difference of each form's output from the first form's; raises where one is not allclose.

    The first form is the T x T one when it runs (else SDPA), so every pair that
    runs is compared through it.
    """
    outputs = [np.asarray(f.output()) for f in forms]
    reference = outputs[0]
    errors = {}
    for form, out in zip(forms, outputs):
        if out.shape != reference.shape or out.dtype != np.float32:
            raise AssertionError(f"{form.name}: output {out.dtype}{out.shape}, expected float32{reference.shape}")
        errors[form.name] = float(np.max(np.abs(out - reference)))
        if not np.allclose(out, reference, rtol=rtol, atol=atol):
            raise AssertionError(f"{form.name} differs from {forms[0].name} by up to {errors[form.name]:.2e}")
    return errors


def naive_fits(seq: int, available: int) -> bool:
    """Whether the T x T form can run here without crowding the machine. At its peak it holds three (T, T)
    float32 arrays (the scores, their exponentials and the weights: 3 GiB at T = 16384); five must fit in
    half the available memory, a margin for a solution written with one more temporary."""
    return 5 * seq * seq * 4 < available / 2


def repeats_at(seq: int, repeats: int) -> int:
    """Timed rounds at ``seq``: ``repeats`` up to T = 2048, then fewer as a call gets longer (at least 3)."""
    return max(min(3, repeats), min(repeats, repeats * 2048 // seq))


# --------------------------------------------------------------------------- memory


def traced_peak(call: Callable[[], object]) -> int:
    """Peak bytes allocated during one ``call()`` above the level before it, measured as chapter 5's
    memory check measures (NumPy reports its buffers to tracemalloc), the result included. Tracing
    slows Python's allocations, so this is a separate call from the timed ones."""
    from mha_checks.chapters.ch05_cost_and_scale import numpy_peak
    return numpy_peak(call)[1]


def _status_kib(key: str) -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(key + ":"):
            return int(row.split()[1])
    raise OSError(f"/proc/self/status has no {key}")


def rss_peak(call: Callable[[], object]) -> int:
    """Peak resident memory during one ``call()`` above the resident memory before it, in bytes (Linux).

    Writing 5 to ``/proc/self/clear_refs`` resets the process's high-water mark
    (``VmHWM``) to its current resident size, so ``VmHWM`` after the call minus
    ``VmRSS`` before it is what the call added at its peak, whoever allocated it.
    (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is not used: a child started from
    a large process inherits that process's high-water mark at ``exec``.)
    """
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    result = call()
    peak = _status_kib("VmHWM")
    del result
    return max(peak - before, 0) * 1024  # the reset and the reading race by a page or two


def _memory_child(request: dict) -> dict:
    """One measurement in a forked child: torch's SDPA at ``seq`` (after a tiny warm-up that loads its code
    and starts its threads), or ``calibrate``: a tensor of known size, written, to check :func:`rss_peak`."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(request["threads"])
    if request["kind"] == "calibrate":
        n = request["bytes"] // 4
        torch.empty(1 << 16, dtype=torch.float32).fill_(1.0)  # warm-up: starts the threads fill_ uses
        return {"bytes": rss_peak(lambda: torch.empty(n, dtype=torch.float32).fill_(1.0))}
    heads, d_k = request["heads"], request["d_k"]

    def qkv(seq):
        return [torch.randn(1, heads, seq, d_k, dtype=torch.float32) for _ in range(3)]

    with torch.inference_mode():
        F.scaled_dot_product_attention(*qkv(64))  # warm-up, small: a large one would leave freed memory resident
        q, k, v = qkv(request["seq"])
        return {"bytes": rss_peak(lambda: F.scaled_dot_product_attention(q, k, v))}


def _memory_server():
    """Run in a fresh interpreter: import torch once, then measure each request of stdin's JSON list in a
    forked child of its own (a fresh heap for each, torch's import paid once); print the results as JSON.

    Nothing runs a torch operation before the forks, so no thread pool is inherited.
    """
    import torch  # noqa: F401 - imported once, before the forks
    results = []
    for request in json.loads(sys.stdin.read()):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, report, leave without running the parent's cleanup
            os.close(read)
            try:
                answer = _memory_child(request)
            except Exception as err:  # noqa: BLE001 - reported to the parent as text
                answer = {"error": f"{type(err).__name__}: {err}"}
            os.write(write, json.dumps(answer).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            text = pipe.read()
        os.waitpid(pid, 0)
        results.append(json.loads(text) if text else {"error": "the child died without an answer"})
    print(json.dumps(results))


def torch_peaks(requests: list, timeout: float = 1800) -> list:
    """:func:`_memory_server` in a fresh Python: one dict per request, ``{"bytes": n}`` or ``{"error": text}``.

    A fresh interpreter, not this process, so that the arrays of the NumPy runs
    are not in the children's memory.
    """
    code = "from benchmarks.online import _memory_server; _memory_server()"
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(requests), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return [{"error": f"the measuring process failed: {proc.stderr.strip()[-300:]}"}] * len(requests)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loglog_slope(xs, ys) -> Optional[float]:
    """Least-squares slope of log(y) against log(x): the exponent p of y ~ c x^p. None with fewer than two
    points or a value that is not positive (no logarithm)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(pairs) < 2 or any(x <= 0 or y <= 0 for x, y in pairs):
        return None
    lx, ly = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    lx = lx - lx.mean()
    return float(np.dot(lx, ly - ly.mean()) / np.dot(lx, lx))


# --------------------------------------------------------------------------- the sweep over T


def measure_size(seq: int, args, course: dict, block_sizes, available: int) -> dict:
    """Agreement, timings and NumPy peak memory at one T; torch's memory is filled in later."""
    q, k, v = make_qkv(seq, args.d_k, args.heads)
    naive = naive_fits(seq, available)
    forms = cpu_forms(q, k, v, course, block_sizes, naive)
    errors = check_agreement(forms)
    repeats = repeats_at(seq, args.repeats)
    timings = {t.name: t for t in mha.time_forms(forms, repeats, args.warmup)}
    rows = []
    for form in forms:
        kind = "sdpa" if form.name == BASELINE else "naive" if form.name == NAIVE else "online"
        t = timings[form.name]
        rows.append({"name": form.name, "kind": kind,
                     "block_size": int(form.name.rsplit(" ", 1)[1]) if kind == "online" else None,
                     "best_ms": t.best * 1e3, "median_ms": t.median * 1e3,
                     "peak_bytes": None if kind == "sdpa" else traced_peak(form.run),
                     "max_abs_diff": errors[form.name]})
    return {"seq": seq, "repeats": repeats, "naive_skipped": not naive, "forms": rows}


def form_row(size: dict, kind: str, block_size: Optional[int] = None) -> Optional[dict]:
    return next((r for r in size["forms"] if r["kind"] == kind and (kind != "online" or r["block_size"] == block_size)),
                None)


def ratio(a: Optional[dict], b: Optional[dict]) -> Optional[float]:
    return a["best_ms"] / b["best_ms"] if a and b else None


def block_summary(sizes: list, block_size: int) -> dict:
    """How one block size did over all T: memory exponent, time ratios, the goals."""
    seqs = [s["seq"] for s in sizes]
    online = [form_row(s, "online", block_size) for s in sizes]
    vs_naive = [ratio(o, form_row(s, "naive")) for o, s in zip(online, sizes)]
    vs_sdpa = [ratio(o, form_row(s, "sdpa")) for o, s in zip(online, sizes)]
    exponent = loglog_slope(seqs, [o["peak_bytes"] for o in online])
    at_goal = dict(zip(seqs, vs_sdpa)).get(GOAL_SDPA_SEQ)
    known_naive = [r for r in vs_naive if r is not None]
    return {
        "block_size": block_size, "memory_exponent": exponent,
        "linear": exponent is None or exponent <= LINEAR_EXPONENT,
        "vs_naive": vs_naive, "vs_sdpa": vs_sdpa,
        "geomean_vs_sdpa": float(np.exp(np.mean(np.log(vs_sdpa)))),
        "goal_vs_naive": max(known_naive) <= GOAL_VS_NAIVE if known_naive else None,
        "goal_vs_sdpa": None if at_goal is None else at_goal <= GOAL_VS_SDPA,
    }


def choose_block(blocks: list) -> int:
    """The fastest block size (geometric mean of its time over SDPA's across T) whose memory is linear."""
    linear = [b for b in blocks if b["linear"]] or blocks
    return min(linear, key=lambda b: b["geomean_vs_sdpa"])["block_size"]


def goals(result: dict) -> dict:
    """The course's goals for the chosen block size, each with the figures it was judged on."""
    chosen = next(b for b in result["blocks"] if b["block_size"] == result["chosen_block"])
    exps = result["exponents"]
    return {
        "online_memory_linear": {"met": exps["online"] is not None and exps["online"] <= LINEAR_EXPONENT,
                                 "exponent": exps["online"], "at_most": LINEAR_EXPONENT},
        "online_within_naive": {"met": chosen["goal_vs_naive"], "worst_ratio": max(
            (r for r in chosen["vs_naive"] if r is not None), default=None), "at_most": GOAL_VS_NAIVE},
        "online_within_sdpa": {"met": chosen["goal_vs_sdpa"], "seq": GOAL_SDPA_SEQ, "ratio": dict(
            zip(result["config"]["sizes"], chosen["vs_sdpa"])).get(GOAL_SDPA_SEQ), "at_most": GOAL_VS_SDPA},
    }


def run_sweep(args, course: dict) -> dict:
    """Every T of ``args.sizes``: agreement, times and NumPy memory, and the block size chosen.

    torch's memory is measured afterwards by :func:`add_torch_memory`, and the
    exponents and goals by :func:`summarize`.
    """
    from threadpoolctl import threadpool_limits
    block_sizes = [args.block_size] if args.block_size else args.block_sizes
    available = memory_bytes()["available"]
    sizes = []
    with threadpool_limits(limits=args.threads):
        for seq in args.sizes:
            sizes.append(measure_size(seq, args, course, block_sizes, available))
            print(f"  T = {seq}: done", file=sys.stderr, flush=True)
        info, env = mha.blas_info(), mha.environment()
    blocks = [block_summary(sizes, b) for b in block_sizes]
    return {"config": {**vars(args), "block_sizes": block_sizes}, "environment": env, "threadpoolctl": info,
            "sizes": sizes, "blocks": blocks, "chosen_block": choose_block(blocks)}


def add_torch_memory(result: dict, args) -> None:
    """torch SDPA's peak extra memory at every T (and at ``--scale``'s), in one fresh process, plus a
    calibration: a tensor of known size measured the same way."""
    def request(seq, d_k):
        return {"kind": "sdpa", "seq": seq, "d_k": d_k, "heads": args.heads, "threads": args.threads}

    requests = [{"kind": "calibrate", "bytes": 64 * MIB, "threads": args.threads}]
    requests += [request(s["seq"], args.d_k) for s in result["sizes"]]
    if result.get("scale"):
        requests.append(request(result["scale"]["seq"], result["scale"]["d_k"]))
    calibration, *peaks = torch_peaks(requests)
    result["rss_calibration"] = {"allocated_bytes": requests[0]["bytes"], **calibration}
    for size, peak in zip(result["sizes"], peaks):
        row = form_row(size, "sdpa")
        row["peak_bytes"] = peak.get("bytes")
        if "error" in peak:
            row["peak_error"] = peak["error"]
    if result.get("scale"):
        result["scale"]["sdpa_peak_bytes"] = peaks[-1].get("bytes")


def summarize(result: dict) -> None:
    """The fitted memory exponents of the three forms and the goals, once every memory figure is in."""
    sizes = result["sizes"]
    naive = [(s["seq"], form_row(s, "naive")["peak_bytes"]) for s in sizes if form_row(s, "naive")]
    result["exponents"] = {
        "online": next(b["memory_exponent"] for b in result["blocks"] if b["block_size"] == result["chosen_block"]),
        "naive": loglog_slope([t for t, _ in naive], [p for _, p in naive]),
        "sdpa": loglog_slope([s["seq"] for s in sizes], [form_row(s, "sdpa")["peak_bytes"] for s in sizes]),
    }
    result["goals"] = goals(result)


# --------------------------------------------------------------------------- tables


def _mib(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / MIB:.1f}"


def _x(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def _ms(row: Optional[dict]) -> str:
    return "n/a" if row is None else f"{row['best_ms']:.1f}"


def _exp(p: Optional[float]) -> str:
    return "n/a" if p is None else f"{p:.2f}"


def table_rows(result: dict) -> list:
    """The main table (chosen block size) as rows of cells, the header first."""
    b = result["chosen_block"]
    rows = [["T", "naive ms", "online ms", "SDPA ms", "online / naive", "online / SDPA", "naive / SDPA",
             "naive MiB", "online MiB", "SDPA MiB"]]
    for s in result["sizes"]:
        naive, online, sdpa = form_row(s, "naive"), form_row(s, "online", b), form_row(s, "sdpa")
        rows.append([str(s["seq"]), _ms(naive), _ms(online), _ms(sdpa), _x(ratio(online, naive)),
                     _x(ratio(online, sdpa)), _x(ratio(naive, sdpa)), _mib(naive and naive["peak_bytes"]),
                     _mib(online["peak_bytes"]), _mib(sdpa["peak_bytes"])])
    return rows


def block_rows(result: dict) -> list:
    """The block-size sweep as rows of cells: memory exponent, peak at the largest T, time over SDPA per T."""
    seqs = [s["seq"] for s in result["sizes"]]
    rows = [["block", "memory exponent", f"MiB at T={seqs[-1]}"] + [f"/ SDPA, T={s}" for s in seqs]
            + ["max / naive"]]
    for blk in result["blocks"]:
        peak = form_row(result["sizes"][-1], "online", blk["block_size"])["peak_bytes"]
        worst = max((r for r in blk["vs_naive"] if r is not None), default=None)
        mark = " (chosen)" if blk["block_size"] == result["chosen_block"] else ""
        rows.append([f"{blk['block_size']}{mark}", _exp(blk["memory_exponent"]), _mib(peak)]
                    + [_x(r) for r in blk["vs_sdpa"]] + [_x(worst)])
    return rows


def format_rows(rows: list) -> str:
    """Rows of cells as aligned plain text (first column left, the others right)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = [rows[0][0].ljust(widths[0]) + "".join("  " + c.rjust(w) for c, w in zip(rows[0][1:], widths[1:]))]
    text.append("-" * len(text[0]))
    text += [r[0].ljust(widths[0]) + "".join("  " + c.rjust(w) for c, w in zip(r[1:], widths[1:])) for r in rows[1:]]
    return "\n".join(text)


def markdown_rows(rows: list) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "| --- |" + " ---: |" * (len(rows[0]) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def exponent_line(result: dict) -> str:
    e = result["exponents"]
    return (f"Peak extra memory ~ T^p, least squares on log-log: online (block {result['chosen_block']}) "
            f"p = {_exp(e['online'])}, naive p = {_exp(e['naive'])}, torch SDPA p = {_exp(e['sdpa'])}.")


def markdown_table(result: dict) -> str:
    """A ``--json`` result as the Markdown the chapter page quotes: the table, the exponents, what was measured.

    The page pastes this text verbatim, so no number on it is typed by hand.
    """
    config, env = result["config"], result["environment"]
    blas = next((lib for lib in result["threadpoolctl"] if lib.get("user_api") == "blas"), {})
    caption = (f"B = 1, H = {config['heads']}, d_k = d_v = {config['d_k']}, float32, no mask; online block size "
               f"{result['chosen_block']}; {config['threads']} threads; best of interleaved rounds "
               f"({config['repeats']} up to T = 2048, fewer above). Memory: peak extra bytes of one call "
               f"(NumPy: tracemalloc; torch: resident memory of a fresh process). Measured with "
               f"`python -m benchmarks.online` on {env['processor']} ({env['machine']}), NumPy {env['numpy']} with "
               f"{blas.get('internal_api', 'its BLAS')} {blas.get('version', '')} (kernel "
               f"{blas.get('architecture', 'unknown')}), torch {env['torch']}.")
    parts = [markdown_rows(table_rows(result)), exponent_line(result)]
    if result.get("scale"):
        parts.append(scale_line(result["scale"]))
    return "\n\n".join(parts + [caption])


# --------------------------------------------------------------------------- beyond memory (--scale)


def memory_bytes() -> dict:
    """``total`` (RAM plus swap: the most one allocation may be granted) and ``available``, in bytes."""
    try:
        info = {row.split(":")[0]: int(row.split()[1]) * 1024 for row in Path("/proc/meminfo").read_text().splitlines()}
        return {"total": info["MemTotal"] + info.get("SwapTotal", 0),
                "available": info.get("MemAvailable", info["MemFree"])}
    except (OSError, KeyError, ValueError, IndexError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return {"total": total, "available": total // 2}


def scale_seq(total: int, step: int = 8192) -> int:
    """The smallest multiple of ``step`` whose (T, T) float32 matrix alone is larger than ``total`` bytes."""
    seq = step
    while seq * seq * 4 <= total:
        seq += step
    return seq


def try_naive(naive: Callable, q, k, v, total: int) -> dict:
    """Try the T x T form where one (T, T) float32 matrix alone exceeds ``total`` (RAM plus swap); never else.

    The allocation is probed first with an untouched ``np.empty``: it costs no
    memory even where the kernel grants it (overcommit), and then the form is
    not run, since filling the matrix would exhaust memory. Where the kernel
    refuses it, the form's own first (T, T) product fails at once the same way.
    """
    seq = q.shape[-2]
    need = seq * seq * 4
    outcome = {"seq": seq, "matrix_bytes": need, "total_bytes": total, "attempted": False}
    if need <= total:
        outcome["note"] = "not tried: one (T, T) float32 matrix fits in memory, and filling it could exhaust it"
        return outcome
    try:
        probe = np.empty((seq, seq), np.float32)
    except MemoryError:
        pass
    else:
        del probe
        outcome["note"] = "not run: the kernel granted the (T, T) allocation (overcommit), filling it would not fit"
        return outcome
    outcome["attempted"] = True
    try:
        naive(q, k, v)
    except MemoryError as err:
        outcome["error"] = f"{type(err).__name__}: {err}"
    else:
        outcome["note"] = "the T x T form ran (unexpected)"
    return outcome


def run_scale(args, course: dict, block_size: int) -> dict:
    """At a T where the T x T form cannot allocate its matrix: that form's error, the online form's time and
    peak memory, torch SDPA's time for comparison, and whether the two outputs agree."""
    from threadpoolctl import threadpool_limits
    total = memory_bytes()["total"]
    seq = args.scale_seq or scale_seq(total)
    q, k, v = make_qkv(seq, args.scale_dk, args.heads)
    small = make_qkv(256, args.scale_dk, args.heads)
    result = {"seq": seq, "d_k": args.scale_dk, "block_size": block_size}
    with threadpool_limits(limits=args.threads):
        result["naive"] = try_naive(course["naive"], q, k, v, total)
        course["online"](*small, block_size=block_size)  # warm-up
        start = time.perf_counter()
        out = course["online"](q, k, v, block_size=block_size)
        result["online_s"] = time.perf_counter() - start
        result["online_peak_bytes"] = traced_peak(lambda: course["online"](q, k, v, block_size=block_size))
        sdpa = torch_sdpa(q, k, v)
        torch_sdpa(*small)()  # warm-up
        start = time.perf_counter()
        expected = sdpa().numpy()
        result["sdpa_s"] = time.perf_counter() - start
    result["max_abs_diff"] = float(np.max(np.abs(np.asarray(out) - expected)))
    result["agree"] = bool(np.allclose(out, expected, rtol=RTOL, atol=ATOL))
    result["input_bytes"] = 3 * q.nbytes
    return result  # torch's peak memory: add_torch_memory


def scale_line(scale: dict) -> str:
    naive = scale["naive"]
    what = (f"the T x T form: {naive['error']}" if naive.get("error")
            else f"the T x T form: {naive.get('note', 'not tried')}")
    than = "more than" if naive["matrix_bytes"] > naive["total_bytes"] else "within"
    return (f"At T = {scale['seq']} (d_k = {scale['d_k']}), one (T, T) float32 matrix needs "
            f"{naive['matrix_bytes'] / 2 ** 30:.1f} GiB, {than} this machine's "
            f"{naive['total_bytes'] / 2 ** 30:.1f} GiB; {what}. The online form (block {scale['block_size']}) took "
            f"{scale['online_s']:.1f} s with {_mib(scale['online_peak_bytes'])} MiB of extra memory at its peak "
            f"(torch SDPA: {scale['sdpa_s']:.1f} s, {_mib(scale['sdpa_peak_bytes'])} MiB; online / SDPA "
            f"{scale['online_s'] / scale['sdpa_s']:.2f}×; outputs agree: {'yes' if scale['agree'] else 'NO'}, "
            f"max abs diff {scale['max_abs_diff']:.1e}).")


# --------------------------------------------------------------------------- GPU (--gpu)


def gpu_problem() -> Optional[str]:
    """Why ``--gpu`` cannot run here, or None when CuPy and torch both see a CUDA GPU."""
    try:
        import cupy
    except Exception as err:  # noqa: BLE001 - no CuPy, or a broken install
        return f"CuPy cannot be imported ({type(err).__name__}: {err})"
    try:
        if not cupy.cuda.is_available():
            return "CuPy sees no CUDA GPU (cupy.cuda.is_available() is False)"
    except Exception as err:  # noqa: BLE001 - a broken CUDA install raises
        return f"CuPy sees no CUDA GPU ({type(err).__name__}: {err})"
    try:
        import torch
    except ImportError as err:
        return f"torch cannot be imported ({err})"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)"
    return None


def gpu_forms(q, k, v, tiled: Callable) -> list:
    """``tiled_attention`` on CuPy copies of the inputs and torch's SDPA on CUDA copies, the baseline last."""
    import cupy
    import torch
    import torch.nn.functional as F
    qg, kg, vg = (cupy.asarray(a) for a in (q, k, v))
    qt, kt, vt = (torch.from_numpy(a).cuda() for a in (q, k, v))

    def run_sdpa():
        with torch.inference_mode():
            return F.scaled_dot_product_attention(qt, kt, vt)

    # mha.time_gpu_forms times a form whose name contains "torch" with torch's events, the others with CuPy's.
    return [Form(TILED, lambda: tiled(qg, kg, vg), lambda r: cupy.asnumpy(r)),
            Form(BASELINE + " (CUDA)", run_sdpa, lambda r: r.cpu().numpy())]


def run_gpu(args, tiled: Callable) -> list:
    """For each head count of ``args.gpu_heads`` and T of ``args.gpu_sizes``: agreement, then CUDA-event times,
    the ratio and the kernel's bandwidth. One head gives the kernel only T / 64 thread blocks, too few to fill
    a large GPU; more heads (B·H thread-block rows) show it with the GPU full.

    Bandwidth is the bytes of q, k, v read and out written once, over the time:
    a lower bound on the kernel's traffic, since it rereads K and V tiles for
    every block of queries.
    """
    import torch
    rows = []
    for heads, seq in ((h, t) for h in args.gpu_heads for t in args.gpu_sizes):
        q, k, v = make_qkv(seq, args.d_k, heads)
        forms = gpu_forms(q, k, v, tiled)
        errors = check_agreement(forms[::-1], rtol=GPU_RTOL, atol=GPU_ATOL)  # SDPA's output as the reference
        timings = mha.time_gpu_forms(forms, args.repeats, max(args.warmup, 2))
        tiled_t, sdpa_t = timings[0].best, timings[1].best
        moved = 4 * q.nbytes  # q, k, v read, out written
        rows.append({"heads": heads, "seq": seq, "tiled_ms": tiled_t * 1e3, "sdpa_ms": sdpa_t * 1e3, "ratio": tiled_t / sdpa_t,
                     "tiled_median_ms": statistics.median(timings[0].times) * 1e3,
                     "bandwidth_gb_s": moved / tiled_t / 1e9, "max_abs_diff": errors[TILED]})
        del forms
        torch.cuda.empty_cache()
    return rows


def gpu_rows(rows: list) -> list:
    table = [["H", "T", "tiled ms", "SDPA ms", "tiled / SDPA", "tiled GB/s (lower bound)", "max abs diff"]]
    table += [[str(r["heads"]), str(r["seq"]), f"{r['tiled_ms']:.3f}", f"{r['sdpa_ms']:.3f}", _x(r["ratio"]),
               f"{r['bandwidth_gb_s']:.1f}", f"{r['max_abs_diff']:.1e}"] for r in rows]
    return table


def gpu_device() -> str:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"{name}, CuPy {cupy.__version__}"


def main_gpu(args) -> int:
    problem = gpu_problem()
    if problem:
        print(f"benchmarks.online: --gpu needs a CUDA GPU that CuPy and torch can use: {problem}", file=sys.stderr)
        return 2
    tiled = course_functions(functions=GPU_FUNCTIONS)["tiled"]
    import torch
    rows = run_gpu(args, tiled)
    device = gpu_device()
    print(f"tiled_attention (chapter 5 CuPy solution) against torch SDPA on CUDA, B=1, H heads in one call, "
          f"d_k={args.d_k} float32, CUDA events, best of {args.repeats}; {device}, torch {torch.__version__}")
    print(format_rows(gpu_rows(rows)))
    for r in rows:
        if r["seq"] == GOAL_SDPA_SEQ:
            print(f"Goal tiled / SDPA <= {GOAL_GPU}x at T = {GOAL_SDPA_SEQ}, H = {r['heads']}: "
                  f"{'met' if r['ratio'] <= GOAL_GPU else 'MISSED'} ({r['ratio']:.2f}x)")
    print("GB/s: bytes of q, k, v read and out written once, over the time; a lower bound on the traffic "
          "(K and V tiles are reread for every block of queries).")
    if args.json:
        cli.write_json(args.json, cli.json_text({"config": vars(args), "device": device, "torch": torch.__version__,
                                                 "gpu": rows}))
    return 0


# --------------------------------------------------------------------------- command line


def int_list(text: str) -> list:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv=None):
    p = cli.parser("online", __doc__)
    p.add_argument("--sizes", type=int_list, default=list(SIZES),
                   help=f"sequence lengths T (default {','.join(map(str, SIZES))})")
    p.add_argument("--d-k", type=int, default=D_K, help="d_k = d_v (default %(default)s)")
    p.add_argument("--heads", type=int, default=1, help="heads in one call, B = 1 (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="BLAS and torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=10,
                   help="timed rounds up to T = 2048, fewer above (at least 3); a form's time is its best round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--block-sizes", type=int_list, default=list(BLOCK_SIZES),
                   help=f"block sizes of the online form to try (default {','.join(map(str, BLOCK_SIZES))}); "
                   "the fastest with linear memory is chosen")
    p.add_argument("--block-size", type=int, help="use this block size only (no sweep)")
    p.add_argument("--scale", action="store_true",
                   help="also run the online form at a T where one (T, T) float32 matrix exceeds memory")
    p.add_argument("--scale-seq", type=int, help="T of --scale (default: the smallest multiple of 8192 whose "
                   "(T, T) float32 matrix exceeds RAM plus swap)")
    p.add_argument("--scale-dk", type=int, default=D_K, help="d_k of --scale (default %(default)s)")
    p.add_argument("--gpu", action="store_true",
                   help="instead: chapter 5's CuPy tiled_attention against torch SDPA on CUDA (needs a GPU)")
    p.add_argument("--gpu-sizes", type=int_list, default=list(SIZES),
                   help=f"T of --gpu (default {','.join(map(str, SIZES))})")
    p.add_argument("--gpu-heads", type=int_list, default=[1, 16],
                   help="heads in one call of --gpu, each with every T (default 1,16)")
    cli.add_json_option(p)
    return p.parse_args(argv)


def report(result: dict) -> None:
    """Print what a run found: the table, the sweep, the exponents, the goals, the machine."""
    config, env = result["config"], result["environment"]
    print(f"Attention, B=1 H={config['heads']} d_k=d_v={config['d_k']} float32, no mask; "
          f"{config['threads']} threads; best of interleaved rounds (at T: "
          + ", ".join(f"{s['seq']}: {s['repeats']}" for s in result["sizes"]) + ")")
    print(format_rows(table_rows(result)))
    skipped = [str(s["seq"]) for s in result["sizes"] if s["naive_skipped"]]
    if skipped:
        print(f"The T x T form was not run at T = {', '.join(skipped)}: it would not fit comfortably in memory.")
    why = ("set by --block-size" if config.get("block_size")
           else f"the fastest whose memory exponent is at most {LINEAR_EXPONENT}")
    print(f"\nOnline form by block size (block {result['chosen_block']} chosen: {why}):")
    print(format_rows(block_rows(result)))
    print("\n" + exponent_line(result))
    cal = result["rss_calibration"]
    print(f"Resident-memory check (torch): a {cal['allocated_bytes'] / MIB:.0f} MiB tensor measured as "
          f"{_mib(cal.get('bytes'))} MiB" + (f" ({cal['error']})" if "error" in cal else ""))
    worst = max(max(r["max_abs_diff"] for r in s["forms"]) for s in result["sizes"])
    print(f"Outputs agree (allclose rtol={RTOL}, atol={ATOL}) at every T; largest abs difference {worst:.1e}.")
    g = result["goals"]
    verdict = {True: "met", False: "MISSED", None: "not measured"}
    print(f"\nGoals (block {result['chosen_block']}):")
    print(f"  online memory linear (exponent <= {LINEAR_EXPONENT}): {verdict[g['online_memory_linear']['met']]} "
          f"(p = {_exp(g['online_memory_linear']['exponent'])})")
    print(f"  online <= {GOAL_VS_NAIVE}x naive wherever both run: {verdict[g['online_within_naive']['met']]} "
          f"(worst {_x(g['online_within_naive']['worst_ratio'])})")
    print(f"  online <= {GOAL_VS_SDPA}x torch SDPA at T = {GOAL_SDPA_SEQ}: {verdict[g['online_within_sdpa']['met']]}"
          f" ({_x(g['online_within_sdpa']['ratio'])})")
    if result.get("scale"):
        print("\n" + scale_line(result["scale"]))
    print(f"\nnumpy {env['numpy']}, torch {env['torch']} ({env['torch_threads']} threads), {env['processor']}")
    print(f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}; "
          f"load average after the run (1, 5, 15 min): {env['load_average']} on {os.cpu_count()} CPUs")
    for lib in result["threadpoolctl"]:
        print("threadpoolctl: " + ", ".join(f"{k}={v}" for k, v in lib.items()))


@cli.reports_missing_solution("online")
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.gpu:
        return main_gpu(args)
    import torch
    torch.set_num_threads(args.threads)
    course = course_functions()
    result = run_sweep(args, course)
    if args.scale:
        print("  --scale: the online form at a T beyond memory (a minute or more)", file=sys.stderr, flush=True)
        result["scale"] = run_scale(args, course, result["chosen_block"])
    add_torch_memory(result, args)
    summarize(result)
    report(result)
    if args.json:
        cli.write_json(args.json, cli.json_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
