"""Chapter 6's page teaches what heads learn without giving away a graded function: no definition,
import, call or binding of one, in its code cells or in the code it shows in Markdown, and none of
the indexing tricks that compute a graded quantity (a diagonal, a shifted triangle, a token
comparison, zeroed rows of W_o, a training loop). Its measured numbers come from the committed
run of ``python -m benchmarks.heads``: the page quotes its tables (checked verbatim by
tests/test_ch06_benchmark_heads.py) and reads the JSON for the rest. It has its sections in
order, every number its text glues is computed by one of its cells, and run, it says what the
committed run says; without the file it still runs, saying what it skips."""
import importlib
import importlib.util
import json
import re

import pytest

import pages

from autograder.paths import REPO_ROOT

PAGE = REPO_ROOT / "book" / "ch06_what_heads_learn.ipynb"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "heads_cpu.json"
CHAPTER_MODULE = "mha_checks.chapters.ch06_what_heads_learn"

# The graded names of chapters 1-6, whether or not the chapters' declarations list them all.
GRADED = {"softmax", "causal_mask", "scaled_dot_product_attention", "single_head_attention", "attention_entropy",
          "split_heads", "merge_heads", "multi_head_attention", "multi_head_attention_loop", "attend_per_head",
          "head_contributions", "MultiHeadAttention", "mha_param_count", "mha_flops", "online_softmax_attention",
          "tiled_attention", "grouped_query_attention", "previous_token_score", "induction_score", "knock_out",
          "attention_only_forward", "offset_score", "AttentionOnlyTransformer", "train"}
if importlib.util.find_spec(CHAPTER_MODULE) is not None:
    GRADED |= {f.name for f in importlib.import_module(CHAPTER_MODULE).CHAPTER.functions}

# Code that would compute a graded quantity, or build the graded model or its training, by hand.
TRICKS = {
    "a diagonal of a map": r"\bdiagonal\b|\bnp\.diag\b|\btorch\.diag\b|\bdiag_embed\b",
    "a (shifted) triangle": r"\btril\b|\btriu\b|\beye\s*\(",
    "indices 1..T-1 against 0..T-2": r"\barange\s*\(\s*1\s*,",
    "a comparison of token arrays": r"tokens?\s*\[[^\]]*None[^\]]*\]\s*==|==\s*\w*tokens?\s*\[[^\]]*None",
    "a mean over batch and queries": r"mean\s*\(\s*(axis|dim)\s*=\s*\(\s*0\s*,\s*2\s*\)",
    "zeroed rows of W_o": r"w_o\s*\[[^\]]*\]\s*=|\bhead_mask\b",
    "a model or a training loop": r"nn\.Module|nn\.Embedding|\.backward\s*\(|\boptim\b|cross_entropy",
    "a weight on key 0 or the last key": r"\[\s*\.\.\.\s*,\s*(0|-1)\s*\]",
}

# In this order; each quoted table's cell sits in the section named next to it.
SECTIONS = ["## The task", "## The model", "## Training", "## Finding the heads", "## Look for yourself",
            "## Composition, measured", "## The shortcut", "## Real heads", "## In the three frameworks",
            "## Summary", "## Exercises"]
QUOTED = {"heads-training-table": "## Training", "heads-scores-table": "## Finding the heads",
          "heads-knockout-table": "## Composition, measured", "heads-seeds-table": "## Composition, measured",
          "heads-shortcut-table": "## The shortcut", "heads-minilm-table": "## Real heads"}
FIGURES = {"loss-figure", "grid-figure", "knockout-figure", "minilm-figure"}
VIEWERS = {"viewer-toy", "viewer-minilm"}
EXERCISES = [f"/exercises/ch06_what_heads_learn/{nb}" for nb in ("1_numpy", "2_cupy", "3_pytorch")]


def cells():
    return pages.cells(PAGE)


def test_page_never_shows_a_graded_function():
    pages.assert_shows_no_graded_function(PAGE, GRADED)


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_page_has_no_code_that_computes_a_graded_quantity(trick):
    pages.assert_no_trick(PAGE, TRICKS[trick], trick)


def test_page_has_its_sections_in_order_and_quotes_each_table_in_place():
    pages.assert_sections_and_quotes(PAGE, SECTIONS, QUOTED)


def test_figures_have_captions_and_alt_text_and_viewers_exist():
    pages.assert_figures(PAGE, FIGURES)
    page = {c.id: c for c in cells()}
    for cell_id in VIEWERS:
        assert "head_viewer(" in page[cell_id].source, cell_id


