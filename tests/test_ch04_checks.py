"""Chapter 4's own checks: the PyTorch track's extras, the CuPy notebook's logic (run on
the CPU with NumPy standing in for CuPy), one bug costing once through merge_heads and
the attention, the loop detector, and the mutant library covering the design's list.
What every chapter shares is tested in test_checks.py."""
import pytest

from course import FIRST, NEEDS_GPU, checks_for, mutants, solution, solution_path
from autograder.notebooks import solution_namespace
from mha_checks.engine import CheckFailure

ASSIGNMENT = "ch04_concat_and_wo"
FUNCTIONS = ("softmax", "scaled_dot_product_attention", "split_heads", "merge_heads", "multi_head_attention",
             "head_contributions")


def _mutant(name):
    return next(m for m in mutants(ASSIGNMENT) if m.name == name)


def _mutated(name):
    m = _mutant(name)
    return solution_namespace(solution_path(ASSIGNMENT, m.notebook), replace={m.cell: m.source})


def test_torch_extras_pass():
    check, ns = checks_for(ASSIGNMENT, "3_pytorch"), solution(ASSIGNMENT, "3_pytorch")
    check.no_head_loop(ns["multi_head_attention"])
    check.to_torch_mha(ns["to_torch_mha"])
    check.torch_attn_mask(ns["torch_attn_mask"])
    check.from_torch_mha(ns["from_torch_mha"])
    check.module(ns["MultiHeadAttention"])
    check.training(ns["MultiHeadAttention"])


def test_minilm_layer_check_passes_the_solution_and_names_a_wrong_layer():
    check, ns = checks_for(ASSIGNMENT, "1_numpy"), solution(ASSIGNMENT, "1_numpy")
    check.minilm_layer(ns["multi_head_attention"])
    right = ns["multi_head_attention"]

    def without_query_bias(x, params, n_heads, mask=None):
        return right(x, {k: v for k, v in params.items() if k != "b_q"}, n_heads, mask)

    with pytest.raises(CheckFailure, match="differs from the model's"):
        check.minilm_layer(without_query_bias)


def test_cupy_track_logic_on_cpu():
    """Without a GPU, run the CuPy notebook's array code with NumPy standing in for CuPy."""
    ns = solution_namespace(solution_path(ASSIGNMENT, "2_cupy"), replace={
        "imports": "import math\nimport numpy as np\ncp = np", "time_gpu": ""})
    check = checks_for(ASSIGNMENT, "1_numpy")
    for name in FUNCTIONS:
        getattr(check, name)(ns[name], hidden=True)
    check.multi_head_attention(ns["multi_head_attention_loop"], hidden=True)  # the loop the timing uses
    check.no_head_loop(ns["multi_head_attention"])


@NEEDS_GPU
def test_cupy_solution_on_gpu():
    check, ns = checks_for(ASSIGNMENT, "2_cupy"), solution(ASSIGNMENT, "2_cupy")
    for name in FUNCTIONS:
        getattr(check, name)(ns[name])
        getattr(check, name)(ns[name], hidden=True)
    check.no_head_loop(ns["multi_head_attention"])


def test_the_loop_detector_counts_attention_calls():
    check = checks_for(ASSIGNMENT, "1_numpy")
    looped = _mutated("mha_python_loop_left_in")["multi_head_attention"]
    check.multi_head_attention(looped)  # right values ...
    with pytest.raises(CheckFailure, match="4 times for 4 heads"):
        check.no_head_loop(looped)      # ... the wrong way


@pytest.mark.parametrize("block_mutant, label", [("merge_interleaved", "merge_heads"),
                                                 ("merge_without_transpose", "merge_heads"),
                                                 ("merge_heads_reversed", "merge_heads")])
def test_one_bug_costs_once_through_merge_heads(capsys, block_mutant, label):
    """A correct layer on top of a merge_heads with a known mistake passes and names the block."""
    ns = _mutated(block_mutant)
    check = checks_for(ASSIGNMENT, "1_numpy")
    with pytest.raises(CheckFailure):
        check.merge_heads(ns["merge_heads"])
    check.multi_head_attention(ns["multi_head_attention"])
    check.multi_head_attention(ns["multi_head_attention"], hidden=True)
    assert f"fix {label}, and multi_head_attention needs no change" in capsys.readouterr().out


def test_one_bug_costs_once_through_the_attention(capsys):
    first_chapter = mutants(FIRST)  # the attention this chapter reuses, with its known mistakes
    scaled = next(m for m in first_chapter if m.name == "sdpa_scale_by_d")
    ns = solution_namespace(solution_path(ASSIGNMENT, "1_numpy"), replace={scaled.cell: scaled.source})
    check = checks_for(ASSIGNMENT, "1_numpy")
    for name in ("multi_head_attention", "head_contributions"):
        getattr(check, name)(ns[name])
        assert "fix scaled_dot_product_attention" in capsys.readouterr().out


def test_mutant_library_covers_the_design_list():
    names = {m.name for m in mutants(ASSIGNMENT)}
    for required in ("merge_without_transpose", "mha_heads_concatenated_in_reverse", "mha_w_o_forgotten",
                     "mha_w_o_transposed", "mha_b_o_missing", "contributions_add_b_o", "mha_python_loop_left_in",
                     "mha_scale_by_sqrt_d_model", "mha_mask_without_head_axis", "mha_weights_averaged",
                     "to_torch_in_proj_not_transposed", "attn_mask_not_inverted"):
        assert required in names
