"""Chapter 6's content: the scores against the design's definitions written as loops, the
course's trained model (its file, its forward pass in NumPy against PyTorch's logits, its heads
and what knocking them out does), the toy task, nested model arguments, and the training
check's verdicts."""
import numpy as np
import pytest

from course import checks_for, solution
from mha_checks import toy_task
from mha_checks.cases import grouped_args, plain_args, stored_args
from mha_checks.chapters import ch06_what_heads_learn as ch06
from mha_checks.engine import CheckFailure

ASSIGNMENT = "ch06_what_heads_learn"


@pytest.fixture(scope="module")
def sol():
    return solution(ASSIGNMENT, "1_numpy")


# -- the scores, against the design's definitions written as plain loops -------------------------

def previous_by_loops(weights):
    B, H, T, _ = weights.shape
    return np.array([np.mean([weights[b, h, t, t - 1] for b in range(B) for t in range(1, T)]) for h in range(H)])


def induction_by_loops(weights, tokens):
    B, H, T, _ = weights.shape
    scores = []
    for h in range(H):
        per_query = []
        for b in range(B):
            for t in range(T):
                keys = [j for j in range(1, t) if tokens[b, j - 1] == tokens[b, t]]
                if keys:
                    per_query.append(sum(weights[b, h, t, j] for j in keys))
        scores.append(np.mean(per_query) if per_query else 0.0)
    return np.array(scores)


@pytest.mark.parametrize("seed", range(4))
def test_scores_equal_the_design_definitions(sol, seed):
    rng = np.random.default_rng(seed)
    B, H, T = 3, 4, 9
    weights = ch06.causal_maps(rng, B, H, T, np.float64)
    tokens = rng.integers(0, 3, size=(B, T))
    np.testing.assert_allclose(sol["previous_token_score"](weights), previous_by_loops(weights), rtol=1e-12)
    np.testing.assert_allclose(sol["induction_score"](weights, tokens), induction_by_loops(weights, tokens),
                               rtol=1e-12)


def test_perfect_heads_score_one(sol):
    rng = np.random.default_rng(0)
    tokens = toy_task.repeated_patterns(rng, 5, seq_len=16, vocab=10, periods=(3, 5))[0]
    maps = ch06.causal_maps(rng, 5, 3, 16, np.float64)
    maps = ch06._previous_token_head(maps, 0)
    maps = ch06._induction_head(maps, tokens, 2)
    previous, induction = sol["previous_token_score"](maps), sol["induction_score"](maps, tokens)
    assert previous[0] == pytest.approx(1.0) and induction[2] == pytest.approx(1.0)
    assert previous[2] < 0.9 and induction[0] < 0.9


def test_no_repeated_token_scores_zero_not_nan(sol):
    weights = ch06.causal_maps(np.random.default_rng(1), 2, 3, 6, np.float32)
    scores = sol["induction_score"](weights, np.array([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]))
    assert scores.dtype == np.float32 and np.array_equal(scores, np.zeros(3, np.float32))


# -- the toy task ----------------------------------------------------------------------------------

def test_patterns_repeat_distinct_tokens_with_a_period_per_sequence():
    tokens, periods = toy_task.repeated_patterns(np.random.default_rng(0), 200)
    assert tokens.shape == (200, toy_task.SEQ_LEN) and tokens.dtype == np.int64
    assert periods.min() == 4 and periods.max() == 12, "both ends of the period range are drawn"
    for row, p in zip(tokens, periods):
        assert len(set(row[:p].tolist())) == p, "a pattern never repeats a token"
        assert np.array_equal(row[p:], row[:-p]), "the sequence is the pattern repeated"


def test_predictable_positions_start_after_one_period():
    scored = toy_task.predictable([4], seq_len=8)
    # logits at t predict token t+1 (targets 1..7); with period 4, tokens 4..7 repeat earlier ones
    assert scored.tolist() == [[False, False, False, True, True, True, True]]


def test_accuracy_refuses_misshapen_logits():
    with pytest.raises(ValueError, match="expected logits"):
        toy_task.accuracy(np.zeros((2, 5)), np.zeros((2, 5), dtype=int), [4, 4])


def test_a_fixed_period_is_the_same_for_every_sequence():
    _, periods = toy_task.repeated_patterns(np.random.default_rng(0), 10, period=8)
    assert set(periods.tolist()) == {8}
    with pytest.raises(ValueError, match="between 1 and vocab"):
        toy_task.repeated_patterns(np.random.default_rng(0), 1, period=40)


# -- a model as a case argument ------------------------------------------------------------------

