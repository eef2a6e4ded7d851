"""What every function that takes a whole multi-head layer shares:
``f(x, params, n_heads, mask=None)`` in chapters 3, 4, 7 and 8.

``params`` follow the course's layout: ``w_q, w_k, w_v`` of shape
``(d_model, H*d_k)``, ``w_o`` of shape ``(H*d_k, d_model)``, optional biases
``b_q, b_k, b_v`` ``(H*d_k,)`` and ``b_o`` ``(d_model,)``. The cases cover
square layers (``H*d_k = d_model``) and pruned-style ones (``H*d_k != d_model``),
biases present and absent, every mask shape of the design (``(T, T)`` causal,
``(B, T, T)`` per example, ``(B, 1, T)`` key padding) including a query with no
allowed key, a batch as large as the number of heads, float32 and float64.

The known mistakes are made by the reference solution on transformed
parameters (a mistake in how heads are sliced or combined is the right layer
with its weights moved), so they hold for the loop form, the batched form and
any later function with the same signature. A layer built on ``split_heads`` and
``merge_heads`` inherits their known mistakes (``merge_heads``'s own are here too, so that
chapter 4 declares them and every later layer inherits them from one place).
"""
import math

import numpy as np

from ..engine import Inherited, Mistake, fail
from .common import causal, flip_is_distinct, normal, random_mask

SDPA = "scaled_dot_product_attention"

# --------------------------------------------------------------------------
# Case inputs
# --------------------------------------------------------------------------


def layer_params(rng, d_model, n_heads, d_k, dtype, bias=False) -> dict:
    width = n_heads * d_k
    params = {name: normal(rng, (d_model, width), dtype, 1 / math.sqrt(d_model)) for name in ("w_q", "w_k", "w_v")}
    params["w_o"] = normal(rng, (width, d_model), dtype, 1 / math.sqrt(width))
    if bias:
        params.update({name: normal(rng, (width,), dtype, 0.5) for name in ("b_q", "b_k", "b_v")})
        params["b_o"] = normal(rng, (d_model,), dtype, 0.5)
    return params


def layer_mask(rng, kind, B, T, empty_row=False):
    """A mask of one of the design's shapes; ``empty_row`` leaves a query with no allowed key."""
    if kind == "causal":
        return causal(T)
    if kind == "per_example":
        return random_mask(rng, (B, T, T), empty_row=1 if empty_row else None)
    if kind == "padding":  # (B, 1, T): key j is real when j < length
        lengths = rng.integers(1, T + 1, size=B)
        lengths[-1] = max(1, T - 2)  # one example with padding in every case
        if empty_row:
            lengths[0] = 0  # an empty sequence: every query of it has no key
        return (np.arange(T) < lengths[:, None])[:, None, :]
    raise ValueError(f"unknown mask kind {kind!r}")


def layer_case(rng, B, T, d_model, n_heads, d_k, dtype, bias=False, mask=None, empty_row=False) -> dict:
    case = dict(x=normal(rng, (B, T, d_model), dtype),
                params=layer_params(rng, d_model, n_heads, d_k, dtype, bias), n_heads=n_heads)
    if mask is not None:
        case["mask"] = layer_mask(rng, mask, B, T, empty_row)
    return case


def layer_visible(rng) -> list:
    f64, f32 = np.float64, np.float32
    return [layer_case(rng, 2, 5, 12, 3, 4, f64),                                  # B, T, d_model, H, d_k all differ
            layer_case(rng, 2, 6, 12, 4, 3, f32, bias=True, mask="causal"),
            layer_case(rng, 3, 4, 10, 2, 5, f64, bias=True, mask="padding")]


