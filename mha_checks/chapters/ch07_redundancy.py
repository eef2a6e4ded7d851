"""Chapter 7 checks: how redundant heads are.

- ``masked_multi_head_attention`` (every track): the layer with a head mask ``xi`` ``(H,)``
  that multiplies each head's output before ``w_o`` (``b_o`` unscaled; the weights are the
  softmax weights, unscaled). Its cases are the whole-layer cases of :mod:`.layers` with head
  masks of ones, zeros, a single 0 and fractional values; its mistakes are the layer's
  (adapted from :func:`layers.layer_mistakes`) and the head mask's own.
- ``masked_forward`` (NumPy, CuPy): chapter 6's attention-only model with a head mask
  ``(L, H)``, row l for layer l.
- ``predictable_loss`` (NumPy, PyTorch): each sequence's mean cross-entropy over the
  positions the toy task makes predictable, with a stable log-softmax.
- ``central_difference`` (NumPy, a custom check): the gradient of known functions (a
  quadratic, a cubic, ``sin`` of a matrix product) against their analytic gradients.
- ``mask_gradients`` (NumPy): per-example ``d loss / d xi`` at ``xi = 1`` by central
  differences of the student's own forward pass; ``matches_autograd`` compares it with the
  gradients PyTorch's autograd gives on the course's model (a generated file). In PyTorch,
  ``autograd_gradients`` checks the student's autograd version against the same file.
- ``head_importance`` (every track): Michel et al.'s importance, ``mean |grad|`` over the
  examples, each layer's row divided by its l2 norm.
- ``head_similarity`` (NumPy): cosine similarity between heads' flattened maps or
  contributions, ``(H, H)``.
- ``ablation_estimate`` (NumPy, stretch): the first-order (Taylor) estimate of the loss
  change when a head is removed, ``-mean(grad)``.

In a notebook::

    from mha_checks.chapters.ch07_redundancy import Checks
    check = Checks("numpy")
    check.masked_multi_head_attention(masked_multi_head_attention)

Chapter 8 pastes :data:`MASKED_MULTI_HEAD_ATTENTION` in (``pasted_in``): its name and
signature stay fixed.
"""
import math
from pathlib import Path

import numpy as np

from .. import toy_task
from ..cases import grouped_args
from ..engine import (Chapter, Custom, Function, Generated, Mistake, Question, describe_exception, fail,
                      is_near, judge_exception, outputs_of, plain_result, worst_mismatch)
from ..kit import layers
from ..kit.common import normal, pasted_in
from ..kit.differences import collect_central_difference, judge_central_difference
from ..kit.head_masks import (B_O_SCALED, INTERLEAVED, MASKED, QUERIES_SCALED, WEIGHTS_SCALED, adapted, all_ones,
                              b_o_scaled, forward_no_mask, forward_rows_reversed, forward_same_row, mask_interleaved,
                              queries_scaled, weights_scaled, with_head_masks)
from ..kit.models import (collect_model, diagnose_forward, float64_model, judge_model, load_course_model,
                          random_tokens, small_model, validate_forward)
from ..kit.modules import collect_module, collect_per_example, judge_module, judge_per_example
from .ch01_single_head import CAUSAL_MASK, SCALED_DOT_PRODUCT_ATTENTION, SOFTMAX
from .ch03_split_heads import SPLIT_HEADS
from .ch04_concat_and_wo import HEAD_CONTRIBUTIONS, MERGE_HEADS, MULTI_HEAD_ATTENTION

GRADIENTS_FILE = Path(__file__).resolve().parent.parent / "data" / "ch07_redundancy_gradients.npz"
RECORDED = 12   # held-out sequences whose autograd gradients the generated file keeps


# --------------------------------------------------------------------------
# masked_multi_head_attention: the layer with a head mask
# --------------------------------------------------------------------------

def masked_visible(rng):
    # layer_visible: H = 3 (f64), H = 4 (f32, causal, biases), H = 2 (f64, padding, biases)
    return with_head_masks(layers.layer_visible(rng), ([1, 0, 1], [0.5, 1.7, 0, 1], [0, 1]))


def masked_hidden(rng):
    # layer_hidden: H = 3, 4, 6, 2, 2, 5, 1
    return with_head_masks(layers.layer_hidden(rng), (
        [1.0, 0.5, 0.0],                       # pruned-style, per-example mask with an empty row
        [0, 0, 0, 0],                          # every head off: out is b_o (none here: zeros)
        [1, 1, 1, 0, 1, 1],                    # a single head off
        [1, 1],                                # ones: the layer itself
        [1.7, -0.3],                           # xi is a continuous variable
        [0.25, 1, 0, 2, 1],
        [0.0]))                                # one head, switched off: out is b_o


def _validate_masked(got, case):
    layers.validate_layer_weights(got, case)
    out = got["out"][0]
    B, T, d_model = case.args["x"].shape
    H = int(case.args["n_heads"])
    if out.shape == (B, H, T, d_model):
        fail(f"{case.describe()} returned out of shape {out.shape}: one slice per head (head_contributions). "
             f"The layer sums them: out is (B, T, d_model) = {(B, T, d_model)}.")