def test_a_model_with_a_list_of_layers_survives_storage():
    rng = np.random.default_rng(0)
    model = ch06.small_model(rng, 5, 4, 6, 2, 3, np.float32)
    stored = stored_args(dict(tokens=np.zeros((1, 4), dtype=np.int64), model=model, n_heads=2))
    assert "model.layers.2.w_q" in stored
    back = plain_args(stored)["model"]
    assert isinstance(back["layers"], list) and len(back["layers"]) == 3
    assert np.array_equal(back["layers"][1]["w_o"], model["layers"][1]["w_o"])
    assert set(grouped_args(stored)) == {"tokens", "model", "n_heads"}


# -- the course's trained model ------------------------------------------------------------------

def test_the_numpy_forward_gives_pytorchs_logits(sol):
    model, n_heads = toy_task.load_model()
    recording = toy_task.load_recording()
    logits, weights = sol["attention_only_forward"](recording["tokens"], model, n_heads)
    assert np.abs(logits - recording["logits"]).max() < 1e-4
    assert np.abs(weights - recording["weights"]).max() < 1e-5
    assert toy_task.accuracy(logits, recording["tokens"], recording["periods"]) >= 0.97


def test_the_course_model_has_previous_token_and_induction_heads(sol):
    maps, tokens = toy_task.load_recording()["weights"], toy_task.load_recording()["tokens"]
    previous = sol["previous_token_score"](maps[:, 0])
    induction = sol["induction_score"](maps[:, 1], tokens)
    assert previous.max() > 0.3 and (previous > 0.2).sum() >= 1
    assert induction.min() > 0.8, "every layer-1 head of the course's model is an induction head"
    assert sol["induction_score"](maps[:, 0], tokens).max() < 0.3, "layer 0 alone cannot do induction"


def test_knocking_out_the_previous_token_heads_breaks_induction(sol):
    model, n_heads = toy_task.load_model()
    tokens, periods = toy_task.held_out()
    previous = sol["previous_token_score"](toy_task.load_recording()["weights"][:, 0])

    def knocked(heads):
        layers = [dict(p) for p in model["layers"]]
        layers[0]["w_o"] = sol["knock_out"](layers[0]["w_o"], n_heads, heads)
        logits, maps = sol["attention_only_forward"](tokens, {**model, "layers": layers}, n_heads)
        return toy_task.accuracy(logits, tokens, periods), sol["induction_score"](maps[:, 1], tokens).max()

    prev_heads, other_heads = np.flatnonzero(previous > 0.2), np.flatnonzero(previous <= 0.2)
    accuracy, induction = knocked(prev_heads)
    assert accuracy < 0.5 and induction < 0.4
    accuracy, induction = knocked(other_heads)
    assert accuracy > 0.9 and induction > 0.8


def test_knock_out_leaves_its_input_alone(sol):
    w_o = np.arange(24.0).reshape(6, 4)
    before = w_o.copy()
    out = sol["knock_out"](w_o, 3, [1, 1])
    assert np.array_equal(w_o, before) and not out[2:4].any() and np.array_equal(out[[0, 1, 4, 5]], w_o[[0, 1, 4, 5]])


# -- the training check's verdicts ----------------------------------------------------------------

def training_record(losses, accuracy_logits):
    return {"losses": losses, "logits": accuracy_logits}


def perfect_logits():
    tokens, _ = toy_task.held_out(256, seed=toy_task.HELD_OUT_SEED + 1)
    logits = np.full(tokens.shape + (toy_task.VOCAB,), -5.0, dtype=np.float32)
    np.put_along_axis(logits[:, :-1], tokens[:, 1:, None], 5.0, axis=-1)
    return logits


def judge_training(record):
    return checks_for(ASSIGNMENT, "3_pytorch").judge("training", record)


def test_training_check_passes_a_falling_loss_and_an_accurate_model():
    losses = list(np.linspace(3.5, 0.9, ch06.TRAINING_STEPS))
    assert "\u2714" in judge_training(training_record(losses, perfect_logits()))


def test_training_check_fails_a_loss_that_does_not_fall():
    with pytest.raises(CheckFailure, match="should at least halve"):
        judge_training(training_record([3.5] * ch06.TRAINING_STEPS, perfect_logits()))


def test_training_check_fails_an_inaccurate_model():
    losses = list(np.linspace(3.5, 0.9, ch06.TRAINING_STEPS))
    with pytest.raises(CheckFailure, match="at least 0.9 is expected"):
        judge_training(training_record(losses, np.zeros_like(perfect_logits())))