def layer_hidden(rng) -> list:
    f64, f32 = np.float64, np.float32
    return [
        layer_case(rng, 3, 7, 10, 3, 4, f64, bias=True, mask="per_example", empty_row=True),  # pruned: H*d_k 12 != 10
        layer_case(rng, 4, 5, 16, 4, 4, f32, mask="padding", empty_row=True),                 # B == H, an empty sequence
        layer_case(rng, 2, 9, 18, 6, 3, f64, bias=True, mask="causal"),
        layer_case(rng, 1, 6, 20, 2, 7, f32, bias=True),                                      # pruned: 14 != 20
        layer_case(rng, 5, 4, 12, 2, 6, f32, mask="per_example"),
        layer_case(rng, 2, 8, 15, 5, 3, f64),                                                 # odd sizes, no bias, no mask
        layer_case(rng, 3, 6, 8, 1, 8, f32, bias=True, mask="causal"),                        # one head: the single-head layer
    ]


# --------------------------------------------------------------------------
# Transformed parameters: the right layer, with its weights moved
# --------------------------------------------------------------------------

def sizes(x, params, n_heads):
    """``(d_model, H*d_k, d_k)`` of a layer."""
    width = params["w_q"].shape[1]
    return x.shape[-1], width, width // n_heads


def changed(params: dict, **changes) -> dict:
    """A copy of ``params`` with entries replaced (``None`` removes one)."""
    new = dict(params)
    for name, value in changes.items():
        if value is None:
            new.pop(name, None)
        else:
            new[name] = value
    return new


def scaled_queries(params, factor) -> dict:
    """Scores scaled by ``factor``: the queries (weights and bias) scaled by it."""
    factor = params["w_q"].dtype.type(factor)
    return changed(params, w_q=params["w_q"] * factor,
                   b_q=params["b_q"] * factor if params.get("b_q") is not None else None)


def head_column_order(width, n_heads, strided=False) -> np.ndarray:
    """Which columns each head takes, heads one after another: contiguous blocks,
    or every H-th column (head h takes h, h+H, ...) when ``strided``."""
    d_k = width // n_heads
    blocks = np.arange(width).reshape(d_k, n_heads).T if strided else np.arange(width).reshape(n_heads, d_k)
    return blocks.reshape(-1)


def reversed_w_o_blocks(params, n_heads) -> dict:
    """Head h writing through the block of head H-1-h: the heads concatenated in reverse."""
    w_o = params["w_o"]
    blocks = w_o.reshape(n_heads, -1, w_o.shape[1])[::-1]
    return changed(params, w_o=np.ascontiguousarray(blocks.reshape(w_o.shape)))


def strided_columns(params, n_heads) -> dict:
    order = head_column_order(params["w_q"].shape[1], n_heads, strided=True)
    moved = {n: np.ascontiguousarray(params[n][:, order]) for n in ("w_q", "w_k", "w_v")}
    moved.update({n: np.ascontiguousarray(params[n][order]) for n in ("b_q", "b_k", "b_v")
                  if params.get(n) is not None})
    return changed(params, **moved)


# --------------------------------------------------------------------------
# Known mistakes of a whole layer, for the function ``name``
# --------------------------------------------------------------------------

def _call(sol, name, x, params, n_heads, mask=None):
    return sol[name](x, params, n_heads, mask)


def _square(x, params) -> bool:
    d_model, width, _ = sizes(x, params, 1)
    return d_model == width


