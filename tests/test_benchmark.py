"""The benchmark grades one small class three ways and reports honest figures.

One benchmark run (2 students, 1_numpy, nbgrader plus ours twice) takes about
40 s, so it is run once for the module.
"""
import filecmp
import math

import pytest

from autograder.benchmark import (BenchmarkInputError, benchmark, format_report, make_class,
                                  score_disagreements)
from autograder.results import GRADED
from autograder.paths import EXERCISES_DIR, SOLUTIONS_DIR
from autograder.sandbox import sandbox_problem
from course import FIRST, full_marks

ASSIGNMENT = FIRST
FULL_MARKS_1_NUMPY = full_marks(FIRST, "1_numpy")


def test_make_class_alternates_solution_and_blank_notebooks(tmp_path):
    make_class(tmp_path, 3, notebooks=("1_numpy", "3_pytorch"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student01", "student02", "student03"]
    for student, origin in (("student01", SOLUTIONS_DIR), ("student02", EXERCISES_DIR),
                            ("student03", SOLUTIONS_DIR)):
        for notebook in ("1_numpy", "3_pytorch"):
            assert filecmp.cmp(tmp_path / student / ASSIGNMENT / f"{notebook}.ipynb",
                               origin / ASSIGNMENT / f"{notebook}.ipynb", shallow=False)


def test_disagreement_is_reported_for_a_different_score_or_an_ungraded_notebook():
    ours = {("a", "nb"): (GRADED, 3.0), ("b", "nb"): (GRADED, 2.0), ("c", "nb"): ("failed: x", None)}
    nbgrader = {("a", "nb"): 3.0, ("b", "nb"): 0.0, ("c", "nb"): None}
    assert score_disagreements(ours, nbgrader) == [("b", "nb"), ("c", "nb")]


def test_submissions_inside_a_replaced_work_folder_are_refused(tmp_path):
    class_dir = make_class(tmp_path / "class", 1, notebooks=("1_numpy",))
    with pytest.raises(BenchmarkInputError, match="replaces"):
        benchmark(class_dir, tmp_path, notebooks=("1_numpy",))
    assert (class_dir / "student01" / ASSIGNMENT / "1_numpy.ipynb").exists()


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory):
    problem = sandbox_problem()
    assert problem is None, f"the grader's sandbox is not usable here: {problem}"
    work = tmp_path_factory.mktemp("benchmark")
    make_class(work / "synthetic", 2, notebooks=("1_numpy",))
    return benchmark(work / "synthetic", work, jobs=2, notebooks=("1_numpy",))


@pytest.mark.timeout(120)
def test_serial_and_parallel_agree_with_each_other_and_with_nbgrader(small_benchmark):
    result = small_benchmark
    assert result["notebooks"] == 2
    assert result["nbgrader_error"] is None
    assert result["parallel_matches_serial"] is True, result["parallel_differences"]
    assert result["agrees_with_nbgrader"] is True, result["disagreements"]
    # Agreement is not vacuous: the solution gets full marks and the blank notebook none.
    scores = {row["student"]: (row["serial_status"], row["serial_score"], row["nbgrader_score"])
              for row in result["scores"]}
    assert scores == {"student01": (GRADED, FULL_MARKS_1_NUMPY, FULL_MARKS_1_NUMPY),
                      "student02": (GRADED, 0, 0)}


def test_figures_are_positive_and_consistent(small_benchmark):
    result = small_benchmark
    for key in ("nbgrader_seconds", "ours_serial_seconds", "ours_parallel_seconds",
                "overhead_serial", "overhead_parallel", "nbgrader_per_minute",
                "ours_serial_per_minute", "ours_parallel_per_minute"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["overhead_serial"] == pytest.approx(
        result["ours_serial_seconds"] / result["nbgrader_seconds"])
    assert result["ours_parallel_per_minute"] == pytest.approx(
        2 * 60 / result["ours_parallel_seconds"])


def test_report_shows_throughput_and_ratio(small_benchmark):
    report = format_report(small_benchmark)
    assert "notebooks/min" in report
    assert "ratio to nbgrader" in report
    assert f"{small_benchmark['overhead_parallel']:.2f}" in report
    assert f"{small_benchmark['ours_serial_per_minute']:.1f}" in report
    assert "jobs=1 and jobs=2 give the same status and score for every notebook: yes" in report
