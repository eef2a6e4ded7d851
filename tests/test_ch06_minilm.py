"""Chapter 6's setting, checked offline: ``minilm.encode`` runs all of all-MiniLM-L6-v2
with the student's multi-head attention and returns the attention maps of its 72
heads on :data:`mha_checks.minilm.HEAD_SENTENCES`.

With the chapter-4 solution's ``multi_head_attention``, ``encode`` gives, sentence
by sentence, the attention probabilities of every layer and the final hidden
states of BERT written with torch primitives (``bert_reference`` of
``test_ch04_minilm.py``, checked there against ``transformers``' ``BertModel``);
the padded batch gives the same maps as the sentences run one at a time.
"""
import os

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
    pytest.skip(f"the pretrained model is not installed ({minilm.WHEEL_INSTALL}; {minilm.LIBS_INSTALL}): {err}",
                allow_module_level=True)

pytest.importorskip("torch")
from test_ch04_minilm import bert_reference, max_error, multi_head_attention  # noqa: E402,F401  (after the skips; a fixture)

PROBS_TOL = 1e-4   # attention probabilities, after up to 6 layers in float32
HIDDEN_TOL = 1e-3  # final hidden states
BATCH_TOL = 1e-5   # padded batch against one sentence at a time


@pytest.fixture(scope="module")
def encoded(multi_head_attention):
    return minilm.encode(multi_head_attention)


@pytest.fixture(scope="module")
def references():
    """The torch reference on each sentence alone (a batch of one, no padding)."""
    return [bert_reference(*minilm.tokenize([s])) for s in minilm.HEAD_SENTENCES]


# --------------------------------------------------------------------------- the sentences


def test_head_sentences_are_24_distinct_sentences_of_6_to_40_tokens():
    sentences = minilm.HEAD_SENTENCES
    assert isinstance(sentences, tuple) and len(sentences) == 24 and len(set(sentences)) == 24
    for sentence in sentences:
        toks = minilm.tokens(sentence)
        assert toks[0] == "[CLS]" and toks[-1] == "[SEP]", toks
        assert "[UNK]" not in toks, toks
        assert 6 <= len(toks) <= 40, (len(toks), sentence)
    lengths = [len(minilm.tokens(s)) for s in sentences]
    assert max(lengths) - min(lengths) >= 15, f"short and long sentences: lengths {lengths}"
    # something for induction-like heads: a two-piece name said twice in a sentence
    assert any(" ".join(minilm.tokens(s)).count("harry potter") == 2 for s in sentences)


def test_special_positions_are_cls_first_and_sep_last(encoded):
    positions = minilm.special_positions(encoded["tokens"])
    assert positions == [(0, len(toks) - 1) for toks in encoded["tokens"]]
    assert minilm.special_positions(["[CLS]", "hi", "[SEP]"]) == [(0, 2)]  # one sentence
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        minilm.special_positions([["hi", "[SEP]"]])


# --------------------------------------------------------------------------- reproduction


def test_encode_returns_one_entry_per_sentence(encoded):
    n = len(minilm.HEAD_SENTENCES)
    assert set(encoded) == {"tokens", "weights", "hidden"}
    assert len(encoded["tokens"]) == len(encoded["weights"]) == len(encoded["hidden"]) == n
    for toks, maps, hidden, sentence in zip(encoded["tokens"], encoded["weights"], encoded["hidden"],
                                            minilm.HEAD_SENTENCES):
        T = len(toks)
        assert toks == minilm.tokens(sentence)
        assert maps.dtype == np.float32 and maps.shape == (6, 12, T, T)
        assert hidden.dtype == np.float32 and hidden.shape == (T, 384)
        np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)