def test_page_links_the_three_exercise_notebooks():
    text = "\n".join(c.source for c in cells() if c.cell_type == "markdown")
    for target in EXERCISES:
        assert f"<{target}>" in text, target
    assert "Chapter 7" in text


def test_every_glued_value_is_computed_by_a_cell():
    pages.assert_glued_values_are_computed(PAGE)
    text = "\n".join(c.source for c in cells() if c.cell_type == "markdown")
    assert "{glue:md}" in text, "the page glues no words into its text"


# --------------------------------------------------------------------------- the page, run


def _run_page(without_results=False):
    """Run the page as the website's build does; without the measured runs, as in Colab with no copy of them."""
    return pages.run_page(PAGE, {"results = load_results()": "results = None"} if without_results else None)


@pytest.fixture(scope="module")
def page_run():
    pytest.importorskip("myst_nb")
    pytest.importorskip("nbclient")
    return _run_page()


@pytest.mark.timeout(300)
def test_the_page_runs_and_says_what_the_committed_run_says(page_run):
    values, printed, run = page_run
    result = json.loads(RESULTS.read_text())
    ko, sc, runs = result["knockouts"]["0"], result["shortcut"], result["training"]["runs"]
    assert values["held_out"] == result["config"]["held_out"] == 512
    assert 0.818 < values["loss_floor"] < 0.819                           # the task's lowest possible loss
    assert values["q_4"] > values["new_4"], "the first token is the best guess where the pattern restarts"
    assert 0 < values["loss_gap"] < 0.2 and values["steps"] == result["config"]["steps"]
    assert values["acc_min"] == min(r["accuracy"] for r in runs) >= 0.95
    assert values["n_previous"] == len(ko["previous_heads"]) and values["prev_min"] > values["threshold"]
    assert values["prev_other"] <= values["threshold"] < values["prev_min"]
    assert values["ind_l1_min"] > 0.8 > 0.2 > values["ind_l0_max"]           # "all four heads of layer 1"
    assert values["ko_prev_acc"] == ko["previous"]["accuracy"] < 0.5 < 0.9 < values["ko_others_acc"]
    assert values["ko_prev_ind_max"] < 0.3 < values["ko_others_ind_min"]
    assert values["ko_single_acc_min"] > values["ko_prev_acc"] + 0.2         # one head off costs less than both
    assert values["ko_l1_acc_min"] > 0.9
    assert values["seeds_prev_acc_max"] < 0.5 < 0.9 < values["seeds_others_acc_min"]
    assert values["sc_acc_period"] == sc["accuracy_period"] > 0.95 > 0.5 > values["sc_acc_varied"]
    assert values["sc_prev_max"] < 0.1 and values["sc_ind_varied_max"] < 0.3
    assert values["sc_ind_period_high"] >= 6 and values["sc_ind_period_max"] > 0.9   # "as high as induction heads"
    assert values["mini_previous_top"] > 0.9 and values["mini_cls_middle"] > 2 * values["mini_sep_mean"]
    for role in ("previous", "next"):                                        # "both sit in the first two layers"
        assert int(re.match(r"layer (\d)", values[f"mini_{role}_head"]).group(1)) <= 1, values[f"mini_{role}_head"]
    assert values["sc_course_period"] > 0.95
    assert values["mini_ent_l0"] > values["mini_ent_min"]
    assert values["harry_first"] < values["harry_second"] and values["harry_weight"] > 0.3
    for words in ("previous_heads", "other_heads", "worst_single", "mini_previous_head", "harry_head"):
        assert re.fullmatch(r"(L\d H\d(, L\d H\d)*( and L\d H\d)?|layer \d, head \d+)", values[words]), values[words]
    for cell_id in FIGURES:
        assert any("image/png" in out.get("data", {}) for out in run[cell_id].outputs), f"{cell_id} drew no figure"
    for cell_id in VIEWERS:
        html = "".join(out.get("data", {}).get("text/html", "") for out in run[cell_id].outputs)
        assert 'class="mha-head-viewer"' in html, f"{cell_id} shows no viewer"
    assert "lowest possible loss: 0.818" in printed and "(skipped" not in printed


@pytest.mark.timeout(300)
def test_the_page_runs_without_the_measured_runs():
    pytest.importorskip("nbclient")
    values, printed, run = _run_page(without_results=True)
    assert printed.count("(skipped: the measured runs are not available here") >= 6
    assert "loss_floor" in values and "acc_mean" not in values          # what needs no file still runs
    assert any("image/png" in out.get("data", {}) for out in run["grid-figure"].outputs)