MASKED_MULTI_HEAD_ATTENTION = Function(
    MASKED, args=("x", "params", "n_heads", "head_mask", "mask"), outputs=("out", "weights"),
    doc="masked_multi_head_attention(x, params, n_heads, head_mask, mask=None) -> (out (B, T, d_model), weights "
        "(B, H, T, T)): head h's output multiplied by head_mask[h] before w_o; b_o and the weights unscaled.",
    visible=masked_visible, hidden=masked_hidden,
    mistakes=(Mistake("weights_scaled", WEIGHTS_SCALED, weights_scaled),
              Mistake("b_o_scaled", B_O_SCALED, b_o_scaled),
              Mistake("queries_scaled", QUERIES_SCALED, queries_scaled),
              Mistake("mask_interleaved", INTERLEAVED, mask_interleaved),
              Mistake("mask_ignored", "the head mask had no effect: these are the layer's outputs with every head "
                      "kept. Multiply each head's output by its entry of head_mask before merging.",
                      lambda sol, x, params, n_heads, head_mask, mask=None: None if all_ones(head_mask) else
                      sol[MASKED](x, params, n_heads, np.ones_like(head_mask), mask)))
    + tuple(adapted(m) for m in layers.layer_mistakes(MASKED)),
    validate=_validate_masked, diagnose=layers.diagnose_layer,
    uses=("split_heads", "scaled_dot_product_attention", "merge_heads"),
    inherited=tuple(adapted(m) for m in layers.inherited_from_attention(MASKED) + layers.inherited_from_split(MASKED)
                    + layers.inherited_from_merge(MASKED)))


# --------------------------------------------------------------------------
# masked_forward: the attention-only model with a head mask (L, H)
# --------------------------------------------------------------------------

def _course_model_case(start, n, head_mask):
    model, n_heads = toy_task.load_model()
    tokens, _ = toy_task.held_out()
    return dict(tokens=tokens[start:start + n], model=model, n_heads=n_heads,
                head_mask=np.asarray(head_mask, dtype=np.float32))


def forward_visible(rng):
    return [
        dict(tokens=random_tokens(rng, 2, 9, 11), model=small_model(rng, 11, 9, 24, 3, 2, np.float64), n_heads=3,
             head_mask=np.array([[1, 0, 1], [0.5, 1, 1.7]])),
        _course_model_case(0, 3, [[1, 1, 0, 1], [1, 0.5, 1, 1]]),
    ]


def forward_hidden(rng):
    return [
        dict(tokens=random_tokens(rng, 3, 6, 7), model=small_model(rng, 7, 10, 20, 5, 3, np.float32), n_heads=5,
             head_mask=np.array([[1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0.5, 1, 2, 1]], np.float32)),
        dict(tokens=random_tokens(rng, 4, 8, 13), model=small_model(rng, 13, 8, 12, 2, 1, np.float64), n_heads=2,
             head_mask=np.array([[0.3, 1.0]])),
        dict(tokens=random_tokens(rng, 2, 7, 9), model=small_model(rng, 9, 7, 18, 3, 2, np.float32, d_k=4), n_heads=3,
             head_mask=np.array([[1, 1, 1], [1, 0, 1]], np.float32)),
        _course_model_case(100, 4, [[0, 1, 1, 1], [1, 1, 1, 0]]),
    ]


MASKED_FORWARD = Function(
    "masked_forward", args=("tokens", "model", "n_heads", "head_mask"), outputs=("logits", "weights"),
    tracks=("numpy", "cupy"),
    doc="masked_forward(tokens (B, T), model, n_heads, head_mask (L, H)) -> (logits (B, T, V), weights "
        "(B, L, H, T, T)): chapter 6's attention_only_forward, layer l using masked_multi_head_attention with "
        "head_mask[l].",
    visible=forward_visible, hidden=forward_hidden,
    mistakes=(
        Mistake("same_row", "every layer got head_mask[0]: layer l takes row l of the (L, H) head mask.",
                forward_same_row),
        Mistake("rows_reversed", "the head mask's rows reached the layers in reverse order: row l belongs to "
                "layer l (model['layers'][l]).", forward_rows_reversed),
        Mistake("no_mask", "the logits are those of the model without a head mask: pass head_mask[l] to "
                "masked_multi_head_attention in layer l.", forward_no_mask),
    ),
    validate=validate_forward, diagnose=diagnose_forward,
    uses=("masked_multi_head_attention", "causal_mask"))


# --------------------------------------------------------------------------
# predictable_loss: per-sequence cross-entropy over the predictable positions
# --------------------------------------------------------------------------

def _loss_case(rng, B, T, V, dtype, scale=3.0, periods=None):
    tokens = rng.integers(0, V, size=(B, T)).astype(np.int64)
    if periods is None:
        periods = rng.integers(2, T, size=B)
    return dict(logits=normal(rng, (B, T, V), dtype, scale), tokens=tokens, periods=np.asarray(periods, np.int64))


