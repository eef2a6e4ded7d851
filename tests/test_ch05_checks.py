"""Chapter 5's checks beyond the shared ones: the memory check's verdicts, counts returned as
ints, and the solutions against PyTorch (parameter counts, FlopCounterMode, F.scaled_dot_product_attention)."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course import checks_for, solution
from mha_checks.chapters import ch05_cost_and_scale as ch05
from mha_checks.engine import CheckFailure

ASSIGNMENT = "ch05_cost_and_scale"


def numpy_solution():
    return solution(ASSIGNMENT, "1_numpy")


# -- the memory check --------------------------------------------------------------------------

def memory_record(used, out=None, kind="peak", **extra):
    if out is None:
        out = numpy_solution()["online_softmax_attention"](*ch05._memory_inputs())
    return {"kind": kind, "bytes": used, "out": {"native": True, "array": out, "dtype": "float32"}, **extra}


def judge_memory(record, track="numpy"):
    return checks_for(ASSIGNMENT, "1_numpy" if track == "numpy" else "3_pytorch").judge("online_memory", record)


def test_memory_bounds_separate_a_block_from_the_whole_matrix():
    allowed, matrix = ch05.memory_bounds(4)
    assert allowed * 4 < matrix, "the check must leave room between a correct call and a (T_q, T_k) array"


def test_memory_check_passes_within_the_bound_and_names_the_numbers():
    allowed, _ = ch05.memory_bounds(4)
    message = judge_memory(memory_record(allowed // 2))
    assert "never builds the (T_q, T_k) matrix" in message and "MiB" in message


def test_memory_check_fails_a_call_that_builds_the_scores():
    _, matrix = ch05.memory_bounds(4)
    with pytest.raises(CheckFailure, match="builds an array as large as the"):
        judge_memory(memory_record(matrix, kind="largest"))


def test_memory_check_fails_a_call_that_holds_too_many_blocks():
    allowed, _ = ch05.memory_bounds(4)
    with pytest.raises(CheckFailure, match="more memory than the online form needs"):
        judge_memory(memory_record(allowed + 1))


def test_memory_check_judges_memory_only_for_a_right_answer():
    out = numpy_solution()["online_softmax_attention"](*ch05._memory_inputs())
    with pytest.raises(CheckFailure, match="gives a wrong output"):
        judge_memory(memory_record(10, out=out * 2))


def test_memory_check_refuses_pytorchs_own_attention():
    with pytest.raises(CheckFailure, match="calls PyTorch's own"):
        judge_memory(memory_record(10, kind="largest", library_attention=True), track="torch")


def test_the_numpy_solution_passes_the_memory_check_with_room_to_spare():
    q, k, v = ch05._memory_inputs()
    _, peak, _ = ch05._numpy_peak(lambda: numpy_solution()["online_softmax_attention"](q, k, v))
    allowed, _ = ch05.memory_bounds(4)
    assert peak < allowed / 1.5, f"peak {peak} bytes leaves little room under {allowed}"


def test_torch_watch_sees_the_scores_of_a_naive_torch_attention_and_not_of_a_blocked_one():
    q, k, v = (torch.from_numpy(a) for a in ch05._memory_inputs())

    def naive(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v

    def library(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    _, matrix = ch05.memory_bounds(4)
    _, largest, extra = ch05._torch_largest(lambda: naive(q, k, v))
    assert largest >= matrix and not extra["library_attention"]
    _, largest, extra = ch05._torch_largest(lambda: library(q, k, v))
    assert extra["library_attention"]


# -- counts are ints -----------------------------------------------------------------------------

def test_a_count_may_be_a_numpy_integer_but_not_a_float():
    check = checks_for(ASSIGNMENT, "1_numpy")
    count = numpy_solution()["mha_param_count"]
    check.mha_param_count(lambda d, h, bias=True: np.int64(count(d, h, bias)))
    with pytest.raises(CheckFailure, match="a count is a Python int"):
        check.mha_param_count(lambda d, h, bias=True: float(count(d, h, bias)))


# -- the solutions against PyTorch ----------------------------------------------------------------

@pytest.mark.parametrize("d_model", [48, 512])
def test_param_count_equals_nn_multiheadattention_for_every_head_count(d_model):
    count = numpy_solution()["mha_param_count"]
    for heads in (1, 2, 4, 8, 16):
        for bias in (True, False):
            layer = nn.MultiheadAttention(d_model, heads, bias=bias)
            assert count(d_model, heads, bias) == sum(p.numel() for p in layer.parameters())


@pytest.mark.parametrize("B, T, d_model, H", [(2, 1024, 512, 8), (3, 7, 20, 4), (1, 64, 48, 1), (4, 33, 24, 6)])
def test_flops_equal_pytorchs_flop_counter_on_nn_multiheadattention(B, T, d_model, H):
    """need_weights=True runs the layer's explicit matrix products, which FlopCounterMode counts as
    the course does (2 per multiply-add); the fused path (need_weights=False) hides the attention products."""
    from torch.utils.flop_counter import FlopCounterMode
    layer, x = nn.MultiheadAttention(d_model, H, batch_first=True), torch.randn(B, T, d_model)
    with FlopCounterMode(display=False) as counter:
        layer(x, x, x, need_weights=True)
    assert numpy_solution()["mha_flops"](B, T, d_model, H) == counter.get_total_flops()


def random_attention_problem(seed):
    rng = np.random.default_rng(seed)
    dtype = np.float32 if seed % 2 else np.float64
    lead = tuple(int(n) for n in rng.integers(1, 4, size=seed % 3))
    T_q, T_k, d_k, d_v = (int(n) for n in rng.integers(1, 90, size=4))
    q, k = (rng.standard_normal((*lead, T, d_k)).astype(dtype) for T in (T_q, T_k))
    v = rng.standard_normal((*lead, T_k, d_v)).astype(dtype)
    mask = None if seed % 4 == 0 else rng.random((T_q, T_k)) < 0.3
    return q, k, v, mask, int(rng.integers(1, 80))


@pytest.mark.parametrize("seed", range(12))
def test_online_solution_equals_pytorchs_scaled_dot_product_attention(seed):
    q, k, v, mask, block = random_attention_problem(seed)
    out = numpy_solution()["online_softmax_attention"](q, k, v, mask, block)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    want = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=None if mask is None else torch.from_numpy(mask))
    if mask is not None:  # PyTorch's own rule for a query with no key differs between versions: the course's is 0
        want = torch.where(torch.from_numpy(mask.any(axis=-1))[..., None], want, torch.zeros(()))
    rtol, atol = (1e-4, 1e-5) if q.dtype == np.float32 else (1e-9, 1e-11)
    assert out.dtype == q.dtype
    np.testing.assert_allclose(out, want.numpy(), rtol=rtol, atol=atol)
