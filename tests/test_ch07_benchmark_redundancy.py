"""``python -m benchmarks.redundancy``: its committed JSON holds together and says what the chapter 7
and 8 pages say it does, and a part of it recomputed from the solutions now gives the same numbers."""
import json

import numpy as np
import pytest

from benchmarks import redundancy


@pytest.fixture(scope="module")
def result():
    return json.loads(redundancy.RESULTS.read_text())


@pytest.fixture(scope="module")
def course():
    return redundancy.course_functions()


def test_the_json_has_every_part(result):
    assert set(result) >= {"config", "environment", "toy", "minilm", "seconds"}
    assert set(result["toy"]) >= {"ablation", "importance", "fd_vs_autograd", "noise", "similarity", "iterative_pruning"}
    assert len(result["toy"]["ablation"]["heads"]) == 8 and len(result["minilm"]["ablation"]["heads"]) == 72
    assert set(result["minilm"]) >= {"importance", "iterative_pruning", "pruned"}


def test_importance_rows_are_unit_vectors(result):
    for importance in (result["toy"]["importance"], result["minilm"]["importance"]):
        np.testing.assert_allclose(np.linalg.norm(np.array(importance), axis=1), 1, atol=2e-3)


def test_finite_differences_agree_with_autograd(result):
    fd = result["toy"]["fd_vs_autograd"]
    assert fd["max_abs_difference"] < 1e-3 * max(1.0, fd["max_abs_gradient"])


def test_importance_on_saturated_data_is_less_reproducible(result):
    corr = [n["split_half_rank_correlation"]["mean"] for n in result["toy"]["noise"].values()]
    assert corr[0] > corr[1] and corr[0] > corr[2]


def test_pruning_removes_heads_step_by_step_and_ends_with_one_per_model(result):
    steps = result["toy"]["iterative_pruning"]
    assert [s["kept"] for s in steps] == list(range(8, 0, -1))
    pruned = [h for s in steps for h in s["pruned"]]
    assert len(pruned) == len(set(pruned)) == 7
    lm = result["minilm"]["iterative_pruning"]
    assert [s["kept"] for s in lm] == list(range(72, 0, -redundancy.MINILM_STEP))[:len(lm)]
    assert lm[0]["agreement"] == 1.0 and lm[-1]["agreement"] < lm[0]["agreement"]
    pruned_for_real = result["minilm"]["pruned"]
    assert sum(pruned_for_real["heads_per_layer"]) == pruned_for_real["kept"] in [s["kept"] for s in lm]
    assert min(pruned_for_real["heads_per_layer"]) >= 1
    assert result["minilm"]["pruned"]["max_difference_from_masked"] < 1e-4


def test_the_tables_render_the_run(result):
    tables = redundancy.markdown_tables(result)
    assert set(tables) == {"ablation", "noise", "pruning", "minilm_pruning"}
    assert tables["ablation"].count("\n| L") == 8 and f"`{redundancy.COMMAND}`" in tables["ablation"]


def test_the_readme_documents_the_command():
    readme = (redundancy.REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert "python -m benchmarks.redundancy" in readme and "redundancy_cpu.json" in readme


def test_the_toy_ablation_is_what_the_solutions_give_now(course, result):
    toy = redundancy.Toy(course)
    assert toy.ablation() == result["toy"]["ablation"]
