"""``python -m benchmarks.pruning``: a small run works end to end with the chapter 8 solutions (the
forms agree, the speedups are ratios of the same run), and the committed run the page quotes holds
together. Times are never compared here; the committed run's ratios are checked in the page's test."""
import json

import numpy as np
import pytest

from benchmarks import pruning


def test_a_small_run_times_every_form_and_writes_its_json(tmp_path, capsys):
    out = tmp_path / "pruning.json"
    assert pruning.main(["--batch", "2", "--seq", "16", "--repeats", "2", "--warmup", "1",
                         "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    forms = {r["form"] for r in result["cpu"]}
    assert {"NumPy", "PyTorch module", "PyTorch SDPA", "PyTorch MiniLM layer"} <= forms
    for form in forms:
        rows = [r for r in result["cpu"] if r["form"] == form]
        assert [r["kept"] for r in rows] == list(pruning.KEPT) and rows[0]["speedup"] == 1.0
    assert max(result["max_difference_between_forms"].values()) < 1e-4
    assert result["flop_ratio"] == pytest.approx([1.0, 4 / 3, 2.0, 4.0])
    assert "goal: at 50% of heads pruned" in capsys.readouterr().out


def test_the_pruned_layers_are_the_solutions_own(tmp_path):
    course = pruning.course_functions()
    params = pruning.make_layer(24, 4)
    pruned, heads = course["prune_heads"](params, 4, [1, 2])
    assert heads == 2 and pruned["w_q"].shape == (24, 12) and pruned["w_o"].shape == (12, 24)
    x = np.random.default_rng(0).standard_normal((2, 5, 24)).astype(np.float32)
    module = pruning.torch_module(course, params, 4, [1, 2])
    import torch
    with torch.no_grad():
        out = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(out, course["layer"](x, pruned, heads)[0], rtol=1e-4, atol=1e-5)


def test_flops_shrink_with_the_heads_kept():
    assert pruning.layer_flops(8, 128, 384, 192) * 2 == pruning.layer_flops(8, 128, 384, 384)


def test_the_committed_run_holds_together():
    result = json.loads(pruning.RESULTS.read_text())
    assert result["kept"] == list(pruning.KEPT) and result["config"]["heads"] == 12
    table = pruning.markdown_table(result)
    assert f"`{pruning.COMMAND}`" in table and table.count("\n| ") >= 5


def test_the_readme_documents_the_command():
    readme = (pruning.REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert "python -m benchmarks.pruning" in readme and "pruning_cpu.json" in readme
