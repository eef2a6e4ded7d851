"""The attention-only model of chapter 6, as later chapters meet it again: small random
models and token sequences for cases, the forward pass's properties and diagnosis, the
PyTorch ``AttentionOnlyTransformer``'s check, and the course's trained model in PyTorch's
layout.

A model is a dict: ``embed (V, d)``, ``position (seq_len, d)``, ``layers`` (one whole-layer
``params`` each, see :mod:`.layers`), ``unembed (d, V)``, ``b_unembed (V,)``.
"""
import math

import numpy as np

from .. import toy_task
from ..cases import grouped_args
from ..engine import describe_exception, fail, judge_exception
from . import layers
from .common import normal


def random_tokens(rng, B, T, vocab):
    return rng.integers(0, vocab, size=(B, T)).astype(np.int64)

def small_model(rng, vocab, seq_len, d_model, n_heads, n_layers, dtype, d_k=None):
    d_k = d_model // n_heads if d_k is None else d_k   # another d_k: a pruned layer's H*d_k != d_model
    return dict(
        embed=normal(rng, (vocab, d_model), dtype),
        position=normal(rng, (seq_len, d_model), dtype),
        layers=[layers.layer_params(rng, d_model, n_heads, d_k, dtype, bias=True) for _ in range(n_layers)],
        unembed=normal(rng, (d_model, vocab), dtype, 1 / math.sqrt(d_model)),
        b_unembed=normal(rng, (vocab,), dtype, 0.5))

def float64_model(model):
    return {k: ([{n: np.asarray(v, np.float64) for n, v in p.items()} for p in value] if k == "layers"
                else np.asarray(value, np.float64)) for k, value in model.items()}

def diagnose_forward(got, case):
    logits = got["logits"]
    model = grouped_args(case.args)["model"]
    B, T = case.args["tokens"].shape
    if not np.isfinite(logits).all():
        fail(f"{case.describe()} gave NaN or inf logits: is every query's mask row allowing at least itself?")
    expected = case.expected["weights"]
    weights = got["weights"]
    first = weights[:, 0]
    if not np.allclose(first, expected[:, 0], rtol=1e-4, atol=1e-5):
        fail(f"{case.describe()}: layer 0's attention maps already differ. Its input is embed[tokens] + "
             f"position[:T] (T = {T}, the table has {model['position'].shape[0]} rows), and its mask is causal: "
             "query t may attend to keys j <= t.")
    if not np.allclose(weights, expected, rtol=1e-4, atol=1e-5):
        fail(f"{case.describe()}: layer 0 is right but a later layer's maps differ. Each layer reads the "
             "residual stream x = x + layer output (the output is added, not substituted), and layers run in "
             "order.")
    fail(f"{case.describe()}: every layer's attention is right but the logits differ: the last step is "
         "x @ unembed + b_unembed on the residual stream after the last layer.")


def validate_forward(got, case):
    B, T = case.args["tokens"].shape
    model = grouped_args(case.args)["model"]
    L, V = len(model["layers"]), model["unembed"].shape[1]
    weights = got["weights"][0]
    H = int(case.args["n_heads"])
    if weights.shape == (B, H, T, T) and L > 1:
        fail(f"{case.describe()} returned weights of shape {weights.shape}, one layer's: stack every layer's "
             f"maps along a new axis 1, shape ({B}, {L}, {H}, {T}, {T}).")
    if got["logits"][0].shape == (B, T, model["unembed"].shape[0]):
        fail(f"{case.describe()} returned logits of shape {got['logits'][0].shape}: that is the residual "
             f"stream; the logits are x @ unembed + b_unembed, shape ({B}, {T}, {V}).")

MODEL_SHAPE = dict(vocab=11, seq_len=9, d_model=24, n_heads=3, n_layers=2)