def loss_visible(rng):
    return [_loss_case(rng, 3, 7, 5, np.float64, periods=[2, 4, 6]),
            _loss_case(rng, 2, 9, 11, np.float32),
            _loss_case(rng, 4, 6, 8, np.float64, scale=400.0, periods=[1, 5, 3, 2])]   # exp overflows


def loss_hidden(rng):
    return [_loss_case(rng, 5, 8, 6, np.float32),
            _loss_case(rng, 2, 11, 4, np.float64, scale=2000.0),           # large logits: exp overflows
            _loss_case(rng, 3, 5, 9, np.float32, scale=500.0, periods=[1, 2, 4]),
            _loss_case(rng, 1, 13, 7, np.float64, periods=[12]),            # one predictable position
            _loss_case(rng, 6, 4, 3, np.float32, periods=[1, 1, 2, 3, 3, 2])]


def _loss_all_positions(sol, logits, tokens, periods):
    if np.all(periods <= 1):
        return None
    return sol["predictable_loss"](logits, tokens, np.ones_like(periods))


def _loss_off_by_one(sol, logits, tokens, periods):
    shifted = logits.copy()
    shifted[:, :-1] = logits[:, 1:]             # logits[:, 1:] scored against tokens[:, 1:]
    targets = tokens.copy()
    targets[:, 1:] = tokens[:, :-1]             # logits[:, :-1] against tokens[:, :-1]
    return [sol["predictable_loss"](shifted, tokens, periods), sol["predictable_loss"](logits, targets, periods)]


def _loss_bits(sol, logits, tokens, periods):
    return sol["predictable_loss"](logits, tokens, periods) / logits.dtype.type(math.log(2))


def _loss_summed(sol, logits, tokens, periods):
    counts = toy_task.predictable(periods, tokens.shape[1]).sum(axis=1)
    if np.all(counts == 1):
        return None
    loss = sol["predictable_loss"](logits, tokens, periods)
    T = tokens.shape[1]
    return [loss * counts.astype(logits.dtype), loss * (counts / (T - 1)).astype(logits.dtype)]


def _validate_loss(got, case):
    loss = got["loss"][0]
    B, T = case.args["tokens"].shape
    if loss.shape == ():
        fail(f"{case.describe()} returned one number: that is the mean over the whole batch. Return one loss per "
             f"sequence, shape ({B},), each the mean over that sequence's own predictable positions.")
    if loss.shape in ((B, T - 1), (B, T)):
        fail(f"{case.describe()} returned shape {loss.shape}, a loss per position: average each sequence's "
             f"predictable positions, to shape ({B},).")


def _diagnose_loss(got, case):
    loss = got["loss"]
    if not np.isfinite(loss).all():
        fail(f"{case.describe()} gave NaN or inf: with logits this large, exp overflows. Use a stable "
             "log-softmax: subtract each row's max before exp, and compute log p = z - max - log(sum(exp(z - "
             "max))), never log(exp(z) / sum(exp(z))).")
    if (loss < 0).any():
        fail(f"{case.describe()} gave a negative loss: a cross-entropy is -log p of the right token, and p <= 1.")


PREDICTABLE_LOSS = Function(
    "predictable_loss", args=("logits", "tokens", "periods"), outputs=("loss",), tracks=("numpy", "torch"),
    doc="predictable_loss(logits (B, T, V), tokens (B, T), periods (B,)) -> (B,): each sequence's mean "
        "cross-entropy (nats) of logits[:, :-1] against tokens[:, 1:] over its predictable positions "
        "(toy_task.predictable), with a stable log-softmax.",
    visible=loss_visible, hidden=loss_hidden,
    mistakes=(
        Mistake("all_positions", "every position was scored: only the predictable ones count (target t+1 with "
                "t+1 >= period, toy_task.predictable(periods, T)); the first period is a fresh random draw.",
                _loss_all_positions),
        Mistake("off_by_one", "the logits and targets are misaligned by one: the logits at position t predict "
                "token t+1, so score logits[:, :-1] against tokens[:, 1:].", _loss_off_by_one),
        Mistake("bits", "the loss is in bits (log2); the course's cross-entropy is in nats (natural log).",
                _loss_bits),
        Mistake("summed", "each sequence's losses were summed (or divided by all T-1 positions): average over "
                "that sequence's predictable positions only.", _loss_summed),
    ),
    validate=_validate_loss, diagnose=_diagnose_loss)


# --------------------------------------------------------------------------
# mask_gradients: per-example d loss / d xi at xi = 1, by central differences
# --------------------------------------------------------------------------

def _toy_batch(rng, B, T, vocab, periods):
    tokens, lengths = toy_task.repeated_patterns(rng, B, seq_len=T, vocab=vocab, periods=periods)
    return tokens, lengths