def layer_mistakes(name: str, adds_b_o: bool = True) -> tuple:
    """The mistakes of a function computing a whole layer (or what its heads write)."""

    def scale_d_model(sol, x, params, n_heads, mask=None):
        d_model, _, d_k = sizes(x, params, n_heads)
        if d_k == d_model:
            return None
        return _call(sol, name, x, scaled_queries(params, math.sqrt(d_k / d_model)), n_heads, mask)

    def heads_reversed(sol, x, params, n_heads, mask=None):
        return None if n_heads == 1 else _call(sol, name, x, reversed_w_o_blocks(params, n_heads), n_heads, mask)

    def heads_strided(sol, x, params, n_heads, mask=None):
        d_k = params["w_q"].shape[1] // n_heads
        if n_heads == 1 or d_k == 1:
            return None
        return _call(sol, name, x, strided_columns(params, n_heads), n_heads, mask)

    def qkv_bias_ignored(sol, x, params, n_heads, mask=None):
        if params.get("b_q") is None:
            return None
        return _call(sol, name, x, changed(params, b_q=None, b_k=None, b_v=None), n_heads, mask)

    def b_o_ignored(sol, x, params, n_heads, mask=None):
        return None if params.get("b_o") is None else _call(sol, name, x, changed(params, b_o=None), n_heads, mask)

    def w_o_ignored(sol, x, params, n_heads, mask=None):
        if not _square(x, params):
            return None  # not square: the output's last axis would be H*d_k, a shape error
        eye = np.eye(params["w_o"].shape[0], dtype=params["w_o"].dtype)
        forms = [_call(sol, name, x, changed(params, w_o=eye), n_heads, mask)]
        if params.get("b_o") is not None:
            forms.append(_call(sol, name, x, changed(params, w_o=eye, b_o=None), n_heads, mask))
        return forms

    def w_o_transposed(sol, x, params, n_heads, mask=None):
        if not _square(x, params):
            return None
        return _call(sol, name, x, changed(params, w_o=np.ascontiguousarray(params["w_o"].T)), n_heads, mask)

    def mask_dropped(sol, x, params, n_heads, mask=None):
        return None if mask is None else _call(sol, name, x, params, n_heads)

    mistakes = [
        Mistake("scale_d_model", "the scores were divided by sqrt(d_model) instead of sqrt(d_k): each head "
                "compares d_k-dimensional queries and keys, d_k = w_q.shape[1] // n_heads.", scale_d_model),
        Mistake("heads_reversed", "the heads are combined in the wrong order: head h must meet rows "
                "h*d_k:(h+1)*d_k of w_o, so concatenate the heads in order 0, 1, ..., H-1.", heads_reversed),
        Mistake("heads_strided", "each head took every H-th column (h, h+H, h+2H, ...) instead of the block "
                "h*d_k:(h+1)*d_k: reshape the last axis to (n_heads, d_k), in that order, then move the head "
                "axis forward.", heads_strided),
        Mistake("qkv_bias_ignored", "the biases b_q, b_k, b_v were left out: add each to its projection "
                "(a missing bias counts as zero, a present one must be used).", qkv_bias_ignored),
        Mistake("mask_dropped", "the mask was not applied: give it to every head's attention (insert a head "
                "axis so a (B, T, T) or (B, 1, T) mask broadcasts over (B, H, T, T)).", mask_dropped),
    ]
    if adds_b_o:
        mistakes += [
            Mistake("b_o_ignored", "the output bias b_o was left out: out = concat(heads) @ w_o + b_o.", b_o_ignored),
            Mistake("w_o_ignored", "the output projection is missing: the heads' concatenation must go through "
                    "w_o (out = concat(heads) @ w_o + b_o).", w_o_ignored),
            Mistake("w_o_transposed", "w_o was used transposed: it has shape (H*d_k, d_model) and maps the "
                    "concatenated heads to d_model; use it as it is.", w_o_transposed),
        ]
    return tuple(mistakes)


NO_SCALE = ("the scores were not divided by sqrt(d_k) in scaled_dot_product_attention: scale q·kᵀ by "
            "1/sqrt(d_k), with d_k = q.shape[-1].")
SCALE_BY_D = "scaled_dot_product_attention divides the scores by d_k instead of sqrt(d_k)."
MASK_FLIPPED = ("scaled_dot_product_attention uses the mask the wrong way round: True means 'may attend'.")
MASK_IGNORED = "scaled_dot_product_attention ignores its mask: keys where mask is False must get weight 0."


