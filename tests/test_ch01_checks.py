"""Chapter 1's own checks: the PyTorch track's extras, the CuPy notebook's logic
(run on the CPU with NumPy standing in for CuPy), and its library of known
mistakes covering the design's list. What every chapter shares is tested in
test_checks.py."""
from course import NEEDS_GPU, checks_for, mutants, solution, solution_path
from autograder.notebooks import solution_namespace

ASSIGNMENT = "ch01_single_head"
FUNCTIONS = ("softmax", "causal_mask", "scaled_dot_product_attention", "single_head_attention")


def test_torch_extras_pass():
    check, ns = checks_for(ASSIGNMENT, "3_pytorch"), solution(ASSIGNMENT, "3_pytorch")
    check.module(ns["SingleHeadAttention"])
    check.matches_torch_sdpa(ns["scaled_dot_product_attention"])
    check.gradient(ns["scaled_dot_product_attention"])


def test_cupy_track_logic_on_cpu():
    """Without a GPU, run the CuPy notebook's array code with NumPy standing in for
    CuPy: it catches logic slips in that notebook. The kernel and the timer need
    the real thing (test_cupy_solution_on_gpu)."""
    ns = solution_namespace(solution_path(ASSIGNMENT, "2_cupy"), replace={
        "imports": "import math\nimport numpy as np\ncp = np",
        "time_gpu": "", "fused_softmax": ""})
    check = checks_for(ASSIGNMENT, "1_numpy")
    for name in FUNCTIONS:
        getattr(check, name)(ns[name], hidden=True)


@NEEDS_GPU
def test_cupy_solution_on_gpu():
    check, ns = checks_for(ASSIGNMENT, "2_cupy"), solution(ASSIGNMENT, "2_cupy")
    for name in FUNCTIONS + ("fused_softmax",):
        getattr(check, name)(ns[name])
        getattr(check, name)(ns[name], hidden=True)
    check.gpu_timer(ns["time_gpu"])


def test_mutant_library_covers_the_design_list():
    names = {m.name for m in mutants(ASSIGNMENT)}
    for required in ("softmax_no_max_subtraction", "softmax_ignores_axis", "sdpa_scale_by_d", "sdpa_no_scale",
                     "sdpa_mask_after_softmax", "sdpa_mask_flipped", "sdpa_nan_on_fully_masked_row",
                     "sdpa_promotes_float32", "single_head_transposed_weights"):
        assert required in names


def _mutant(name):
    return next(m for m in mutants(ASSIGNMENT) if m.name == name)


def test_one_bug_costs_once_in_the_checks(capsys):
    """single_head_attention on top of an attention that divides by d_k passes, and says where the bug is;
    on top of an attention with an unrecognised bug it fails and says to fix that first."""
    from mha_checks.engine import CheckFailure
    import pytest
    check = checks_for(ASSIGNMENT, "1_numpy")
    scaled = _mutant("sdpa_scale_by_d")
    ns = solution_namespace(solution_path(ASSIGNMENT, "1_numpy"), replace={scaled.cell: scaled.source})
    with pytest.raises(CheckFailure):
        check.scaled_dot_product_attention(ns["scaled_dot_product_attention"])
    for hidden in (False, True):
        check.single_head_attention(ns["single_head_attention"], hidden=hidden)
        said = capsys.readouterr().out
        assert "on top of your scaled_dot_product_attention" in said and "fix scaled_dot_product_attention" in said
    after = _mutant("sdpa_mask_after_softmax")
    ns = solution_namespace(solution_path(ASSIGNMENT, "1_numpy"), replace={after.cell: after.source})
    with pytest.raises(CheckFailure, match="Fix scaled_dot_product_attention first"):
        check.single_head_attention(ns["single_head_attention"])


def test_one_bug_costs_once_in_grading(tmp_path):
    """The issue's case: dividing by d_k instead of sqrt(d_k) costs the attention tests only."""
    from autograder.grading import grade
    from course import full_marks, student_notebook, submit
    scaled = _mutant("sdpa_scale_by_d")
    submit(tmp_path / "subs", "dk", ASSIGNMENT,
           {"1_numpy": student_notebook(ASSIGNMENT, "1_numpy", {scaled.cell: scaled.source})})
    result = {r.notebook: r for r in grade(tmp_path / "subs", tmp_path / "out", verbose=False)}["1_numpy"]
    lost = {t["grade_id"] for t in result.tests if t["score"] < t["points"]}
    assert lost == {"test_sdpa", "test_sdpa_hidden"}, result.tests
    sdpa_points = sum(t["points"] for t in result.tests if t["grade_id"] in lost)
    assert result.score == full_marks(ASSIGNMENT, "1_numpy") - sdpa_points
