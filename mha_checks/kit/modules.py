"""The PyTorch modules the chapters ask for, checked the same way wherever they come back:
``MultiHeadAttention(d_model, n_heads, d_k=None, bias=True)`` computing the layer with its
own parameters and a head mask (chapters 4, 6 and 7), a per-example head mask ``(B, H)``
(chapter 7), and ``prune_heads`` replacing its parameters with the kept heads' (chapter 8).

Each check is a collect (run in the student's process) and a judge (run in the grader's),
as the engine's ``Custom`` takes them.
"""
import numpy as np

from ..engine import describe_exception, fail, is_close, judge_exception, judge_records, outputs_of, plain_result
from ..engine import worst_mismatch


def collect_module(checks, module_class):
    """The student's MultiHeadAttention with each visible layer's weights: forward with no head mask,
    and with each one-hot head mask and the zero mask (linearity in the head mask is checked in judge)."""
    import torch
    records = []
    for case in checks.cases("multi_head_attention"):
        x, n_heads = case.args["x"], int(case.args["n_heads"])
        given = {k.split(".", 1)[1]: v for k, v in case.args.items() if k.startswith("params.")}
        d_model, width = given["w_q"].shape
        record = {}
        records.append(record)
        try:
            layer = module_class(d_model, n_heads, d_k=width // n_heads, bias="b_o" in given)
            named = dict(layer.named_parameters())
            record["shapes"] = {n: list(p.shape) for n, p in named.items()}
            if set(named) != set(given) or any(tuple(named[n].shape) != given[n].shape for n in given):
                break
            layer = layer.to(torch.float64 if x.dtype == np.float64 else torch.float32)
            with torch.no_grad():
                for n, p in layer.named_parameters():
                    p.copy_(torch.from_numpy(given[n]))
            mask = case.args.get("mask")
            mask = torch.from_numpy(mask) if mask is not None else None
            xt = torch.from_numpy(x.copy())
            dtype = torch.float64 if x.dtype == np.float64 else torch.float32
            with torch.no_grad():
                record["plain"] = plain_result(layer(xt, mask), 2, checks.backend)
                record["ones"] = plain_result(layer(xt, mask, torch.ones(n_heads, dtype=dtype)), 2, checks.backend)
                record["zeros"] = plain_result(layer(xt, mask, torch.zeros(n_heads, dtype=dtype)), 2, checks.backend)
                record["one_hot"] = [plain_result(layer(xt, mask, torch.eye(n_heads, dtype=dtype)[h]), 2,
                                                  checks.backend) for h in range(n_heads)]
        except Exception as exc:
            record.update(describe_exception(exc))
            break
    return records


def judge_module(checks, records):
    name = "MultiHeadAttention"
    for case, record in judge_records(records, checks.cases("multi_head_attention"), name):
        given = {k.split(".", 1)[1]: v.shape for k, v in case.args.items() if k.startswith("params.")}
        shapes = {n: tuple(s) for n, s in record.get("shapes", {}).items()}
        if shapes != given:
            fail(f"{name}(d_model, n_heads, d_k, bias={'b_o' in given}) has parameters {shapes}; expected the "
                 f"course's layout {given}, as nn.Parameter attributes named like params' keys (no biases "
                 "when bias=False).")
        dtype = case.dtype
        out, _ = outputs_of(record["plain"], ("out", "weights"), f"{name}.forward", checks.array_type_name)["out"]
        want = case.expected["out"]
        if out.shape != want.shape or not is_close(out, want, dtype, "cpu"):
            fail(f"{name}.forward for {case.describe()} differs from multi_head_attention's output: forward "
                 "with head_mask=None must be the layer itself.")
        ones = outputs_of(record["ones"], ("out", "weights"), f"{name}.forward", checks.array_type_name)["out"][0]
        if not is_close(ones, want, dtype, "cpu"):
            fail(f"{name}.forward with head_mask = ones differs from forward without a head mask.")
        zeros = outputs_of(record["zeros"], ("out", "weights"), f"{name}.forward", checks.array_type_name)["out"][0]
        b_o = case.args.get("params.b_o", np.zeros(want.shape[-1], want.dtype))
        if not is_close(zeros, np.broadcast_to(b_o, want.shape), dtype, "cpu"):
            fail(f"{name}.forward with every head masked should return b_o alone (the heads' outputs are zeroed "
                 "before w_o; b_o is not scaled): " + worst_mismatch(zeros, np.broadcast_to(b_o, want.shape)) + ".")
        singles = [outputs_of(r, ("out", "weights"), f"{name}.forward", checks.array_type_name)["out"][0]
                   for r in record["one_hot"]]
        summed = sum(s - b_o for s in singles) + b_o
        if not is_close(summed, want, dtype, "cpu"):
            fail(f"{name}.forward: one head at a time (head_mask one-hot) should give that head's contribution "
                 "plus b_o, and these add up to the full output; yours do not. Multiply each head's output by "
                 "its mask entry before w_o (a (1, H, 1, 1) view of head_mask broadcasts over (B, H, T, d_k)).")
    return (f"\u2714 {name} reproduces multi_head_attention with its own parameters, and its head_mask switches "
            "heads on and off (b_o unscaled).")

BATCHED = dict(d_model=12, n_heads=3, d_k=4)


def collect_per_example(checks, module_class):
    import torch
    record = {}
    with torch.random.fork_rng():
        torch.manual_seed(3)
        try:
            layer = module_class(BATCHED["d_model"], BATCHED["n_heads"], d_k=BATCHED["d_k"]).double()
            x = torch.randn(2, 5, BATCHED["d_model"], dtype=torch.float64)
            head_mask = torch.tensor([[1.0, 0.0, 1.0], [0.5, 1.0, 0.0]], dtype=torch.float64)
            with torch.no_grad():
                record["batched"] = layer(x, None, head_mask)[0].numpy()
                record["one_by_one"] = np.concatenate([layer(x[b:b + 1], None, head_mask[b])[0].numpy()
                                                       for b in range(2)])
        except Exception as exc:
            record.update(describe_exception(exc))
    return record


def judge_per_example(checks, record):
    name = "MultiHeadAttention"
    if "raised" in record:
        judge_exception(record, f"{name}(12, 3, d_k=4)(x (2, 5, 12), None, head_mask (2, 3))", name)
    batched, single = np.asarray(record["batched"]), np.asarray(record["one_by_one"])
    if batched.shape != single.shape or not np.allclose(batched, single, rtol=1e-10, atol=1e-12):
        fail(f"{name}.forward with a per-example head mask (B, H) differs from running each example alone with "
             "its own row (H,): multiply the (B, H, T, d_k) heads by head_mask[..., None, None], which "
             "broadcasts (H,) and (B, H) alike.")
    return f"\u2714 {name}: a (B, H) head mask gives each example its own row, like an (H,) mask run per example."

MODULE_SHAPE = dict(d_model=10, n_heads=5, d_k=3)
FIRST_PRUNE, SECOND_PRUNE = [3, 0], [2]           # the second in the pruned module's numbering


def collect_module_pruning(checks, module_class):
    import torch
    record = {}
    d, H, d_k = MODULE_SHAPE["d_model"], MODULE_SHAPE["n_heads"], MODULE_SHAPE["d_k"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        try:
            layer = module_class(d, H, d_k=d_k, bias=True).double()
            with torch.no_grad():
                for p in layer.parameters():
                    p.normal_()
            x = torch.randn(3, 6, d, dtype=torch.float64)
            mask = torch.ones(6, 6, dtype=torch.bool).tril()
            full = dict(layer.named_parameters())
            record["before"] = {n: p.detach().numpy().copy() for n, p in full.items()}
            keep = torch.ones(H, dtype=torch.float64)
            keep[FIRST_PRUNE] = 0
            with torch.no_grad():
                record["masked"] = layer(x, mask, keep)[0].numpy().copy()
                try:
                    record["masked_per_example"] = layer(x, mask, keep.repeat(3, 1))[0].numpy().copy()
                except Exception as exc:
                    record["per_example_error"] = describe_exception(exc)["message"]
            old_ids = {n: id(p) for n, p in full.items()}
            returned = layer.prune_heads(list(FIRST_PRUNE))
            record["returned_self"] = returned is layer or returned is None
            record["n_heads_1"] = int(layer.n_heads)
            named = dict(layer.named_parameters())
            record["shapes_1"] = {n: list(p.shape) for n, p in named.items()}
            record["new_parameters"] = all(id(p) != old_ids.get(n) for n, p in named.items())
            record["all_parameters"] = all(isinstance(p, torch.nn.Parameter) for p in named.values())
            with torch.no_grad():
                record["pruned"] = layer(x, mask)[0].numpy().copy()
                out, weights = layer(x, mask)
                record["weights_1"] = list(weights.shape)
                second_keep = torch.ones(layer.n_heads, dtype=torch.float64)
                second_keep[SECOND_PRUNE] = 0
                record["masked_2"] = layer(x, mask, second_keep)[0].numpy().copy()
            layer.prune_heads(list(SECOND_PRUNE))
            record["n_heads_2"] = int(layer.n_heads)
            record["shapes_2"] = {n: list(p.shape) for n, p in layer.named_parameters()}
            with torch.no_grad():
                record["pruned_2"] = layer(x, mask)[0].numpy().copy()
            out, _ = layer(x, mask)
            out.pow(2).mean().backward()
            record["grads"] = {n: (None if p.grad is None else float(p.grad.abs().sum()))
                               for n, p in layer.named_parameters()}
            record["after"] = {n: p.detach().numpy().copy() for n, p in layer.named_parameters()}
        except Exception as exc:
            record.update(describe_exception(exc))
    return record


def judge_module_pruning(checks, record):
    name = "MultiHeadAttention.prune_heads"
    d, H, d_k = MODULE_SHAPE["d_model"], MODULE_SHAPE["n_heads"], MODULE_SHAPE["d_k"]
    tol = dict(rtol=1e-9, atol=1e-12)
    if "per_example_error" in record or (
            "masked_per_example" in record and not np.allclose(record["masked_per_example"], record["masked"], **tol)):
        fail("MultiHeadAttention.forward with a per-example head_mask of shape (B, H) gives another output than "
             "the same mask of shape (H,): multiply the heads by head_mask[..., None, None] (with a batch axis "
             "in front for a (B, H) mask), which broadcasts both over (B, H, T, d_k).")
    if "n_heads_1" in record and record["n_heads_1"] != H - len(FIRST_PRUNE):
        fail(f"after prune_heads({FIRST_PRUNE}) the module's n_heads is {record['n_heads_1']}, expected "
             f"{H - len(FIRST_PRUNE)}: update self.n_heads, which forward uses to split the heads.")
    if "raised" in record:
        judge_exception(record, f"MultiHeadAttention({d}, {H}, d_k={d_k}).prune_heads({FIRST_PRUNE}), then "
                        f"prune_heads({SECOND_PRUNE})", name)
    kept = [h for h in range(H) if h not in FIRST_PRUNE]
    width = len(kept) * d_k
    expected = {n: ([d, width] if n in ("w_q", "w_k", "w_v") else [width, d] if n == "w_o"
                    else [width] if n in ("b_q", "b_k", "b_v") else [d]) for n in record["before"]}
    if record["shapes_1"] != expected:
        fail(f"after prune_heads({FIRST_PRUNE}) the parameters have shapes {record['shapes_1']}; expected "
             f"{expected}: the kept heads' columns of w_q, w_k, w_v and their biases, their rows of w_o, b_o whole.")
    if not record["all_parameters"] or not record["new_parameters"]:
        fail(f"{name}: replace each sliced entry with a new nn.Parameter (setattr(self, name, "
             "nn.Parameter(sliced))), so that the module registers it, an optimizer built afterwards trains it, "
             "and state_dict saves the pruned shapes.")
    if not np.allclose(record["pruned"], record["masked"], **tol):
        fail(f"the module after prune_heads({FIRST_PRUNE}) does not compute what the full module computes with "
             f"those heads masked (head_mask 0 at {FIRST_PRUNE}): keep the kept heads' own weights, in their order.")
    if record["weights_1"][1] != len(kept):
        fail(f"after pruning, forward returns weights of shape {record['weights_1']}; the head axis must have the "
             f"{len(kept)} heads left.")
    if record["n_heads_2"] != len(kept) - len(SECOND_PRUNE) or not np.allclose(record["pruned_2"], record["masked_2"],
                                                                                 **tol):
        fail(f"pruning a second time (head {SECOND_PRUNE} of the {len(kept)} left) does not give the masked "
             "module's output: the second call must read the module's current n_heads and d_k = w_q.shape[1] // "
             "n_heads, not the sizes it was built with.")
    missing = sorted(n for n, g in record["grads"].items() if not g)
    if missing:
        fail(f"after pruning, a backward pass gives no gradient to {missing}: the pruned module must still train "
             "(new nn.Parameters that forward uses).")
    return (f"\u2714 {name}: pruning {FIRST_PRUNE} and then {SECOND_PRUNE} gives new parameters of the kept heads, "
            "the masked module's output each time, and a module that still trains.")