def inherited_from_attention(name: str) -> tuple:
    """What a correct layer gives on top of a ``scaled_dot_product_attention`` with a known
    mistake (chapter 1's labels): one bug costs once."""

    def no_scale(sol, x, params, n_heads, mask=None):
        return _call(sol, name, x, scaled_queries(params, math.sqrt(sizes(x, params, n_heads)[2])), n_heads, mask)

    def scale_by_d(sol, x, params, n_heads, mask=None):
        return _call(sol, name, x, scaled_queries(params, 1 / math.sqrt(sizes(x, params, n_heads)[2])), n_heads, mask)

    def mask_flipped(sol, x, params, n_heads, mask=None):
        B, T = x.shape[:2]
        if mask is None or not flip_is_distinct(mask, (B,), T, T):
            return None
        return _call(sol, name, x, params, n_heads, ~mask)

    def mask_ignored(sol, x, params, n_heads, mask=None):
        return None if mask is None else _call(sol, name, x, params, n_heads)

    return (Inherited(SDPA, "no_scale", no_scale, message=NO_SCALE),
            Inherited(SDPA, "scale_by_d", scale_by_d, message=SCALE_BY_D),
            Inherited(SDPA, "mask_flipped", mask_flipped, message=MASK_FLIPPED),
            Inherited(SDPA, "mask_ignored", mask_ignored, message=MASK_IGNORED))


# --------------------------------------------------------------------------
# The building blocks' mistakes, seen through a whole layer
# --------------------------------------------------------------------------

def merge_no_transpose(sol, x):
    """``x.reshape(B, T, H*d_k)`` straight from (B, H, T, d_k): the correct merge of a
    tensor whose rows were shuffled the same way."""
    B, H, T, d_k = x.shape
    if H == 1 or T == 1:
        return None
    return sol["merge_heads"](np.ascontiguousarray(x.reshape(B, T, H, d_k).transpose(0, 2, 1, 3)))


def merge_heads_reversed(sol, x):
    return None if x.shape[1] == 1 else sol["merge_heads"](np.ascontiguousarray(x[:, ::-1]))


def merge_interleaved(sol, x):
    """Columns ordered feature-major (d*H + h) instead of head-major (h*d_k + d)."""
    if x.shape[1] == 1 or x.shape[3] == 1:
        return None
    return sol["merge_heads"](np.ascontiguousarray(x.transpose(0, 3, 2, 1)))


MERGE_NO_TRANSPOSE = ("the tokens are scrambled: a reshape of (B, H, T, d_k) straight to (B, T, H*d_k) mixes "
                      "rows of different tokens. Move the head axis next to d_k first (swap axes 1 and 2), "
                      "then reshape.")
MERGE_REVERSED = "the heads are concatenated in reverse order: head 0 must fill columns 0 .. d_k-1."
MERGE_INTERLEAVED = ("the columns are interleaved (feature d of head h landed at column d*H + h): the axes were "
                     "put in the order (B, T, d_k, H) before the reshape; it must be (B, T, H, d_k), so that each "
                     "head's d_k features stay side by side.")


