"""``python -m benchmarks.heads``: its committed JSON holds together, the chapter 6 page quotes it, and
its numbers are what the solution notebooks compute.

The committed run (benchmarks/results/heads_cpu.json) is what the page's text and tables rest on, so
its structure and the facts the page states (every seed learns the task, the previous-token heads
carry the induction, the shortcut fails on other periods) are checked here. The knockouts are
recomputed from the course's model file. Retraining is tested under other CPU settings in
test_ch06_other_machines.py, by what the models do: training gives other digits on another machine.
Times are never compared.
"""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import heads  # noqa: E402
from mha_checks import toy_task  # noqa: E402
from mha_checks.chapters.ch06_what_heads_learn import trained_model_problems  # noqa: E402

ATOL = 2e-3   # the JSON keeps 4 decimals


@pytest.fixture(scope="module")
def result():
    return json.loads(heads.RESULTS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def course():
    return heads.course_functions()  # chapter 6's solutions; fails clearly when one is missing


def shape(nested):
    return np.asarray(nested).shape


# --------------------------------------------------------------------------- the committed file


def test_the_json_has_every_part(result):
    assert {"command", "config", "training", "course_model", "knockouts", "shortcut", "minilm",
            "environment"} <= set(result)
    assert result["command"] == heads.COMMAND
    config = result["config"]
    assert config["seeds"] == list(heads.SEEDS) and config["steps"] == heads.STEPS
    assert (config["steps"], config["batch_size"], config["lr"]) == tuple(
        heads.toy_task.TRAINING[k] for k in ("steps", "batch_size", "lr")), "the course's recipe changed: rerun"
    assert config["held_out"] == 512 and config["threads"] == 1 and config["shortcut_period"] == 8
    assert {"python", "numpy", "torch", "cpu_count", "torch_threads", "processor"} <= set(result["environment"])
    runs = result["training"]["runs"]
    assert [r["seed"] for r in runs] == list(heads.SEEDS)
    for run in runs:
        assert {"seconds", "final_loss", "accuracy", "losses_every_10", "scores"} <= set(run)
        assert len(run["losses_every_10"]) == heads.STEPS // 10
        for name in ("previous", "induction", "entropy"):
            assert shape(run["scores"][name]) == (2, 4), name
    for key in ("accuracy", "final_loss", "seconds"):
        values = [r[key] for r in runs]
        summary = result["training"]["summary"][key]
        assert summary["min"] == min(values) and summary["max"] == max(values)
        assert summary["mean"] == pytest.approx(np.mean(values), abs=1e-4)
        assert summary["std"] == pytest.approx(np.std(values), abs=1e-4)


def test_every_seed_learns_the_task_and_grows_the_two_kinds_of_heads(result):
    for run in result["training"]["runs"]:
        scores = {k: np.array(v) for k, v in run["scores"].items()}
        assert trained_model_problems(run["accuracy"], scores["previous"], scores["induction"]) == [], run["seed"]
        assert run["final_loss"] < 1.2 < run["first_loss"]
    assert len(result["training"]["runs"]) >= 5, "the page's claims about training rest on five seeds at least"


def test_the_knockouts_of_the_course_seed_are_of_the_model_file(result):
    """The course's seed retrained here may differ from the model file (another CPU sums in another order);
    what the page shows of seed 0, its scores and knockouts, is the file's model, which NumPy and PyTorch
    run alike."""
    model = result["course_model"]
    assert model["file"] == toy_task.MODEL_FILE.relative_to(heads.REPO).as_posix()
    assert isinstance(model["matches"], bool) and model["max_abs_difference"] >= 0
    assert model["numpy_forward_vs_torch_max_abs_logits"] < 1e-4
    scores = {k: np.array(v) for k, v in model["scores"].items()}
    assert trained_model_problems(result["knockouts"]["0"]["nothing"]["accuracy"], scores["previous"],
                                  scores["induction"]) == []


def test_the_knockouts_tell_the_composition_story(result):
    assert set(result["knockouts"]) == {str(s) for s in heads.SEEDS}
    for seed, k in result["knockouts"].items():
        run = result["training"]["runs"][int(seed)]
        scores = result["course_model"]["scores"] if int(seed) == toy_task.COURSE_SEED else run["scores"]
        previous = [h for h, v in enumerate(scores["previous"][0]) if v > heads.PREVIOUS_THRESHOLD]
        assert k["previous_heads"] == previous and sorted(previous + k["other_heads"]) == [0, 1, 2, 3]
        assert k["previous"]["heads"] == previous and k["others"]["heads"] == k["other_heads"]
        if int(seed) != toy_task.COURSE_SEED:   # the course's seed: its model file, not the run
            assert k["nothing"]["accuracy"] == run["accuracy"]
        assert k["previous"]["accuracy"] < 0.5 and k["previous"]["max_induction_layer_1"] < 0.3, seed
        assert k["others"]["accuracy"] > 0.9, seed
    single = result["knockouts"]["0"]["single"]
    assert [s["label"] for s in single] == [f"L{l} H{h}" for l in range(2) for h in range(4)]
    together = result["knockouts"]["0"]["previous"]["accuracy"]
    assert all(s["accuracy"] > together + 0.2 for s in single), "one head off should cost less than the group"
    assert all(s["accuracy"] > 0.9 for s in single if s["layer"] == 1)
    # knocking out a layer-1 head leaves layer 1's maps, so its induction scores, as they were
    nothing = result["knockouts"]["0"]["nothing"]["induction_layer_1"]
    assert all(s["induction_layer_1"] == nothing for s in single if s["layer"] == 1)


def test_the_shortcut_fails_on_other_periods(result):
    s = result["shortcut"]
    assert s["period"] == 8 and s["offset"] == -7 and s["steps"] == heads.SHORTCUT_STEPS
    assert s["accuracy_period"] > 0.95 and s["accuracy_varied"] < 0.5
    assert s["course_model_accuracy_period"] > 0.95     # the course's model does the special case too
    assert np.max(s["scores_varied"]["previous"]) < 0.1 and np.max(s["scores_varied"]["induction"]) < 0.3
    assert np.sum(np.array(s["scores_period"]["induction"]) > 0.75) >= 6   # on its own data: like induction
    assert np.min(s["offset_score_varied"]) > 0.25 and np.mean(s["offset_score_varied"]) > 0.4


def test_the_minilm_part(result):
    m = result["minilm"]
    assert m["sentences"] == 24
    for role in heads.ROLES:
        table = np.array(m["scores"][role])
        assert table.shape == (6, 12), role
        top = m["top"][role]
        assert len(top) == heads.TOP and [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
        assert top[0]["score"] == table.max() == table[top[0]["layer"], top[0]["head"]]
    assert m["entropy_per_layer"] == pytest.approx(np.mean(m["scores"]["entropy"], axis=1).tolist(), abs=1e-4)
    assert np.all(np.array(m["scores"]["cls"]) + np.array(m["scores"]["sep"]) <= 1 + 1e-3)
    example = m["example"]
    weights = np.array(example["weights"])
    T = len(example["tokens"])
    assert example["tokens"][0] == "[CLS]" and example["tokens"][-1] == "[SEP]"
    assert weights.shape == (6, 12, T, T) and np.allclose(weights.sum(-1), 1, atol=0.02)
    assert example["tokens"].count("harry") == 2


def test_the_json_is_written_compactly_and_reads_back():
    result = {"a": [[0.1234, 2.0], [3.0, -4.5e-05]], "b": {"c": [1, 2, 3], "d": "x [1, 2]"}}
    text = heads.dumps(result)
    assert json.loads(text) == result
    assert '[0.1234, 2.0]' in text and '[1, 2, 3]' in text


# --------------------------------------------------------------------------- the page quotes it


def test_the_chapter_page_quotes_the_committed_tables_verbatim(result):
    import nbformat

    tables = heads.markdown_tables(result)
    assert set(tables) == set(heads.PAGE_CELLS.values())
    page = {c.id: c for c in nbformat.read(str(heads.PAGE), as_version=4).cells}
    for cell_id, name in heads.PAGE_CELLS.items():
        assert cell_id in page, f"the page has no cell {cell_id}"
        assert tables[name] in page[cell_id].source, (
            f"the page's cell {cell_id} does not quote markdown_tables()[{name!r}]: rerun "
            f"`{heads.COMMAND}` and paste the tables (benchmarks/README.md)")


def test_the_tables_show_the_runs(result):
    tables = heads.markdown_tables(result)
    assert tables["training"].splitlines()[0] == "| seed | seconds | final loss | held-out accuracy |"
    assert [line.split(" | ")[0] for line in tables["training"].splitlines()[2:2 + len(heads.SEEDS)]] == [
        f"| {s}" for s in heads.SEEDS]
    assert len([line for line in tables["scores"].splitlines() if line.startswith("| L")]) == 8
    assert "layer 0's previous-token heads [" in tables["knockouts"]
    assert f"`{heads.COMMAND}`" in tables["training"]
    assert all(table in heads.markdown_table(result) for table in tables.values())


def test_the_readme_documents_the_command():
    readme = (heads.REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert "python -m benchmarks.heads" in readme and "heads_cpu.json" in readme


# --------------------------------------------------------------------------- the loader


def test_a_missing_solution_is_named(tmp_path):
    with pytest.raises(heads.MissingSolution, match=r"ch06_what_heads_learn/1_numpy\.ipynb does not exist"):
        heads.course_functions(tmp_path)


def test_the_course_functions_are_the_solutions(course):
    assert set(course) == set(heads.NUMPY_FUNCTIONS) | set(heads.TORCH_FUNCTIONS)
    assert all(callable(f) for f in course.values())


# --------------------------------------------------------------------------- recomputed


@pytest.mark.timeout(300)
def test_the_knockouts_are_what_the_course_model_gives(course, result):
    """The seed-0 knockouts of the file, recomputed on the committed model file (no training)."""
    model, n_heads = toy_task.load_model()
    tokens, periods = toy_task.held_out()
    scores = result["course_model"]["scores"]
    again = heads.group_knockouts(course, model, n_heads, scores, tokens, periods)
    stored = result["knockouts"]["0"]
    for part in ("nothing", "previous", "others"):
        assert again[part]["accuracy"] == pytest.approx(stored[part]["accuracy"], abs=ATOL), part
        np.testing.assert_allclose(again[part]["induction_layer_1"], stored[part]["induction_layer_1"], atol=ATOL)
    single = heads.single_knockouts(course, model, n_heads, tokens, periods)
    assert [s["accuracy"] for s in single] == pytest.approx([s["accuracy"] for s in stored["single"]], abs=ATOL)


