"""Chapter 2's trainings say the same thing on other machines: under other PyTorch CPU kernels,
thread counts and MKL modes (tests/machines.py), the page's five seeds show the bottleneck with
the margins its text claims, the PyTorch notebook's run shows what its text says, and its
questions are right for the run the notebook made there. The runs differ in their digits from
one setting to the next; what is asserted is what the page and the notebook say."""
import math

import pytest

from machines import run_under, settings

pytest.importorskip("torch")

ASSIGNMENT = "ch02_one_head_bottleneck"
SEEDS = (0, 1, 2, 3, 4)            # the page's
# Measured over seeds 0-4 and eight settings (kernels default and avx2, 1 and 2 threads, MKL_CBWR
# unset and COMPATIBLE): the one head's weaker readout 0.18-0.58, its entropy 0.95-0.98 nats; the two
# heads 1.000 on both readouts with entropies below 0.02. The bounds keep a margin on either side.
ONE_HEAD_WEAKER_AT_MOST = 0.7
# The controls (one head, MLP readout, 300 steps), seeds 0-4: the symmetric task 1.000 with entropy
# 0.77-0.78; the ordered task's weaker readout 0.80-1.00 with entropy 0.55-0.76. The page says the MLP
# gets the ordered task further than the linear readouts: the threshold lies between the two ranges.
SYMMETRIC_AT_LEAST = 0.95
BLENDED_ENTROPY_AT_LEAST = 0.4
ONE_HEAD_ENTROPY_AT_LEAST = math.log(2) + 0.1
TWO_HEADS_WEAKER_AT_LEAST = 0.95
TWO_HEADS_ENTROPY_AT_MOST = 0.1


def _page_experiment() -> dict:
    """The names the page's setup and experiment cells define (``train`` and the tasks), without its runs."""
    import nbformat
    from autograder.paths import REPO_ROOT
    page = {c.id: c.source for c in nbformat.read(str(REPO_ROOT / "book" / f"{ASSIGNMENT}.ipynb"), as_version=4).cells}
    ns = {}
    exec(page["setup"], ns)
    exec(page["experiment"], ns)
    return ns


def page_runs(seeds):
    """The page's experiment cell trained for ``seeds``: each seed's last accuracies and entropies."""
    ns = _page_experiment()
    rows = []
    for seed in seeds:
        one, two = (ns["train"](n_heads, seed=seed) for n_heads in (1, 2))
        rows.append({"seed": seed, "one": one["accuracy"][-1], "one_entropy": one["entropy"][-1],
                     "two": two["accuracy"][-1], "two_entropy": two["entropy"][-1]})
    return rows


def control_runs(seeds):
    """The page's controls, one head with an MLP readout for 300 steps, on the symmetric and the ordered
    task: each seed's last accuracies and entropy."""
    ns = _page_experiment()
    rows = []
    for seed in seeds:
        for task in ("symmetric_target", "ordered_targets"):
            log = ns["train"](1, ns[task], mlp=True, steps=300, seed=seed)
            rows.append({"seed": seed, "task": task, "accuracy": log["accuracy"][-1], "entropy": log["entropy"][-1][0]})
    return rows


def notebook_run():
    """The PyTorch notebook's solution run in full: its last accuracies and entropies, and what its
    questions' graded checks say of its answers."""
    from course import checks_for, solution
    ns = solution(ASSIGNMENT, "3_pytorch")
    def head_entropies(maps):   # the notebook's figure: each head's mean entropy over the queries t >= 2
        return ns["attention_entropy"](maps[:, :, 2:]).mean(dim=(0, 2)).tolist()
    summary = {name: {"accuracy": [ns["history"][name]["acc_prev"][-1], ns["history"][name]["acc_prev2"][-1]],
                      "entropy": head_entropies(ns["history"][name]["maps"][-1])} for name in ("one", "two")}
    check = checks_for(ASSIGNMENT, "3_pytorch")
    for question in ("sharper_model", "two_heads_accuracy"):
        getattr(check, question)(ns[question], hidden=True, namespace=ns)   # raises when marked wrong
    return summary


def assert_bottleneck(one_accuracy, one_entropy, two_accuracy, two_entropy, where):
    assert min(one_accuracy) <= ONE_HEAD_WEAKER_AT_MOST, f"{where}: one head read both tokens, {one_accuracy}"
    assert min(one_entropy) >= ONE_HEAD_ENTROPY_AT_LEAST, f"{where}: one head's rows are sharp, {one_entropy}"
    assert min(two_accuracy) >= TWO_HEADS_WEAKER_AT_LEAST, f"{where}: two heads missed a token, {two_accuracy}"
    assert max(two_entropy) <= TWO_HEADS_ENTROPY_AT_MOST, f"{where}: two heads' rows blur, {two_entropy}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("setting", settings(1))
def test_the_page_shows_the_bottleneck_on_every_seed(setting):
    rows = run_under(setting, "test_ch02_other_machines", "page_runs", list(SEEDS))
    assert [r["seed"] for r in rows] == list(SEEDS)
    for r in rows:
        assert_bottleneck(r["one"], r["one_entropy"], r["two"], r["two_entropy"], f"{setting}, seed {r['seed']}")
        assert min(r["two"]) - min(r["one"]) >= 0.3, f"{setting}, seed {r['seed']}: a narrow gap, {r}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("setting", settings(2, first=1))
def test_the_notebook_run_shows_the_bottleneck_and_its_answers_are_right(setting):
    run = run_under(setting, "test_ch02_other_machines", "notebook_run")
    assert_bottleneck(run["one"]["accuracy"], run["one"]["entropy"], run["two"]["accuracy"],
                      run["two"]["entropy"], str(setting))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("setting", settings(1, first=3))
def test_the_controls_hold_on_every_seed(setting):
    for row in run_under(setting, "test_ch02_other_machines", "control_runs", list(SEEDS)):
        where = f"{setting}, seed {row['seed']}, {row['task']}"
        assert row["entropy"] >= BLENDED_ENTROPY_AT_LEAST, f"{where}: the one head's rows are sharp, {row}"
        if row["task"] == "symmetric_target":
            assert min(row["accuracy"]) >= SYMMETRIC_AT_LEAST, f"{where}: one head did not solve it, {row}"
        else:   # further than the linear readouts' weaker token ever gets (ONE_HEAD_WEAKER_AT_MOST)
            assert min(row["accuracy"]) > ONE_HEAD_WEAKER_AT_MOST, f"{where}: the MLP got no further, {row}"