def _gradient_case(rng, B, T, vocab, d_model, n_heads, n_layers, periods, d_k=None):
    tokens, lengths = _toy_batch(rng, B, T, vocab, periods)
    return dict(tokens=tokens, periods=lengths,
                model=small_model(rng, vocab, T, d_model, n_heads, n_layers, np.float64, d_k=d_k), n_heads=n_heads)


def _course_gradient_case(start, n):
    model, n_heads = toy_task.load_model()
    tokens, periods = toy_task.held_out()
    return dict(tokens=tokens[start:start + n], periods=periods[start:start + n], model=float64_model(model),
                n_heads=n_heads)


def gradients_visible(rng):
    return [_gradient_case(rng, 3, 9, 7, 12, 3, 2, (2, 4)),
            _course_gradient_case(0, 2)]


def gradients_hidden(rng):
    return [_gradient_case(rng, 4, 8, 6, 10, 2, 3, (2, 5)),
            _gradient_case(rng, 2, 11, 9, 15, 5, 1, (3, 6), d_k=2),
            _course_gradient_case(200, 3)]


def _gradients_batch_mean(sol, tokens, periods, model, n_heads):
    grads = sol["mask_gradients"](tokens, periods, model, n_heads)
    return np.broadcast_to(grads.mean(axis=0), grads.shape).copy()


def _gradients_at_zero(sol, tokens, periods, model, n_heads):
    L = len(model["layers"])

    def losses(head_mask):
        return sol["predictable_loss"](sol["masked_forward"](tokens, model, n_heads, head_mask)[0], tokens, periods)
    return sol["central_difference"](losses, np.zeros((L, n_heads), dtype=model["embed"].dtype))


def _validate_gradients(got, case):
    grads = got["grads"][0]
    N = case.args["tokens"].shape[0]
    L = len(grouped_args(case.args)["model"]["layers"])
    H = int(case.args["n_heads"])
    if grads.shape == (L, H):
        fail(f"{case.describe()} returned shape {grads.shape}: the gradient of one loss for the whole batch. "
             f"Keep one gradient per sequence, (N, L, H) = {(N, L, H)}: let f return predictable_loss's (N,) "
             "losses, and central_difference gives (N,) + xi.shape.")
    if grads.shape == (L, H, N):
        fail(f"{case.describe()} returned shape {grads.shape}: the sequences' axis goes first, (N, L, H) = "
             f"{(N, L, H)}, as central_difference returns f(xi).shape + xi.shape.")


MASK_GRADIENTS = Function(
    "mask_gradients", args=("tokens", "periods", "model", "n_heads"), outputs=("grads",), tracks=("numpy",),
    reproducible="reproducible_finite_differences",  # differences divide the rounding of two forward passes by eps
    doc="mask_gradients(tokens (N, T), periods (N,), model, n_heads, eps=1e-3) -> (N, L, H): each sequence's "
        "d predictable_loss / d head_mask at head_mask = 1, by central_difference of masked_forward.",
    visible=gradients_visible, hidden=gradients_hidden,
    mistakes=(
        Mistake("batch_mean", "every sequence got the same gradient, the batch mean's: Michel et al. take |grad| "
                "per example before averaging, so keep each sequence's own (f returns the (N,) losses).",
                _gradients_batch_mean),
        Mistake("at_zero", "the gradient was taken at head_mask = 0, every head off; importance is the gradient "
                "at head_mask = 1, the model as it is (np.ones((L, H))).", _gradients_at_zero),
    ),
    validate=_validate_gradients,
    uses=("masked_forward", "predictable_loss"))


def _collect_matches_autograd(checks, fn):
    recorded = load_gradients()
    model, n_heads = toy_task.load_model()
    try:
        result = fn(recorded["tokens"], recorded["periods"], float64_model(model), n_heads)
    except Exception as exc:
        return describe_exception(exc)
    return plain_result(result, 1, checks.backend)


def _judge_matches_autograd(checks, record):
    name = "mask_gradients"
    if "raised" in record:
        judge_exception(record, f"{name} on the course's model", name)
    recorded = load_gradients()
    want = recorded["grads"]
    got = outputs_of(record, ("grads",), name, checks.array_type_name)["grads"][0]
    if got.shape != want.shape:
        fail(f"{name} on the course's model and {len(want)} held-out sequences returned shape {got.shape}; "
             f"PyTorch's autograd gradients have shape {want.shape}.")
    if not is_near(got, want, "across_frameworks"):
        if np.allclose(got, -want, rtol=1e-3, atol=1e-6):
            fail(f"{name}'s gradients are autograd's with the opposite sign.")
        fail(f"{name}'s gradients differ from PyTorch's autograd gradients on the course's model: "
             + worst_mismatch(got, want) + ". Run your function in float64 (the check passes a float64 model) "
             "and keep eps = 1e-3.")
    largest = float(np.abs(got - want).max())
    return (f"\u2714 {name}: central differences of your forward pass give autograd's gradients on the course's "
            f"model ({len(want)} sequences, {want[0].size} heads; largest difference {largest:.1e}).")


