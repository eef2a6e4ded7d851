"""Chapter 3 checks: split_heads, its ValueError, multi_head_attention_loop, the stretch
exercise heads_to_matrix, the chapter's questions, and the checks the CuPy and PyTorch
tracks add.

In a notebook::

    from mha_checks import notebook_checks
    check = notebook_checks("ch03_split_heads", "1_numpy")
    check.split_heads(split_heads)

Chapter 1's ``softmax`` and ``scaled_dot_product_attention`` are declared here again
(the student pastes them at the top of each notebook), so that their checks run in
this chapter's notebooks and the loop over heads is judged on top of them: one bug
costs once. Their cases are generated again from this chapter's reference solution.
This module only declares; :mod:`mha_checks.engine` runs the checks.
"""
import re

import numpy as np

from ..engine import (Chapter, Custom, Function, Mistake, Question, collect_calls, describe_exception, fail,
                      is_close, judge_records, outputs_of)
from ..kit import layers
from ..kit.common import normal
from .ch01_single_head import CHAPTER as _CHAPTER_1
from .ch01_single_head import SCALED_DOT_PRODUCT_ATTENTION, SOFTMAX

LOOP = "multi_head_attention_loop"

# --------------------------------------------------------------------------
# split_heads: cases, known mistakes, properties
# --------------------------------------------------------------------------


def _split_case(rng, B, T, d_model, n_heads, dtype):
    return dict(x=normal(rng, (B, T, d_model), dtype), n_heads=n_heads)


def split_visible(rng):
    f64, f32 = np.float64, np.float32
    return [_split_case(rng, 2, 5, 12, 3, f64),      # B, T, d_model, H, d_k = 2, 5, 12, 3, 4: all differ
            _split_case(rng, 3, 4, 10, 2, f32),      # d_k = 5
            _split_case(rng, 1, 6, 8, 4, f64)]       # d_k = 2


def split_hidden(rng):
    f64, f32 = np.float64, np.float32
    return [_split_case(rng, 2, 7, 15, 5, f64),      # every dimension distinct, odd sizes
            _split_case(rng, 4, 3, 8, 4, f32),       # B == H
            _split_case(rng, 5, 9, 28, 7, f32),      # d_k = 4, all distinct again
            _split_case(rng, 3, 5, 6, 1, f32),       # one head: a new axis of size 1
            _split_case(rng, 2, 4, 6, 6, f64),       # d_k = 1: one feature per head
            _split_case(rng, 1, 1, 9, 3, f64)]       # a single token


def _split_sizes(x, n_heads):
    B, T, d_model = x.shape
    return B, T, d_model, d_model // n_heads


def _reshaped_only(sol, x, n_heads):
    """The values x.reshape(B, H, T, d_k) holds: right shape, tokens mixed. Computed directly,
    since no transformation of the input makes the right split produce it."""
    B, T, d_model, d_k = _split_sizes(x, n_heads)
    if n_heads == 1 or T == 1:
        return None  # then the two are the same array
    return x.reshape(B, n_heads, T, d_k)


def _strided_split(sol, x, n_heads):
    """Head h takes features h, h+H, h+2H, ...: the right split of x with its features reordered."""
    d_model, d_k = x.shape[-1], x.shape[-1] // n_heads
    if n_heads == 1 or d_k == 1:
        return None
    order = layers.head_column_order(d_model, n_heads, strided=True)
    return sol["split_heads"](np.ascontiguousarray(x[..., order]), n_heads)


RESHAPE_ONLY = ("did you reshape without transposing the head axis? x.reshape(B, n_heads, T, d_k) has the "
                "right shape, but each head's rows are then slices of consecutive tokens, not the tokens' "
                "features: split the feature axis into (n_heads, d_k) first, then move the head axis in "
                "front of the tokens.")
STRIDED = ("each head took every H-th feature (h, h+H, h+2H, ...) instead of the block h*d_k:(h+1)*d_k: "
           "split the feature axis as (n_heads, d_k), in that order, not (d_k, n_heads).")