def with_wrong_merge(sol, x, params, n_heads, mask, wrong_merge):
    """The layer whose merge step is ``wrong_merge`` (a merge_heads mistake above), every other step
    right. The heads come from the reference layer with w_o = I and no b_o (its output is then the
    concatenated heads); undoing that concatenation gives (B, H, T, d_k) to merge the wrong way."""
    width = params["w_q"].shape[1]
    eye = np.eye(width, dtype=params["w_o"].dtype)
    concat, weights = sol["multi_head_attention"](x, changed(params, w_o=eye, b_o=None), n_heads, mask)
    B, T = x.shape[:2]
    heads = np.ascontiguousarray(concat.reshape(B, T, n_heads, width // n_heads).transpose(0, 2, 1, 3))
    merged = wrong_merge(sol, heads)
    if merged is None:
        return None
    out = merged @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, weights


def inherited_from_split(name):
    """A correct layer on top of a split_heads that gives head h every H-th feature (chapter 3's
    "strided" mistake) is the right layer with the columns of w_q, w_k, w_v (and biases) reordered."""

    def strided(sol, x, params, n_heads, mask=None):
        if n_heads == 1 or params["w_q"].shape[1] // n_heads == 1:
            return None
        return sol[name](x, strided_columns(params, n_heads), n_heads, mask)

    return (Inherited("split_heads", "strided", strided, message="split_heads gives head h every H-th feature "
                      "(h, h+H, ...) instead of the block h*d_k:(h+1)*d_k."),)


def inherited_from_merge(name):
    """What a correct layer gives on top of a merge_heads with a known mistake. Reversed and
    interleaved heads are the right layer with the rows of w_o moved; a merge without the transpose
    scrambles tokens, which no weight change reproduces, so it is rebuilt from the reference's heads."""

    def reversed_heads(sol, x, params, n_heads, mask=None):
        if n_heads == 1:
            return None
        return sol[name](x, reversed_w_o_blocks(params, n_heads), n_heads, mask)

    def interleaved(sol, x, params, n_heads, mask=None):
        width = params["w_q"].shape[1]
        if n_heads == 1 or width // n_heads == 1:
            return None
        order = head_column_order(width, n_heads, strided=True)
        return sol[name](x, changed(params, w_o=np.ascontiguousarray(params["w_o"][order])), n_heads, mask)

    def no_transpose(sol, x, params, n_heads, mask=None):
        return with_wrong_merge(sol, x, params, n_heads, mask, merge_no_transpose)

    return (Inherited("merge_heads", "heads_reversed", reversed_heads, message=MERGE_REVERSED),
            Inherited("merge_heads", "interleaved", interleaved, message=MERGE_INTERLEAVED),
            Inherited("merge_heads", "no_transpose", no_transpose, message=MERGE_NO_TRANSPOSE))


# --------------------------------------------------------------------------
# Properties and diagnoses
# --------------------------------------------------------------------------

def validate_layer_weights(got, case):
    """``weights`` must be (B, H, T, T): one map per head, head axis second."""
    weights = got["weights"][0]
    B, T = case.args["x"].shape[:2]
    H = int(case.args["n_heads"])
    if weights.shape == (B, T, T) and H > 1:
        fail(f"weights of {case.describe()} have shape {weights.shape}: keep one map per head, (B, H, T, T) = "
             f"{(B, H, T, T)}. Averaging over heads is what nn.MultiheadAttention does by default, not this course.")
    if weights.shape == (B, T, H, T) and H != T:
        fail(f"weights of {case.describe()} have shape {weights.shape}, expected (B, H, T, T) = {(B, H, T, T)}: "
             "the head axis must come right after the batch axis; did you forget to move it before the attention?")


def diagnose_layer(got, case):
    """Explain a layer's mismatch that no known mistake explains."""
    x, n_heads = case.args["x"], int(case.args["n_heads"])
    d_model, width = x.shape[-1], case.args["params.w_q"].shape[1]
    mask = case.args.get("mask")
    if not all(np.isfinite(v).all() for v in got.values()):
        if mask is not None and not np.broadcast_to(mask, (x.shape[0], x.shape[1], x.shape[1])).any(axis=-1).all():
            fail(f"{case.describe()} gave NaN: a query with no allowed key must get all-zero weights and a zero "
                 "attention output (then out is only b_o there), as in chapter 1.")
        fail(f"{case.describe()} gave NaN or inf values.")
    if width != d_model:
        fail(f"{case.describe()}: the outputs differ from the reference. This layer is pruned-style: H*d_k = "
             f"{width} differs from d_model = {d_model}. Take d_k = w_q.shape[1] // n_heads = {width // n_heads}, "
             f"never d_model // n_heads = {d_model // n_heads}.")
