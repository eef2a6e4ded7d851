"""Chapter 4's layers against PyTorch's own nn.MultiheadAttention on random problems:
the NumPy solution (batched), the loop form (the CuPy notebook's, run with NumPy) and the
PyTorch solution, in float32 and float64, with and without biases and masks."""
import numpy as np
import pytest
import torch

from course import solution, solution_path
from autograder.notebooks import solution_namespace
from mha_checks.tolerances import tolerance

ASSIGNMENT = "ch04_concat_and_wo"


def loop_form():
    """The loop over heads of the CuPy notebook, with NumPy standing in for CuPy."""
    ns = solution_namespace(solution_path(ASSIGNMENT, "2_cupy"), replace={
        "imports": "import math\nimport numpy as np\ncp = np", "time_gpu": ""})
    return ns["multi_head_attention_loop"]


def random_problem(seed):
    rng = np.random.default_rng(seed)
    dtype = np.float32 if seed % 2 else np.float64
    B, T = rng.integers(1, 5), rng.integers(2, 9)
    n_heads, d_k = rng.integers(1, 5), rng.integers(1, 6)
    d_model = n_heads * d_k
    params = {n: (rng.standard_normal((d_model, d_model)) / np.sqrt(d_model)).astype(dtype)
              for n in ("w_q", "w_k", "w_v", "w_o")}
    if seed % 3:
        params.update({n: rng.standard_normal(d_model).astype(dtype) for n in ("b_q", "b_k", "b_v", "b_o")})
    x = rng.standard_normal((B, T, d_model)).astype(dtype)
    mask = None
    if seed % 4 == 1:
        mask = np.tril(np.ones((T, T), dtype=bool))
    elif seed % 4 == 2:
        mask = rng.random((B, T, T)) < 0.6
        mask[..., 0] = True  # torch gives NaN for a query with no key
    elif seed % 4 == 3:
        lengths = rng.integers(1, T + 1, size=B)
        mask = (np.arange(T) < lengths[:, None])[:, None, :]
    return x, params, int(n_heads), mask


def torch_layer(params, n_heads):
    """nn.MultiheadAttention holding the course's layer, built here independently of the solutions."""
    d_model = params["w_q"].shape[0]
    bias = "b_q" in params
    t = {k: torch.from_numpy(v) for k, v in params.items()}
    mha = torch.nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True, dtype=t["w_q"].dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([t["w_q"].T, t["w_k"].T, t["w_v"].T]))
        mha.out_proj.weight.copy_(t["w_o"].T)
        if bias:
            mha.in_proj_bias.copy_(torch.cat([t["b_q"], t["b_k"], t["b_v"]]))
            mha.out_proj.bias.copy_(t["b_o"])
    return mha.eval()


def torch_reference(x, params, n_heads, mask):
    B, T = x.shape[:2]
    attn_mask = None
    if mask is not None:  # the course's True = may attend; torch's True = may not
        full = np.broadcast_to(mask, (B, T, T))
        attn_mask = torch.from_numpy(np.repeat(~full, n_heads, axis=0))
    xt = torch.from_numpy(x)
    with torch.no_grad():
        out, weights = torch_layer(params, n_heads)(xt, xt, xt, attn_mask=attn_mask, need_weights=True,
                                                    average_attn_weights=False)
    return out.numpy(), weights.numpy()


@pytest.fixture(scope="module")
def forms():
    numpy_ns, torch_ns = solution(ASSIGNMENT, "1_numpy"), solution(ASSIGNMENT, "3_pytorch")

    def from_torch(x, params, n_heads, mask):
        t = {k: torch.from_numpy(v) for k, v in params.items()}
        out, w = torch_ns["multi_head_attention"](torch.from_numpy(x), t, n_heads,
                                                 None if mask is None else torch.from_numpy(mask))
        return out.numpy(), w.numpy()

    return {"batched (NumPy)": numpy_ns["multi_head_attention"], "loop": loop_form(),
            "batched (PyTorch)": from_torch}


@pytest.mark.parametrize("seed", range(24))
def test_layers_match_torch_multihead_attention(forms, seed):
    x, params, n_heads, mask = random_problem(seed)
    want_out, want_weights = torch_reference(x, params, n_heads, mask)
    rtol, atol = tolerance(x.dtype.name, "cpu")
    for name, layer in forms.items():
        out, weights = layer(x, params, n_heads, mask)
        assert out.dtype == x.dtype, name
        np.testing.assert_allclose(out, want_out, rtol=rtol, atol=atol, err_msg=name)
        np.testing.assert_allclose(weights, want_weights, rtol=rtol, atol=atol, err_msg=name)


def test_head_contributions_add_up_to_the_layer():
    ns = solution(ASSIGNMENT, "1_numpy")
    for seed in range(8):
        x, params, n_heads, mask = random_problem(seed)
        parts = ns["head_contributions"](x, params, n_heads, mask)
        out, _ = ns["multi_head_attention"](x, params, n_heads, mask)
        rtol, atol = tolerance(x.dtype.name, "cpu")
        np.testing.assert_allclose(parts.sum(axis=1) + params.get("b_o", 0), out, rtol=rtol, atol=10 * atol)


def test_torch_returns_nan_for_a_query_with_no_key_where_the_course_returns_b_o():
    """What the page and the PyTorch notebook state about torch's behaviour."""
    x, params, n_heads, _ = random_problem(4)  # float64 with biases
    T = x.shape[1]
    mask = np.tril(np.ones((T, T), dtype=bool))
    mask[1] = False
    out, _ = torch_reference(x, params, n_heads, mask)
    assert np.isnan(out[:, 1]).all() and np.isfinite(np.delete(out, 1, axis=1)).all()
    ours, weights = solution(ASSIGNMENT, "1_numpy")["multi_head_attention"](x, params, n_heads, mask)
    np.testing.assert_allclose(ours[:, 1], np.broadcast_to(params["b_o"], ours[:, 1].shape))
    assert (weights[:, :, 1] == 0).all()
