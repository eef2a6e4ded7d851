"""Chapter 8 checks: pruning heads.

- ``prune_heads`` (every track): a layer with some heads physically removed: the kept
  heads' columns of ``w_q, w_k, w_v`` (and of their biases), their rows of ``w_o``,
  ``b_o`` untouched, ``n_heads`` updated; new arrays, the input left as it was.
- ``prune_model`` and ``pruned_forward`` (NumPy, CuPy): the chapter 6 model with heads
  removed from any layer, so that layers keep different numbers of heads, and its
  forward pass with one head count per layer.
- ``heads_to_prune`` (NumPy, PyTorch): the alive heads of lowest importance over all
  layers, each layer's importance normalised by its l2 norm first (Michel et al. 2019).
- ``module_pruning`` (PyTorch): ``MultiHeadAttention.prune_heads`` replaces the module's
  parameters with sliced ones; the pruned module computes the masked one's output,
  prunes again, and trains.
- ``gates`` (PyTorch, stretch): hard-concrete gates (Voita et al. 2019): the sample's
  range, the deterministic gate and the expected L0 penalty.

Pasted in from earlier chapters (0 points, checked again where a notebook pastes them):
chapters 1, 3 and 4's building blocks, and chapter 7's ``masked_multi_head_attention``
(NumPy, CuPy) and ``head_importance`` (every track).

A pruned layer is a dict and a count, not an array: how these functions' checks call the
student's function and read what comes back is :mod:`mha_checks.kit.pruned`'s.

In a notebook::

    from mha_checks.chapters.ch08_pruning import Checks
    check = Checks("numpy")                    # or "cupy", "torch"
    check.prune_heads(prune_heads)
"""
import math
from pathlib import Path

import numpy as np

from .. import toy_task
from ..cases import grouped_args
from ..engine import (Chapter, Custom, FromRun, Function, Generated, Mistake, Question, describe_exception, fail,
                      judge_exception, shown_expected)
from ..kit import layers
from ..kit.common import pasted_in
from ..kit.models import small_model
from ..kit.modules import collect_module_pruning, judge_module_pruning
from ..kit.pruned import (BIASES, INPUT_MESSAGES, LAYER_OUTPUTS, MODEL_OUTPUTS, WEIGHTS, call_prune_heads,
                          call_prune_model, described, flat_layer, flat_model, head_counts, head_pairs)
from .ch01_single_head import CAUSAL_MASK, SCALED_DOT_PRODUCT_ATTENTION, SOFTMAX
from .ch03_split_heads import SPLIT_HEADS
from .ch04_concat_and_wo import MERGE_HEADS, MULTI_HEAD_ATTENTION
from .ch07_redundancy import HEAD_IMPORTANCE, MASKED_MULTI_HEAD_ATTENTION

# --------------------------------------------------------------------------
# prune_heads: cases, mistakes, properties
# --------------------------------------------------------------------------

def _layer(rng, d_model, n_heads, d_k, dtype, biases=BIASES):
    params = layers.layer_params(rng, d_model, n_heads, d_k, dtype, bias=True)
    return {k: v for k, v in params.items() if k in WEIGHTS or k in biases}


def _heads(*h):
    return np.array(h, dtype=np.int64)


def prune_visible(rng):
    f64, f32 = np.float64, np.float32
    return [
        dict(params=_layer(rng, 12, 4, 3, f64, biases=()), n_heads=4, heads=_heads(1)),
        dict(params=_layer(rng, 10, 5, 2, f32), n_heads=5, heads=_heads(3, 0, 3)),       # unsorted, a repeat
        dict(params=_layer(rng, 9, 3, 4, f64), n_heads=3, heads=_heads()),               # pruned-style, nothing removed
    ]


def prune_hidden(rng):
    f64, f32 = np.float64, np.float32
    return [
        dict(params=_layer(rng, 16, 4, 4, f32), n_heads=4, heads=_heads(0, 1, 2)),         # all but one
        dict(params=_layer(rng, 15, 6, 3, f64, biases=()), n_heads=6, heads=_heads(5, 2, 5)),  # a repeat counts once
        dict(params=_layer(rng, 20, 5, 4, f32, biases=("b_v", "b_o")), n_heads=5, heads=_heads(4, 1)),
        dict(params=_layer(rng, 8, 2, 6, f64), n_heads=2, heads=_heads(1)),                # pruned-style 12 != 8
        dict(params=_layer(rng, 7, 1, 5, f32), n_heads=1, heads=_heads()),                 # one head, kept
        dict(params=_layer(rng, 11, 7, 2, f64), n_heads=7, heads=_heads(6, 0, 3)),
    ]


def _prune(sol, params, n_heads, heads):
    return flat_layer(*sol["prune_heads"](params, n_heads, [int(h) for h in heads]))


def _reference_prune(sol, params, n_heads, heads):
    return _prune(sol, params, n_heads, heads)


def _strided(params, n_heads, w_o_too=True):
    """The layer whose head blocks are the strided columns (h, h+H, ...) of this one: the right pruning
    of it is what a student who slices strided columns gets."""
    order = layers.head_column_order(params["w_q"].shape[1], n_heads, strided=True)
    moved = dict(params)
    for k in ("w_q", "w_k", "w_v"):
        moved[k] = np.ascontiguousarray(params[k][:, order])
    for k in ("b_q", "b_k", "b_v"):
        if params.get(k) is not None:
            moved[k] = params[k][order]
    if w_o_too:
        moved["w_o"] = np.ascontiguousarray(params["w_o"][order])
    return moved