# --------------------------------------------------------------------------
# head_importance, head_similarity, ablation_estimate
# --------------------------------------------------------------------------

def _grads_case(rng, N, L, H, dtype, zero_layer=None, scale=1.0):
    grads = normal(rng, (N, L, H), dtype, scale)
    if zero_layer is not None:
        grads[:, zero_layer] = 0
    return dict(mask_grads=grads)


def importance_visible(rng):
    return [_grads_case(rng, 5, 2, 3, np.float64),
            _grads_case(rng, 7, 3, 4, np.float32, zero_layer=1),
            _grads_case(rng, 1, 4, 2, np.float64, scale=0.01)]


def importance_hidden(rng):
    return [_grads_case(rng, 9, 6, 12, np.float32, scale=0.05),
            _grads_case(rng, 4, 2, 5, np.float64, zero_layer=0),
            _grads_case(rng, 11, 3, 3, np.float64),
            _grads_case(rng, 2, 5, 7, np.float32, zero_layer=4),
            _grads_case(rng, 6, 1, 4, np.float32)]


def _importance_abs_after_mean(sol, mask_grads):
    return sol["head_importance"](mask_grads.mean(axis=0, keepdims=True))


def _importance_no_abs(sol, mask_grads):
    mean = mask_grads.mean(axis=0)
    return np.sign(mean) * sol["head_importance"](mean[None])


def _importance_whole_matrix(sol, mask_grads):
    N, L, H = mask_grads.shape
    if L == 1:
        return None
    return sol["head_importance"](mask_grads.reshape(N, 1, L * H)).reshape(L, H)


def _importance_l1(sol, mask_grads):
    unit = sol["head_importance"](mask_grads)
    total = unit.sum(axis=-1, keepdims=True)
    return unit / np.where(total > 0, total, 1)


def _importance_columns(sol, mask_grads):
    return np.ascontiguousarray(sol["head_importance"](np.ascontiguousarray(mask_grads.transpose(0, 2, 1))).T)


def _validate_importance(got, case):
    imp = got["importance"][0]
    N, L, H = case.args["mask_grads"].shape
    if imp.shape == (N, L, H):
        fail(f"{case.describe()} returned shape {imp.shape}: average |gradient| over the examples (axis 0) "
             f"first, to (L, H) = {(L, H)}.")


def _diagnose_importance(got, case):
    imp = got["importance"]
    if not np.isfinite(imp).all():
        fail(f"{case.describe()} gave NaN: a layer whose gradients are all zero has norm 0, and 0 / 0 is NaN. "
             "A zero row stays zero: divide only where the norm is positive (np.where, or a norm of 1 "
             "where it is 0).")
    if (imp < 0).any():
        fail(f"{case.describe()} gave negative importances: take abs of each example's gradient before the mean.")


HEAD_IMPORTANCE = Function(
    "head_importance", args=("mask_grads",), outputs=("importance",),
    doc="head_importance(mask_grads (N, L, H)) -> (L, H): the mean over N of abs(mask_grads), each layer's row "
        "divided by its l2 norm; a zero row stays zero.",
    visible=importance_visible, hidden=importance_hidden,
    mistakes=(
        Mistake("abs_after_mean", "abs was taken after the mean over the examples: gradients of opposite signs "
                "cancel. Michel et al. average |dL/dxi| per example: abs first, then the mean.",
                _importance_abs_after_mean),
        Mistake("no_abs", "these are signed means: take abs of each example's gradient, then the mean.",
                _importance_no_abs),
        Mistake("whole_matrix", "the whole (L, H) matrix was divided by one norm: each layer's row is divided by "
                "its own l2 norm (axis -1).", _importance_whole_matrix),
        Mistake("l1", "each row was divided by its sum (l1 norm); Michel et al. divide by the l2 norm, "
                "sqrt(sum of squares).", _importance_l1),
        Mistake("columns", "the columns (one head across the layers) were normalised: normalise each layer's "
                "row, over its heads (axis -1).", _importance_columns),
    ),
    validate=_validate_importance, diagnose=_diagnose_importance)


def _similarity_case(rng, shape, dtype, copy=None, scaled=None):
    per_head = normal(rng, shape, dtype)
    if copy is not None:
        src, dst = copy
        per_head[:, dst] = per_head[:, src]
    if scaled is not None:
        src, dst = scaled
        per_head[:, dst] = per_head[:, src] * dtype(2.5)
    return dict(per_head=per_head)


def _maps_case(rng, B, H, T, dtype, copy=None):
    from .ch06_what_heads_learn import causal_maps
    maps = causal_maps(rng, B, H, T, dtype)
    if copy is not None:
        maps[:, copy[1]] = maps[:, copy[0]]
    return dict(per_head=maps)


def similarity_visible(rng):
    f64, f32 = np.float64, np.float32
    return [_maps_case(rng, 2, 3, 5, f64, copy=(0, 2)),
            _similarity_case(rng, (3, 4, 5, 6), f32, scaled=(1, 3)),
            _similarity_case(rng, (2, 5, 7), f64)]