def test_encode_reproduces_every_head_of_the_model(encoded, references):
    worst_probs = worst_hidden = 0.0
    for i, ref in enumerate(references):
        expected = np.stack([layer["probs"][0] for layer in ref["layers"]])  # (L, H, T, T)
        assert encoded["weights"][i].shape == expected.shape
        err = max_error(encoded["weights"][i], expected)
        assert err <= PROBS_TOL, f"sentence {i}: attention maps off by {err:.2e}"
        err_h = max_error(encoded["hidden"][i], ref["last_hidden_state"][0])
        assert err_h <= HIDDEN_TOL, f"sentence {i}: final hidden state off by {err_h:.2e}"
        worst_probs, worst_hidden = max(worst_probs, err), max(worst_hidden, err_h)
    print(f"24 sentences: attention maps max abs error {worst_probs:.2e}, final hidden {worst_hidden:.2e}")


def test_finish_layer_is_the_rest_of_a_bert_layer(references):
    ref = references[0]["layers"]
    weights = minilm.load_weights()
    for layer in range(5):
        out = minilm.finish_layer(weights, layer, ref[layer]["input"], ref[layer]["attention"])
        assert out.dtype == np.float32
        assert max_error(out, ref[layer + 1]["input"]) <= 1e-5
    with pytest.raises(ValueError, match="layers 0 to 5"):
        minilm.feed_forward_params(weights, 6)


def test_a_padded_batch_gives_the_same_maps(encoded, multi_head_attention):
    batched = minilm.encode(multi_head_attention, one_at_a_time=False)
    assert batched["tokens"] == encoded["tokens"]
    lengths = {len(t) for t in batched["tokens"]}
    assert len(lengths) > 1, "sentences of different lengths: the batch is really padded"
    for i, (alone, in_batch) in enumerate(zip(encoded["weights"], batched["weights"])):
        assert in_batch.shape == alone.shape
        assert max_error(in_batch, alone) <= BATCH_TOL, f"sentence {i}"
        assert max_error(batched["hidden"][i], encoded["hidden"][i]) <= 1e-4, f"sentence {i}"


# --------------------------------------------------------------------------- the caller's attention


def test_encode_passes_numpy_and_a_mask_of_ones_to_the_attention(multi_head_attention):
    seen = []

    def spy(x, params, n_heads, mask):
        seen.append((type(x), x.shape, x.dtype, n_heads, mask.shape, bool(np.all(mask)),
                     {type(v) for v in params.values()}))
        return multi_head_attention(x, params, n_heads, mask)

    sentence = minilm.HEAD_SENTENCES[5]
    minilm.encode(spy, [sentence])
    T = len(minilm.tokens(sentence))
    assert len(seen) == 6
    assert all(s == (np.ndarray, (1, T, 384), np.float32, 12, (1, 1, T), True, {np.ndarray}) for s in seen), seen


def test_torch_outputs_are_converted(multi_head_attention):
    torch = pytest.importorskip("torch")

    def returns_torch(x, params, n_heads, mask):
        out, weights = multi_head_attention(x, params, n_heads, mask)
        return torch.from_numpy(out).requires_grad_(), torch.from_numpy(weights)

    sentence = minilm.HEAD_SENTENCES[5]
    via_torch = minilm.encode(returns_torch, [sentence])
    plain = minilm.encode(multi_head_attention, [sentence])
    np.testing.assert_array_equal(via_torch["weights"][0], plain["weights"][0])
    assert isinstance(minilm.as_numpy(torch.ones(2, dtype=torch.bfloat16)), np.ndarray)


def test_weights_of_the_wrong_shape_are_refused_clearly(multi_head_attention):
    def heads_last(x, params, n_heads, mask):  # (B, T, T, H): a common slip
        out, weights = multi_head_attention(x, params, n_heads, mask)
        return out, weights.transpose(0, 2, 3, 1)

    sentence = minilm.HEAD_SENTENCES[5]
    T = len(minilm.tokens(sentence))
    expected = (f"your attention returned weights of shape \\(1, {T}, {T}, 12\\), "
                f"expected \\(B, H, T, T\\) = \\(1, 12, {T}, {T}\\)")
    with pytest.raises(ValueError, match=expected):
        minilm.encode(heads_last, [sentence])

    def weights_only(x, params, n_heads, mask):
        return multi_head_attention(x, params, n_heads, mask)[1]

    with pytest.raises(TypeError, match="expected the pair"):
        minilm.encode(weights_only, [sentence])
