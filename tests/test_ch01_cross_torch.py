"""The NumPy and PyTorch solutions against PyTorch's own attention on random inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course import solution
from mha_checks.tolerances import tolerance

ASSIGNMENT = "ch01_single_head"


def random_problem(seed, dtype):
    rng = np.random.default_rng(seed)
    B, H, T_q, T_k, d_k, d_v = rng.integers(1, 10, size=6)
    shape = (B, H) if seed % 2 else (B,)
    q = rng.standard_normal((*shape, T_q, d_k)).astype(dtype)
    k = rng.standard_normal((*shape, T_k, d_k)).astype(dtype) * rng.uniform(0.1, 5)
    v = rng.standard_normal((*shape, T_k, d_v)).astype(dtype)
    mask = rng.random((T_q, T_k)) < 0.6
    mask[:, rng.integers(T_k)] = True  # torch's function gives NaN for a query with no key
    return q, k, v, mask


@pytest.mark.parametrize("seed", range(30))
def test_numpy_and_torch_solutions_match_torch_sdpa(seed):
    solutions = {"numpy": solution(ASSIGNMENT, "1_numpy"), "torch": solution(ASSIGNMENT, "3_pytorch")}
    dtype = np.float32 if seed % 3 == 0 else np.float64
    q, k, v, mask = random_problem(seed, dtype)
    tq, tk, tv, tm = (torch.from_numpy(a) for a in (q, k, v, mask))
    for m_np, m_t in ((None, None), (mask, tm)):
        expected = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=m_t).numpy()
        rtol, atol = tolerance(np.dtype(dtype).name, "cpu")
        out_np, w_np = solutions["numpy"]["scaled_dot_product_attention"](q, k, v, m_np)
        out_t, _ = solutions["torch"]["scaled_dot_product_attention"](tq, tk, tv, m_t)
        np.testing.assert_allclose(out_np, expected, rtol=rtol, atol=atol)
        np.testing.assert_allclose(out_t.numpy(), expected, rtol=rtol, atol=atol)
        assert out_np.dtype == dtype and w_np.dtype == dtype
