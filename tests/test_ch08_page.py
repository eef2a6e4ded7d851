"""Chapter 8's page teaches pruning without giving away a graded function (no definition, call, import
or binding of one, and none of the tricks that compute one: the kept heads' columns, a global sort of
importances). Its measured numbers come from the committed runs of ``python -m benchmarks.redundancy``
(the pruning curves) and ``python -m benchmarks.pruning`` (the speed): the page quotes their tables
verbatim; run, its text says what those runs say."""
import json

import pytest

import pages
from autograder.paths import REPO_ROOT
from benchmarks import pruning, redundancy

PAGE = REPO_ROOT / "book" / "ch08_pruning.ipynb"
SECTIONS = ["## What belongs to a head", "## Iterative pruning", "## Pruning MiniLM", "## How much faster",
            "## Heads that switch themselves off", "## In the three frameworks", "## Summary", "## Exercises"]
QUOTED = {"redundancy-pruning-table": "## Iterative pruning", "redundancy-minilm-pruning-table": "## Pruning MiniLM",
          "pruning-speed-table": "## How much faster"}
FIGURES = {"slicing-figure", "toy-pruning-figure", "minilm-pruning-figure"}
TRICKS = {
    "the columns of the kept heads": r"concatenate\s*\(\s*\[\s*np\.arange\s*\(\s*h\s*\*",
    "a global sort of importances": r"argsort\s*\([^)]*axis\s*=\s*None",
    "a parameter removed from a module": r"nn\.Parameter\s*\(",
}
EXERCISES = [f"/exercises/ch08_pruning/{nb}" for nb in ("1_numpy", "2_cupy", "3_pytorch")]


def test_page_never_shows_a_graded_function():
    pages.assert_shows_no_graded_function(PAGE, pages.graded_names() | {"prune_heads"})


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_page_has_no_code_that_computes_a_graded_quantity(trick):
    pages.assert_no_trick(PAGE, TRICKS[trick], trick)


def test_page_has_its_sections_in_order_and_quotes_each_table_in_place():
    pages.assert_sections_and_quotes(PAGE, SECTIONS, QUOTED)


def test_the_page_quotes_the_committed_tables_verbatim():
    tables = redundancy.markdown_tables(json.loads(redundancy.RESULTS.read_text()))
    by_id = {c.id: c.source for c in pages.cells(PAGE)}
    assert tables["pruning"] in by_id["redundancy-pruning-table"], f"rerun `{redundancy.COMMAND}`"
    assert tables["minilm_pruning"] in by_id["redundancy-minilm-pruning-table"], f"rerun `{redundancy.COMMAND}`"
    speed = pruning.markdown_table(json.loads(pruning.RESULTS.read_text()))
    assert speed in by_id["pruning-speed-table"], f"rerun `{pruning.COMMAND}`"


def test_figures_have_names_captions_and_alt_text():
    pages.assert_figures(PAGE, FIGURES)


def test_every_glued_value_is_computed_by_a_cell():
    pages.assert_glued_values_are_computed(PAGE)


def test_page_links_the_three_exercise_notebooks():
    text = "\n".join(c.source for c in pages.cells(PAGE) if c.cell_type == "markdown")
    for target in EXERCISES:
        assert f"<{target}>" in text, target
    assert "Voita" in text and "17.5%" in text


@pytest.fixture(scope="module")
def page_run():
    pytest.importorskip("myst_nb")
    return pages.run_page(PAGE)


@pytest.mark.timeout(300)
def test_the_page_runs_and_says_what_the_committed_runs_say(page_run):
    values, printed, run = page_run
    result = json.loads(redundancy.RESULTS.read_text())
    steps = result["toy"]["iterative_pruning"]
    assert values["toy_full"] == steps[0]["accuracy"] and values["toy_within_share"] >= 25
    assert values["toy_after_1"] > values["toy_after_2"] > values["toy_last"]          # "falls at every step"
    last_two = [h for s in steps[-2:] for h in s["pruned"]]
    assert all(h.startswith("L0") for h in last_two)             # "the previous-token heads ... the last to go"
    lm = result["minilm"]["iterative_pruning"]
    agreement = [s["agreement"] for s in lm]
    assert agreement == sorted(agreement, reverse=True), "agreement 'falls at every step'"
    assert values["lm_agreement_last"] == agreement[-1] < values["lm_agreement_half"] < values["lm_agreement_first"]
    assert all(s["retrieval"] >= 0.95 for s in lm) and values["lm_no_heads_retrieval"] > 0.9   # "does not move"
    assert values["lm_distractor_full"] < 0.5 and values["lm_distractor_none"] <= values["lm_distractor_full"]
    assert values["lm_pruned_difference"] < 1e-4
    assert values["speed_numpy"] > values["speed_layer"] and values["speed_module"] > values["speed_layer"]
    for cell_id in FIGURES:
        assert any("image/png" in out.get("data", {}) for out in run[cell_id].outputs), f"{cell_id} drew no figure"
    assert "(skipped" not in printed


def test_the_committed_speed_run_meets_the_goal():
    """The goal of the chapter, 50% of the heads pruned at least 1.6x faster on CPU, in the run the page quotes."""
    result = json.loads(pruning.RESULTS.read_text())
    half = {r["form"]: r["speedup"] for r in result["cpu"] if 2 * r["kept"] == result["config"]["heads"]}
    assert half["NumPy"] >= pruning.GOAL and result["config"]["threads"] == 1


@pytest.mark.timeout(300)
def test_the_page_runs_without_the_measured_runs():
    pytest.importorskip("nbclient")
    values, printed, run = pages.run_page(PAGE, {"results = {name: load_results(path)": "results = {name: None"})
    assert printed.count("(skipped: the measured runs are not available here") >= 4
    assert any("image/png" in out.get("data", {}) for out in run["slicing-figure"].outputs)