def similarity_hidden(rng):
    f64, f32 = np.float64, np.float32
    return [_maps_case(rng, 4, 6, 7, f32),
            _similarity_case(rng, (5, 2, 3, 9), f64, scaled=(0, 1)),
            _similarity_case(rng, (1, 7, 4, 3), f32, copy=(6, 2)),
            _similarity_case(rng, (6, 3, 2, 2, 5), f64),                 # more trailing axes
            _maps_case(rng, 3, 4, 9, f64, copy=(1, 3))]


def _similarity_dot(sol, per_head):
    H = per_head.shape[1]
    vectors = np.moveaxis(per_head, 1, 0).reshape(H, -1)
    norms = np.sqrt((vectors * vectors).sum(axis=1))
    return sol["head_similarity"](per_head) * np.outer(norms, norms).astype(per_head.dtype)


def _similarity_pearson(sol, per_head):
    axes = tuple(a for a in range(per_head.ndim) if a != 1)
    return sol["head_similarity"](per_head - per_head.mean(axis=axes, keepdims=True))


def _similarity_zero_diagonal(sol, per_head):
    sim = sol["head_similarity"](per_head)
    return sim - np.eye(sim.shape[0], dtype=sim.dtype)


def _similarity_per_example(sol, per_head):
    if per_head.shape[0] == 1:
        return None
    return np.mean([sol["head_similarity"](per_head[b:b + 1]) for b in range(per_head.shape[0])], axis=0
                   ).astype(per_head.dtype)


def _validate_similarity(got, case):
    sim = got["similarity"][0]
    B, H = case.args["per_head"].shape[:2]
    if sim.shape == (B, B) and B != H:
        fail(f"{case.describe()} returned shape {sim.shape}, one row per example: the heads are on axis 1 of "
             f"(B, H, ...), and head h's vector is per_head[:, h] flattened; the result is (H, H) = {(H, H)}.")


HEAD_SIMILARITY = Function(
    "head_similarity", args=("per_head",), outputs=("similarity",), tracks=("numpy",),
    doc="head_similarity(per_head (B, H, ...)) -> (H, H): the cosine similarity of heads i and j, each head's "
        "vector being per_head[:, h] flattened.",
    visible=similarity_visible, hidden=similarity_hidden,
    mistakes=(
        Mistake("dot", "these are raw dot products: divide by the two vectors' norms, so that a head compared "
                "with itself (or with a scaled copy) gives 1.", _similarity_dot),
        Mistake("pearson", "the vectors were centred first (a Pearson correlation); the cosine similarity uses "
                "them as they are.", _similarity_pearson),
        Mistake("zero_diagonal", "the diagonal was set to 0: a head compared with itself has cosine 1, and the "
                "matrix keeps it.", _similarity_zero_diagonal),
        Mistake("per_example", "the cosine was taken per example and averaged: flatten each head's whole "
                "per_head[:, h] (every example) into one vector.", _similarity_per_example),
    ),
    validate=_validate_similarity)


def estimate_visible(rng):
    return importance_visible(rng)[:2]


def estimate_hidden(rng):
    return importance_hidden(rng)[:3]


ABLATION_ESTIMATE = Function(
    "ablation_estimate", args=("mask_grads",), outputs=("estimate",), tracks=("numpy",),
    doc="ablation_estimate(mask_grads (N, L, H)) -> (L, H) (stretch): the first-order estimate of the mean loss "
        "change when head (l, h) alone goes from xi = 1 to 0, -mean over N of mask_grads.",
    visible=estimate_visible, hidden=estimate_hidden,
    mistakes=(
        Mistake("sign", "the sign is flipped: xi goes from 1 to 0, a step of -1, so the change is about "
                "-dL/dxi.", lambda sol, mask_grads: -sol["ablation_estimate"](mask_grads)),
        Mistake("abs", "that is the mean of |dL/dxi|, an importance: the estimate of the change keeps the "
                "sign, -mean(dL/dxi).", lambda sol, mask_grads: np.abs(mask_grads).mean(axis=0)),
    ))


# --------------------------------------------------------------------------
# PyTorch: the module with per-example head masks, autograd gradients
# --------------------------------------------------------------------------

def _collect_autograd(checks, fn):
    import torch
    model_class = getattr(fn, "__globals__", {}).get("AttentionOnlyTransformer")
    if model_class is None:
        return {"raised": "NameError", "message": "no AttentionOnlyTransformer defined next to mask_gradients: run "
                "the cell that defines it", "not_implemented": False}
    recorded = load_gradients()
    try:
        model = load_course_model(model_class()).double().eval()
        result = fn(model, torch.from_numpy(recorded["tokens"]), torch.from_numpy(recorded["periods"]))
        return plain_result(result, 1, checks.backend)
    except Exception as exc:
        return describe_exception(exc)


