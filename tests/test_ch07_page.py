"""Chapter 7's page teaches ablation, importance and similarity without giving away a graded function
(no definition, call, import or binding of one, and none of the tricks that compute a graded quantity:
an l2 norm over a layer's row, a finite difference, a cosine of flattened heads). Its measured numbers
come from the committed run of ``python -m benchmarks.redundancy``: the page quotes its tables
verbatim and reads the JSON for the rest; run, its text says what that run says."""
import json

import pytest

import pages
from autograder.paths import REPO_ROOT
from benchmarks import redundancy

PAGE = REPO_ROOT / "book" / "ch07_redundancy.ipynb"
SECTIONS = ["## A head mask", "## Switching off one head", "## Importance from one backward pass",
            "## When importance is noise", "## How alike", "## MiniLM's importance", "## In the three frameworks",
            "## Summary", "## Exercises"]
QUOTED = {"redundancy-ablation-table": "## Switching off one head", "redundancy-noise-table": "## When importance is noise"}
TABLES = {"redundancy-ablation-table": "ablation", "redundancy-noise-table": "noise"}
FIGURES = {"ablation-figure", "minilm-ablation-figure", "importance-figure", "similarity-figure",
           "minilm-importance-figure"}
TRICKS = {
    "a norm over a layer's row": r"linalg\.norm|\.norm\s*\(",
    "a finite difference": r"2\s*\*\s*eps|/\s*\(\s*2\s*\*",
    "an absolute value of gradients": r"abs\s*\(\s*\w*grad",
    "a head mask applied": r"\*\s*\w*mask\w*\s*\[\s*(None|\.\.\.|:)",
}
EXERCISES = [f"/exercises/ch07_redundancy/{nb}" for nb in ("1_numpy", "2_cupy", "3_pytorch")]


def test_page_never_shows_a_graded_function():
    pages.assert_shows_no_graded_function(PAGE, pages.graded_names())


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_page_has_no_code_that_computes_a_graded_quantity(trick):
    pages.assert_no_trick(PAGE, TRICKS[trick], trick)


def test_page_has_its_sections_in_order_and_quotes_each_table_in_place():
    pages.assert_sections_and_quotes(PAGE, SECTIONS, QUOTED)


def test_the_page_quotes_the_committed_tables_verbatim():
    tables = redundancy.markdown_tables(json.loads(redundancy.RESULTS.read_text()))
    by_id = {c.id: c for c in pages.cells(PAGE)}
    for cell_id, name in TABLES.items():
        assert tables[name] in by_id[cell_id].source, (
            f"the page's cell {cell_id} does not quote markdown_tables()[{name!r}]: rerun `{redundancy.COMMAND}`")


def test_figures_have_names_captions_and_alt_text():
    pages.assert_figures(PAGE, FIGURES)


def test_every_glued_value_is_computed_by_a_cell():
    pages.assert_glued_values_are_computed(PAGE)


def test_page_links_the_three_exercise_notebooks_and_the_next_chapter():
    text = "\n".join(c.source for c in pages.cells(PAGE) if c.cell_type == "markdown")
    for target in EXERCISES:
        assert f"<{target}>" in text, target
    assert "Chapter 8" in text and "Michel" in text


@pytest.fixture(scope="module")
def page_run():
    pytest.importorskip("myst_nb")
    return pages.run_page(PAGE)


@pytest.mark.timeout(300)
def test_the_page_runs_and_says_what_the_committed_run_says(page_run):
    values, printed, run = page_run
    result = json.loads(redundancy.RESULTS.read_text())
    toy = result["toy"]
    heads = sorted(toy["ablation"]["heads"], key=lambda r: r["accuracy_change"])
    assert values["toy_acc"] == toy["ablation"]["accuracy"] > 0.95
    assert values["worst_head"] == heads[0]["label"] and values["second_head"] == heads[1]["label"]
    assert {values["worst_head"], values["second_head"]} <= {"L0 H0", "L0 H1", "L0 H2", "L0 H3"}   # "layer 0"
    assert values["worst_drop"] > 0.05 and values["small_count"] >= 4                             # "most ... little"
    assert values["fd_diff"] < 1e-3 < values["fd_max"]
    assert values["rank_agreement"] > 0.5                                                         # "agree on the order"
    assert values["late_loss"] < values["base_loss"] and values["sharp_loss"] < values["base_loss"]
    assert values["sharp_corr"] < values["late_corr"] < values["base_corr"]                      # "falls", "worse still"
    assert values["sharp_corr_min"] < 0.2 and values["sharp_top"] > values["base_top"]
    assert values["lm_above_99"] > 36 and values["lm_worst_agreement"] < values["lm_median_agreement"]
    assert values["lm_rank_agreement"] > 0.3
    for cell_id in FIGURES:
        assert any("image/png" in out.get("data", {}) for out in run[cell_id].outputs), f"{cell_id} drew no figure"
    assert "(skipped" not in printed


@pytest.mark.timeout(300)
def test_the_page_runs_without_the_measured_runs():
    pytest.importorskip("nbclient")
    values, printed, _ = pages.run_page(PAGE, {"results = {name: load_results(path)": "results = {name: None"})
    assert printed.count("(skipped: the measured runs are not available here") >= 6
    assert not values
