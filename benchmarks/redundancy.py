"""How redundant the heads are and what pruning them costs, measured with the course's own solutions.

Run ``python -m benchmarks.redundancy`` (``--help`` for the options); about three minutes on
one thread. Every number comes from the chapter 7 and 8 solution notebooks (``TABLE`` names
each function and where it comes from): nothing here re-implements them. The chapter pages,
which must not show graded code, quote this command's committed JSON
(``benchmarks/results/redundancy_cpu.json``). It measures:

1. the course's toy model (chapter 6, ``toy_task.load_model()``) on the 512 held-out
   sequences: each head switched off alone (head mask 0), the change of the predictable
   loss and of the accuracy; Michel et al.'s importance from PyTorch's per-example mask
   gradients, and the NumPy track's finite differences against them; importance on data the
   model has saturated (period 4 only, loss near 0) against harder data (periods 11 and 12),
   each computed on two disjoint halves many times, to see how much of the ranking is noise;
   the similarity of the heads' maps and of their contributions through ``w_o``;
2. iterative pruning of the toy model, one head (12.5%) at a time, importance recomputed
   after each step, accuracy and loss after each;
3. all-MiniLM-L6-v2 (through ``mha_checks.minilm.torch_encoder`` around the chapter 8
   module): each of its 72 heads switched off alone, the agreement of the embeddings with the
   full model's, the retrieval accuracy on the course's held-out sentence pairs, and how often
   a pair's paraphrase is closer than a distractor made of the same words saying something else;
   the same with every head switched off (no attention at all); importance from a contrastive
   loss on the other pairs; iterative pruning, 10% of the heads
   (7) at a time with importance recomputed, the same two measures after each step; the last
   model pruned for real with the module's ``prune_heads``, checked against the masked one.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks import cli
from benchmarks.mha import cpu_name
from benchmarks.solutions import REPO, MissingSolution, load_course  # noqa: F401 - MissingSolution is part of this API

from mha_checks import minilm, toy_task  # noqa: E402 - the course's package, next to this folder
from mha_checks.kit.models import torch_state  # noqa: E402

TABLE = {
    "masked_multi_head_attention": ("ch07_redundancy", "1_numpy", "masked_multi_head_attention"),
    "masked_forward": ("ch07_redundancy", "1_numpy", "masked_forward"),
    "predictable_loss": ("ch07_redundancy", "1_numpy", "predictable_loss"),
    "head_importance": ("ch07_redundancy", "1_numpy", "head_importance"),
    "head_similarity": ("ch07_redundancy", "1_numpy", "head_similarity"),
    "head_contributions": ("ch07_redundancy", "1_numpy", "head_contributions"),
    "fd_mask_gradients": ("ch07_redundancy", "1_numpy", "mask_gradients"),
    "torch_mask_gradients": ("ch07_redundancy", "3_pytorch", "mask_gradients"),
    "AttentionOnlyTransformer": ("ch07_redundancy", "3_pytorch", "AttentionOnlyTransformer"),
    "MultiHeadAttention": ("ch08_pruning", "3_pytorch", "MultiHeadAttention"),
    "heads_to_prune": ("ch08_pruning", "1_numpy", "heads_to_prune"),
}
RESULTS = REPO / "benchmarks" / "results" / "redundancy_cpu.json"
COMMAND = "python -m benchmarks.redundancy --json"
THREADS = 1
FD_SEQUENCES = 16          # sequences whose finite-difference gradients are compared with autograd
HALF = 16                  # sequences in each half of a split-half importance comparison
DRAWS = 50                 # random splits per kind of data
SHARPEN = 8                # the readout's factor that makes the model confident, as longer training would
MINILM_STEP = 7            # heads pruned per step of MiniLM's iterative pruning: 10% of 72, rounded
TEMPERATURE = 0.5          # of the contrastive loss whose gradient gives MiniLM's importance: at 0.05 the loss is
                           # about 0.002, near its minimum, its gradients twenty times smaller (chapter 7's notebook)


def course_functions(solutions_dir: Optional[Path] = None) -> dict:
    return load_course(TABLE, solutions_dir)


# --------------------------------------------------------------------------- small helpers


def r4(x) -> float:
    return round(float(x), 4)


def rounded(array, decimals: int = 4) -> list:
    return np.round(np.asarray(array, dtype=np.float64), decimals).tolist()


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two arrays' entries (no ties in practice)."""
    ra, rb = (np.argsort(np.argsort(np.ravel(v))) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def label(layer: int, head: int) -> str:
    return f"L{layer} H{head}"


def torch_course_model(course: dict, model: Optional[dict] = None):
    """The course's trained model (or ``model``, in the same layout) in the chapter 7 PyTorch
    solution's class, through chapter 7's ``torch_state`` (the inverse of chapter 6's ``course_layout``)."""
    model = toy_task.load_model()[0] if model is None else model
    net = course["AttentionOnlyTransformer"]()
    net.load_state_dict(torch_state(model), strict=False)   # the causal mask buffer stays the class's own
    return net.eval()


# --------------------------------------------------------------------------- 1. the toy model


def AtMask(model, mask):
    """``model`` with a fixed head mask applied inside: ``forward(tokens, head_mask)`` runs
    ``model(tokens, head_mask * mask)``; ``layers`` and ``embed`` are the model's."""
    import torch

    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.layers, self.embed = model, model.layers, model.embed
            self.register_buffer("mask", mask)

        def forward(self, tokens, head_mask=None):
            return self.model(tokens, self.mask if head_mask is None else head_mask * self.mask)
    return Masked()


class Toy:
    """The course's model and held-out set, evaluated with the NumPy solution."""

    def __init__(self, course: dict):
        self.course = course
        self.model, self.n_heads = toy_task.load_model()
        self.L = len(self.model["layers"])
        self.tokens, self.periods = toy_task.held_out()

    def losses(self, head_mask, tokens=None, periods=None, model=None) -> tuple:
        """Each sequence's predictable loss, and the logits."""
        tokens = self.tokens if tokens is None else tokens
        periods = self.periods if periods is None else periods
        model = self.model if model is None else model
        logits, _ = self.course["masked_forward"](tokens, model, self.n_heads, np.asarray(head_mask, np.float32))
        return self.course["predictable_loss"](logits, tokens, periods), logits

    def evaluate(self, head_mask, tokens=None, periods=None) -> tuple:
        tokens = self.tokens if tokens is None else tokens
        periods = self.periods if periods is None else periods
        losses, logits = self.losses(head_mask, tokens, periods)
        return float(np.mean(losses)), toy_task.accuracy(logits, tokens, periods)

    def ones(self):
        return np.ones((self.L, self.n_heads), dtype=np.float32)

    def ablation(self) -> dict:
        base_loss, base_acc = self.evaluate(self.ones())
        rows = []
        for l in range(self.L):
            for h in range(self.n_heads):
                mask = self.ones()
                mask[l, h] = 0
                loss, acc = self.evaluate(mask)
                rows.append({"label": label(l, h), "layer": l, "head": h, "loss": r4(loss), "accuracy": r4(acc),
                             "loss_change": r4(loss - base_loss), "accuracy_change": r4(acc - base_acc)})
        return {"loss": r4(base_loss), "accuracy": r4(base_acc), "heads": rows}

    def torch_gradients(self, tokens, periods, head_mask=None, model=None):
        """Per-example mask gradients ``(N, L, H)`` from the PyTorch solution, at ``head_mask`` (ones by
        default). The solution's ``mask_gradients`` differentiates at a mask of ones; at another mask
        ``m`` it is given the model with ``m`` applied inside, whose gradient at ones is the original
        model's gradient at ``m`` for every head with ``m = 1`` (and 0 for a pruned head)."""
        import torch
        net = torch_course_model(self.course, model)
        if head_mask is not None:
            net = AtMask(net, torch.from_numpy(np.asarray(head_mask, np.float32)))
        grads = self.course["torch_mask_gradients"](net, torch.from_numpy(tokens), torch.from_numpy(periods))
        return np.asarray(grads.detach().numpy(), dtype=np.float64)

    def importance(self) -> dict:
        grads = self.torch_gradients(self.tokens, self.periods)
        importance = self.course["head_importance"](grads)
        fd = self.course["fd_mask_gradients"](self.tokens[:FD_SEQUENCES], self.periods[:FD_SEQUENCES],
                                              self.model, self.n_heads)
        auto = grads[:FD_SEQUENCES]
        return {"importance": rounded(importance, 3), "mean_abs_gradient": rounded(np.abs(grads).mean(0), 5),
                "fd_vs_autograd": {"sequences": FD_SEQUENCES, "max_abs_difference": float(np.abs(fd - auto).max()),
                                   "max_abs_gradient": float(np.abs(auto).max())}}

    def noise(self) -> dict:
        """How reproducible importance is where the loss is near 0. Importance from two disjoint halves
        of the held-out sequences, DRAWS times, on: every predictable position; only the positions after
        two full periods (the periods given to the loss doubled), which the model has saturated; and
        every predictable position of the model with its readout multiplied by SHARPEN, the same
        predictions made with the confidence longer training gives."""
        rng = np.random.default_rng(0)
        sharpened = {**self.model, "unembed": SHARPEN * self.model["unembed"],
                     "b_unembed": SHARPEN * self.model["b_unembed"]}
        kinds = {"all predictable positions": (self.model, self.periods),
                 "after two full periods": (self.model, 2 * self.periods),
                 f"readout x {SHARPEN}": (sharpened, self.periods)}
        out = {}
        for name, (model, periods) in kinds.items():
            losses, _ = self.losses(self.ones(), self.tokens, periods, model)
            grads = self.torch_gradients(self.tokens, periods, model=model)
            correlations = []
            for _ in range(DRAWS):
                order = rng.permutation(len(self.tokens))[:2 * HALF]
                a, b = (self.course["head_importance"](grads[idx]) for idx in (order[:HALF], order[HALF:]))
                correlations.append(rank_correlation(a, b))
            per_example = np.abs(grads).sum(axis=(1, 2))
            top = np.sort(per_example)[::-1][:max(1, len(per_example) // 20)].sum() / per_example.sum()
            out[name] = {"median_loss": float(np.median(losses)), "mean_loss": r4(np.mean(losses)),
                         "mean_abs_gradient": float(np.abs(grads).mean()), "top_5_percent_share": r4(top),
                         "split_half_rank_correlation": {"mean": r4(np.mean(correlations)),
                                                         "min": r4(np.min(correlations)),
                                                         "draws": DRAWS, "half": HALF}}
        return out

    def similarity(self) -> dict:
        """Each layer's head similarity, of the maps and of the contributions, on 64 held-out sequences."""
        tokens = self.tokens[:64]
        T = tokens.shape[1]
        x = self.model["embed"][tokens] + self.model["position"][:T]
        causal = np.tril(np.ones((T, T), dtype=bool))
        out = []
        for l, params in enumerate(self.model["layers"]):
            attention, weights = self.course["masked_multi_head_attention"](
                x, params, self.n_heads, np.ones(self.n_heads, np.float32), causal)
            contributions = self.course["head_contributions"](x, params, self.n_heads, causal)
            maps_sim = self.course["head_similarity"](weights)
            contrib_sim = self.course["head_similarity"](contributions)
            out.append({"layer": l, "maps": rounded(maps_sim, 3), "contributions": rounded(contrib_sim, 3),
                        "most_similar_maps": _most_similar(maps_sim),
                        "most_similar_contributions": _most_similar(contrib_sim)})
            x = x + attention
        return {"sequences": len(tokens), "layers": out}

    def iterative_pruning(self) -> list:
        """One head at a time, lowest importance first (global), importance recomputed at the mask."""
        mask = self.ones()
        loss, acc = self.evaluate(mask)
        steps = [{"kept": int(mask.sum()), "pruned": [], "loss": r4(loss), "accuracy": r4(acc)}]
        while mask.sum() > 1:
            grads = self.torch_gradients(self.tokens, self.periods, head_mask=mask)
            importance = self.course["head_importance"](grads)
            chosen = [tuple(map(int, p)) for p in self.course["heads_to_prune"](importance, mask > 0, 1)]
            for l, h in chosen:
                mask[l, h] = 0
            loss, acc = self.evaluate(mask)
            steps.append({"kept": int(mask.sum()), "pruned": [label(l, h) for l, h in chosen],
                          "loss": r4(loss), "accuracy": r4(acc)})
        return steps


def _most_similar(sim) -> dict:
    sim = np.asarray(sim, dtype=np.float64)
    off = sim - 2 * np.eye(len(sim))
    i, j = np.unravel_index(off.argmax(), off.shape)
    return {"heads": sorted([int(i), int(j)]), "similarity": r4(sim[i, j])}


# --------------------------------------------------------------------------- 3. MiniLM


class MiniLM:
    """all-MiniLM-L6-v2 around the chapter 8 module; head masks (L, H) of floats."""

    def __init__(self, course: dict):
        import torch
        self.torch = torch
        self.encoder = minilm.torch_encoder(course["MultiHeadAttention"])
        self.course = course
        self.L, self.H = len(self.encoder.layers), minilm.N_HEADS
        self.first, self.second = minilm.sentence_pairs("held_out")
        self.distractors = minilm.distractors()
        self.train_first, self.train_second = minilm.sentence_pairs("importance")
        with torch.no_grad():
            self.reference = self.embed(self.first + self.second)

    def embed(self, sentences, head_mask=None):
        mask = None if head_mask is None else self.torch.as_tensor(np.asarray(head_mask, np.float32))
        return self.encoder.embed(sentences, mask).detach().numpy()

    def quality(self, head_mask=None) -> dict:
        """Agreement with the full model and retrieval accuracy on the held-out pairs, and the distractor
        test: the share of pairs whose paraphrase is closer to the first sentence than its distractor is."""
        with self.torch.no_grad():
            emb = self.embed(self.first + self.second, head_mask)
            distractors = self.embed(self.distractors, head_mask)
        n = len(self.first)
        first, second = emb[:n], emb[n:]
        beats = (first * second).sum(axis=1) > (first * distractors).sum(axis=1)
        return {"agreement": r4(minilm.agreement(emb, self.reference)),
                "retrieval": r4(minilm.retrieval_accuracy(first, second)),
                "distractor_test": r4(beats.mean())}

    def ablation(self) -> dict:
        rows = []
        for l in range(self.L):
            for h in range(self.H):
                mask = np.ones((self.L, self.H), np.float32)
                mask[l, h] = 0
                rows.append({"label": label(l, h), "layer": l, "head": h, **self.quality(mask)})
        return {"full": self.quality(), "no_heads": self.quality(np.zeros((self.L, self.H), np.float32)),
                "heads": rows}

    def gradients(self, head_mask) -> np.ndarray:
        """Per-pair gradients ``(N, L, H)`` of the contrastive loss at ``head_mask``: pair i's loss is
        the cross-entropy of picking ``second[i]`` among all the ``second`` sentences for ``first[i]``."""
        torch = self.torch
        import torch.nn.functional as F
        xi = torch.tensor(np.asarray(head_mask, np.float32), requires_grad=True)
        a = self.encoder.embed(self.train_first, xi)
        b = self.encoder.embed(self.train_second, xi)
        losses = F.cross_entropy(a @ b.T / TEMPERATURE, torch.arange(len(a)), reduction="none")
        grads = []
        for i in range(len(losses)):
            (g,) = torch.autograd.grad(losses[i], xi, retain_graph=i + 1 < len(losses))
            grads.append(g.numpy().copy())
        return np.stack(grads)

    def importance(self, head_mask=None) -> np.ndarray:
        mask = np.ones((self.L, self.H), np.float32) if head_mask is None else head_mask
        return self.course["head_importance"](self.gradients(mask))

    def iterative_pruning(self) -> list:
        mask = np.ones((self.L, self.H), np.float32)
        steps = [{"kept": int(mask.sum()), "pruned": [], **self.quality(mask)}]
        last_whole = mask.copy()   # the last mask that leaves every layer a head (a layer of 0 heads has no d_k)
        while mask.sum() > MINILM_STEP:
            importance = self.importance(mask)
            chosen = [tuple(map(int, p)) for p in self.course["heads_to_prune"](importance, mask > 0, MINILM_STEP)]
            for l, h in chosen:
                mask[l, h] = 0
            steps.append({"kept": int(mask.sum()), "pruned": [label(l, h) for l, h in chosen], **self.quality(mask)})
            if mask.sum(axis=1).min() > 0:
                last_whole = mask.copy()
        return steps, last_whole

    def pruned_for_real(self, mask) -> dict:
        """The masked model's heads removed with the module's ``prune_heads``: the same embeddings? Done at the
        last step of the pruning that leaves every layer at least one head."""
        with self.torch.no_grad():
            masked = self.embed(self.first, mask)
            for l, layer in enumerate(self.encoder.layers):
                layer.attention.prune_heads([h for h in range(self.H) if mask[l, h] == 0])
            pruned = self.embed(self.first)
        params = sum(int(p.numel()) for layer in self.encoder.layers for p in layer.attention.parameters())
        return {"kept": int(mask.sum()), "heads_per_layer": self.encoder.n_heads, "attention_parameters": params,
                "max_difference_from_masked": float(np.abs(pruned - masked).max())}


# --------------------------------------------------------------------------- the run


def run(course: dict, minilm_too: bool = True, log=print) -> dict:
    import torch
    torch.set_num_threads(THREADS)
    result = {"config": {"threads": THREADS, "fd_sequences": FD_SEQUENCES, "half": HALF, "draws": DRAWS,
                         "minilm_step": MINILM_STEP, "temperature": TEMPERATURE},
              "environment": {"numpy": np.__version__, "torch": torch.__version__, "processor": cpu_name()}}
    toy = Toy(course)
    started = time.perf_counter()
    result["toy"] = {"held_out": len(toy.tokens), "ablation": toy.ablation()}
    log(f"toy ablation {time.perf_counter() - started:.1f} s")
    result["toy"].update(toy.importance())
    result["toy"]["noise"] = toy.noise()
    result["toy"]["similarity"] = toy.similarity()
    log(f"toy importance, noise, similarity {time.perf_counter() - started:.1f} s")
    result["toy"]["iterative_pruning"] = toy.iterative_pruning()
    log(f"toy pruning {time.perf_counter() - started:.1f} s")
    if minilm_too:
        lm = MiniLM(course)
        result["minilm"] = {"pairs": len(lm.first), "ablation": lm.ablation()}
        log(f"MiniLM ablation {time.perf_counter() - started:.1f} s")
        result["minilm"]["importance"] = rounded(lm.importance(), 3)
        steps, mask = lm.iterative_pruning()
        result["minilm"]["iterative_pruning"] = steps
        result["minilm"]["pruned"] = lm.pruned_for_real(mask)
        log(f"MiniLM pruning {time.perf_counter() - started:.1f} s")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


# --------------------------------------------------------------------------- tables the pages quote


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def ablation_table(result: dict) -> str:
    ab = result["toy"]["ablation"]
    imp = np.array(result["toy"]["importance"])
    lines = [_row(["head switched off", "accuracy", "change", "predictable loss", "change", "importance"]),
             "| --- | ---: | ---: | ---: | ---: | ---: |",
             _row(["none", f"{ab['accuracy']:.3f}", "", f"{ab['loss']:.3f}", "", ""])]
    for row in ab["heads"]:
        lines.append(_row([row["label"], f"{row['accuracy']:.3f}", f"{row['accuracy_change']:+.3f}",
                           f"{row['loss']:.3f}", f"{row['loss_change']:+.3f}",
                           f"{imp[row['layer'], row['head']]:.3f}"]))
    lines += ["", f"Measured by `{COMMAND}` on the {result['toy']['held_out']} held-out sequences; importance "
                  "from PyTorch's per-example mask gradients, each layer's row divided by its l2 norm."]
    return "\n".join(lines)


def noise_table(result: dict) -> str:
    noise = result["toy"]["noise"]
    lines = [_row(["importance computed on", "median loss", "mean abs gradient", "5% of sequences carry",
                   "split-half rank correlation (mean, min)"]),
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, n in noise.items():
        c = n["split_half_rank_correlation"]
        lines.append(_row([name, f"{n['median_loss']:.4f}", f"{n['mean_abs_gradient']:.2e}",
                           f"{n['top_5_percent_share']:.0%}", f"{c['mean']:.2f}, {c['min']:.2f}"]))
    c = next(iter(noise.values()))["split_half_rank_correlation"]
    lines += ["", f"The course's model on its {result['toy']['held_out']} held-out sequences; importance computed on "
                  f"two disjoint halves of {c['half']} sequences, {c['draws']} random splits; the rank correlation "
                  "compares the two halves' rankings of the 8 heads."]
    return "\n".join(lines)


def pruning_table(result: dict) -> str:
    lines = [_row(["heads kept", "pruned this step", "accuracy", "predictable loss"]),
             "| ---: | --- | ---: | ---: |"]
    for s in result["toy"]["iterative_pruning"]:
        lines.append(_row([s["kept"], ", ".join(s["pruned"]) or "—", f"{s['accuracy']:.3f}", f"{s['loss']:.3f}"]))
    return "\n".join(lines)


def minilm_pruning_table(result: dict) -> str:
    steps = result["minilm"]["iterative_pruning"]
    lines = [_row(["heads kept", "share kept", "agreement with the full model", "retrieval accuracy",
                   "paraphrase closer than its distractor"]),
             "| ---: | ---: | ---: | ---: | ---: |"]
    for s in steps:
        lines.append(_row([s["kept"], f"{s['kept'] / steps[0]['kept']:.0%}", f"{s['agreement']:.3f}",
                           f"{s['retrieval']:.3f}", f"{s['distractor_test']:.3f}"]))
    lines += ["", f"Measured by `{COMMAND}`: {MINILM_STEP} heads pruned per step (10% of 72), lowest importance "
                  "first over all layers, importance recomputed after each step from a contrastive loss on the "
                  "48 `importance` pairs; agreement, retrieval and the distractor test on the 48 `held_out` pairs."]
    return "\n".join(lines)


def markdown_tables(result: dict) -> dict:
    tables = {"ablation": ablation_table(result), "noise": noise_table(result), "pruning": pruning_table(result)}
    if "minilm" in result:
        tables["minilm_pruning"] = minilm_pruning_table(result)
    return tables


def parse_args(argv=None):
    p = cli.parser("redundancy", __doc__)
    p.add_argument("--no-minilm", action="store_true", help="skip MiniLM (the toy model only)")
    cli.add_json_option(p, default=RESULTS)
    return p.parse_args(argv)


@cli.reports_missing_solution("redundancy")
def main(argv=None) -> int:
    args = parse_args(argv)
    course = course_functions()
    result = run(course, minilm_too=not args.no_minilm)
    for name, table in markdown_tables(result).items():
        print(f"\n{name}\n{table}")
    if args.json:
        cli.write_json(args.json, cli.json_text(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