def _validate_split(got, case):
    out = got["out"][0]
    B, T, d_model, d_k = _split_sizes(case.args["x"], int(case.args["n_heads"]))
    H = int(case.args["n_heads"])
    want = (B, H, T, d_k)
    if out.shape == (B, T, H, d_k) and out.shape != want:
        fail(f"out of {case.describe()} has shape {out.shape}, expected (B, H, T, d_k) = {want}: you reshaped "
             "but did not move the head axis. Each head must hold all T tokens, so the head axis goes "
             "before the token axis.")
    if out.shape == (B, H, d_k, T) and out.shape != want:
        fail(f"out of {case.describe()} has shape {out.shape}, expected (B, H, T, d_k) = {want}: the last two "
             "axes are swapped. Only the token and head axes trade places; every head keeps rows = tokens.")


def _diagnose_split(got, case):
    out, want = got["out"], case.expected["out"]
    if np.array_equal(np.sort(out, axis=None), np.sort(want, axis=None)):
        fail(f"out of {case.describe()} holds the right numbers in the wrong places: follow one token's "
             "features, x[b, t, h*d_k:(h+1)*d_k] must end up as out[b, h, t, :].")


# --------------------------------------------------------------------------
# split_heads must refuse a width it cannot split, with a message that helps
# --------------------------------------------------------------------------

# (shape of x, n_heads) pairs that do not split; the sizes appear in no library's own
# reshape message for them (60 and (2, 3, 4, 2); 54 and (3, 2, 6, 1)), so a message naming
# both was written by the student.
BAD_SPLITS = (((2, 3, 10), 4), ((3, 2, 9), 6))
LIBRARY_RESHAPE_ERRORS = ("cannot reshape", "is invalid for input of size", "total size of new array")


def _collect_split_error(checks, fn):
    if not callable(fn):
        return [{"not_callable": type(fn).__name__}]
    records = []
    for shape, n_heads in BAD_SPLITS:
        x = checks.backend.asarray(np.zeros(shape, dtype=np.float32))
        try:
            result = fn(x, n_heads)
        except Exception as exc:  # what the student raises is what the check is about
            records.append(describe_exception(exc))
        else:
            records.append({"returned": type(result).__name__})
    return records


def _names_number(message: str, n: int) -> bool:
    return re.search(rf"(?<![\d.]){n}(?![\d.])", message) is not None


def _judge_split_error(checks, records):
    if not isinstance(records, list) or len(records) != len(BAD_SPLITS):
        fail("the check of split_heads' error sent no readable result.")
    if isinstance(records[0], dict) and "not_callable" in records[0]:
        fail(f"split_heads is {records[0]['not_callable']}, not a function: run the cell that defines it.")
    for ((shape, n_heads), record) in zip(BAD_SPLITS, records):
        d_model = shape[-1]
        call = f"split_heads(x of shape {shape}, n_heads={n_heads})"
        if record.get("not_implemented"):
            fail("split_heads is not implemented yet: replace `raise NotImplementedError()` with your code.")
        if "returned" in record:
            fail(f"{call} returned a {record['returned']}: {d_model} features cannot be shared equally by "
                 f"{n_heads} heads, so split_heads must raise a ValueError that says so.")
        message = str(record.get("message", ""))
        own = any(s in message.lower() for s in LIBRARY_RESHAPE_ERRORS)
        if own:
            fail(f"{call} raised {record['raised']}: {message}\nThat is the library's own reshape error: it does "
                 f"not say that d_model = {d_model} is not a multiple of n_heads = {n_heads}. Check "
                 "d_model % n_heads yourself before reshaping, and raise a ValueError that names both sizes.")
        if record["raised"] != "ValueError":
            fail(f"{call} raised {record['raised']}: {message}\nRaise a ValueError: the value of an "
                 "argument is wrong, which is what ValueError means (an assert can be switched off).")
        missing = [f"{label} = {n}" for label, n in (("d_model", d_model), ("n_heads", n_heads))
                   if not _names_number(message, n)]
        if missing:
            fail(f"{call} raised ValueError({message!r}), which names both sizes only if it says "
                 f"{' and '.join(missing)}: a student reading it should see which numbers do not divide.")
    return ("\u2714 split_heads raises a ValueError naming d_model and n_heads when d_model is not a "
            "multiple of n_heads.")


# --------------------------------------------------------------------------
# The loop over heads: a whole layer (cases and mistakes shared with chapter 4)
# --------------------------------------------------------------------------

def loop_visible(rng):
    """The shared visible layers, then a pruned-style one (H*d_k = 6, d_model = 10), so that
    d_k taken from d_model already shows in the notebook."""
    return layers.layer_visible(rng) + [layers.layer_case(rng, 2, 3, 10, 2, 3, np.float32, bias=True,
                                                          mask="per_example")]