def _judge_autograd(checks, record):
    name = "mask_gradients"
    if "raised" in record:
        judge_exception(record, f"{name}(model, tokens, periods) on the course's model", name)
    want = load_gradients()["grads"]
    got = outputs_of(record, ("grads",), name, checks.array_type_name)["grads"][0]
    if got.shape != want.shape:
        extra = (" That is one gradient for the whole batch: make the head mask per example, (N, L, H), so that "
                 "each sequence's loss has its own." if got.shape == want.shape[1:] else "")
        fail(f"{name} on {len(want)} held-out sequences returned shape {got.shape}, expected {want.shape}.{extra}")
    if is_near(got, want, "across_frameworks"):
        return (f"\u2714 {name}: autograd through a per-example head mask gives every sequence's gradient in one "
                f"backward pass, equal to the reference's on the course's model ({len(want)} sequences).")
    N = len(want)
    if np.allclose(got * N, want, rtol=1e-4, atol=1e-8):
        fail(f"{name}'s gradients are the reference's divided by N = {N}: you differentiated the *mean* of the "
             "per-example losses. Differentiate their sum: each example's mask entries then get that example's "
             "own gradient.")
    if np.allclose(got, -want, rtol=1e-4, atol=1e-8):
        fail(f"{name}'s gradients have the opposite sign.")
    if np.allclose(got, np.broadcast_to(want.mean(axis=0), want.shape), rtol=1e-4, atol=1e-8):
        fail(f"{name} gave every sequence the batch mean's gradient: use a head mask of shape (N, L, H), one row "
             "per sequence, so that each sequence's loss reaches only its own entries.")
    fail(f"{name}'s gradients differ from the reference's on the course's model: " + worst_mismatch(got, want)
         + ". The loss is predictable_loss per sequence, at a head mask of ones, in float64.")


# --------------------------------------------------------------------------
# The generated file: autograd gradients on the course's model
# --------------------------------------------------------------------------

def gradients_file(sol) -> dict:
    """The PyTorch solution's autograd gradients (float64) of each recorded held-out sequence's
    predictable loss with respect to the head mask, on the course's model."""
    import torch
    tokens, periods = (a[:RECORDED] for a in toy_task.held_out())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_course_model(sol["AttentionOnlyTransformer"]()).double().eval()
        grads = sol["mask_gradients"](model, torch.from_numpy(tokens), torch.from_numpy(periods))
    finally:
        torch.set_num_threads(threads)
    return {"tokens": tokens, "periods": periods, "grads": grads.detach().numpy().astype(np.float64)}


def load_gradients() -> dict:
    """``tokens`` ``(n, T)``, ``periods`` ``(n,)`` and ``grads`` ``(n, L, H)``: PyTorch's autograd gradients
    of each sequence's predictable loss with respect to the head mask at 1, on the course's model (float64)."""
    if not GRADIENTS_FILE.exists():
        raise FileNotFoundError(f"{GRADIENTS_FILE} is missing; regenerate it with: python -m autograder references "
                                "ch07_redundancy")
    with np.load(GRADIENTS_FILE) as data:
        return {k: data[k] for k in data.files}


# --------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------

def _costly_head_major(accuracy) -> int:
    """The most costly head numbered head by head, h*L + l, instead of layer by layer."""
    accuracy = np.asarray(accuracy)
    l, h = np.unravel_index(accuracy.argmin(), accuracy.shape)
    return int(h * accuracy.shape[0] + l)


