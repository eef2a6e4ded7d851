"""Chapter 3's own content: the split's ValueError check refuses the libraries' own reshape
errors, one big projection cut by the split equals the per-head projections, the loop
over heads is the chapter-1 head run once per head, d_k taken from d_model is named,
the loop is judged on top of a chapter-1 attention with a known mistake (one bug costs
once), the CuPy notebook's array code runs (NumPy standing in for CuPy), and the
library of known mistakes covers the chapter's list. What every chapter shares is
tested in test_checks.py."""
import math

import numpy as np
import pytest

from course import FIRST, NEEDS_GPU, checks_for, mutants, solution, solution_path
from autograder.notebooks import solution_namespace
from mha_checks.engine import CheckFailure

ASSIGNMENT = "ch03_split_heads"
LAYER = "multi_head_attention_loop"


def _numpy_reshape_only(x, n_heads):
    B, T, d_model = x.shape
    return x.reshape(B, T, n_heads, d_model // n_heads).transpose(0, 2, 1, 3)


def test_the_error_check_refuses_numpys_own_reshape_error():
    check = checks_for(ASSIGNMENT, "1_numpy")
    with pytest.raises(CheckFailure, match="library's own reshape error") as failure:
        check.split_heads_error(_numpy_reshape_only)
    assert "cannot reshape" in str(failure.value)  # the student sees what NumPy said, and why it is not enough


def test_the_error_check_refuses_torchs_runtime_error():
    torch = pytest.importorskip("torch")
    check = checks_for(ASSIGNMENT, "3_pytorch")

    def view_only(x, n_heads):
        B, T, d_model = x.shape
        return x.view(B, T, n_heads, d_model // n_heads).transpose(1, 2)

    with pytest.raises(CheckFailure, match="RuntimeError"):
        check.split_heads_error(view_only)
    assert torch.is_tensor(view_only(torch.zeros(2, 3, 12), 3))


@pytest.mark.parametrize("message, passes", [
    ("d_model = 10 is not a multiple of n_heads = 4", True),
    ("cannot split 10 features into 4 heads", True),
    ("d_model must be divisible by n_heads", False),
    ("d_model = 10.5 is odd", False),          # 10.5 is not the number 10, and 4 is missing
])
def test_the_error_check_reads_the_sizes_in_the_message(message, passes):
    check = checks_for(ASSIGNMENT, "1_numpy")

    def split(x, n_heads):
        if x.shape[-1] % n_heads:
            d_model = x.shape[-1]
            raise ValueError(message.replace("10", str(d_model)).replace("4", str(n_heads)))
        return _numpy_reshape_only(x, n_heads)

    if passes:
        check.split_heads_error(split)
    else:
        with pytest.raises(CheckFailure, match="names both sizes only if it says"):
            check.split_heads_error(split)


def test_one_big_projection_split_equals_the_per_head_projections():
    ns = solution(ASSIGNMENT, "1_numpy")
    rng = np.random.default_rng(0)
    B, T, d_model, H = 3, 5, 12, 4
    d_k = d_model // H
    x, w_q = rng.standard_normal((B, T, d_model)), rng.standard_normal((d_model, d_model))
    split = ns["split_heads"](x @ w_q, H)
    assert split.shape == (B, H, T, d_k)
    for h in range(H):
        np.testing.assert_allclose(split[:, h], x @ w_q[:, h * d_k:(h + 1) * d_k], rtol=1e-12, atol=1e-12)
    # and the split without its transpose is a different array of the same shape
    assert not np.allclose(split, (x @ w_q).reshape(B, H, T, d_k))


def test_the_loop_is_chapter_1s_head_once_per_head():
    ns = solution(ASSIGNMENT, "1_numpy")
    sdpa = ns["scaled_dot_product_attention"]
    rng = np.random.default_rng(1)
    B, T, d_model, H, d_k = 2, 6, 10, 3, 4            # pruned-style: H*d_k = 12 != 10
    x = rng.standard_normal((B, T, d_model))
    params = {n: rng.standard_normal((d_model, H * d_k)) for n in ("w_q", "w_k", "w_v")}
    params.update({n: rng.standard_normal(H * d_k) for n in ("b_q", "b_k", "b_v")})
    params["w_o"], params["b_o"] = rng.standard_normal((H * d_k, d_model)), rng.standard_normal(d_model)
    mask = np.tril(np.ones((T, T), dtype=bool))
    out, weights = ns[LAYER](x, params, H, mask)
    heads = []
    for h in range(H):
        s = slice(h * d_k, (h + 1) * d_k)
        head_out, head_weights = sdpa(*(x @ params[f"w_{n}"][:, s] + params[f"b_{n}"][s] for n in "qkv"), mask)
        np.testing.assert_allclose(weights[:, h], head_weights, rtol=1e-12, atol=1e-12)
        heads.append(head_out)
    np.testing.assert_allclose(out, np.concatenate(heads, axis=-1) @ params["w_o"] + params["b_o"], rtol=1e-12)
    # one head: chapter 1's head, then w_o
    one = {n: params[n][:, :d_k] for n in ("w_q", "w_k", "w_v")}
    one["w_o"] = params["w_o"][:d_k]
    out_1, _ = ns[LAYER](x, one, 1)
    head, _ = sdpa(x @ one["w_q"], x @ one["w_k"], x @ one["w_v"])
    np.testing.assert_allclose(out_1, head @ one["w_o"], rtol=1e-12, atol=1e-12)


def _mutant(name):
    return next(m for m in mutants(ASSIGNMENT) if m.name == name)


def _planted(name, notebook="1_numpy"):
    mutant = _mutant(name)
    return solution_namespace(solution_path(ASSIGNMENT, notebook), replace={mutant.cell: mutant.source})


def test_d_k_from_d_model_is_named_in_visible_and_hidden_cases():
    ns, check = _planted("loop_d_k_from_d_model"), checks_for(ASSIGNMENT, "1_numpy")
    with pytest.raises(CheckFailure, match=r"never d_model // n_heads"):
        check.multi_head_attention_loop(ns[LAYER])
    with pytest.raises(CheckFailure):
        check.multi_head_attention_loop(ns[LAYER], hidden=True)


def test_one_bug_costs_once_on_top_of_a_chapter_1_mistake(capsys):
    """A correct loop on an attention that divides by d_k passes, and says where the bug is."""
    check = checks_for(ASSIGNMENT, "1_numpy")
    scaled = next(m for m in mutants(FIRST) if m.name == "sdpa_scale_by_d")  # chapter 1's mistake
    ns = solution_namespace(solution_path(ASSIGNMENT, "1_numpy"), replace={scaled.cell: scaled.source})
    with pytest.raises(CheckFailure, match="divided by d_k instead of sqrt"):
        check.scaled_dot_product_attention(ns["scaled_dot_product_attention"])
    for hidden in (False, True):
        check.multi_head_attention_loop(ns[LAYER], hidden=hidden)
        said = capsys.readouterr().out
        assert "on top of your scaled_dot_product_attention" in said, said
    after = _planted("sdpa_mask_after_softmax")
    with pytest.raises(CheckFailure, match="Fix scaled_dot_product_attention first"):
        check.multi_head_attention_loop(after[LAYER])


def test_torch_cross_check_passes_with_the_graded_options():
    pytest.importorskip("torch")
    check, ns = checks_for(ASSIGNMENT, "3_pytorch"), solution(ASSIGNMENT, "3_pytorch")
    check.matches_torch_per_head(ns[LAYER])
    check.matches_torch_per_head(ns[LAYER], n_trials=24, seed=1)


def test_cupy_track_logic_on_cpu():
    """Without a GPU, run the CuPy notebook's array code with NumPy standing in for CuPy:
    it catches logic slips in that notebook. The timer needs the real thing."""
    ns = solution_namespace(solution_path(ASSIGNMENT, "2_cupy"), replace={
        "imports": "import math\nimport numpy as np\ncp = np", "time_gpu": ""})
    check = checks_for(ASSIGNMENT, "1_numpy")
    for name in ("softmax", "scaled_dot_product_attention", "split_heads", LAYER):
        getattr(check, name)(ns[name], hidden=True)
    check.split_heads_error(ns["split_heads"])
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 7, 12)).astype(np.float32) for _ in range(3))
    looped = np.stack(ns["heads_attention_loop"](q, k, v, 4), axis=1)
    np.testing.assert_allclose(looped, ns["heads_attention_batched"](q, k, v, 4), rtol=1e-5, atol=1e-6)