def _validate_loop(got, case):
    layers.validate_layer_weights(got, case)
    weights = got["weights"][0]
    B, T = case.args["x"].shape[:2]
    H = int(case.args["n_heads"])
    if weights.shape == (H, B, T, T) and H != B:
        fail(f"weights of {case.describe()} have shape {weights.shape}, expected (B, H, T, T) = {(B, H, T, T)}: "
             "the heads' maps were stacked on axis 0; stack them on axis 1, right after the batch axis.")


# --------------------------------------------------------------------------
# PyTorch: the loop against torch's own attention, one head at a time
# --------------------------------------------------------------------------

def _torch_layers(n_trials, seed):
    """Random layers as torch tensors, shared by collect and judge: ``(x, params, n_heads, mask or None)``."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    for trial in range(n_trials):
        dtype = (torch.float64, torch.float32)[trial % 2]
        B, T, n_heads, d_k = (int(s) for s in torch.randint(1, 6, (4,), generator=gen))
        d_model = n_heads * d_k if trial % 3 else n_heads * d_k + 2   # every third layer pruned-style
        rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)
        params = {n: rand(d_model, n_heads * d_k) / d_model ** 0.5 for n in ("w_q", "w_k", "w_v")}
        params["w_o"] = rand(n_heads * d_k, d_model) / (n_heads * d_k) ** 0.5
        if trial % 2:
            params.update({n: rand(n_heads * d_k) for n in ("b_q", "b_k", "b_v")})
            params["b_o"] = rand(d_model)
        mask = torch.rand(B, T, T, generator=gen) < 0.6
        mask[..., 0] = True  # torch's own function has given NaN for a row with no key (versions differ)
        yield rand(B, T, d_model), params, n_heads, (mask if trial % 4 else None)


def _collect_matches_torch(checks, fn, n_trials, seed):
    records = []
    for x, params, n_heads, mask in _torch_layers(n_trials, seed):
        args = (x, params, n_heads) if mask is None else (x, params, n_heads, mask)
        records.append(collect_calls(fn, [None], lambda _: args, 2, checks.backend)[0])
        if "values" not in records[-1]:
            break
    return records


def _torch_reference(x, params, n_heads, mask):
    """The layer with torch's own attention, head by head: concat(heads) @ w_o + b_o."""
    import torch
    import torch.nn.functional as F
    d_k = params["w_q"].shape[1] // n_heads
    zero = torch.zeros(params["w_q"].shape[1], dtype=x.dtype)
    heads = []
    for h in range(n_heads):
        block = slice(h * d_k, (h + 1) * d_k)
        q, k, v = (x @ params[f"w_{n}"][:, block] + params.get(f"b_{n}", zero)[block] for n in "qkv")
        heads.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    return torch.cat(heads, dim=-1) @ params["w_o"] + params.get("b_o", torch.zeros(x.shape[-1], dtype=x.dtype))


def _judge_matches_torch(checks, records, n_trials, seed):
    trials = list(_torch_layers(n_trials, seed))
    for (x, params, n_heads, mask), record in judge_records(records, trials, LOOP):
        ours = outputs_of(record, ("out", "weights"), LOOP, checks.array_type_name)["out"][0]
        theirs = _torch_reference(x, params, n_heads, mask).numpy()
        dtype = str(x.dtype).replace("torch.", "")
        if ours.shape != theirs.shape or not is_close(ours, theirs, dtype, "cpu"):
            diff = (f"largest difference {np.abs(ours - theirs).max():.3g}"
                    if ours.shape == theirs.shape else f"shape {ours.shape}, expected {theirs.shape}")
            fail(f"your layer differs from one built on torch.nn.functional.scaled_dot_product_attention, head "
                 f"by head, for x {tuple(x.shape)}, n_heads={n_heads}, w_q {tuple(params['w_q'].shape)}, "
                 f"{'with' if 'b_q' in params else 'without'} biases, mask {'given' if mask is not None else 'None'}, "
                 f"{x.dtype}: {diff}.")
    return (f"\u2714 {LOOP} matches a layer built on torch's scaled_dot_product_attention head by head, "
            f"on {n_trials} random layers.")


# --------------------------------------------------------------------------
# Stretch: per-head weight matrices back into one big matrix
# --------------------------------------------------------------------------