def _mistake_strided(sol, params, n_heads, heads):
    d_k = params["w_q"].shape[1] // n_heads
    if n_heads == 1 or d_k == 1 or not len(heads):
        return None
    return [_prune(sol, _strided(params, n_heads, w_o_too), n_heads, heads) for w_o_too in (True, False)]


def _mistake_kept_removed(sol, params, n_heads, heads):
    removed = set(int(h) for h in heads)
    kept = [h for h in range(n_heads) if h not in removed]
    if not removed or not kept:
        return None
    return _prune(sol, params, n_heads, kept)


def _mistake_count_not_updated(sol, params, n_heads, heads):
    if not len(heads):
        return None
    return {**_prune(sol, params, n_heads, heads), "n_heads": np.int64(n_heads)}


def _mistake_repeat_counted(sol, params, n_heads, heads):
    if len(set(int(h) for h in heads)) == len(heads):
        return None
    return {**_prune(sol, params, n_heads, heads), "n_heads": np.int64(n_heads - len(heads))}


def _validate_prune(got, case):
    args = grouped_args(case.args)
    params, n_heads = args["params"], int(case.args["n_heads"])
    removed = len(set(case.args["heads"].tolist()))
    d_model, width = params["w_q"].shape
    d_k = width // n_heads
    kept = (n_heads - removed) * d_k
    code = int(got["input"][0])
    if code in INPUT_MESSAGES:
        fail(f"{case.describe()}: {INPUT_MESSAGES[code]}")
    count, count_dtype = got["n_heads"]
    if count.shape != () or count.dtype.kind not in "iu":
        fail(f"{case.describe()} returned new_n_heads as {count_dtype} of shape {count.shape}; it is one int, "
             "the number of heads left.")
    if removed and kept != removed * d_k and got["w_q"][0].shape == (d_model, removed * d_k):
        fail(f"{case.describe()}: you kept the heads listed in heads and removed the others; heads lists the heads "
             "to remove.")
    shape = got["w_o"][0].shape
    if kept != width and shape == (width, kept):
        fail(f"{case.describe()}: w_o has shape {shape}, expected {(kept, d_model)}: you removed columns. w_o maps "
             "the concatenated heads (its rows) to d_model (its columns): a head's block of w_o is its d_k rows.")
    if kept != width and shape == (width, d_model):
        fail(f"{case.describe()}: w_o still has all {width} rows; remove the rows of the pruned heads (head h "
             f"writes through rows h*d_k:(h+1)*d_k of w_o, d_k = {d_k}).")
    for k in ("w_q", "w_k", "w_v"):
        shape = got[k][0].shape
        if kept != width and shape == (d_model, width):
            fail(f"{case.describe()}: {k} still has all {width} columns; remove the columns of the pruned heads "
                 f"(head h owns columns h*d_k:(h+1)*d_k, d_k = {d_k}).")
        if len(shape) == 2 and shape[1] == width and shape[0] != d_model:
            fail(f"{case.describe()}: {k} has shape {shape}, expected {(d_model, kept)}: you removed rows. {k} is "
                 "(d_model, H*d_k): the heads sit side by side in its columns, so a head is a block of columns.")
        if width != d_model and len(shape) == 2 and shape[1] == (n_heads - removed) * (d_model // n_heads) != kept:
            fail(f"{case.describe()}: {k} has {shape[1]} columns, expected {kept}: d_k is w_q.shape[1] // n_heads "
                 f"= {d_k} in this layer (H*d_k = {width} differs from d_model = {d_model}), never d_model // "
                 "n_heads.")
    for k in BIASES:
        shape = got[k][0].shape
        present = params.get(k) is not None
        if not present and shape != (0,):
            fail(f"{case.describe()}: the input has no {k} but the pruned layer has one. A bias that is absent "
                 "(or None) stays absent: leave it out of the new dict.")
        if present and shape == (0,):
            fail(f"{case.describe()}: {k} is missing from the pruned layer; the input has it. Keep every entry "
                 + ("(b_o as it is)." if k == "b_o" else f"({k} sliced like its weight's columns)."))
        if not present:
            continue
        if k == "b_o" and shape != (d_model,):
            fail(f"{case.describe()}: b_o has shape {shape}, expected ({d_model},). b_o is added after w_o, to "
                 "d_model outputs, and belongs to no head: keep it whole.")
        if k != "b_o" and shape == (width,) and kept != width:
            fail(f"{case.describe()}: {k} still has {width} entries, expected {kept}: slice the biases b_q, b_k, "
                 "b_v with the same kept columns as their weights.")


def _diagnose_prune(got, case):
    """Kept heads in another order: the same layer, but head indices then mean something else."""
    n_heads = int(case.args["n_heads"])
    width = case.args["params.w_q"].shape[1]
    d_k = width // n_heads
    want, mine = case.expected["w_q"], got["w_q"]
    if want.shape == mine.shape and want.shape[1]:
        blocks = lambda w: [w[:, i:i + d_k] for i in range(0, w.shape[1], d_k)]  # noqa: E731
        theirs = blocks(want)
        if all(any(np.allclose(b, t) for t in theirs) for b in blocks(mine)):
            fail(f"{case.describe()}: your pruned layer keeps the right heads, but in another order. Keep the "
                 "kept heads in their original order (0, 1, ... without the removed ones), so that head i of the "
                 "pruned layer is the i-th surviving head.")


PRUNE_HEADS = Function(
    "prune_heads", args=("params", "n_heads", "heads"), outputs=LAYER_OUTPUTS,
    doc="prune_heads(params, n_heads, heads) -> (new_params, new_n_heads): the layer without the heads in heads "
        "(any order, a repeat counts once, maybe none): their columns of w_q, w_k, w_v, b_q, b_k, b_v and rows "
        "of w_o removed, b_o kept, an absent bias still absent; new arrays, the input unchanged.",
    visible=prune_visible, hidden=prune_hidden, reference=_reference_prune, call=call_prune_heads,
    mistakes=(
        Mistake("strided", "you took every H-th column (h, h+H, ...) for a head; head h owns the block of "
                "consecutive columns h*d_k:(h+1)*d_k of w_q, w_k, w_v (and rows of w_o), the layout split_heads "
                "reads.", _mistake_strided),
        Mistake("kept_removed", "you removed the heads that should stay and kept the ones in heads: heads lists "
                "the heads to remove.", _mistake_kept_removed),
        Mistake("count_not_updated", "the weights are right, but new_n_heads is still the old count: it is the "
                "number of heads left.", _mistake_count_not_updated),
        Mistake("repeat_counted", "a head listed twice was counted twice in new_n_heads: a repeat counts once "
                "(use set(heads)).", _mistake_repeat_counted),
    ),
    validate=_validate_prune, diagnose=_diagnose_prune)


# --------------------------------------------------------------------------
# prune_model and pruned_forward: the chapter 6 model with heads removed
# --------------------------------------------------------------------------

def _course_model():
    model, n_heads = toy_task.load_model()
    return model, n_heads


def _model_case(model, n_heads, pairs):
    return dict(model=model, n_heads=n_heads if isinstance(n_heads, int) else np.asarray(n_heads, np.int64),
                heads=np.asarray(pairs, dtype=np.int64).reshape(-1, 2))


def _uneven_model(rng, dtype):
    """A 3-layer model whose layers already have 3, 1 and 2 heads of width 4 (d_model 10): pruned before."""
    model = small_model(rng, 7, 6, 10, 3, 3, dtype, d_k=4)
    model["layers"] = [_layer(rng, 10, h, 4, dtype) for h in (3, 1, 2)]
    return model, [3, 1, 2]


def prune_model_visible(rng):
    model, n_heads = _course_model()
    return [
        _model_case(small_model(rng, 11, 9, 12, 3, 2, np.float64), 3, [(1, 2), (0, 0)]),
        _model_case(model, n_heads, [(0, 3), (1, 1), (1, 0)]),
    ]


def prune_model_hidden(rng):
    model, n_heads = _course_model()
    uneven, counts = _uneven_model(rng, np.float64)
    return [
        _model_case(small_model(rng, 7, 8, 15, 5, 3, np.float32, d_k=2), 5, [(2, 4), (0, 1), (2, 0), (0, 1)]),
        _model_case(uneven, counts, [(2, 1), (0, 0)]),                       # pruned twice: counts per layer
        _model_case(small_model(rng, 9, 5, 8, 2, 2, np.float64), 2, []),      # nothing removed
        _model_case(model, n_heads, [(0, 1), (0, 2), (0, 3)]),
    ]


def _prune_model(sol, model, n_heads, heads):
    return flat_model(*sol["prune_model"](model, head_counts(n_heads), head_pairs(heads)))


def _mistake_pairs_swapped(sol, model, n_heads, heads):
    pairs = head_pairs(heads)
    counts = head_counts(n_heads)
    L = len(model["layers"])
    if not pairs or any(h >= L or (l >= (counts if isinstance(counts, int) else counts[h])) for l, h in pairs):
        return None
    if sorted(set(pairs)) == sorted(set((h, l) for l, h in pairs)):
        return None
    return _prune_model(sol, model, n_heads, [(h, l) for l, h in pairs])


def _mistake_every_layer(sol, model, n_heads, heads):
    pairs = head_pairs(heads)
    counts = head_counts(n_heads)
    L = len(model["layers"])
    counts = [counts] * L if isinstance(counts, int) else counts
    spread = sorted({(l, h) for _, h in pairs for l in range(L)})
    if not pairs or any(h >= counts[l] for l, h in spread) or set(spread) == set(pairs):
        return None
    if any(len([1 for l2, _ in spread if l2 == l]) >= counts[l] for l in range(L)):
        return None   # a layer would lose every head
    return _prune_model(sol, model, n_heads, spread)


def _validate_prune_model(got, case):
    code = int(got["input"][0])
    if code in INPUT_MESSAGES:
        fail(f"{case.describe()}: {INPUT_MESSAGES[code]} (Use prune_heads, which leaves its layer alone, and a new "
             "model dict with a new list of layers.)")
    model = grouped_args(case.args)["model"]
    L = len(model["layers"])
    count = got["n_heads"][0]
    if count.shape != (L,):
        fail(f"{case.describe()} returned new_n_heads of shape {count.shape}; it is a list with one count per layer "
             f"({L} here): after pruning, layers keep different numbers of heads.")
    want = case.expected["n_heads"]
    if not np.array_equal(count, want):
        start = head_counts(case.args["n_heads"])
        start = [start] * L if isinstance(start, int) else start
        pairs = set(head_pairs(case.args["heads"]))
        swapped = [start[l] - len({first for first, second in pairs if second == l}) for l in range(L)]
        if count.tolist() == swapped:
            fail(f"{case.describe()}: new_n_heads is {count.tolist()}{shown_expected(want.tolist())}: you read the pairs as "
                 "(head, layer); each pair in heads is (layer, head).")
        fail(f"{case.describe()}: new_n_heads is {count.tolist()}{shown_expected(want.tolist())}. Count each layer's "
             "removed heads once (a pair listed twice counts once).")
    if got["rest"][0].shape != case.expected["rest"].shape or not np.array_equal(got["rest"][0], case.expected["rest"]):
        fail(f"{case.describe()}: the pruned model's embed, position, unembed or b_unembed differ from the model's; "
             "pruning changes the attention layers only.")


def _diagnose_prune_model(got, case):
    want = case.expected["n_heads"]
    if not np.array_equal(got["n_heads"][0], want):
        fail(f"{case.describe()}: new_n_heads is {got['n_heads'][0].tolist()}{shown_expected(want.tolist())}. Count "
             "each layer's removed heads once (a pair listed twice counts once).")
    fail(f"{case.describe()}: the head counts are right but a layer's weights differ. Group the (layer, head) "
         "pairs by layer and give each layer's heads to prune_heads with that layer's own head count.")


PRUNE_MODEL = Function(
    "prune_model", args=("model", "n_heads", "heads"), outputs=MODEL_OUTPUTS, tracks=("numpy", "cupy"),
    doc="prune_model(model, n_heads, heads) -> (new_model, new_n_heads): the model of chapter 6 without the "
        "(layer, head) pairs in heads; n_heads an int (every layer) or a list (one per layer); new_n_heads a "
        "list, one count per layer; the model itself unchanged.",
    visible=prune_model_visible, hidden=prune_model_hidden, reference=_prune_model, call=call_prune_model,
    mistakes=(
        Mistake("pairs_swapped", "you read the pairs as (head, layer); each pair in heads is (layer, head).",
                _mistake_pairs_swapped),
        Mistake("every_layer", "you removed each listed head index from every layer; a pair (layer, head) removes "
                "that head of that layer only.", _mistake_every_layer),
    ),
    validate=_validate_prune_model, diagnose=_diagnose_prune_model, uses=("prune_heads",))


def _call_pruned_forward(fn, args, kwargs, backend):
    tokens, model, n_heads = args
    counts = n_heads if isinstance(n_heads, (int, np.integer)) else [int(n) for n in n_heads]
    return fn(tokens, model, counts, **kwargs)


def _pruned(rng, model, n_heads, pairs, prune):
    """A model pruned by the layout's own rule (kept heads' blocks), made here only for case inputs."""
    L = len(model["layers"])
    counts = [n_heads] * L if isinstance(n_heads, int) else list(n_heads)
    new_layers = []
    for l, params in enumerate(model["layers"]):
        gone = {h for ll, h in pairs if ll == l}
        d_k = params["w_q"].shape[1] // counts[l]
        keep = [c for h in range(counts[l]) if h not in gone for c in range(h * d_k, (h + 1) * d_k)]
        new = {k: (v[:, keep] if k in ("w_q", "w_k", "w_v") else v[keep] if k in ("b_q", "b_k", "b_v", "w_o") else v)
               for k, v in params.items()}
        new_layers.append({k: np.ascontiguousarray(v) for k, v in new.items()})
        counts[l] -= len(gone)
    return {**model, "layers": new_layers}, np.asarray(counts, np.int64)


def forward_visible(rng):
    model, n_heads = _course_model()
    tokens, _ = toy_task.held_out()
    small = small_model(rng, 11, 9, 12, 3, 2, np.float64)
    pruned, counts = _pruned(rng, small, 3, [(0, 1), (1, 0), (1, 2)], None)
    course, course_counts = _pruned(rng, model, n_heads, [(0, 0), (1, 1), (1, 3)], None)
    return [
        dict(tokens=rng.integers(0, 11, size=(2, 9)), model=pruned, n_heads=counts),
        dict(tokens=tokens[:3], model=course, n_heads=course_counts),
    ]


def forward_hidden(rng):
    model, n_heads = _course_model()
    tokens, _ = toy_task.held_out()
    a, a_counts = _pruned(rng, small_model(rng, 7, 8, 15, 5, 3, np.float32, d_k=2), 5, [(0, 4), (0, 2), (2, 1)], None)
    b = small_model(rng, 13, 6, 12, 2, 2, np.float64)
    c, c_counts = _pruned(rng, model, n_heads, [(0, 2), (0, 3), (1, 0)], None)
    return [
        dict(tokens=rng.integers(0, 7, size=(3, 8)), model=a, n_heads=a_counts),
        dict(tokens=rng.integers(0, 13, size=(2, 5)), model=b, n_heads=2),             # an int: every layer
        dict(tokens=tokens[200:204], model=c, n_heads=c_counts),
    ]


def _reference_forward(sol, tokens, model, n_heads):
    return sol["pruned_forward"](tokens, model, head_counts(n_heads))


def _mistake_first_count(sol, tokens, model, n_heads):
    counts = head_counts(n_heads)
    if isinstance(counts, int) or len(set(counts)) == 1:
        return None
    try:
        return sol["pruned_forward"](tokens, model, [counts[0]] * len(counts))
    except Exception:
        return None


PRUNED_FORWARD = Function(
    "pruned_forward", args=("tokens", "model", "n_heads"), outputs=("logits",), tracks=("numpy", "cupy"),
    doc="pruned_forward(tokens (B, T), model, n_heads) -> logits (B, T, V): chapter 6's attention-only forward "
        "pass, with n_heads an int (every layer) or a list (layer l has n_heads[l] heads).",
    visible=forward_visible, hidden=forward_hidden, reference=_reference_forward, call=_call_pruned_forward,
    mistakes=(Mistake("first_count", "every layer ran with the first layer's head count; layer l has n_heads[l] "
                      "heads (its d_k is its w_q.shape[1] // n_heads[l]).", _mistake_first_count),),
    uses=("multi_head_attention", "causal_mask"))


# --------------------------------------------------------------------------
# heads_to_prune: global, ascending, each layer normalised
# --------------------------------------------------------------------------

def _call_heads_to_prune(fn, args, kwargs, backend):
    result = fn(*args, **kwargs)
    if not isinstance(result, (list, tuple)) and not hasattr(result, "shape"):
        raise TypeError(f"heads_to_prune must return a list of (layer, head) pairs; it returned {described(result)}")
    pairs = []
    for pair in (result.tolist() if hasattr(result, "tolist") else result):
        pair = [p.item() if hasattr(p, "item") else p for p in pair]
        if len(pair) != 2:
            raise TypeError(f"heads_to_prune must return (layer, head) pairs; one of them is {pair!r}")
        pairs.append((int(pair[0]), int(pair[1])))
    return backend.asarray(np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2))


