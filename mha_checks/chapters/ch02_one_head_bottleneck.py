"""Chapter 2 checks: attention_entropy in every track, the CuPy track's fused
entropy kernel, the stretch exercise effective_keys, and the questions about
what one head can and cannot read from a blend of two tokens.

In a notebook::

    from mha_checks.chapters.ch02_one_head_bottleneck import Checks
    check = Checks("numpy")                    # or "cupy", "torch"
    check.attention_entropy(attention_entropy)

Cases hold attention-like weights: rows that sum to 1, one-hot rows, all-zero
rows (a query with no allowed key), weights near zero (1e-30) and causal maps.
Their shapes have distinct dimensions where they can, so that a sum over the
wrong axis shows up as a wrong shape. This module only declares; the engine
(:mod:`mha_checks.engine`) runs the checks.
"""
import math

import numpy as np

from ..engine import Chapter, FromRun, Function, Inherited, Mistake, Question, fail

# --------------------------------------------------------------------------
# Case inputs: rows of attention weights
# --------------------------------------------------------------------------


def _rows(rng, shape, dtype, spread=2.0):
    """Random softmax rows: positive weights that sum to 1 along the last axis."""
    scores = rng.standard_normal(shape) * spread
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(dtype)


def _causal_maps(rng, shape, dtype):
    """(..., T, T) weights of a causal head: zeros above the diagonal, query 0 one-hot on key 0."""
    T = shape[-1]
    allowed = np.tril(np.ones((T, T), dtype=bool))
    scores = np.where(allowed, rng.standard_normal(shape) * 2.0, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(dtype)


def _with_special_rows(weights, one_hot=(), zero=(), tiny=()):
    """Rows of a 2-D view replaced: one-hot rows, all-zero rows (no allowed key), and rows
    with a few weights near zero (1e-30: harmless, unlike exactly 0, for log)."""
    flat = weights.reshape(-1, weights.shape[-1])
    for r in one_hot:
        flat[r] = 0
        flat[r, r % flat.shape[1]] = 1
    for r in zero:
        flat[r] = 0
    for r in tiny:
        flat[r, ::2] = 1e-30
        flat[r] /= flat[r].sum()
    return flat.reshape(weights.shape)


def entropy_visible(rng):
    f64, f32 = np.float64, np.float32
    return [
        dict(weights=_rows(rng, (3, 5), f64)),
        dict(weights=_with_special_rows(_rows(rng, (2, 4, 6), f32), one_hot=(0,), zero=(5,))),
        dict(weights=_causal_maps(rng, (2, 3, 5, 5), f64)),             # (B, H, T, T) maps
        dict(weights=_with_special_rows(_rows(rng, (4, 7), f64), tiny=(1, 2), zero=(3,))),
    ]


def entropy_hidden(rng):
    f64, f32 = np.float64, np.float32
    uniform = np.full((5, 9), 1 / 9)
    return [
        dict(weights=_with_special_rows(_rows(rng, (3, 4, 6, 7), f32), zero=(2, 40), tiny=(7,))),
        dict(weights=_with_special_rows(uniform, one_hot=(1, 3))),
        dict(weights=_causal_maps(rng, (64, 4, 12, 12), f32)),         # a large batch of maps
        dict(weights=_with_special_rows(_rows(rng, (2, 3, 8), f64, 6.0), tiny=(0, 4), zero=(5,))),
        dict(weights=_rows(rng, (1, 7), f32)),                          # a single row
        dict(weights=_with_special_rows(_causal_maps(rng, (5, 6, 6), f32), zero=(9, 20))),
    ]


# --------------------------------------------------------------------------
# Known mistakes, produced by the solution on transformed inputs
# --------------------------------------------------------------------------

def _entropy(sol, weights):
    return sol["attention_entropy"](weights)


def _in_bits(sol, weights):
    return _entropy(sol, weights) / weights.dtype.type(math.log(2))


def _mean_over_keys(sol, weights):
    T_k = weights.shape[-1]
    return None if T_k == 1 else _entropy(sol, weights) / weights.dtype.type(T_k)


def _over_queries(sol, weights):
    """Summed over axis -2: only a distinct value mistake when the maps are square."""
    if weights.ndim < 2 or weights.shape[-1] != weights.shape[-2]:
        return None
    return _entropy(sol, np.swapaxes(weights, -1, -2).copy())


def _has_zero_weights(weights) -> bool:
    return bool((weights == 0).any())


def _entropy_has_right_shape(got, case):
    """Wrong reductions show in the shape; name which one before comparing values."""
    weights = case.args["weights"]
    shape = got["entropy"][0].shape
    want = weights.shape[:-1]
    if shape == want:
        return
    if shape == weights.shape:
        fail(f"{case.describe()} returned one number per weight, shape {shape}: sum the terms "
             f"-p·log p over the keys (axis -1), giving one entropy per row, shape {want}.")
    if weights.ndim >= 2 and shape == weights.shape[:-2] + weights.shape[-1:]:
        fail(f"{case.describe()} has shape {shape}, expected {want}: you summed over the queries "
             "(axis -2) instead of the keys (axis -1). Each row of weights is one distribution.")


def _diagnose_not_finite(values, case):
    """NaN from a row of weights: an all-zero row, or 0·log 0 taken literally."""
    weights = case.args["weights"]
    if not np.isfinite(values).all():
        bad = ~np.isfinite(values)
        zero_rows = ~(weights != 0).any(axis=-1)
        if zero_rows.any() and (bad <= zero_rows).all():
            fail(f"{case.describe()}: an all-zero row (a query with no allowed key) gave NaN. "
                 "Its entropy is 0: did you divide by the row sum? The rows are already weights.")
        if _has_zero_weights(weights):
            fail(f"{case.describe()} gave NaN where a row holds weights equal to 0: 0·log 0 is "
                 "0 × (-inf) = NaN in floating point. By convention 0·log 0 = 0: take the log "
                 "only of positive weights and count the zero ones as 0.")
        fail(f"{case.describe()} gave NaN or inf values.")


def _diagnose_entropy(got, case):
    entropy, weights = got["entropy"], case.args["weights"]
    _diagnose_not_finite(entropy, case)
    if (entropy < 0).any():
        fail(f"{case.describe()} gave negative entropies: entropy is -Σ p log p, and every "
             "log p ≤ 0, so it is never negative. Is the minus sign missing?")
    bound = np.log(weights.shape[-1]) + 1e-4
    if (entropy > bound).any():
        fail(f"{case.describe()} gave entropies above log(T_k) = {bound - 1e-4:.4f}, the entropy of "
             "a uniform row, which no row of weights can exceed.")


# --------------------------------------------------------------------------
# The chapter
# --------------------------------------------------------------------------

IN_BITS = ("the entropy is in bits (log base 2); this course measures it in nats: use the "
           "natural log, np.log / torch.log.")
MEAN_OVER_KEYS = ("the terms -p·log p were averaged over the keys instead of summed: entropy is "
                  "the sum over the row.")
NO_MINUS = "the minus sign is missing: entropy is -Σ p log p, which is never negative."
OVER_QUERIES = ("you summed over the queries (axis -2) instead of the keys (axis -1): each row of "
                "weights is one query's distribution over the keys.")

ENTROPY = Function(
    "attention_entropy", args=("weights",), outputs=("entropy",),
    doc="attention_entropy(weights): entropy in nats of each row, shape weights.shape[:-1]; "
        "0·log 0 = 0, so one-hot and all-zero rows give 0.",
    visible=entropy_visible, hidden=entropy_hidden,
    mistakes=(
        Mistake("log2", IN_BITS, _in_bits),
        Mistake("no_minus", NO_MINUS, lambda sol, weights: -_entropy(sol, weights)),
        Mistake("mean_over_keys", MEAN_OVER_KEYS, _mean_over_keys),
        Mistake("over_queries", OVER_QUERIES, _over_queries),
    ),
    validate=_entropy_has_right_shape,
    diagnose=_diagnose_entropy)

FUSED_ENTROPY = Function(
    "fused_attention_entropy", args=("weights",), outputs=("entropy",), tracks=("cupy",),
    doc="fused_attention_entropy(weights): attention_entropy in one custom kernel (a CuPy "
        "ReductionKernel over the last axis).",
    visible=entropy_visible, hidden=entropy_hidden,
    reference=lambda sol, weights: _entropy(sol, weights),
    mistakes=(Mistake("log2", IN_BITS, _in_bits),
              Mistake("no_minus", NO_MINUS, lambda sol, weights: -_entropy(sol, weights))),
    validate=_entropy_has_right_shape,
    diagnose=_diagnose_entropy)


def effective_keys_visible(rng):
    return entropy_visible(rng)[:2] + [dict(weights=np.full((2, 3, 4), 0.25))]


def effective_keys_hidden(rng):
    return entropy_hidden(rng)[:4]


def _effective_keys_of(sol, entropy, dtype):
    return np.exp(entropy).astype(dtype)


EFFECTIVE_KEYS = Function(
    "effective_keys", args=("weights",), outputs=("keys",), tracks=("numpy",),
    doc="effective_keys(weights) (stretch): exp(entropy) of each row, the number of keys a row "
        "spreads over; 1 for a one-hot row, T_k for a uniform one.",
    visible=effective_keys_visible, hidden=effective_keys_hidden,
    mistakes=(
        Mistake("entropy_itself", "that is the entropy itself; the number of keys it stands for is "
                "exp(entropy): a row spread evenly over k keys has entropy log k.",
                lambda sol, weights: _entropy(sol, weights)),
        Mistake("two_to_the", "2 ** entropy counts keys only for an entropy in bits; with nats "
                "use exp(entropy).",
                lambda sol, weights: np.power(weights.dtype.type(2), _entropy(sol, weights))),
    ),
    diagnose=lambda got, case: _diagnose_not_finite(got["keys"], case),
    # One bug costs once: exp of an entropy with a known mistake is accepted, and the
    # message points at attention_entropy.
    uses=("attention_entropy",),
    inherited=(
        Inherited("attention_entropy", "log2",
                  lambda sol, weights: np.exp(_in_bits(sol, weights)), message=IN_BITS),
        Inherited("attention_entropy", "no_minus",
                  lambda sol, weights: np.exp(-_entropy(sol, weights)), message=NO_MINUS),
        Inherited("attention_entropy", "mean_over_keys",
                  lambda sol, weights: None if weights.shape[-1] == 1
                  else np.exp(_mean_over_keys(sol, weights)), message=MEAN_OVER_KEYS),
    ))


# --------------------------------------------------------------------------
# Questions: numbers and choices about what the student observed
# --------------------------------------------------------------------------

def _last_accuracies(history) -> dict:
    """What the training cell's ``history`` says at the last evaluation: the mean of each model's two
    readout accuracies, plain numbers."""
    return {name: (float(history[name]["acc_prev"][-1]) + float(history[name]["acc_prev2"][-1])) / 2
            for name in ("one", "two")}


# A training run's numbers differ between CPUs, kernels and thread counts: the question about the
# student's run is judged against that run (``history``, made by the locked training cell).
TRAINING_RUN = FromRun(("history",), _last_accuracies)


QUESTIONS = (
    Question(
        "even_split_entropy", notebook="1_numpy", tracks=("numpy",),
        doc="What is the entropy, in nats, of a row that splits its weight evenly over 2 keys "
            "(two decimals)?",
        answer=lambda sol: sol["even_split_entropy"],
        mistakes=(Mistake("bits", "That is the entropy in bits (log base 2); in nats it is log 2 "
                          "with the natural log.", lambda sol: sol["even_split_entropy"] / math.log(2)),),
        hint="Two keys with weight 1/2 each: add up -p·log p over the row."),
    Question(
        "blended_accuracy", notebook="1_numpy", tracks=("numpy",),
        doc="Accuracy of the best linear readout of x_{t-1} from the blended head (two decimals)?",
        answer=lambda sol: sol["blended_accuracy"],
        mistakes=(
            Mistake("two_heads", "That is the accuracy of the two sharp heads; the question asks "
                    "about the one head that splits its weight 1/2–1/2.",
                    lambda sol: sol["readout_accuracy"](sol["two_head_features"], sol["previous"])),
            Mistake("coin_flip", "Close, but a pair with the same token twice is always read "
                    "right, and those 16 of the 256 pairs raise it above one half.",
                    lambda sol: 0.5),
        ),
        hint="Run the readout cell and read off the accuracy it prints for the blended head "
             "on x_{t-1}."),
    Question(
        "bottleneck_task", notebook="1_numpy", tracks=("numpy",), kind="choice", choices=("a", "b"),
        doc="Which task shows the one-head bottleneck: (a) give x_{t-1} and x_{t-2}, or (b) give "
            "(x_{t-1} + x_0) mod V?",
        answer=lambda sol: sol["bottleneck_task"],
        mistakes=(Mistake("symmetric", "Task (b) is symmetric in its two tokens: the average of their "
                          "embeddings holds all it needs, so one head that blends them loses nothing.",
                          lambda sol: "b"),),
        hint="Which answer changes when the two tokens swap places?"),
    Question(
        "maps_mib", notebook="2_cupy", tracks=("cupy",),
        doc="How many MiB do float32 attention maps of shape (32, 8, 512, 512) take?",
        answer=lambda sol: sol["maps_mib"],
        mistakes=(
            Mistake("float64", "That is for float64; these maps are float32, 4 bytes a number.",
                    lambda sol: 2 * sol["maps_mib"]),
            Mistake("megabytes", "That is in MB (10^6 bytes); a MiB is 2^20 bytes.",
                    lambda sol: sol["maps_mib"] * 2**20 / 1e6),
        ),
        hint="Multiply the four sizes and the bytes per number, then divide by 2^20."),
    Question(
        "copy_saving", notebook="2_cupy", tracks=("cupy",),
        doc="By what factor is copying the entropies of those maps to the host smaller than "
            "copying the maps themselves?",
        answer=lambda sol: sol["copy_saving"],
        mistakes=(Mistake("one_per_map", "That would hold if attention_entropy gave one number per "
                          "map; it gives one per row (per query), shape (B, H, T).",
                          lambda sol: sol["copy_saving"] ** 2),),
        hint="The maps are (B, H, T, T), the entropies (B, H, T), in the same dtype."),
    Question(
        "sharper_model", notebook="3_pytorch", tracks=("torch",), kind="choice", choices=("one", "two"),
        doc="After training, whose attention rows have the lower entropy: the 'one'-head or the "
            "'two'-head model?",
        answer=lambda sol: sol["sharper_model"],
        mistakes=(Mistake("one", "The one head spreads each row over the two tokens it needs; each of "
                          "the two heads puts its row on one token.", lambda sol: "one"),),
        hint="Compare the entropy curves of the figure at the last step."),
    Question(
        "two_heads_accuracy", notebook="3_pytorch", tracks=("torch",), run=TRAINING_RUN,
        doc="The two-head model's accuracy after training, the mean of its two readouts' (a fraction, "
            "0 to 1)?",
        answer=lambda run: run["two"],
        mistakes=(Mistake("one_head", "That is the one-head model's accuracy; the question asks about "
                          "the model with two heads.", lambda run: run["one"]),),
        hint="history['two'] holds both readouts' accuracies, step by step: average their last values."),
)

CHAPTER = Chapter(
    "ch02_one_head_bottleneck",
    functions=(ENTROPY, FUSED_ENTROPY, EFFECTIVE_KEYS),
    questions=QUESTIONS)

Checks = CHAPTER.checks_class()
