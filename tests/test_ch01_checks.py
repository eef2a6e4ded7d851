"""Chapter 1: the solutions pass every check, and every known-wrong
implementation fails its visible check with a message naming the mistake."""
import pytest

from mha_checks.chapters.ch01_single_head import Checks
from mha_checks.engine import CheckFailure
from autograder.notebooks import solution_namespace
from conftest import NEEDS_GPU, solution_notebook
from mutants.ch01_single_head import MUTANTS

FUNCTIONS = ("softmax", "causal_mask", "scaled_dot_product_attention", "single_head_attention")
TRACK_OF = {"1_numpy": "numpy", "2_cupy": "cupy", "3_pytorch": "torch"}


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("track", ["numpy", "torch"])
def test_solution_passes_every_check(ch01_solutions, track, hidden):
    check, ns = Checks(track), ch01_solutions[track]
    for name in FUNCTIONS:
        getattr(check, name)(ns[name], hidden=hidden)


def test_torch_extras_pass(ch01_solutions):
    check, ns = Checks("torch"), ch01_solutions["torch"]
    check.module(ns["SingleHeadAttention"])
    check.matches_torch_sdpa(ns["scaled_dot_product_attention"])
    check.gradient(ns["scaled_dot_product_attention"])


def test_cupy_track_logic_on_cpu():
    """Without a GPU, run the CuPy notebook's array code with NumPy standing in for
    CuPy: it catches logic slips in that notebook. The kernel and the timer need
    the real thing (test_cupy_solution_on_gpu)."""
    ns = solution_namespace(solution_notebook("ch01_single_head", "2_cupy"), replace={
        "imports": "import math\nimport numpy as np\ncp = np",
        "time_gpu": "", "fused_softmax": ""})
    check = Checks("numpy")
    for name in FUNCTIONS:
        getattr(check, name)(ns[name], hidden=True)


@NEEDS_GPU
def test_cupy_solution_on_gpu(ch01_solutions):
    check, ns = Checks("cupy"), ch01_solutions["cupy"]
    for name in FUNCTIONS + ("fused_softmax",):
        getattr(check, name)(ns[name])
        getattr(check, name)(ns[name], hidden=True)
    check.gpu_timer(ns["time_gpu"])


def test_unimplemented_function_says_so():
    with pytest.raises(CheckFailure, match="not implemented yet"):
        Checks("numpy").softmax(lambda x, axis=-1: (_ for _ in ()).throw(NotImplementedError()))


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_fails_visible_check_naming_its_mistake(mutant):
    ns = solution_namespace(solution_notebook("ch01_single_head", mutant.notebook),
                            replace={mutant.cell: mutant.source})
    check = Checks(TRACK_OF[mutant.notebook])
    with pytest.raises(CheckFailure) as failure:
        getattr(check, mutant.check)(ns[mutant.function])
    assert mutant.message in " ".join(str(failure.value).split()), str(failure.value)


@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m.check in FUNCTIONS], ids=lambda m: m.name)
def test_mutant_fails_hidden_check_too(mutant):
    """Hidden cases alone also catch each mistake: they are no weaker than the visible ones."""
    ns = solution_namespace(solution_notebook("ch01_single_head", mutant.notebook),
                            replace={mutant.cell: mutant.source})
    with pytest.raises(CheckFailure):
        getattr(Checks(TRACK_OF[mutant.notebook]), mutant.check)(ns[mutant.function], hidden=True)


def test_mutant_library_covers_the_design_list():
    names = {m.name for m in MUTANTS}
    for required in ("softmax_no_max_subtraction", "softmax_ignores_axis", "sdpa_scale_by_d", "sdpa_no_scale",
                     "sdpa_mask_after_softmax", "sdpa_mask_flipped", "sdpa_nan_on_fully_masked_row",
                     "sdpa_promotes_float32", "single_head_transposed_weights"):
        assert required in names
