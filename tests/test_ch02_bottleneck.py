"""Chapter 2's own content: the entropy agrees with torch.distributions where both are
defined and keeps its edge cases, the hand-built blend loses exactly the order, the
trained models show what the notebook and the page say they show, the CuPy notebook's
logic holds on the CPU, and one bug in attention_entropy costs once in the stretch
exercise. What every chapter shares is tested in test_checks.py."""
import math

import numpy as np
import pytest

from autograder.notebooks import solution_namespace
from course import NEEDS_GPU, checks_for, mutants, solution, solution_path
from mha_checks.engine import CheckFailure

torch = pytest.importorskip("torch")

ASSIGNMENT = "ch02_one_head_bottleneck"


def test_entropy_matches_torch_distributions_on_rows_without_zeros():
    from torch.distributions import Categorical
    gen = torch.Generator().manual_seed(0)
    maps = torch.softmax(torch.randn(3, 4, 6, 7, generator=gen, dtype=torch.float64) * 3, dim=-1)
    want = Categorical(probs=maps).entropy()
    for notebook, to_track in (("1_numpy", lambda t: t.numpy()), ("3_pytorch", lambda t: t)):
        got = solution(ASSIGNMENT, notebook)["attention_entropy"](to_track(maps))
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-12)


@pytest.mark.parametrize("notebook", ["1_numpy", "3_pytorch"])
def test_entropy_edge_cases(notebook):
    """One-hot and all-zero rows give exactly 0, even split log 2, uniform log T,
    1e-30 weights stay finite, and float32 stays float32."""
    entropy = solution(ASSIGNMENT, notebook)["attention_entropy"]
    rows = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25] * 4,
                     [1 - 2e-30, 1e-30, 1e-30, 0]], dtype=np.float32)
    got = entropy(torch.from_numpy(rows) if notebook == "3_pytorch" else rows)
    got = got.numpy() if notebook == "3_pytorch" else got
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert got[0] == 0 and got[1] == 0
    np.testing.assert_allclose(got[2:4], [math.log(2), math.log(4)], rtol=1e-6)
    assert 0 <= got[4] < 1e-27


def test_blend_keeps_the_pair_but_loses_the_order():
    """The NumPy notebook's hand-built numbers: 136 of 256 pairs (a <= b, ties to the lower
    index) for each ordered readout of the blend, every pair unordered, two heads perfect."""
    ns = solution(ASSIGNMENT, "1_numpy")
    acc, pair = ns["readout_accuracy"], ns["pair_accuracy"]
    blend, sharp, prev, prev2 = (ns[k] for k in ("blended_features", "two_head_features", "previous",
                                                 "before_previous"))
    assert acc(blend, prev) == acc(blend, prev2) == 136 / 256
    assert pair(blend, prev, prev2) == 1.0
    assert acc(sharp, prev) == acc(sharp, prev2) == pair(sharp, prev, prev2) == 1.0
    assert ns["blended_accuracy"] == 0.53
    assert np.allclose(blend[prev * 16 + prev2], blend[prev2 * 16 + prev]), "the blend is symmetric"


def test_training_shows_the_bottleneck():
    """The PyTorch notebook's fixed-seed run: two heads read both tokens and are sharp; one head
    is blurred (entropy above log 2) and misses one of the two tokens most of the time."""
    ns = solution(ASSIGNMENT, "3_pytorch")
    one, two = ns["history"]["one"], ns["history"]["two"]
    assert min(two["acc_prev"][-1], two["acc_prev2"][-1]) > 0.99
    assert min(one["acc_prev"][-1], one["acc_prev2"][-1]) < 0.5
    entropy = ns["attention_entropy"]
    per_head = lambda maps: entropy(maps[:, :, 2:]).mean(dim=(0, 2))
    assert per_head(one["maps"][-1]).item() > math.log(2)
    assert per_head(two["maps"][-1]).max().item() < 0.1
    assert ns["sharper_model"] == "two" and ns["two_heads_accuracy"] > 0.99


def _train_page_model(n_heads, task, mlp, steps):
    """The page's experiment cell, run here: the control it states is what it measures."""
    import nbformat
    from autograder.paths import REPO_ROOT
    page = nbformat.read(str(REPO_ROOT / "book" / f"{ASSIGNMENT}.ipynb"), as_version=4)
    ns = {}
    for cell_id in ("setup",):
        exec(next(c.source for c in page.cells if c.id == cell_id), ns)
    exec(next(c.source for c in page.cells if c.id == "experiment"), ns)  # the definitions; the runs follow
    return ns["train"](n_heads, ns[task], mlp=mlp, steps=steps)


@pytest.mark.timeout(300)
def test_symmetric_task_needs_no_second_head():
    """The control of the page: one head with an MLP readout solves (x_(t-1) + x_0) mod V."""
    log = _train_page_model(1, "symmetric_target", True, 300)
    assert min(log["accuracy"][-1]) > 0.95


def test_cupy_track_logic_on_cpu():
    """Without a GPU, run the CuPy notebook's array code with NumPy standing in for CuPy:
    it catches logic slips in that notebook. The kernel needs the real thing."""
    ns = solution_namespace(solution_path(ASSIGNMENT, "2_cupy"), replace={
        "imports": "import math\nimport numpy as np\ncp = np", "fused_attention_entropy": ""})
    check = checks_for(ASSIGNMENT, "1_numpy")
    check.attention_entropy(ns["attention_entropy"], hidden=True)


@NEEDS_GPU
def test_cupy_solution_on_gpu():
    check, ns = checks_for(ASSIGNMENT, "2_cupy"), solution(ASSIGNMENT, "2_cupy")
    for name in ("attention_entropy", "fused_attention_entropy"):
        getattr(check, name)(ns[name])
        getattr(check, name)(ns[name], hidden=True)


def test_mutant_library_covers_the_issue_list():
    names = {m.name for m in mutants(ASSIGNMENT)}
    for required in ("entropy_in_bits", "entropy_nan_on_zero_weights", "entropy_over_queries",
                     "entropy_no_minus_sign", "entropy_promotes_float32", "entropy_mean_over_keys"):
        assert required in names


def test_one_bug_costs_once_in_the_stretch(capsys):
    """effective_keys on top of an entropy in bits passes and names attention_entropy; on top of
    an entropy that gives NaN it fails and says to fix attention_entropy first."""
    check = checks_for(ASSIGNMENT, "1_numpy")
    bits = next(m for m in mutants(ASSIGNMENT) if m.name == "entropy_in_bits")
    ns = solution_namespace(solution_path(ASSIGNMENT, "1_numpy"), replace={bits.cell: bits.source})
    check.effective_keys(ns["effective_keys"])
    assert "fix attention_entropy" in capsys.readouterr().out
    nan = next(m for m in mutants(ASSIGNMENT) if m.name == "entropy_nan_on_zero_weights")
    ns = solution_namespace(solution_path(ASSIGNMENT, "1_numpy"), replace={nan.cell: nan.source})
    with pytest.raises(CheckFailure, match="Fix attention_entropy first"):
        check.effective_keys(ns["effective_keys"])