def _importance_case(rng, L, H, dtype, dead=0, zero_layer=None, ties=False, count=None):
    importance = (rng.random((L, H)) * rng.choice([0.2, 1.0, 5.0], size=(L, 1))).astype(dtype)
    if ties:
        importance[:, :2] = importance[0, 0]
    alive = np.ones((L, H), dtype=bool)
    if dead:
        alive.ravel()[rng.choice(L * H, size=dead, replace=False)] = False
    if zero_layer is not None:
        importance[zero_layer] = 0
    count = count if count is not None else max(1, alive.sum() // 4)
    return dict(importance=importance, alive=alive, count=int(count))


def heads_to_prune_visible(rng):
    return [
        _importance_case(rng, 2, 4, np.float64, count=2),
        _importance_case(rng, 3, 5, np.float32, dead=4, count=3),
        _importance_case(rng, 4, 3, np.float64, dead=2, ties=True, count=4),
    ]


def heads_to_prune_hidden(rng):
    return [
        _importance_case(rng, 6, 12, np.float32, dead=20, count=7),                 # MiniLM-sized
        _importance_case(rng, 2, 4, np.float64, dead=5, count=1),
        _importance_case(rng, 3, 6, np.float64, zero_layer=1, dead=3, count=5),      # a zero row stays zero
        _importance_case(rng, 5, 2, np.float32, ties=True, count=3),
        _importance_case(rng, 4, 7, np.float64, dead=6, count=0),                    # nothing to prune
    ]


def _lowest(scores, alive, count):
    """The ``count`` alive entries of lowest score, ties by (layer, head); sorted pairs."""
    L, H = scores.shape
    ranked = sorted((float(scores[l, h]), l, h) for l in range(L) for h in range(H) if alive[l, h])
    return np.asarray(sorted((l, h) for _, l, h in ranked[:count]), dtype=np.int64).reshape(-1, 2)


def _reference_heads_to_prune(sol, importance, alive, count):
    pairs = sol["heads_to_prune"](importance, alive, count)
    return np.asarray(sorted((int(l), int(h)) for l, h in pairs), dtype=np.int64).reshape(-1, 2)


def _mistake_highest(sol, importance, alive, count):
    return _reference_heads_to_prune(sol, -importance, alive, count)


def _mistake_dead_again(sol, importance, alive, count):
    if alive.all():
        return None
    return _reference_heads_to_prune(sol, importance, np.ones_like(alive), count)


def _mistake_whole_matrix(sol, importance, alive, count):
    """Normalised by the norm of the whole matrix (or not at all): the raw ranking."""
    return _lowest(importance, alive, count)


def _mistake_per_layer(sol, importance, alive, count):
    """The same number from every layer: each layer's lowest, then each layer's second lowest..."""
    L, H = importance.shape
    order = [[h for _, h in sorted((float(importance[l, h]), h) for h in range(H) if alive[l, h])] for l in range(L)]
    picked = []
    for rank in range(H):
        for l in range(L):
            if rank < len(order[l]) and len(picked) < count:
                picked.append((l, order[l][rank]))
    return np.asarray(sorted(picked), dtype=np.int64).reshape(-1, 2)


HEADS_TO_PRUNE = Function(
    "heads_to_prune", args=("importance", "alive", "count"), outputs=("heads",), tracks=("numpy", "torch"),
    doc="heads_to_prune(importance (L, H), alive (L, H) bool, count) -> list of count (layer, head) pairs: the "
        "alive heads of lowest importance over all layers, after dividing each layer's alive importances by "
        "their l2 norm (a zero row stays zero); ties go to the lower (layer, head).",
    visible=heads_to_prune_visible, hidden=heads_to_prune_hidden, reference=_reference_heads_to_prune,
    call=_call_heads_to_prune,
    mistakes=(
        Mistake("highest", "you chose the heads of highest importance; pruning removes the least important "
                "first (ascending order).", _mistake_highest),
        Mistake("dead_again", "you chose a head that is already pruned (alive is False there): rank the alive "
                "heads only.", _mistake_dead_again),
        Mistake("whole_matrix", "your choice follows the raw importances (or the matrix normalised as a whole): "
                "divide each layer's alive importances by that layer's own l2 norm first, so that layers whose "
                "gradients are larger do not keep all their heads.", _mistake_whole_matrix),
        Mistake("per_layer", "you took the same number of heads from every layer; Michel et al. prune globally: "
                "rank all alive heads of all layers together.", _mistake_per_layer),
    ))


# --------------------------------------------------------------------------
# PyTorch: MultiHeadAttention.prune_heads, hard-concrete gates
# --------------------------------------------------------------------------

def _collect_gates(checks, gates_class):
    import torch
    record = {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        try:
            gates = gates_class((2, 3))
            with torch.no_grad():
                gates.log_alpha.copy_(torch.tensor(LOG_ALPHA, dtype=gates.log_alpha.dtype))
            gates.train()
            samples = torch.stack([gates() for _ in range(2000)])
            record["samples"] = samples.detach().double().numpy()
            penalty = gates.l0_penalty()
            record["penalty"] = float(penalty.detach() if hasattr(penalty, "detach") else penalty)
            gates.eval()
            record["eval"] = gates().detach().double().numpy()
            record["eval_again"] = gates().detach().double().numpy()
            gates.train()
            gates.log_alpha.grad = None
            sum(gates().sum() for _ in range(20)).backward()   # some of 20 samples fall inside (0, 1)
            record["grad"] = None if gates.log_alpha.grad is None else gates.log_alpha.grad.double().numpy()
        except Exception as exc:
            record.update(describe_exception(exc))
    return record


BETA, GAMMA, ZETA = 2 / 3, -0.1, 1.1
LOG_ALPHA = np.array([[-20.0, -0.5, 0.0], [0.5, 2.0, 20.0]])


def _judge_gates(checks, record):
    name = "HardConcreteGates"
    if "raised" in record:
        judge_exception(record, f"{name}((2, 3))", name)
    samples = np.asarray(record["samples"])
    if samples.shape != (2000, 2, 3):
        fail(f"{name}() returned gates of shape {samples.shape[1:]}; expected one gate per head, (2, 3).")
    if samples.min() < 0 or samples.max() > 1:
        fail(f"{name}: training samples reach {samples.min():.3g} .. {samples.max():.3g}; the stretched sample "
             f"s * (zeta - gamma) + gamma is clamped to [0, 1].")
    exact = ((samples == 0) | (samples == 1)).mean(axis=0)
    if exact[0, 1] < 0.05 or exact[1, 1] < 0.05:
        fail(f"{name}: gates almost never sit exactly at 0 or 1 during training; stretch the concrete sample to "
             f"(gamma, zeta) = ({GAMMA}, {ZETA}) before clamping, so that a gate is exactly closed or open with "
             "non-zero probability.")
    if not np.all(np.diff(samples.mean(axis=0).ravel()) > -0.02):   # LOG_ALPHA ascends in reading order
        fail(f"{name}: the mean training gate does not grow with log_alpha; the concrete sample is "
             "sigmoid((log u - log(1 - u) + log_alpha) / beta) with u uniform in (0, 1).")
    if samples[:, 0, 0].max() > 0 or samples[:, 1, 2].min() < 1:
        fail(f"{name}: with log_alpha = -20 a gate should always be 0, and with +20 always 1.")
    want = 1 / (1 + np.exp(-(LOG_ALPHA - BETA * math.log(-GAMMA / ZETA))))
    if not np.isclose(record["penalty"], want.sum(), rtol=1e-4):
        fail(f"{name}.l0_penalty() is {record['penalty']:.6g}; expected the sum over heads of sigmoid(log_alpha - "
             f"beta * log(-gamma / zeta)) = {want.sum():.6g}, the probability that each gate is non-zero.")
    deterministic = np.clip(1 / (1 + np.exp(-LOG_ALPHA)) * (ZETA - GAMMA) + GAMMA, 0, 1)
    evaluated = np.asarray(record["eval"])
    if not np.array_equal(evaluated, np.asarray(record["eval_again"])):
        fail(f"{name} in eval mode gives different gates on two calls: at evaluation the gate is deterministic.")
    if not np.allclose(evaluated, deterministic, atol=1e-5):
        fail(f"{name} in eval mode gives {np.round(evaluated, 4).tolist()}; expected clamp(sigmoid(log_alpha) * "
             f"(zeta - gamma) + gamma, 0, 1) = {np.round(deterministic, 4).tolist()}, no noise.")
    if record["grad"] is None or not np.any(np.asarray(record["grad"])):
        fail(f"{name}: no gradient reaches log_alpha through a training sample; build the sample from log_alpha "
             "with torch operations (the reparameterisation trick), with no .detach() or .item().")
    return (f"\u2714 {name}: samples in [0, 1] with exact zeros and ones, the expected L0 penalty, and a "
            "deterministic gate at evaluation.")


# --------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------

def _gates_summary(closed_heads, importance_order) -> dict:
    """Whether the heads the student's gates closed are among the 4 of lowest importance: "yes" or "no"."""
    closed = {tuple(int(v) for v in head) for head in closed_heads}
    lowest = {tuple(int(v) for v in head) for head in list(importance_order)[:4]}
    return {"closed_among_lowest": "yes" if closed <= lowest else "no"}


# The gates are trained in the student's notebook (random gate samples, Adam): which heads they close can
# differ between machines, so the question about them is judged against the student's own run.
GATES_RUN = FromRun(("closed_heads", "importance_order"), _gates_summary)

QUESTIONS = (
    Question(
        "heads_pruned_before_drop", notebook="1_numpy", tracks=("numpy",),
        doc="Pruning the toy model's heads one at a time by gradient importance, how many heads are pruned when "
            "accuracy is last at or above 0.95?",
        answer=lambda sol: sol["heads_pruned_before_drop"],
        mistakes=(Mistake("first_below", "That is the number pruned at the first step below 0.95; the question asks "
                          "for the last step still at or above it.", lambda sol: sol["heads_pruned_before_drop"] + 1),),
        hint="toy_curve[k] is the accuracy with k heads pruned: find the largest k before it first falls below 0.95."),
    Question(
        "minilm_distractor_test", notebook="1_numpy", tracks=("numpy",),
        doc="With 63 of MiniLM's 72 heads pruned (in the PyTorch notebook's order), what share of the 48 held-out "
            "pairs pass the distractor test: the paraphrase closer to the first sentence than its distractor?",
        answer=lambda sol: sol["minilm_distractor_test"],
        mistakes=(Mistake("retrieval", "That is the retrieval accuracy at that step, which hardly moves; the question "
                          "asks for the distractor test.", lambda sol: sol["minilm_curve"][-1][2]),
                  Mistake("full", "That is the full model's share (0 heads pruned); the question asks about the model "
                          "with 63 heads pruned.", lambda sol: sol["minilm_curve"][0][3]),
                  Mistake("failed", "That is the share of pairs that fail the test; the question asks for the share "
                          "that pass it.", lambda sol: 1 - sol["minilm_distractor_test"])),
        hint="minilm_curve lists (heads pruned, agreement, retrieval, distractor test) per measured step."),
    Question(
        "pruned_layer_parameters", notebook="1_numpy", tracks=("numpy",),
        doc="How many parameters (weights and biases) does one of MiniLM's attention layers keep with 6 of its 12 "
            "heads pruned?",
        answer=lambda sol: sol["pruned_layer_parameters"],
        mistakes=(Mistake("b_o_halved", "b_o belongs to no head: it keeps its 384 entries.",
                          lambda sol: sol["pruned_layer_parameters"] - 192),
                  Mistake("no_biases", "That leaves out the biases: b_q, b_k, b_v shrink with the heads, b_o does "
                          "not.", lambda sol: 4 * 384 * 192),
                  Mistake("quarter", "Only the kept width shrinks, not d_model: every matrix keeps 384 on one side "
                          "and loses half on the other.", lambda sol: 4 * 192 * 192 + 3 * 192 + 192)),
        hint="w_q, w_k, w_v are (384, 6*32), w_o is (6*32, 384); b_q, b_k, b_v have 6*32 entries, b_o 384."),
    Question(
        "half_pruned_mib_saved", notebook="2_cupy", tracks=("cupy",),
        doc="How many MiB of float32 weights does pruning half of the heads of all six of MiniLM's attention layers "
            "free (weights and biases)?",
        answer=lambda sol: sol["half_pruned_mib_saved"],
        mistakes=(Mistake("float64", "That is for float64; the weights are float32, 4 bytes a number.",
                          lambda sol: 2 * sol["half_pruned_mib_saved"]),
                  Mistake("one_layer", "That is one layer; MiniLM has six.",
                          lambda sol: sol["half_pruned_mib_saved"] / 6)),
        hint="Each layer loses half of its w_q, w_k, w_v, w_o and of b_q, b_k, b_v; b_o stays."),
    Question(
        "maps_mib_kept", notebook="2_cupy", tracks=("cupy",),
        doc="At B = 8, T = 128, how many MiB do one layer's float32 attention maps take with 3 of its 12 heads "
            "kept?",
        answer=lambda sol: sol["maps_mib_kept"],
        mistakes=(Mistake("pruned_count", "That is with 3 heads pruned (9 kept); 3 heads are kept.",
                          lambda sol: sol["maps_mib_kept"] * 3),),
        hint="The maps are (B, H, T, T): one T x T map per head and sequence."),
    Question(
        "flop_ratio_half", notebook="2_cupy", tracks=("cupy",),
        doc="With half of a layer's heads pruned (d_model 384, 12 heads of 32, B 8, T 128), what fraction of the "
            "full layer's matrix-product FLOPs remain?",
        answer=lambda sol: sol["flop_ratio_half"],
        mistakes=(Mistake("quadratic", "Halving the heads does not square: every product has the kept width H*d_k "
                          "as one dimension, once.", lambda sol: sol["flop_ratio_half"] ** 2),
                  Mistake("projections_only", "The T^2 part shrinks too: each kept head computes its own q kᵀ and "
                          "weights·v, so it scales with the number of heads.",
                          lambda sol: sol["flop_ratio_projections_only"])),
        hint="Chapter 5's count with the kept width: 8·B·T·d·(H'·d_k) for the projections and 4·B·T²·H'·d_k for "
             "attention."),
    Question(
        "minilm_agreement_half", notebook="3_pytorch", tracks=("torch",), tolerance="estimate",
        doc="With 35 of MiniLM's 72 heads pruned by autograd importance (recomputed every step), what is the mean "
            "cosine agreement of the pruned model's held-out embeddings with the full model's?",
        answer=lambda sol: sol["minilm_agreement_half"],
        mistakes=(Mistake("retrieval", "That is the retrieval accuracy at that step; the question asks for the "
                          "agreement.", lambda sol: sol["minilm_retrieval_half"]),),
        hint="torch_curve holds (heads pruned, agreement, retrieval, distractor test) for every step."),
    Question(
        "gates_closed", notebook="3_pytorch", tracks=("torch",), kind="choice", choices=("yes", "no"),
        doc="After training the gates, is every head the gates closed among the 4 heads of lowest gradient "
            "importance?",
        answer=lambda run: run["closed_among_lowest"], run=GATES_RUN,
        hint="closed_heads and importance_order are printed by the gates cell: compare them."),
)


# --------------------------------------------------------------------------
# MiniLM's pruning order, from the PyTorch solution (the NumPy notebook replays it)
# --------------------------------------------------------------------------

# Data the notebooks read, generated from the PyTorch solution notebook by
# ``python -m autograder references ch08_pruning``: the (layer, head) pairs in the order its iterative
# pruning removed them (autograd importance of a contrastive loss at temperature 0.5 on the importance pairs,
# recomputed every 7 heads).
MINILM_ORDER_FILE = Path(__file__).resolve().parent.parent / "data" / "ch08_pruning_minilm_order.npz"


def minilm_pruning_order() -> list:
    """MiniLM's heads as ``(layer, head)`` pairs, least important first, as the PyTorch notebook pruned them."""
    if not MINILM_ORDER_FILE.exists():
        raise FileNotFoundError(f"{MINILM_ORDER_FILE} is missing. It ships with the course package; in a checkout "
                                "of the repository, regenerate it with: python -m autograder references ch08_pruning")
    with np.load(MINILM_ORDER_FILE) as data:
        return [(int(l), int(h)) for l, h in data["order"].tolist()]


def minilm_order_file(sol) -> dict:
    return {"order": np.asarray(sol["minilm_order"], dtype=np.int64).reshape(-1, 2)}


# --------------------------------------------------------------------------
# The chapter
# --------------------------------------------------------------------------

CHAPTER = Chapter(
    "ch08_pruning",
    generated=(Generated(MINILM_ORDER_FILE, "3_pytorch", minilm_order_file),),
    functions=(pasted_in(SOFTMAX, "numpy", "cupy"), pasted_in(CAUSAL_MASK, "numpy", "cupy"),
               pasted_in(SCALED_DOT_PRODUCT_ATTENTION, "numpy", "cupy"), pasted_in(SPLIT_HEADS, "numpy", "cupy"),
               pasted_in(MERGE_HEADS, "numpy", "cupy"), pasted_in(MULTI_HEAD_ATTENTION, "numpy", "cupy", "torch"),
               pasted_in(MASKED_MULTI_HEAD_ATTENTION, "numpy", "cupy"),
               pasted_in(HEAD_IMPORTANCE, "numpy", "cupy", "torch"),
               PRUNE_HEADS, PRUNE_MODEL, PRUNED_FORWARD, HEADS_TO_PRUNE),
    questions=QUESTIONS,
    custom=(
        Custom("module_pruning", "MultiHeadAttention.prune_heads(heads) replaces the module's parameters with the kept "
               "heads' (new nn.Parameters), updates n_heads, gives the masked module's output, works twice in a row, "
               "and the module still trains.", collect_module_pruning, judge_module_pruning, tracks=("torch",),
               target="module_class"),
        Custom("gates", "HardConcreteGates(shape) (stretch): clamped stretched concrete samples in training, the "
               "expected L0 penalty, a deterministic gate at evaluation.", _collect_gates, _judge_gates,
               tracks=("torch",), target="gates_class"),
    ))

Checks = CHAPTER.checks_class()
