"""Chapter 7's science: the masked layer against its definition (a sum over heads of
xi_h head_h W_o[h] + b_o), head masks of ones and zeros against chapter 4's layer and chapter 6's
knock-out, the loss against a loop over positions, central differences against autograd, the
NumPy and PyTorch gradients against each other on the course's model, importance and similarity
against their definitions, and the chapter's measured facts (ablation, importance)."""
import math

import numpy as np
import pytest

from course import solution
from mha_checks import toy_task
from mha_checks.chapters import ch07_redundancy as ch07
from mha_checks.kit import layers

ASSIGNMENT = "ch07_redundancy"


@pytest.fixture(scope="module")
def sol():
    return solution(ASSIGNMENT, "1_numpy")


def _layer(seed, B=2, T=5, d_model=12, H=3, d_k=4, dtype=np.float64, bias=True):
    rng = np.random.default_rng(seed)
    return layers.layer_case(rng, B, T, d_model, H, d_k, dtype, bias=bias, mask="causal")


# -- the masked layer -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_masked_layer_is_the_weighted_sum_of_head_contributions(sol, seed):
    case = _layer(seed)
    x, params, H, mask = case["x"], case["params"], case["n_heads"], case["mask"]
    xi = np.random.default_rng(seed + 10).normal(size=H)
    out, weights = sol["masked_multi_head_attention"](x, params, H, xi, mask)
    contributions = sol["head_contributions"](x, params, H, mask)
    np.testing.assert_allclose(out, np.einsum("h,bhtd->btd", xi, contributions) + params["b_o"], rtol=1e-12)
    np.testing.assert_array_equal(weights, sol["multi_head_attention"](x, params, H, mask)[1])


def test_ones_give_the_layer_and_zeros_give_b_o(sol):
    case = _layer(5)
    x, params, H, mask = case["x"], case["params"], case["n_heads"], case["mask"]
    ones = sol["masked_multi_head_attention"](x, params, H, np.ones(H), mask)[0]
    np.testing.assert_allclose(ones, sol["multi_head_attention"](x, params, H, mask)[0], rtol=1e-12)
    zeros = sol["masked_multi_head_attention"](x, params, H, np.zeros(H), mask)[0]
    np.testing.assert_allclose(zeros, np.broadcast_to(params["b_o"], zeros.shape), atol=1e-12)


def test_a_zero_entry_is_chapter_6s_knock_out(sol):
    model, H = toy_task.load_model()
    tokens = toy_task.held_out()[0][:4]
    head_mask = np.ones((len(model["layers"]), H), np.float32)
    head_mask[0, 2] = 0
    masked = sol["masked_forward"](tokens, model, H, head_mask)[0]
    knocked = [dict(p) for p in model["layers"]]
    d_k = knocked[0]["w_o"].shape[0] // H
    knocked[0]["w_o"] = knocked[0]["w_o"].copy()
    knocked[0]["w_o"][2 * d_k:3 * d_k] = 0
    ones = np.ones_like(head_mask)
    np.testing.assert_allclose(masked, sol["masked_forward"](tokens, {**model, "layers": knocked}, H, ones)[0],
                               rtol=1e-5, atol=1e-5)


# -- the loss -------------------------------------------------------------------------------------

def test_predictable_loss_equals_a_loop_over_positions(sol):
    rng = np.random.default_rng(0)
    B, T, V = 3, 8, 5
    logits, tokens, periods = rng.normal(size=(B, T, V)) * 3, rng.integers(0, V, (B, T)), np.array([2, 5, 7])
    want = []
    for b in range(B):
        terms = []
        for t in range(T - 1):
            if t + 1 >= periods[b]:
                z = logits[b, t]
                terms.append(-(z[tokens[b, t + 1]] - math.log(np.exp(z).sum())))
        want.append(np.mean(terms))
    np.testing.assert_allclose(sol["predictable_loss"](logits, tokens, periods), want, rtol=1e-12)


def test_predictable_loss_is_stable_and_keeps_float32(sol):
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(2, 6, 4)) * 1e4).astype(np.float32)
    loss = sol["predictable_loss"](logits, rng.integers(0, 4, (2, 6)), np.array([1, 3]))
    assert loss.dtype == np.float32 and np.isfinite(loss).all() and (loss >= 0).all()


