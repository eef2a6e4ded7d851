"""Chapter 6's toy task, and the course's model trained on it.

Every sequence is a pattern of ``p`` distinct tokens repeated until the sequence
is full, with the period ``p`` drawn per sequence from ``PERIODS``. Once a
pattern has been seen, its next token is fully determined: the token that
followed the current one the last time it appeared. A model that finds the
earlier copy of the current token and reads what came after it, an *induction
head* fed by a *previous-token head*, predicts every such position. The period
varies per sequence so that "look back p positions" is not a fixed offset: with a
fixed period a model learns the offset (a positional shortcut) instead.

This module draws the data, says which positions are predictable, measures
accuracy on them, and loads the course's trained model. It holds no model code:
students write the model (PyTorch) and its forward pass (NumPy) themselves. The
model file is generated from the chapter's solution notebooks by
``python -m autograder references ch06_what_heads_learn``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

VOCAB = 32
SEQ_LEN = 32
PERIODS = (4, 12)           # smallest and largest period, both included
D_MODEL, N_HEADS, N_LAYERS = 64, 4, 2
HELD_OUT_SEED = 6           # the held-out sequences every track and the grader share
# How the course's model is trained (the PyTorch notebook, its check, the model file):
# about 10 s on one CPU thread, 98-99 % of the predictable held-out positions.
TRAINING = dict(steps=300, batch_size=64, lr=5e-3)
COURSE_SEED = 0
SHORTCUT_PERIOD, SHORTCUT_STEPS = 8, 150   # the fixed-period contrast learns its shortcut fast
# Data the notebooks read, generated from the solutions (not reference outputs: those stay out of a
# grading sandbox, while this file is part of what every student installs).
MODEL_FILE = Path(__file__).resolve().parent / "data" / "ch06_what_heads_learn_model.npz"


def repeated_patterns(rng, n: int, seq_len: int = SEQ_LEN, vocab: int = VOCAB,
                      periods=PERIODS, period: int | None = None) -> tuple:
    """``n`` sequences ``(n, seq_len)`` int64 and their periods ``(n,)``.

    Each is a pattern of distinct tokens repeated; a token never repeats within
    its pattern, so the token after it is never ambiguous. ``period`` fixes the
    period of every sequence (the positional-shortcut contrast); otherwise it is
    drawn per sequence, uniformly from ``periods`` (both ends included).
    """
    lo, hi = periods
    if not 1 <= lo <= hi <= vocab:
        raise ValueError(f"periods {periods} must satisfy 1 <= smallest <= largest <= vocab = {vocab}: "
                         "a pattern of distinct tokens cannot be longer than the vocabulary")
    if period is not None and not 1 <= period <= vocab:
        raise ValueError(f"period {period} must be between 1 and vocab = {vocab}")
    lengths = np.full(n, period) if period is not None else rng.integers(lo, hi + 1, size=n)
    tokens = np.empty((n, seq_len), dtype=np.int64)
    for i, p in enumerate(lengths):
        tokens[i] = np.resize(rng.permutation(vocab)[:p], seq_len)
    return tokens, lengths.astype(np.int64)


def predictable(periods, seq_len: int = SEQ_LEN) -> np.ndarray:
    """``(n, seq_len - 1)`` bool: True where the logits at position t can know token t+1.

    Token t+1 is determined once a whole period has been seen, that is when
    t + 1 >= p; before that, the next token is a fresh draw no model can know.
    """
    periods = np.asarray(periods).reshape(-1, 1)
    return np.arange(1, seq_len)[None, :] >= periods


def accuracy(logits, tokens, periods) -> float:
    """Fraction of the predictable positions where the logits' argmax is the next token.

    ``logits`` ``(n, T, vocab)`` (NumPy, or anything ``np.asarray`` takes: a CPU
    tensor), ``tokens`` ``(n, T)``, ``periods`` ``(n,)``. The last position has
    no next token and is not scored.
    """
    logits, tokens = np.asarray(logits), np.asarray(tokens)
    if logits.ndim != 3 or logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits have shape {logits.shape}, tokens {tokens.shape}: "
                         "expected logits (n, T, vocab) for tokens (n, T)")
    right = logits[:, :-1].argmax(axis=-1) == tokens[:, 1:]
    scored = predictable(periods, tokens.shape[1])
    return float(right[scored].mean())


def held_out(n: int = 512, seed: int = HELD_OUT_SEED, **task) -> tuple:
    """The held-out sequences ``(tokens, periods)``: fixed, and never trained on."""
    return repeated_patterns(np.random.default_rng(seed), n, **task)


# --------------------------------------------------------------------------
# The course's trained model
# --------------------------------------------------------------------------

LAYER_KEYS = ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o")


def flat_model(model: dict) -> dict:
    """A model dict with ``layers`` (a list of params dicts) as flat ``layers.<l>.<key>`` arrays."""
    flat = {k: np.asarray(v) for k, v in model.items() if k != "layers"}
    for l, params in enumerate(model["layers"]):
        flat.update({f"layers.{l}.{k}": np.asarray(v) for k, v in params.items()})
    return flat


def nested_model(flat: dict) -> dict:
    """The inverse of :func:`flat_model`."""
    model, layers = {}, {}
    for key, value in flat.items():
        if key.startswith("layers."):
            _, l, name = key.split(".", 2)
            layers.setdefault(int(l), {})[name] = value
        else:
            model[key] = value
    model["layers"] = [layers[l] for l in sorted(layers)]
    return model


def _stored() -> dict:
    if not MODEL_FILE.exists():
        raise FileNotFoundError(
            f"{MODEL_FILE} is missing. It ships with the course package; in a checkout of the "
            "repository, regenerate it with: python -m autograder references ch06_what_heads_learn")
    return _load(MODEL_FILE.stat().st_mtime_ns)


@lru_cache(maxsize=1)
def _load(version: int) -> dict:
    """The file's arrays, read once per version of it (the references command rewrites it)."""
    with np.load(MODEL_FILE) as data:
        return {k: data[k] for k in data.files}


def load_model() -> tuple:
    """``(model, n_heads)``: the course's trained 2-layer model in the course's layout.

    ``model`` holds ``embed`` ``(vocab, d_model)``, ``position`` ``(seq_len, d_model)``,
    ``layers`` (one params dict per layer: ``w_q, w_k, w_v`` ``(d_model, H*d_k)``,
    ``w_o`` ``(H*d_k, d_model)`` and their biases), ``unembed`` ``(d_model, vocab)`` and
    ``b_unembed`` ``(vocab,)``; float32 arrays, row-vector convention (``x @ W``).
    """
    stored = _stored()
    weights = {k.removeprefix("model/"): v.copy() for k, v in stored.items() if k.startswith("model/")}
    return nested_model(weights), int(stored["n_heads"])


def load_recording() -> dict:
    """What PyTorch computed with the course's model on the held-out sequences.

    ``tokens`` ``(n, T)``, ``periods`` ``(n,)``, ``logits`` ``(n, T, vocab)`` and
    ``weights`` ``(n, layers, heads, T, T)`` (the attention maps), float32, plus
    the training record: ``losses`` per step, ``steps``, ``seconds``.
    """
    stored = _stored()
    return {k.removeprefix("recording/"): v.copy() for k, v in stored.items() if k.startswith("recording/")}
