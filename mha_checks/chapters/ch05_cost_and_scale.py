"""Chapter 5 checks: what many heads cost, and attention that never builds the T×T matrix.

- ``mha_param_count`` and ``mha_flops`` (NumPy track): exact integer counts, with the
  course's FLOP convention (matrix products only, a multiply-add counts 2).
- ``online_softmax_attention`` (every track): equal to chapter 1's
  ``scaled_dot_product_attention(...)[0]`` with the same mask and empty-row rules,
  key blocks of ``block_size`` (the last one may be shorter), and a custom check,
  ``online_memory``, that measures what one call allocates and fails a function that
  builds a ``(T_q, T_k)`` array anyway.
- ``tiled_attention`` (CuPy track): the same result from one ``cupy.RawKernel``.
- ``grouped_query_attention`` (NumPy track, stretch): K and V shared by groups of heads.

In a notebook::

    from mha_checks.chapters.ch05_cost_and_scale import Checks
    check = Checks("numpy")                    # or "cupy", "torch"
    check.online_softmax_attention(online_softmax_attention)
    check.online_memory(online_softmax_attention)

This module only declares; the engine (:mod:`mha_checks.engine`) runs the checks.
"""
import math

import numpy as np

from ..engine import (Chapter, Custom, Function, Inherited, Mistake, Question, describe_exception, fail,
                      is_close, judge_exception, plain_value, worst_mismatch)
from ..kit import layers
from ..kit.common import causal, normal, pasted_in, random_mask
from .ch01_single_head import SCALED_DOT_PRODUCT_ATTENTION, SOFTMAX
from .ch03_split_heads import SPLIT_HEADS
from .ch04_concat_and_wo import MERGE_HEADS

# --------------------------------------------------------------------------
# Counting: parameters and FLOPs
# --------------------------------------------------------------------------


def param_count_visible(rng):
    return [dict(d_model=12, n_heads=3, bias=True), dict(d_model=512, n_heads=8, bias=False),
            dict(d_model=384, n_heads=12)]


def param_count_hidden(rng):
    d_k = int(rng.integers(3, 9))
    return [dict(d_model=768, n_heads=12, bias=True), dict(d_model=5 * d_k, n_heads=5, bias=False),
            dict(d_model=64, n_heads=1, bias=True), dict(d_model=1024, n_heads=16),
            dict(d_model=6 * d_k, n_heads=6, bias=True)]


def _params(sol, d_model, n_heads, bias=True):
    return sol["mha_param_count"](d_model, n_heads, bias)


def _per_head_width_squared(sol, d_model, n_heads, bias=True):
    """4·H·d_k² weights: each head's own square matrices, d_k × d_k, as if x had d_k features."""
    if n_heads == 1:
        return None
    weights = _params(sol, d_model, n_heads, False)
    return weights // n_heads + (_params(sol, d_model, n_heads, True) - weights if bias else 0)