def _stack_case(rng, n_heads, d_model, d_k, dtype):
    return dict(per_head=normal(rng, (n_heads, d_model, d_k), dtype))


def stack_visible(rng):
    return [_stack_case(rng, 3, 5, 4, np.float64), _stack_case(rng, 2, 6, 3, np.float32)]


def stack_hidden(rng):
    return [_stack_case(rng, 4, 7, 2, np.float32),
            _stack_case(rng, 1, 5, 3, np.float64),     # one head
            _stack_case(rng, 5, 6, 1, np.float64),     # one column per head
            _stack_case(rng, 6, 4, 5, np.float32)]     # more heads than rows


def _stack_reshaped_only(sol, per_head):
    n_heads, d_model, d_k = per_head.shape
    return None if n_heads == 1 else per_head.reshape(d_model, n_heads * d_k)


def _stack_interleaved(sol, per_head):
    n_heads, d_model, d_k = per_head.shape
    return None if n_heads == 1 or d_k == 1 else per_head.transpose(1, 2, 0).reshape(d_model, n_heads * d_k)


def _stack_reversed(sol, per_head):
    return None if per_head.shape[0] == 1 else sol["heads_to_matrix"](np.ascontiguousarray(per_head[::-1]))


# --------------------------------------------------------------------------
# The chapter
# --------------------------------------------------------------------------

SPLIT_HEADS = Function(
    "split_heads", args=("x", "n_heads"), outputs=("out",),
    doc="split_heads(x, n_heads): (B, T, d_model) -> (B, H, T, d_k), head h holding features h*d_k:(h+1)*d_k.",
    visible=split_visible, hidden=split_hidden,
    mistakes=(Mistake("reshape_only", RESHAPE_ONLY, _reshaped_only),
              Mistake("strided", STRIDED, _strided_split)),
    validate=_validate_split, diagnose=_diagnose_split)

MULTI_HEAD_ATTENTION_LOOP = Function(
    LOOP, args=("x", "params", "n_heads", "mask"), outputs=("out", "weights"),
    doc="multi_head_attention_loop(x, params, n_heads, mask=None) -> (out (B, T, d_model), weights (B, H, T, T)), "
        "one head at a time.",
    visible=loop_visible, hidden=layers.layer_hidden,
    mistakes=layers.layer_mistakes(LOOP),
    validate=_validate_loop, diagnose=layers.diagnose_layer,
    # One bug costs once: a correct loop on top of an attention with a known mistake passes,
    # and its message points at scaled_dot_product_attention.
    uses=("scaled_dot_product_attention",),
    inherited=layers.inherited_from_attention(LOOP))

HEADS_TO_MATRIX = Function(
    "heads_to_matrix", args=("per_head",), outputs=("w",), tracks=("numpy",),
    doc="heads_to_matrix(per_head) (stretch): (H, d_model, d_k) per-head weights -> the (d_model, H*d_k) matrix.",
    visible=stack_visible, hidden=stack_hidden,
    mistakes=(
        Mistake("reshape_only", "the (H, d_model, d_k) array was reshaped to (d_model, H*d_k) without moving the "
                "head axis first: the rows of different heads got mixed. Bring d_model to the front, then "
                "merge (H, d_k).", _stack_reshaped_only),
        Mistake("interleaved", "the heads are interleaved (column j*H + h) instead of side by side: head h must "
                "own the block of columns h*d_k:(h+1)*d_k, so merge (H, d_k) in that order.", _stack_interleaved),
        Mistake("reversed", "the heads are in reverse order: head 0 owns the first d_k columns.", _stack_reversed),
    ))