QUESTIONS = (
    Question(
        "most_costly_head", notebook="1_numpy", tracks=("numpy",),
        doc="Which single head's removal costs the course's model the most accuracy? Its index l*H + h.",
        answer=lambda sol: sol["most_costly_head"],
        mistakes=(Mistake("head_major", "That is h*L + l; number the heads layer by layer: l*H + h (L0 H0 is 0, "
                          "L1 H0 is H).", lambda sol: _costly_head_major(sol["ablation"]["accuracy"])),
                  Mistake("least", "That head's removal costs the *least* accuracy; the question asks for the "
                          "most.", lambda sol: int(np.asarray(sol["ablation"]["accuracy"]).argmax()))),
        hint="ablation['accuracy'] is (L, H); the largest drop is the smallest accuracy."),
    Question(
        "harmless_heads", notebook="1_numpy", tracks=("numpy",),
        doc="How many of the 8 heads change the held-out accuracy by less than one point (0.01) when removed alone?",
        answer=lambda sol: sol["harmless_heads"],
        mistakes=(Mistake("percent_as_fraction", "Accuracy here is a fraction: one point is 0.01, not 1.",
                          lambda sol: 8),),
        hint="Compare |ablation accuracy - full accuracy| with 0.01 and count."),
    Question(
        "saturated_agreement", notebook="1_numpy", tracks=("numpy",), tolerance="answer",
        doc="The split-half rank agreement of importance computed with the saturated model (its readout "
            "multiplied by 8), two decimals.",
        answer=lambda sol: sol["saturated_agreement"],
        mistakes=(Mistake("all_positions", "That is the agreement of the course's model itself; the question "
                          "asks about the model whose readout is multiplied by 8.",
                          lambda sol: sol["agreement"]["all predictable"]),),
        hint="The split-half cell prints one agreement per kind of data."),
    Question(
        "sweep_maps_mib", notebook="2_cupy", tracks=("cupy",),
        doc="How many MiB do the float32 attention maps of the batched ablation sweep take: 8 head masks × 256 "
            "sequences, maps (2048, L, H, T, T) = (2048, 2, 4, 32, 32)?",
        answer=lambda sol: sol["sweep_maps_mib"],
        mistakes=(Mistake("float64", "That is for float64; the maps are float32, 4 bytes a number.",
                          lambda sol: 2 * sol["sweep_maps_mib"]),
                  Mistake("one_mask", "That is for one head mask (256 sequences); the sweep stacks 8 of them.",
                          lambda sol: sol["sweep_maps_mib"] / 8)),
        hint="Multiply the five sizes and 4 bytes, then divide by 2^20."),
    Question(
        "difference_passes", notebook="2_cupy", tracks=("cupy",),
        doc="How many forward passes does central-difference importance need for MiniLM's (6, 12) head mask?",
        answer=lambda sol: sol["difference_passes"],
        mistakes=(Mistake("one_sided", "That counts one pass per head (or a forward difference, plus one); the "
                          "central difference needs two per head: xi + eps e_i and xi - eps e_i.",
                          lambda sol: sol["difference_passes"] // 2),),
        hint="Two passes for each of the 6 × 12 entries of the head mask."),
    Question(
        "agreement_gradient", notebook="3_pytorch", tracks=("torch",),
        doc="The largest |gradient| of MiniLM's 'agreement with the unmasked embeddings' loss with respect to the "
            "head mask, at xi = 1 (two decimals)?",
        answer=lambda sol: sol["agreement_gradient"],
        mistakes=(Mistake("contrastive", "That is the contrastive loss's largest gradient; the question asks about "
                          "the agreement loss, which is at its minimum at xi = 1.",
                          lambda sol: sol["contrastive_gradient"]),),
        hint="The cell that compares the two losses prints both largest gradients."),
    Question(
        "minilm_costly_layer", notebook="3_pytorch", tracks=("torch",),
        doc="In which layer of MiniLM (0–5) is the head whose removal alone lowers the agreement with the full "
            "model's embeddings the most?",
        answer=lambda sol: sol["minilm_costly_layer"],
        mistakes=(Mistake("flat_index", "That is the flat index l*12 + h; the question asks for the layer l.",
                          lambda sol: sol["minilm_costly_flat"]),),
        hint="minilm_agreement is (6, 12): find the layer of its smallest entry."),
)


CHAPTER = Chapter(
    "ch07_redundancy",
    generated=(Generated(GRADIENTS_FILE, "3_pytorch", gradients_file),),
    functions=(pasted_in(SOFTMAX, "numpy", "cupy"), pasted_in(CAUSAL_MASK, "numpy", "cupy"),
               pasted_in(SCALED_DOT_PRODUCT_ATTENTION, "numpy", "cupy", "torch"),
               pasted_in(SPLIT_HEADS, "numpy", "cupy", "torch"), pasted_in(MERGE_HEADS, "numpy", "cupy", "torch"), pasted_in(MULTI_HEAD_ATTENTION, "numpy", "cupy", "torch"),
               pasted_in(HEAD_CONTRIBUTIONS, "numpy"),
               MASKED_MULTI_HEAD_ATTENTION, MASKED_FORWARD, PREDICTABLE_LOSS, MASK_GRADIENTS, HEAD_IMPORTANCE,
               HEAD_SIMILARITY, ABLATION_ESTIMATE),
    questions=QUESTIONS,
    custom=(
        Custom("central_difference", "central_difference(f, xi, eps=1e-3) gives the analytic gradients of known "
               "functions, with f scalar or array valued, and leaves xi unchanged.", collect_central_difference,
               judge_central_difference, tracks=("numpy",)),
        Custom("matches_autograd", "mask_gradients by central differences gives PyTorch's autograd gradients on "
               "the course's model.", _collect_matches_autograd, _judge_matches_autograd, tracks=("numpy",)),
        Custom("module", "MultiHeadAttention (chapter 4) computes the layer with its own parameters and a head mask.",
               collect_module, judge_module, tracks=("torch",), target="module_class"),
        Custom("per_example_mask", "MultiHeadAttention accepts a per-example head mask (B, H) as well as (H,).",
               collect_per_example, judge_per_example, tracks=("torch",), target="module_class"),
        Custom("model", "AttentionOnlyTransformer (chapter 6): logits, causal maps of every layer, a head mask, the "
               "parameter count.", collect_model, judge_model, tracks=("torch",), target="model_class"),
        Custom("autograd_gradients", "mask_gradients(model, tokens, periods) by autograd through a per-example head "
               "mask gives the reference's (N, L, H) gradients on the course's model.", _collect_autograd,
               _judge_autograd, tracks=("torch",)),
    ))

Checks = CHAPTER.checks_class()
