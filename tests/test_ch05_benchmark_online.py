"""``python -m benchmarks.online`` on tiny sizes: it runs, its forms agree, its JSON and tables hold together.

Correctness only, never times: the benchmark's numbers are read by people, on a
quiet machine (benchmarks/README.md).
"""
import contextlib
import io
import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("threadpoolctl")

from benchmarks import mha, online  # noqa: E402

TINY = ["--sizes", "64,128", "--repeats", "2", "--warmup", "1", "--block-sizes", "16,32",
        "--scale", "--scale-seq", "96", "--scale-dk", "32"]


@pytest.fixture(scope="module")
def course():
    return online.course_functions()  # chapter 5's NumPy solution; fails clearly when it is missing


@pytest.fixture(scope="module")
def tiny_run(course, tmp_path_factory):
    """One run of the command on tiny sizes (with --scale at a T that fits): (exit code, printed, JSON)."""
    out = tmp_path_factory.mktemp("online") / "online.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(online, "course_functions", lambda *a, **k: course)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = online.main(TINY + ["--json", str(out)])
    return code, printed.getvalue(), json.loads(out.read_text())


def reference(q, k, v):
    """softmax(q kᵀ / sqrt(d)) v in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v


def test_the_command_prints_its_tables(tiny_run):
    code, printed, _ = tiny_run
    assert code == 0
    for text in ("online / naive", "online / SDPA", "naive / SDPA", "memory exponent", "Peak extra memory ~ T^p",
                 "Goals (block", "threadpoolctl:", "Outputs agree", "At T = 96"):
        assert text in printed, text


def test_the_json_has_every_figure(tiny_run):
    _, _, result = tiny_run
    assert {"config", "environment", "threadpoolctl", "rss_calibration", "sizes", "blocks", "chosen_block",
            "exponents", "goals", "scale"} <= set(result)
    assert [s["seq"] for s in result["sizes"]] == [64, 128]
    assert result["chosen_block"] in (16, 32) and [b["block_size"] for b in result["blocks"]] == [16, 32]
    for size in result["sizes"]:
        kinds = [(r["kind"], r["block_size"]) for r in size["forms"]]
        assert kinds == [("naive", None), ("online", 16), ("online", 32), ("sdpa", None)]
        for row in size["forms"]:
            assert row["best_ms"] > 0 and row["median_ms"] >= row["best_ms"]
            assert isinstance(row["peak_bytes"], int) and row["peak_bytes"] >= 0, row
            assert row["max_abs_diff"] < 1e-5
        assert size["repeats"] == 2 and not size["naive_skipped"]
    assert set(result["exponents"]) == {"online", "naive", "sdpa"}
    assert set(result["goals"]) == {"online_memory_linear", "online_within_naive", "online_within_sdpa"}
    assert result["goals"]["online_within_sdpa"]["met"] is None  # T = 4096 was not measured


def test_the_resident_memory_method_sees_a_known_allocation(tiny_run):
    calibration = tiny_run[2]["rss_calibration"]
    assert "error" not in calibration, calibration
    assert abs(calibration["bytes"] - calibration["allocated_bytes"]) < 0.05 * calibration["allocated_bytes"]


def test_scale_runs_the_online_form_and_never_tries_a_matrix_that_fits(tiny_run):
    scale = tiny_run[2]["scale"]
    assert scale["seq"] == 96 and scale["d_k"] == 32 and scale["agree"]
    assert scale["naive"]["attempted"] is False and "fits in memory" in scale["naive"]["note"]
    assert scale["online_s"] > 0 and scale["online_peak_bytes"] > 0 and scale["sdpa_peak_bytes"] is not None


def test_every_form_matches_a_float64_reference(course):
    q, k, v = online.make_qkv(50, d_k=16, heads=2)  # 50 keys: the last block is short
    forms = online.cpu_forms(q, k, v, course, [16, 64])
    online.check_agreement(forms)
    for form in forms:
        np.testing.assert_allclose(form.output(), reference(q, k, v), rtol=1e-4, atol=1e-5, err_msg=form.name)
    wrong = mha.Form("wrong", lambda: course["online"](q, k, v * 1.01), np.asarray)
    with pytest.raises(AssertionError, match="wrong differs"):
        online.check_agreement(forms[:1] + [wrong])


def test_markdown_table_renders_the_committed_run():
    result = json.loads(online.RESULTS.read_text())
    table = online.markdown_table(result)
    lines = table.splitlines()
    assert lines[0].startswith("| T | naive ms | online ms | SDPA ms |")
    assert [row.split(" | ")[0] for row in lines[2:2 + len(result["sizes"])]] == \
        [f"| {s['seq']}" for s in result["sizes"]]
    assert "Peak extra memory ~ T^p" in table and "`python -m benchmarks.online`" in table
    assert result["config"]["sizes"] == list(online.SIZES)
    assert online.markdown_rows(online.block_rows(result)).count("(chosen)") == 1


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_loglog_slope_finds_the_exponent(power):
    t = np.array([1024, 2048, 4096, 8192, 16384])
    assert online.loglog_slope(t, 3.0 * t ** power) == pytest.approx(power, abs=1e-12)
    wobble = np.array([1.05, 0.95, 1.0, 1.05, 0.95])  # symmetric noise: the fit stays near the power
    assert online.loglog_slope(t, 7.0 * t ** power * wobble) == pytest.approx(power, abs=0.03)
    assert online.loglog_slope(t, 2.0 * t + 1e6) < 0.5  # a large constant flattens it


def test_loglog_slope_needs_two_positive_points():
    assert online.loglog_slope([1024], [5.0]) is None
    assert online.loglog_slope([1024, 2048], [0, 10]) is None
    assert online.loglog_slope([1024, 2048, 4096], [None, 10, 20]) == pytest.approx(1.0)


def test_the_scale_size_exceeds_memory():
    gib = 2 ** 30
    assert online.scale_seq(int(23.5 * gib)) == 81920  # 25 GiB for one float32 (81920, 81920) matrix
    for total in (gib, 24 * gib, 100 * gib):
        seq = online.scale_seq(total)
        assert seq * seq * 4 > total and (seq - 8192) ** 2 * 4 <= total
    memory = online.memory_bytes()
    assert memory["total"] > 0 and 0 < memory["available"] <= memory["total"]


def test_the_naive_form_is_never_run_where_its_matrix_could_be_granted():
    def must_not_run(q, k, v):
        raise AssertionError("the T x T form was run")

    q, k, v = online.make_qkv(512, d_k=8)
    fits = online.try_naive(must_not_run, q, k, v, total=2 ** 30)  # 1 MiB matrix, 1 GiB "machine"
    assert not fits["attempted"] and "fits in memory" in fits["note"]
    granted = online.try_naive(must_not_run, q, k, v, total=2 ** 16)  # 1 MiB > 64 KiB, but the kernel grants it
    assert not granted["attempted"] and "granted" in granted["note"]


def test_a_missing_solution_is_named(tmp_path):
    with pytest.raises(online.MissingSolution, match=r"ch05_cost_and_scale/1_numpy\.ipynb does not exist"):
        online.course_functions(tmp_path)
    assert mha.COURSE_FORMS and "batched (ch04 solution)" in mha.COURSE_FORMS  # the loader's table is restored


def test_gpu_options_and_the_message_without_a_gpu(capsys):
    args = online.parse_args(["--gpu", "--gpu-sizes", "1024,4096", "--repeats", "5"])
    assert args.gpu and args.gpu_sizes == [1024, 4096] and args.repeats == 5
    with pytest.raises(SystemExit):
        online.parse_args(["--gpu-sizes", "4096,big"])
    if online.gpu_problem() is None:
        pytest.skip("a CUDA GPU is present: tests/gpu/verify.py runs the --gpu benchmark")
    assert online.main(["--gpu"]) == 2
    err = capsys.readouterr().err
    assert "--gpu needs a CUDA GPU that CuPy and torch can use" in err


def test_the_chapter_page_quotes_the_committed_run_verbatim():
    """The page's measured table is the committed ``--json`` run rendered by the benchmark itself."""
    import nbformat

    table = online.markdown_table(json.loads(online.RESULTS.read_text()))
    page = nbformat.read(str(online.REPO / "book" / "ch05_cost_and_scale.ipynb"), as_version=4)
    cell = next(c for c in page.cells if c.id == "online-benchmark-table")
    assert table in cell.source, "rerun `python -m benchmarks.online --scale --json benchmarks/results/online_cpu.json` " \
        "and paste markdown_table() of it into the page"