def collect_model(checks, model_class):
    """The student's model on a small configuration: parameter shapes, outputs, and the head mask at work."""
    import torch
    record = {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        try:
            model = model_class(**MODEL_SHAPE).double()
            record["parameters"] = {n: list(p.shape) for n, p in model.named_parameters()}
            tokens = torch.from_numpy(random_tokens(np.random.default_rng(0), 4, 7, MODEL_SHAPE["vocab"]))
            L, H = MODEL_SHAPE["n_layers"], MODEL_SHAPE["n_heads"]
            with torch.no_grad():
                logits, weights = model(tokens)
                record["logits"] = logits.numpy()
                record["weights"] = weights.numpy()
                ones, _ = model(tokens, torch.ones(L, H, dtype=torch.float64))
                record["ones"] = ones.numpy()
                off = torch.ones(L, H, dtype=torch.float64)
                off[0] = 0
                record["layer0_off_weights"] = model(tokens, off)[1].numpy()
                changed = tokens.clone()
                changed[:, -1] = (changed[:, -1] + 1) % MODEL_SHAPE["vocab"]
                record["changed_last"] = model(changed)[0].numpy()
        except Exception as exc:
            record.update(describe_exception(exc))
    return record


def judge_model(checks, record):
    name = "AttentionOnlyTransformer"
    if "raised" in record:
        judge_exception(record, f"{name}(**{MODEL_SHAPE}) on tokens (4, 7)", name)
    V, T, d, H, L = (MODEL_SHAPE[k] for k in ("vocab", "seq_len", "d_model", "n_heads", "n_layers"))
    logits, weights = np.asarray(record["logits"]), np.asarray(record["weights"])
    if logits.shape != (4, 7, V):
        fail(f"{name}(...)(tokens (4, 7)) returned logits of shape {logits.shape}; expected (4, 7, {V}) = "
             "(batch, positions, vocab). A sequence shorter than seq_len uses the first T position vectors.")
    if weights.shape != (4, L, H, 7, 7):
        fail(f"{name} returned weights of shape {weights.shape}; expected (4, {L}, {H}, 7, 7): every layer's "
             "maps, stacked along axis 1.")
    if np.abs(np.triu(weights, k=1)).max() > 1e-12:
        fail(f"{name}'s attention reaches keys after the query: pass the causal mask (True on and below the "
             "diagonal) to every layer, or the model reads the token it should predict.")
    if not np.allclose(weights.sum(-1), 1):
        fail(f"{name}'s attention rows do not sum to 1.")
    if not np.allclose(record["ones"], logits):
        fail(f"{name} with a head mask of ones gives other logits than without a head mask.")
    if np.allclose(record["layer0_off_weights"][:, 1], weights[:, 1]):
        fail(f"{name}: switching off every head of layer 0 (head_mask[0] = 0) leaves layer 1's maps unchanged: "
             "pass head_mask[l] to layer l, and add each layer's output to the residual stream x that the next "
             "layer reads.")
    changed = np.asarray(record["changed_last"])
    if not np.allclose(changed[:, :-1], logits[:, :-1]):
        fail(f"{name}: changing the last token changed the logits at earlier positions; with causal attention "
             "position t sees only tokens 0..t.")
    expected = (V * d + T * d + L * 4 * (d * d + d) + d * V + V)
    count = sum(int(np.prod(s)) for s in record["parameters"].values())
    if count != expected:
        fail(f"{name}(**{MODEL_SHAPE}) has {count} parameters; expected {expected}: embed (V, d), position "
             f"(seq_len, d), {L} MultiHeadAttention layers with biases (4·d² + 4·d each) and unembed, an "
             "nn.Linear(d, V) with bias. No extra parameters (no LayerNorm, no MLP: attention only).")
    return (f"\u2714 {name}: logits (B, T, V) and maps (B, L, H, T, T), causal, {count} parameters, and a head "
            "mask that reaches each layer.")

def torch_state(model) -> dict:
    """The course's model (``toy_task.load_model()``) as a state dict of chapter 6's
    ``AttentionOnlyTransformer``: the layers as they are, the readout transposed to ``nn.Linear``'s."""
    import torch
    state = {"embed.weight": model["embed"], "position.weight": model["position"],
             "unembed.weight": model["unembed"].T.copy(), "unembed.bias": model["b_unembed"]}
    for l, params in enumerate(model["layers"]):
        state.update({f"layers.{l}.{k}": v for k, v in params.items()})
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def load_course_model(model):
    """Load the course's trained model (``toy_task.load_model()``) into ``model``, an instance of chapter 6's
    ``AttentionOnlyTransformer``; buffers (the causal mask) are left as they are. Returns ``model``."""
    result = model.load_state_dict(torch_state(toy_task.load_model()[0]), strict=False)
    parameters = {name for name, _ in model.named_parameters()}
    missing = [k for k in result.missing_keys if k in parameters]
    if missing or result.unexpected_keys:
        raise ValueError(f"the course's model does not fit this class: parameters missing {missing}, unexpected "
                         f"{list(result.unexpected_keys)}. It needs embed, position, layers[l] (w_q ... b_o) and "
                         "unembed (nn.Linear).")
    return model