QUESTIONS = (
    Question(
        "head_2_first_column", notebook="1_numpy", tracks=("numpy",),
        doc="d_model = 12, n_heads = 3: the index of the first column of w_q that head 2 (counting from 0) uses.",
        answer=lambda sol: sol["head_2_first_column"],
        mistakes=(
            Mistake("strided", "That is where head 2 would start if heads took every H-th column; they take "
                    "contiguous blocks of d_k columns.", lambda sol: 2),
            Mistake("one_based", "That is the start of the second head, head 1; heads are counted from 0 here.",
                    lambda sol: 4),
        ),
        hint="Each head owns d_k = d_model / n_heads consecutive columns; head h starts after h such blocks."),
    Question(
        "wrong_split_token", notebook="1_numpy", tracks=("numpy",),
        doc="After x.reshape(B, H, T, d_k) without a transpose (T = 4, d_model = 6, H = 2): which token's "
            "features fill head 1, position 0?",
        answer=lambda sol: sol["wrong_split_token"],
        mistakes=(Mistake("correct_split", "That is what the correct split puts there; the reshape alone reads "
                          "the numbers in memory order, so head 1 starts where head 0's T*d_k numbers stop.",
                          lambda sol: 0),),
        hint="Print the reshaped array of token numbers and read head 1, row 0."),
    Question(
        "pruned_d_k", notebook="1_numpy", tracks=("numpy",),
        doc="A pruned layer: d_model = 768, w_q of shape (768, 576), n_heads = 9. What is d_k?",
        answer=lambda sol: sol["pruned_d_k"],
        mistakes=(
            Mistake("from_d_model", "That is d_model // n_heads; after pruning, H*d_k is no longer d_model, so "
                    "d_k comes from the width of w_q: w_q.shape[1] // n_heads.", lambda sol: 768 // 9),
            Mistake("heads_before_pruning", "That divides the remaining width by the 12 heads the layer had "
                    "before pruning; 9 are left.", lambda sol: 576 / 12),
        ),
        hint="The projection's width is n_heads * d_k."),
    Question(
        "loop_matmul_launches", notebook="2_cupy", tracks=("cupy",),
        doc="With 8 heads, how many attention matrix products (q·kᵀ and weights·v) does one call of the loop "
            "launch?",
        answer=lambda sol: sol["loop_matmul_launches"],
        mistakes=(
            Mistake("batched", "That is the batched form's count: one q·kᵀ and one weights·v for all heads at "
                    "once. The loop launches its own pair for every head.", lambda sol: 2),
            Mistake("one_per_head", "Each head needs two products: its scores q·kᵀ and its output weights·v.",
                    lambda sol: 8),
        ),
        hint="Count the products one head makes, then the heads."),
    Question(
        "split_is_contiguous", notebook="2_cupy", tracks=("cupy",), kind="choice", choices=("yes", "no"),
        doc="Is the array split_heads returns C-contiguous? ('yes' or 'no')",
        answer=lambda sol: sol["split_is_contiguous"],
        hint="Print .flags.c_contiguous of your split, and think about what a transpose does to the strides."),
    Question(
        "projection_param_ratio", notebook="3_pytorch", tracks=("torch",),
        doc="d_model = 512: the parameters of w_q, w_k, w_v for 8 heads of d_k = 64, divided by those of one "
            "head of d_k = 512.",
        answer=lambda sol: sol["projection_param_ratio"],
        mistakes=(
            Mistake("full_width_heads", "That counts every head as a full (512, 512) projection; each head "
                    "projects to only d_k = 64 columns.", lambda sol: 8),
            Mistake("one_head_only", "That compares one of the 8 heads with the big head; count all 8.",
                    lambda sol: 1 / 8),
        ),
        hint="Eight heads of 64 columns make a (512, 512) matrix again."),
    Question(
        "head_0_grad_columns", notebook="3_pytorch", tracks=("torch",),
        doc="d_model = 12, 3 heads, a loss from head 0's weights only: how many columns of w_q.grad are non-zero?",
        answer=lambda sol: sol["head_0_grad_columns"],
        mistakes=(Mistake("all_columns", "Every column would get a gradient only if every head fed the loss; "
                          "head 0's weights depend on its own columns of w_q alone.", lambda sol: 12),),
        hint="Which columns of w_q does head 0's score matrix depend on?"),
)

CHAPTER = Chapter(
    "ch03_split_heads",
    functions=(SOFTMAX, SCALED_DOT_PRODUCT_ATTENTION, SPLIT_HEADS, MULTI_HEAD_ATTENTION_LOOP, HEADS_TO_MATRIX),
    questions=QUESTIONS,
    custom=(
        Custom("split_heads_error", "split_heads raises a ValueError naming d_model and n_heads when d_model "
               "is not a multiple of n_heads.", _collect_split_error, _judge_split_error),
        _CHAPTER_1.checks["gpu_timer"],
        Custom("matches_torch_per_head", "The loop agrees with a layer built on "
               "torch.nn.functional.scaled_dot_product_attention, head by head.",
               _collect_matches_torch, _judge_matches_torch, tracks=("torch",),
               options={"n_trials": 12, "seed": 0}),
    ))

Checks = CHAPTER.checks_class()