@NEEDS_GPU
def test_cupy_solution_on_gpu():
    check, ns = checks_for(ASSIGNMENT, "2_cupy"), solution(ASSIGNMENT, "2_cupy")
    for name in ("softmax", "scaled_dot_product_attention", "split_heads", LAYER):
        getattr(check, name)(ns[name])
        getattr(check, name)(ns[name], hidden=True)
    check.split_heads_error(ns["split_heads"])
    check.gpu_timer(ns["time_gpu"])


def test_mutant_library_covers_the_chapters_list():
    names = {m.name for m in mutants(ASSIGNMENT)}
    for required in ("split_reshape_without_transpose", "split_strided", "split_head_axis_not_moved",
                     "loop_d_k_from_d_model", "loop_heads_reversed", "loop_w_o_forgotten", "loop_w_o_transposed",
                     "loop_b_o_ignored", "loop_qkv_biases_ignored", "loop_mask_not_passed",
                     "loop_scaled_by_sqrt_d_model", "loop_weights_averaged", "split_error_from_numpy",
                     "loop_promotes_float32"):
        assert required in names


def test_the_scale_mistake_is_sqrt_d_model_over_sqrt_d_k():
    """The known mistake's outputs are the layer's with queries scaled by sqrt(d_k / d_model)."""
    ns = solution(ASSIGNMENT, "1_numpy")
    planted = _planted("loop_scaled_by_sqrt_d_model")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 12))
    params = {n: rng.standard_normal((12, 12)) for n in ("w_q", "w_k", "w_v", "w_o")}
    scaled = dict(params, w_q=params["w_q"] * math.sqrt(4 / 12))
    np.testing.assert_allclose(planted[LAYER](x, params, 3)[0], ns[LAYER](x, scaled, 3)[0], rtol=1e-12)