PARAM_MISTAKES = (
    Mistake("no_w_o", "that leaves out the output projection W_O (d_model × d_model, and its bias b_o): "
            "a layer has four matrices, W_Q, W_K, W_V and W_O.",
            lambda sol, d_model, n_heads, bias=True: _params(sol, d_model, n_heads, bias) * 3 // 4),
    Mistake("times_heads", "that multiplies by the number of heads: the heads share W_Q, W_K, W_V (each reads "
            "its own d_k columns) and W_O (its own d_k rows), so H heads cost what one head of width "
            "d_model costs.",
            lambda sol, d_model, n_heads, bias=True: None if n_heads == 1 else n_heads * _params(sol, d_model, n_heads, bias)),
    Mistake("width_squared", "that counts d_k × d_k matrices per head: each head's W_Q is d_model × d_k (it reads "
            "the whole input), so the H heads' columns together make a d_model × d_model matrix.",
            _per_head_width_squared),
    Mistake("no_b_o", "the output projection has a bias too: b_o, d_model numbers (4·d_model biases in all).",
            lambda sol, d_model, n_heads, bias=True: _params(sol, d_model, n_heads, True) - d_model if bias else None),
)


def flops_visible(rng):
    return [dict(batch=2, seq_len=5, d_model=12, n_heads=3), dict(batch=1, seq_len=1024, d_model=512, n_heads=8),
            dict(batch=4, seq_len=16, d_model=8, n_heads=2)]


def flops_hidden(rng):
    T = int(rng.integers(5, 40))
    return [dict(batch=3, seq_len=T, d_model=20, n_heads=4), dict(batch=8, seq_len=4096, d_model=768, n_heads=12),
            dict(batch=1, seq_len=1, d_model=64, n_heads=1), dict(batch=5, seq_len=2 * T + 1, d_model=6, n_heads=6),
            dict(batch=2, seq_len=16384, d_model=4096, n_heads=32)]


def _flops(sol, batch, seq_len, d_model, n_heads):
    return sol["mha_flops"](batch, seq_len, d_model, n_heads)


def _flop_terms(sol, batch, seq_len, d_model, n_heads):
    """(projections, attention) of the solution's count. It is a + b·T per token, so two
    sequence lengths separate the terms without restating the formula here."""
    one, two = _flops(sol, batch, 1, d_model, n_heads), _flops(sol, batch, 2, d_model, n_heads)
    per_token = 2 * one - two // 2                       # a, the projections' FLOPs of one token
    projections = per_token * seq_len
    return projections, _flops(sol, batch, seq_len, d_model, n_heads) - projections


def _flop_mistake(combine):
    def outputs(sol, batch, seq_len, d_model, n_heads):
        return combine(*_flop_terms(sol, batch, seq_len, d_model, n_heads), batch, seq_len, n_heads)
    return outputs


FLOP_MISTAKES = (
    Mistake("multiply_add_once", "a multiply-add counts 2 FLOPs in the course's convention (one multiply, one "
            "add): an (m × k) @ (k × n) product costs 2·m·k·n.",
            lambda sol, batch, seq_len, d_model, n_heads: _flops(sol, batch, seq_len, d_model, n_heads) // 2),
    Mistake("no_attention", "that counts only the four projections, 8·B·T·d²: q·kᵀ and weights·v are matrix "
            "products too, 2·T²·d_k FLOPs each per head and sequence.",
            _flop_mistake(lambda p, a, B, T, H: p)),
    Mistake("no_w_o", "that leaves out the output projection: W_O is a d_model × d_model product per token.",
            _flop_mistake(lambda p, a, B, T, H: p * 3 // 4 + a)),
    Mistake("attention_per_head_width", "the attention products were counted for one head of width d_k: every "
            "head does its own q·kᵀ and weights·v, so sum them over the H heads (H·d_k = d_model).",
            _flop_mistake(lambda p, a, B, T, H: None if H == 1 else p + a // H)),
    Mistake("attention_times_heads", "the attention products were multiplied by H on top of a width of d_model: "
            "each head's q·kᵀ is over its d_k features only.",
            _flop_mistake(lambda p, a, B, T, H: None if H == 1 else p + a * H)),
    Mistake("scores_only", "only q·kᵀ was counted: weights·v is a second (T × T) @ (T × d_k) product per head.",
            _flop_mistake(lambda p, a, B, T, H: None if T == 1 else p + a // 2)),
    Mistake("no_batch", "the count is for one sequence: multiply by the batch size B.",
            lambda sol, batch, seq_len, d_model, n_heads: None if batch == 1 else _flops(sol, 1, seq_len, d_model, n_heads)),
)


# --------------------------------------------------------------------------
# Online softmax attention: cases
# --------------------------------------------------------------------------

def _ones_first(v):
    """v with an all-ones first feature: the output's first feature is then the row's total
    weight, 1 wherever a key is allowed, which lets a diagnosis see an unnormalised result."""
    v = v.copy()
    v[..., 0] = 1
    return v


def _qkv(rng, batch, T_q, T_k, d_k, d_v, dtype, scale=1.0):
    return dict(q=normal(rng, (*batch, T_q, d_k), dtype, scale), k=normal(rng, (*batch, T_k, d_k), dtype, scale),
                v=_ones_first(normal(rng, (*batch, T_k, d_v), dtype)))


def _late_maximum(rng, T_q, T_k, d, dtype):
    """Scores that grow along the keys: every row's largest score is in its last block, so the
    running maximum changes at every block and a missing rescale shows."""
    q = np.abs(normal(rng, (T_q, d), dtype)) + dtype(0.5)
    k = (np.linspace(-2, 2, T_k)[:, None] * np.ones((1, d))).astype(dtype) + normal(rng, (T_k, d), dtype, 0.1)
    return dict(q=q, k=k, v=_ones_first(normal(rng, (T_k, 5), dtype)))


def _first_block_masked(rng, T_q, T_k, block, dtype):
    """A mask whose first key block is all False for some rows (their running max starts at -inf)
    and a row with no allowed key at all."""
    mask = random_mask(rng, (T_q, T_k))
    mask[0, :block] = False
    mask[0, block] = True
    mask[2, : 2 * block] = False
    mask[2, -1] = True
    mask[1] = False
    return mask


def online_visible(rng):
    f64, f32 = np.float64, np.float32
    return [
        dict(**_qkv(rng, (), 5, 11, 6, 4, f64), block_size=4),                       # 11 keys: blocks 4, 4, 3
        dict(**_qkv(rng, (2, 3), 7, 9, 8, 5, f32), mask=random_mask(rng, (7, 9), empty_row=3), block_size=3),
        dict(**_late_maximum(rng, 6, 13, 4, f64), block_size=4),
        dict(**_qkv(rng, (2,), 6, 10, 4, 3, f64), mask=_first_block_masked(rng, 6, 10, 3, f64), block_size=3),
        dict(**_qkv(rng, (2,), 9, 70, 8, 6, f32)),                                   # default block: 64 + 6
    ]


def online_hidden(rng):
    f64, f32 = np.float64, np.float32
    T = int(rng.integers(20, 40))
    return [
        dict(**_qkv(rng, (3,), 8, T, 5, 7, f64), mask=random_mask(rng, (3, 8, T), empty_row=4), block_size=6),
        dict(**_qkv(rng, (2, 1), 6, 13, 4, 2, f32, 40.0), block_size=5),             # scores ~1e4
        dict(**_late_maximum(rng, 5, 17, 6, f32), block_size=1),                     # a key at a time
        dict(**_qkv(rng, (), 4, 7, 3, 6, f64), mask=causal(7)[:4], block_size=16),   # one block, larger than T_k
        dict(**_qkv(rng, (2,), 12, 12, 6, 4, f64), mask=_first_block_masked(rng, 12, 12, 4, f64), block_size=4),
        dict(**_qkv(rng, (2, 3), 5, 1, 4, 3, f32), block_size=2),                    # a single key
        dict(**_qkv(rng, (1,), 3, 150, 7, 5, f32), mask=(np.arange(150) < 131)[None, None, :]),  # padding, 64+64+22
        dict(**_qkv(rng, (2,), 4, 6, 3, 2, f64), mask=np.zeros((2, 4, 6), bool), block_size=4),  # no key at all
    ]


# --------------------------------------------------------------------------
# Online softmax attention: known mistakes, from chapter 1's attention on changed inputs
# --------------------------------------------------------------------------

def _attention_out(sol, q, k, v, mask=None):
    return sol["scaled_dot_product_attention"](q, k, v, mask)[0]


def _keys(q, k, v, mask, keep):
    """Only the keys ``keep`` (a slice): what a loop that never reaches the others computes."""
    if mask is not None:
        mask = np.broadcast_to(mask, np.broadcast_shapes(mask.shape, (*q.shape[:-1], k.shape[-2])))[..., keep]
    return q, k[..., keep, :], v[..., keep, :], mask


def _last_block_dropped(sol, q, k, v, mask=None, block_size=64):
    T_k = k.shape[-2]
    whole = T_k - T_k % block_size
    if whole in (0, T_k):
        return None
    return _attention_out(sol, *_keys(q, k, v, mask, slice(0, whole)))


def _first_block_only(sol, q, k, v, mask=None, block_size=64):
    if k.shape[-2] <= block_size:
        return None
    return _attention_out(sol, *_keys(q, k, v, mask, slice(0, block_size)))


def _last_block_only(sol, q, k, v, mask=None, block_size=64):
    T_k = k.shape[-2]
    if T_k <= block_size:
        return None
    start = (T_k - 1) // block_size * block_size
    return _attention_out(sol, *_keys(q, k, v, mask, slice(start, T_k)))


def _root_d(q):
    return q.dtype.type(math.sqrt(q.shape[-1]))


LAST_BLOCK_DROPPED = ("the keys after the last whole block were never used: T_k need not be a multiple of "
                      "block_size, and the last block is shorter. Loop over block starts, range(0, T_k, "
                      "block_size), and slice to the end.")
FIRST_BLOCK_ONLY = ("only the first block of keys counted: the running max, the running sum and the output "
                    "must carry over from block to block, each new block adding to them.")
LAST_BLOCK_ONLY = ("only the last block of keys counted: each block must add to the running sum and output, "
                   "after rescaling them, not replace them.")
NO_SCALE = "the scores were not divided by sqrt(d_k): scale every block's q·kᵀ by 1/sqrt(d_k)."
SCALE_BY_D = "the scores were divided by d_k instead of sqrt(d_k)."
MASK_IGNORED = "the mask was ignored: a key where mask is False must add nothing to the row."

ONLINE_MISTAKES = (
    Mistake("last_block_dropped", LAST_BLOCK_DROPPED, _last_block_dropped),
    Mistake("first_block_only", FIRST_BLOCK_ONLY, _first_block_only),
    Mistake("last_block_only", LAST_BLOCK_ONLY, _last_block_only),
    Mistake("no_scale", NO_SCALE,
            lambda sol, q, k, v, mask=None, block_size=64: _attention_out(sol, q * _root_d(q), k, v, mask)),
    Mistake("scale_by_d", SCALE_BY_D,
            lambda sol, q, k, v, mask=None, block_size=64: _attention_out(sol, q / _root_d(q), k, v, mask)),
    Mistake("mask_ignored", MASK_IGNORED,
            lambda sol, q, k, v, mask=None, block_size=64: None if mask is None else _attention_out(sol, q, k, v)),
)


def _allowed(case, shape):
    mask = case.args.get("mask")
    return np.ones(shape, bool) if mask is None else np.broadcast_to(mask, shape)


def _scores(case):
    q, k = case.args["q"].astype(np.float64), case.args["k"].astype(np.float64)
    return q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])


def _diagnose_online(got, case):
    """Explain a wrong output from properties of the case: NaN rows, rows with no key, the
    all-ones first feature of v (the row's total weight), and where each row's maximum lies."""
    out, want = got["out"], case.expected["out"]
    scores = _scores(case)
    allowed = _allowed(case, scores.shape)
    no_key = ~allowed.any(axis=-1)
    if not np.isfinite(out).all():
        bad = ~np.isfinite(out).all(axis=-1)
        if no_key.any() and (bad <= no_key).all():
            fail(f"{case.describe()}: a query with no allowed key gave NaN. Its output is 0: when the row's "
                 "running sum is still 0 at the end, return 0 for it instead of dividing.")
        fail(f"{case.describe()} gave NaN or inf. A block in which a row has no allowed key leaves that row's "
             "block maximum at -inf, and exp(-inf - (-inf)) is NaN: while a row's running max is still -inf, "
             "its rescaling factor and the block's exponentials must come out as 0, not NaN. With scores near "
             "1e4, also check that every exp is of (score - running max), never of a score itself.")
    if no_key.any() and not np.allclose(out[no_key], 0):
        fail(f"{case.describe()}: a query with no allowed key must give an all-zero output, as in chapter 1.")
    block = int(case.args.get("block_size", 64))
    right = np.isclose(out, want, rtol=1e-3, atol=1e-4).all(axis=-1)
    late_start = ~allowed[..., :block].any(axis=-1) & ~no_key   # no allowed key in the first block
    if late_start.any() and not right[late_start].all() and right[~late_start].all():
        fail(f"{case.describe()}: only the rows whose first block of keys is all masked are wrong. For them the "
             "running max is still -inf after that block, and exp(-inf - (-inf)) is NaN, which then spoils the "
             "sum for good: while a row's running max is -inf, subtract 0 instead, so that its masked scores give "
             "exp(-inf) = 0 and its rescaling factor is 0.")
    v = case.args["v"]
    if (v[..., 0] == 1).all():
        total = out[..., 0][~no_key]
        if not np.allclose(total, 1, atol=1e-3):
            fail(f"{case.describe()}: the weights of a row do not sum to 1 (v's first feature is all ones, and "
                 f"your output's first feature is {total.ravel()[0]:.4g}, not 1). Divide the accumulated output "
                 "by the running sum l once, at the end, and whenever the running max grows, rescale l and the "
                 "accumulated output by the same factor exp(m_old - m_new).")
    masked = np.where(allowed, scores, -np.inf)
    max_block = np.argmax(masked, axis=-1) // block
    early, late = (max_block == 0) & ~no_key, (max_block > 0) & ~no_key
    if late.any() and right[early].all() and not right[late].any():
        fail(f"{case.describe()}: the rows whose largest score is in the first block are right, the others are "
             "not. When a later block raises the running max from m_old to m_new, the sum and the output "
             "accumulated so far were computed with exp(s - m_old): multiply both by exp(m_old - m_new) before "
             "adding the new block.")


# --------------------------------------------------------------------------
# Online softmax attention: what one call allocates
# --------------------------------------------------------------------------

MEMORY_SHAPES = dict(batch=1, T_q=2048, T_k=3000, d_k=24, d_v=16)   # T_k is not a multiple of 64
MEMORY_BLOCK = 64           # the function's default block_size, with which the check calls it
MEMORY_FACTOR = 8           # arrays of (T_q, block_size + d_v) numbers a correct call may hold at once


def _memory_inputs():
    """Inputs large enough that (T_q, T_k) numbers dwarf (T_q, block_size + d_v) ones: 2048 × 3000
    against 2048 × 80, float32."""
    s = MEMORY_SHAPES
    rng = np.random.default_rng(5)
    q = normal(rng, (s["batch"], s["T_q"], s["d_k"]), np.float32)
    k = normal(rng, (s["batch"], s["T_k"], s["d_k"]), np.float32)
    v = normal(rng, (s["batch"], s["T_k"], s["d_v"]), np.float32)
    return q, k, v


def _memory_reference(sol):
    return {"out": sol["online_softmax_attention"](*_memory_inputs())}


def numpy_peak(call):
    """``(call(), bytes)``: the bytes above the level before the call at the call's peak, as NumPy
    reports its buffers to tracemalloc. The check and ``python -m benchmarks.online`` both measure so."""
    import tracemalloc
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        if started:
            tracemalloc.stop()


def _numpy_peak(call):
    return (*numpy_peak(call), {})


# Operators that only PyTorch's own attention runs (under a dispatch mode it takes its math path,
# whose softmax is _safe_softmax).
LIBRARY_ATTENTION_OPS = ("scaled_dot_product", "_safe_softmax")


def _torch_largest(call):
    """The largest tensor any operation creates during the call, and whether PyTorch's own attention ran."""
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        largest, library_attention = 0, False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if any(op in str(func) for op in LIBRARY_ATTENTION_OPS):
                Watch.library_attention = True
            for t in (result if isinstance(result, (tuple, list)) else (result,)):
                if hasattr(t, "element_size") and hasattr(t, "numel"):
                    Watch.largest = max(Watch.largest, t.numel() * t.element_size())
            return result

    library = F.scaled_dot_product_attention

    def noticed(*args, **kwargs):
        Watch.library_attention = True
        return library(*args, **kwargs)

    F.scaled_dot_product_attention = noticed
    try:
        with Watch():
            result = call()
    finally:
        F.scaled_dot_product_attention = library
    return result, Watch.largest, {"library_attention": Watch.library_attention}


def _cupy_largest(call):
    """The largest block of GPU memory CuPy allocates during the call (kernels' launches allocate nothing)."""
    import cupy
    pool, sizes = cupy.get_default_memory_pool(), []

    def recording(size):
        sizes.append(size)
        return pool.malloc(size)

    cupy.cuda.set_allocator(recording)
    try:
        result = call()
        cupy.cuda.Device().synchronize()
    finally:
        cupy.cuda.set_allocator(pool.malloc)
    return result, max(sizes, default=0), {}


MEASURES = {"numpy": ("peak", _numpy_peak), "torch": ("largest", _torch_largest), "cupy": ("largest", _cupy_largest)}


def _collect_memory(checks, fn):
    if not callable(fn):
        return {"not_callable": f"{type(fn).__module__}.{type(fn).__name__}"}
    q, k, v = (checks.backend.asarray(a) for a in _memory_inputs())
    kind, measure = MEASURES[checks.track]
    try:
        out, used, extra = measure(lambda: fn(q, k, v))
    except Exception as exc:
        return describe_exception(exc)
    return {"kind": kind, "bytes": int(used), "out": plain_value(out, checks.backend),
            "name": str(getattr(fn, "__name__", "online_softmax_attention"))[:100], **extra}


def memory_bounds(itemsize: int) -> tuple:
    """(allowed, matrix): the bytes a call may use, and those of one (T_q, T_k) array."""
    s = MEMORY_SHAPES
    allowed = MEMORY_FACTOR * s["batch"] * s["T_q"] * (MEMORY_BLOCK + s["d_v"]) * itemsize
    return allowed, s["batch"] * s["T_q"] * s["T_k"] * itemsize


def _mib(n):
    return f"{n / 2**20:.2f} MiB"


def _judge_memory(checks, record):
    name = record.get("name") if isinstance(record.get("name"), str) else "online_softmax_attention"
    if "not_callable" in record:
        fail(f"{name} is {record['not_callable']}, not a function: run the cell that defines it.")
    if "raised" in record:
        judge_exception(record, f"{name}(q (1, 2048, 24), k (1, 3000, 24), v (1, 3000, 16)) in float32", name)
    out = record.get("out", {})
    if not out.get("native") or not isinstance(out.get("array"), np.ndarray):
        fail(f"{name} returned {out.get('type')}; this notebook works with {checks.array_type_name}.")
    want = checks.cases("online_memory")[0].expected["out"]
    got = out["array"]
    if got.shape != want.shape or not is_close(got, want, "float32", checks.device):
        detail = (f"shape {got.shape}, expected {want.shape}" if got.shape != want.shape
                  else worst_mismatch(got, want))
        fail(f"on q (1, 2048, 24), k and v of 3000 keys, float32, {name} gives a wrong output ({detail}): "
             "make it pass its own check first; this one measures memory only for a right answer.")
    if record.get("library_attention"):
        fail(f"{name} calls PyTorch's own scaled_dot_product_attention: write the loop over key blocks "
             "yourself, with the running max and sum (the notebook compares yours with PyTorch's afterwards).")
    allowed, matrix = memory_bounds(4)
    used = record["bytes"]
    what = ("its peak memory above the inputs was" if record["kind"] == "peak"
            else "its largest single array was")
    if used >= matrix // 2:
        fail(f"{name} builds an array as large as the (T_q, T_k) scores: {what} {_mib(used)}, and one "
             f"(2048, 3000) float32 array is {_mib(matrix)}. Never compute q @ kᵀ for all the keys at once: "
             "take the keys block by block and keep only (T_q, block_size) scores at a time.")
    if used > allowed:
        fail(f"{name} used more memory than the online form needs: {what} {_mib(used)}, more than "
             f"{MEMORY_FACTOR} arrays of (T_q, block_size + d_v) = (2048, {MEMORY_BLOCK} + 16) float32 numbers "
             f"({_mib(allowed)}). Keep one block's scores, the running max and sum (T_q numbers each) and the "
             "(T_q, d_v) accumulator, and let each block's temporaries go before the next.")
    return (f"\u2714 {name} never builds the (T_q, T_k) matrix: {what} {_mib(used)} on 2048 queries × 3000 "
            f"keys, within {_mib(allowed)}, where one (T_q, T_k) float32 array takes {_mib(matrix)}.")


# --------------------------------------------------------------------------
# Grouped-query attention (stretch)
# --------------------------------------------------------------------------

def gqa_case(rng, B, T, d_model, n_heads, n_kv_heads, d_k, dtype, bias=False, mask=None):
    case = layers.layer_case(rng, B, T, d_model, n_heads, d_k, dtype, bias=bias, mask=mask)
    params = case["params"]
    for name in ("w_k", "w_v"):
        params[name] = np.ascontiguousarray(params[name][:, : n_kv_heads * d_k])
    for name in ("b_k", "b_v"):
        if name in params:
            params[name] = np.ascontiguousarray(params[name][: n_kv_heads * d_k])
    case["n_kv_heads"] = n_kv_heads
    return {key: case[key] for key in ("x", "params", "n_heads", "n_kv_heads", "mask") if key in case}


def gqa_visible(rng):
    return [gqa_case(rng, 2, 5, 12, 4, 2, 3, np.float64),
            gqa_case(rng, 1, 6, 16, 4, 1, 4, np.float32, bias=True, mask="causal"),      # multi-query
            gqa_case(rng, 2, 4, 12, 6, 3, 2, np.float64, mask="padding")]


def gqa_hidden(rng):
    return [gqa_case(rng, 3, 7, 24, 6, 2, 4, np.float64, bias=True, mask="per_example"),
            gqa_case(rng, 2, 5, 10, 4, 4, 3, np.float32),                                  # G = H: plain MHA
            gqa_case(rng, 1, 9, 18, 8, 4, 2, np.float32, mask="causal"),                   # H*d_k != d_model
            gqa_case(rng, 2, 6, 12, 6, 1, 2, np.float64, bias=True, mask="padding")]


def _expanded(params, n_heads, n_kv_heads, order):
    """Full-width K and V weights in which query head h reads K/V head ``order(h)``."""
    d_k = params["w_q"].shape[1] // n_heads
    full = dict(params)
    for name in ("w_k", "w_v", "b_k", "b_v"):
        if params.get(name) is None:
            continue
        blocks = np.split(params[name], n_kv_heads, axis=-1)
        full[name] = np.concatenate([blocks[order(h)] for h in range(n_heads)], axis=-1)
        assert full[name].shape[-1] == n_heads * d_k
    return full


def _multi_head(sol):
    """The solution's multi-head layer: grouped-query attention with a K/V head per query head."""
    return {"multi_head_attention": lambda x, params, n_heads, mask=None:
            sol["grouped_query_attention"](x, params, n_heads, n_heads, mask)}


def _round_robin(sol, x, params, n_heads, n_kv_heads, mask=None):
    if n_kv_heads in (1, n_heads):
        return None
    full = _expanded(params, n_heads, n_kv_heads, lambda h: h % n_kv_heads)
    return _multi_head(sol)["multi_head_attention"](x, full, n_heads, mask)


def _as_grouped(entry):
    """A multi-head layer's entry for grouped-query attention: the grouped layer is the multi-head
    layer whose K/V heads are repeated, each for its group of query heads."""
    def outputs(sol, x, params, n_heads, n_kv_heads, mask=None):
        full = _expanded(params, n_heads, n_kv_heads, lambda h: h // (n_heads // n_kv_heads))
        return entry.outputs(_multi_head(sol), x, full, n_heads, mask)
    return Inherited(entry.block, entry.label, outputs, message=entry.message)


GQA = Function(
    "grouped_query_attention", args=("x", "params", "n_heads", "n_kv_heads", "mask"), outputs=("out", "weights"),
    tracks=("numpy",),
    doc="grouped_query_attention(x, params, n_heads, n_kv_heads, mask=None) (stretch): w_k, w_v (and b_k, b_v) "
        "have n_kv_heads*d_k columns; query head h uses K/V head h // (n_heads // n_kv_heads).",
    visible=gqa_visible, hidden=gqa_hidden,
    mistakes=(Mistake("round_robin", "query head h used K/V head h % n_kv_heads: the heads of a group are "
                      "consecutive, so heads 0 .. H/G-1 share K/V head 0, the next H/G share head 1, and so on.",
                      _round_robin),),
    validate=layers.validate_layer_weights, diagnose=layers.diagnose_layer,
    uses=("split_heads", "scaled_dot_product_attention", "merge_heads"),
    # One bug costs once: on top of a chapter-1 attention with a known mistake, a correct grouped layer passes.
    inherited=tuple(_as_grouped(e) for e in layers.inherited_from_attention("multi_head_attention")))


# --------------------------------------------------------------------------
# The chapter's functions
# --------------------------------------------------------------------------

MHA_PARAM_COUNT = Function(
    "mha_param_count", args=("d_model", "n_heads", "bias"), outputs=("count",), tracks=("numpy",), returns="int",
    doc="mha_param_count(d_model, n_heads, bias=True) -> int: the numbers a layer with H*d_k = d_model learns.",
    visible=param_count_visible, hidden=param_count_hidden, mistakes=PARAM_MISTAKES)

MHA_FLOPS = Function(
    "mha_flops", args=("batch", "seq_len", "d_model", "n_heads"), outputs=("flops",), tracks=("numpy",),
    returns="int",
    doc="mha_flops(batch, seq_len, d_model, n_heads) -> int: matrix products only, a multiply-add counts 2.",
    visible=flops_visible, hidden=flops_hidden, mistakes=FLOP_MISTAKES)

ONLINE = Function(
    "online_softmax_attention", args=("q", "k", "v", "mask", "block_size"), outputs=("out",),
    doc="online_softmax_attention(q, k, v, mask=None, block_size=64) -> out, equal to "
        "scaled_dot_product_attention(q, k, v, mask)[0], keys taken block_size at a time.",
    visible=online_visible, hidden=online_hidden,
    reference=lambda sol, q, k, v, mask=None, block_size=64: _attention_out(sol, q, k, v, mask),
    mistakes=ONLINE_MISTAKES, diagnose=_diagnose_online)

TILED = Function(
    "tiled_attention", args=("q", "k", "v", "mask"), outputs=("out",), tracks=("cupy",),
    doc="tiled_attention(q, k, v, mask=None) -> out: online softmax attention in one cupy.RawKernel, a block "
        "of queries per thread block, key/value tiles through shared memory.",
    visible=lambda rng: [{k: v for k, v in c.items() if k != "block_size"} for c in online_visible(rng)],
    hidden=lambda rng: [{k: v for k, v in c.items() if k != "block_size"} for c in online_hidden(rng)],
    reference=lambda sol, q, k, v, mask=None: _attention_out(sol, q, k, v, mask),
    mistakes=tuple(m for m in ONLINE_MISTAKES if m.label in ("no_scale", "scale_by_d", "mask_ignored")),
    diagnose=_diagnose_online)


# --------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------

QUESTIONS = (
    Question(
        "crossover_seq_len", notebook="1_numpy", tracks=("numpy",),
        doc="For MiniLM's layers (d_model = 384), from which sequence length T on do the attention products "
            "cost as many FLOPs as the four projections?",
        answer=lambda sol: sol["crossover_seq_len"],
        mistakes=(
            Mistake("d_model", "At T = d_model the attention term, 4·B·T²·d, is half the projections' 8·B·T·d²; "
                    "set the two equal and solve for T.", lambda sol: 384),
            Mistake("four_d", "That is where the attention term is twice the projections'; the question asks "
                    "where they are equal.", lambda sol: 1536),
        ),
        hint="Set 4·B·T²·d equal to 8·B·T·d² and solve for T: B cancels, and so does one factor of T·d."),
    Question(
        "naive_weights_gib", notebook="1_numpy", tracks=("numpy",),
        doc="How many GiB does one head's float32 (T, T) weight matrix take at T = 65,536?",
        answer=lambda sol: sol["naive_weights_gib"],
        mistakes=(
            Mistake("float64", "That is for float64; float32 takes 4 bytes a number.",
                    lambda sol: 2 * sol["naive_weights_gib"]),
            Mistake("gigabytes", "That is in GB (10^9 bytes); a GiB is 2^30 bytes.",
                    lambda sol: sol["naive_weights_gib"] * 2**30 / 1e9),
        ),
        hint="T² numbers of 4 bytes each, divided by 2^30."),
    Question(
        "naive_memory_exponent", notebook="1_numpy", tracks=("numpy",), tolerance="estimate",
        doc="The exponent p of the fit peak memory ∝ T^p for chapter 1's scaled_dot_product_attention, measured "
            "with tracemalloc?",
        answer=lambda sol: sol["naive_memory_exponent"],
        mistakes=(Mistake("linear", "That is the online form's exponent: the naive form builds (T, T) arrays.",
                          lambda sol: 1.0),),
        hint="Fit a line to log(peak bytes) against log(T) (np.polyfit(np.log(T), np.log(peak), 1)); its slope is p."),
    Question(
        "tile_shared_bytes", notebook="2_cupy", tracks=("cupy",),
        doc="How many bytes of shared memory do one K tile and one V tile take together, for 32 keys of "
            "d_k = d_v = 64 float32 numbers each?",
        answer=lambda sol: sol["tile_shared_bytes"],
        mistakes=(
            Mistake("one_tile", "That is one tile; the kernel keeps a K tile and a V tile.",
                    lambda sol: sol["tile_shared_bytes"] // 2),
            Mistake("float64", "That is for float64; float32 takes 4 bytes a number.",
                    lambda sol: 2 * sol["tile_shared_bytes"]),
        ),
        hint="keys × features × bytes per number, for each of the two tiles."),
    Question(
        "key_reads", notebook="2_cupy", tracks=("cupy",),
        doc="With T_q = T_k = 4096 and 64 queries per thread block, how many times is each key row read from "
            "global memory in one call of the tiled kernel?",
        answer=lambda sol: sol["key_reads"],
        mistakes=(
            Mistake("tiles", "That is the number of key tiles; each thread block reads every tile once, and there "
                    "is one thread block per 64 queries.", lambda sol: 4096 // 32),
            Mistake("once", "Each thread block streams all the keys through its own shared memory; shared memory "
                    "is not shared between thread blocks.", lambda sol: 1),
            Mistake("per_query", "The threads of a block share each tile: it is read once per block of 64 "
                    "queries, not once per query.", lambda sol: 4096),
        ),
        hint="Count the thread blocks along the queries: each one reads all of K once."),
    Question(
        "flop_counter_total", notebook="3_pytorch", tracks=("torch",),
        doc="The total FlopCounterMode reports for nn.MultiheadAttention(256, 8, batch_first=True) on x of shape "
            "(2, 1024, 256), self-attention with need_weights=True?",
        answer=lambda sol: sol["flop_counter_total"],
        mistakes=(
            Mistake("projections_only", "That is the projections' 8·B·T·d² alone; the counter also counts the two "
                    "attention products.", lambda sol: 8 * 2 * 1024 * 256 ** 2),
            Mistake("multiply_add_once", "FlopCounterMode counts a multiply-add as 2.",
                    lambda sol: sol["flop_counter_total"] // 2),
        ),
        hint="Run the layer inside `with FlopCounterMode(display=False) as counter:` and read "
             "counter.get_total_flops()."),
    Question(
        "one_vs_many_heads_params", notebook="3_pytorch", tracks=("torch",),
        doc="sum(p.numel()) of nn.MultiheadAttention(512, 1) divided by that of nn.MultiheadAttention(512, 8)?",
        answer=lambda sol: sol["one_vs_many_heads_params"],
        mistakes=(Mistake("per_head", "The 8 heads split the same matrices between them; they do not have 8 "
                          "copies.", lambda sol: 1 / 8),
                  Mistake("per_head_inverse", "The one head does not hold 8 heads' worth of weights: both layers "
                          "have the same four matrices.", lambda sol: 8.0)),
        hint="Count both layers' parameters, then divide."),
)

CHAPTER = Chapter(
    "ch05_cost_and_scale",
    functions=(pasted_in(SOFTMAX, "numpy", "cupy"), pasted_in(SCALED_DOT_PRODUCT_ATTENTION, "numpy", "cupy"),
               pasted_in(SPLIT_HEADS, "numpy"), pasted_in(MERGE_HEADS, "numpy"),
               MHA_PARAM_COUNT, MHA_FLOPS, ONLINE, TILED, GQA),
    questions=QUESTIONS,
    custom=(Custom("online_memory", "online_softmax_attention never builds a (T_q, T_k) array: the memory one call "
                   "allocates on 2048 queries × 3000 keys, float32.", _collect_memory, _judge_memory,
                   reference=_memory_reference),))

Checks = CHAPTER.checks_class()