# -- gradients ------------------------------------------------------------------------------------

def test_central_differences_agree_with_autograd_on_a_random_model(sol):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    model = ch07.small_model(rng, 7, 9, 12, 3, 2, np.float64)
    tokens, periods = toy_task.repeated_patterns(rng, 4, seq_len=9, vocab=7, periods=(2, 4))
    numeric = sol["mask_gradients"](tokens, periods, model, 3, eps=1e-5)
    ns = solution(ASSIGNMENT, "3_pytorch")
    tensors = {k: [{n: torch.from_numpy(v) for n, v in p.items()} for p in val] if k == "layers"
               else torch.from_numpy(val) for k, val in model.items()}
    head_mask = torch.ones(4, 2, 3, dtype=torch.float64, requires_grad=True)
    x = tensors["embed"][torch.from_numpy(tokens)] + tensors["position"][:9]
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    for l, params in enumerate(tensors["layers"]):
        heads, _ = ns["attend_per_head"](x, params, 3, causal)
        x = x + ns["merge_heads"](heads * head_mask[:, l, :, None, None]) @ params["w_o"] + params["b_o"]
    logits = x @ tensors["unembed"] + tensors["b_unembed"]
    ns["predictable_loss"](logits, torch.from_numpy(tokens), torch.from_numpy(periods)).sum().backward()
    np.testing.assert_allclose(numeric, head_mask.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_the_generated_file_holds_autograd_gradients_the_numpy_track_reproduces(sol):
    recorded = ch07.load_gradients()
    model, H = toy_task.load_model()
    numeric = sol["mask_gradients"](recorded["tokens"], recorded["periods"], ch07.float64_model(model), H)
    assert recorded["grads"].shape == (ch07.RECORDED, 2, 4) and recorded["grads"].dtype == np.float64
    assert np.abs(numeric - recorded["grads"]).max() < 1e-5
    assert np.abs(recorded["grads"]).max() > 0.05, "the gradients are not all near zero"


# -- importance and similarity -------------------------------------------------------------------

def test_importance_rows_have_unit_norm_and_a_zero_row_stays_zero(sol):
    grads = np.random.default_rng(0).normal(size=(6, 3, 4))
    grads[:, 1] = 0
    importance = sol["head_importance"](grads)
    np.testing.assert_allclose(np.linalg.norm(importance[[0, 2]], axis=1), 1)
    assert np.array_equal(importance[1], np.zeros(4))
    np.testing.assert_allclose(sol["head_importance"](grads * 7), importance), "a scale of the loss cancels"


def test_similarity_is_the_cosine_of_flattened_heads(sol):
    per_head = np.random.default_rng(0).normal(size=(3, 4, 5, 2))
    per_head[:, 3] = -2 * per_head[:, 1]
    sim = sol["head_similarity"](per_head)
    v = [per_head[:, h].ravel() for h in range(4)]
    for i in range(4):
        for j in range(4):
            assert sim[i, j] == pytest.approx(v[i] @ v[j] / (np.linalg.norm(v[i]) * np.linalg.norm(v[j])))
    assert sim[1, 3] == pytest.approx(-1)


# -- the chapter's measured facts ----------------------------------------------------------------

def test_ablation_most_heads_matter_little_one_a_lot(sol):
    accuracy, full = sol["ablation"]["accuracy"], sol["full_accuracy"]
    assert full > 0.97
    assert accuracy.argmin() == 2 and accuracy.min() < 0.8, "L0 H2, the previous-token head, costs the most"
    assert sol["harmless_heads"] >= 3 and (full - accuracy < 0.03).sum() >= 5


def test_importance_on_the_course_model_matches_the_measured_rows(sol):
    np.testing.assert_allclose(sol["importance"], [[0.245, 0.453, 0.618, 0.594], [0.475, 0.26, 0.306, 0.783]],
                               atol=2e-3)


def test_importance_of_a_saturated_model_is_less_reproducible(sol):
    agreement = sol["agreement"]
    assert agreement["all predictable"] > 0.8
    assert agreement["readout x 8"] < agreement["all predictable"] - 0.2
