"""``python -m benchmarks.mha`` on a tiny size: every form it times computes the same layer.

Correctness only, never times: the benchmark's numbers are read by people,
side by side, on a quiet machine (benchmarks/README.md).
"""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("threadpoolctl")

from benchmarks import mha  # noqa: E402
from autograder.notebooks import defines_only  # noqa: E402

TINY = dict(batch=3, seq=7, d_model=12, n_heads=3)


@pytest.fixture(scope="module")
def course():
    return mha.course_forms()  # the chapter-3 and chapter-4 solutions; fails clearly when one is missing


@pytest.mark.parametrize("padding", [False, True], ids=["no mask", "key padding"])
def test_every_form_gives_the_reference_output(course, padding):
    x, params, mask = mha.make_inputs(**TINY, padding=padding)
    forms = mha.build_forms(x, params, TINY["n_heads"], mask, course)
    assert [f.name for f in forms][-1] == mha.BASELINE
    assert len(forms) == len(course) + 4
    errors = mha.check_outputs(forms, x, params, TINY["n_heads"], mask)  # raises on a wrong form
    assert max(errors.values()) < 1e-5
    timings = mha.time_forms(forms, repeats=2, warmup=1)
    assert all(len(t.times) == 2 for t in timings)
    assert mha.BASELINE in mha.format_table(timings)


def test_fused_form_keeps_float32_and_the_course_rules():
    x, params, _ = mha.make_inputs(**TINY)
    mask = np.ones((3, 1, 7), dtype=bool)
    mask[0] = False  # an example with no real token: its queries have no allowed key
    mask[1, 0, 4:] = False
    expected_out, expected_w = mha.reference_multi_head_attention(x, params, 3, mask)
    for p in (params, mha.fuse_params(params, 3)):
        out, weights = mha.fused_multi_head_attention(x, p, 3, mask)
        assert out.dtype == weights.dtype == np.float32
        assert weights.shape == (3, 3, 7, 7)
        np.testing.assert_allclose(out, expected_out, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(weights, expected_w, rtol=1e-4, atol=1e-6)
        assert not np.isnan(out).any() and (weights[0] == 0).all()
    causal = np.tril(np.ones((7, 7), dtype=bool))  # any mask the course allows, not only key padding
    np.testing.assert_allclose(mha.fused_multi_head_attention(x, params, 3, causal)[0],
                               mha.reference_multi_head_attention(x, params, 3, causal)[0], rtol=1e-4, atol=1e-5)


def test_the_command_writes_a_table_and_json(course, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mha, "course_forms", lambda: course)
    out = tmp_path / "mha.json"
    argv = ["--batch", "2", "--seq", "5", "--d-model", "12", "--heads", "3", "--repeats", "2", "--warmup", "1",
            "--padding", "--json", str(out)]
    assert mha.main(argv) == 0
    printed = capsys.readouterr().out
    assert "x torch SDPA" in printed and "threadpoolctl:" in printed
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["cpu"]][-1] == mha.BASELINE and result["cpu"][-1]["ratio_to_baseline"] == 1.0
    assert any(lib.get("user_api") == "blas" for lib in result["threadpoolctl"])


def test_a_missing_solution_is_named(tmp_path):
    with pytest.raises(mha.MissingSolution, match=r"/1_numpy\.ipynb does not exist"):
        mha.course_forms(tmp_path)


def test_only_definitions_run_from_a_solution_notebook():
    assert defines_only('import math\n\ndef f(x):\n    """doc"""\n    return x\n\nclass A:\n    pass\n')
    assert not defines_only("model = train(AttentionOnlyTransformer(), 400)")
    assert not defines_only("def f():\n    pass\nf()")
    assert not defines_only("")


def test_loading_the_forms_runs_no_experiment_and_installs_nothing(monkeypatch):
    """A machine without the MiniLM wheel and without internet (a GPU machine) still loads the forms:
    the notebooks' locked cells, which install and run MiniLM, do not run."""
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError(f"the loader ran a command: {args}")
    monkeypatch.setattr(subprocess, "run", refuse)
    forms = mha.course_forms()
    assert set(forms) == set(mha.COURSE_FORMS) and all(callable(f) for f in forms.values())


def test_pages_quote_the_committed_benchmark_run_verbatim():
    """A page's measured table is the committed ``--json`` run rendered by the benchmark itself."""
    import nbformat

    table = mha.markdown_table(json.loads(mha.RESULTS.read_text()))
    quoting = []
    for page in sorted((mha.REPO / "book").glob("*.ipynb")):
        for cell in nbformat.read(str(page), as_version=4).cells:
            if cell.id == "benchmark-table":
                assert table in cell.source, f"{page.name}: rerun `python -m benchmarks.mha --json " \
                    f"{mha.RESULTS.relative_to(mha.REPO)}` and paste markdown_table() of it"
                quoting.append(page.name)
    assert quoting, "no page quotes the benchmark"
