"""Chapter 4 checks: merge_heads, multi_head_attention (batched over heads),
head_contributions, the stretch fuse_qkv, the conversions to and from
torch.nn.MultiheadAttention, a multi-head nn.Module, and one attention
sub-layer of the pretrained MiniLM.

In a notebook::

    from mha_checks.chapters.ch04_concat_and_wo import Checks
    check = Checks("numpy")          # or "cupy", "torch"
    check.merge_heads(merge_heads)

The chapter re-declares the building blocks its notebooks ask students to
paste in (chapter 1's softmax and scaled_dot_product_attention, chapter 3's
split_heads), so that their checks run here and a layer built on a faulty
block is judged on top of it. This module only declares; no solution code
lives in it: every expected output and every known mistake is produced by the
reference solution notebook.
"""
import math

import numpy as np

from ..engine import Chapter, Custom, Function, Mistake, Question, describe_exception, fail, is_close
from ..engine import collect_calls, judge_exception, judge_records, outputs_of, plain_result, worst_mismatch
from ..kit import layers
from ..kit.common import normal as _normal
from ..kit.modules import collect_module, judge_module
from .ch01_single_head import SCALED_DOT_PRODUCT_ATTENTION, SOFTMAX
from .ch03_split_heads import SPLIT_HEADS

# --------------------------------------------------------------------------
# merge_heads: (B, H, T, d_k) -> (B, T, H*d_k)
# --------------------------------------------------------------------------


def merge_visible(rng):
    return [dict(x=_normal(rng, (2, 3, 5, 4), np.float64)),       # B, H, T, d_k all differ
            dict(x=_normal(rng, (3, 4, 6, 2), np.float32))]


def merge_hidden(rng):
    return [dict(x=_normal(rng, (4, 5, 3, 7), np.float64)),
            dict(x=_normal(rng, (1, 6, 2, 4), np.float32)),
            dict(x=_normal(rng, (2, 1, 6, 3), np.float32)),       # one head: merging is a reshape
            dict(x=_normal(rng, (5, 2, 7, 3), np.float64))]


def _validate_merge(got, case):
    out = got["out"][0]
    B, H, T, d_k = case.args["x"].shape
    if out.shape == (B, T, H, d_k) and H > 1:
        fail(f"merge_heads of {case.describe()} has shape {out.shape}: the head axis was moved but the heads "
             f"were not merged; reshape to (B, T, H*d_k) = {(B, T, H * d_k)}.")
    if out.shape == (B, H * T, d_k) and H > 1:
        fail(f"merge_heads of {case.describe()} has shape {out.shape}: the heads were stacked along the token "
             f"axis; they go side by side along the features, (B, T, H*d_k) = {(B, T, H * d_k)}.")


# --------------------------------------------------------------------------
# head_contributions: (B, H, T, d_model), what each head writes through its block of w_o
# --------------------------------------------------------------------------

def _b_o_added(sol, x, params, n_heads, mask=None):
    b_o = params.get("b_o")
    if b_o is None:
        return None
    plain = sol["head_contributions"](x, params, n_heads, mask)
    return [plain + b_o, plain + b_o / b_o.dtype.type(n_heads)]


def _validate_contributions(got, case):
    c = got["contributions"][0]
    x, n_heads = case.args["x"], int(case.args["n_heads"])
    B, T, d_model = x.shape
    d_k = case.args["params.w_q"].shape[1] // n_heads
    if c.shape == (B, T, d_model):
        fail(f"head_contributions of {case.describe()} has shape {c.shape}: that is the sum over the heads "
             f"(the layer's output without b_o). Keep one slice per head, (B, H, T, d_model) = "
             f"{(B, n_heads, T, d_model)}.")
    if c.shape == (B, T, n_heads, d_model) and n_heads != T:
        fail(f"head_contributions of {case.describe()} has shape {c.shape}: the head axis goes right after "
             f"the batch axis, (B, H, T, d_model) = {(B, n_heads, T, d_model)}.")
    if c.shape == (B, n_heads, T, d_k) and d_k != d_model:
        fail(f"head_contributions of {case.describe()} has shape {c.shape}: these are the heads' outputs "
             f"before w_o. Each head's (T, d_k) output goes through its own rows h*d_k:(h+1)*d_k of w_o, "
             f"giving (T, d_model).")


# --------------------------------------------------------------------------
# fuse_qkv (stretch): one (d_model, 3*H*d_k) matrix for the three projections
# --------------------------------------------------------------------------

def fuse_visible(rng):
    return [dict(params=layers.layer_params(rng, 6, 2, 4, np.float64)),
            dict(params=layers.layer_params(rng, 10, 2, 5, np.float32, bias=True))]


def fuse_hidden(rng):
    return [dict(params=layers.layer_params(rng, 12, 3, 3, np.float32, bias=True)),    # pruned-style: 9 != 12
            dict(params=layers.layer_params(rng, 8, 4, 2, np.float64)),
            dict(params=layers.layer_params(rng, 7, 1, 5, np.float64, bias=True))]


def _validate_fused(got, case):
    w = got["w_qkv"][0]
    d_model, width = case.args["params.w_q"].shape
    if w.shape == (3, d_model, width):
        fail(f"w_qkv of {case.describe()} has shape {w.shape}: the three matrices were stacked on a new axis. "
             f"Put them side by side along the output axis, (d_model, 3*H*d_k) = {(d_model, 3 * width)}, so that "
             "one x @ w_qkv computes q, k and v at once.")
    if w.shape == (3 * d_model, width):
        fail(f"w_qkv of {case.describe()} has shape {w.shape}: the matrices were joined along the input axis "
             f"(rows). Join them along the output axis (columns): {(d_model, 3 * width)}.")


def _fuse_swapped(sol, params):
    swapped = layers.changed(params, w_q=params["w_k"], w_k=params["w_q"],
                             b_q=params.get("b_k"), b_k=params.get("b_q"))
    return sol["fuse_qkv"](swapped)


# --------------------------------------------------------------------------
# Custom: no Python loop over heads
# --------------------------------------------------------------------------

def _collect_no_head_loop(checks, fn):
    """How many times one call of ``fn`` calls the notebook's scaled_dot_product_attention."""
    if not callable(fn):
        return {"not_callable": type(fn).__name__}
    namespace = getattr(fn, "__globals__", {})
    attention = namespace.get("scaled_dot_product_attention")
    if attention is None:
        return {"no_attention": True}
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return attention(*args, **kwargs)

    case = checks.cases("multi_head_attention")[1]   # four heads
    namespace["scaled_dot_product_attention"] = counting
    try:
        fn(*checks.positional(case, ("x", "params", "n_heads", "mask")))
    except Exception as exc:
        return describe_exception(exc)
    finally:
        namespace["scaled_dot_product_attention"] = attention
    return {"calls": len(calls), "n_heads": int(case.args["n_heads"])}


def _judge_no_head_loop(checks, record):
    name = "multi_head_attention"
    if "not_callable" in record:
        fail(f"{name} is {record['not_callable']}, not a function: run the cell that defines it.")
    if record.get("no_attention"):
        fail("define scaled_dot_product_attention in this notebook (section 0) and call it from "
             f"{name}: the check counts its calls.")
    if "raised" in record:
        judge_exception(record, f"{name} on a four-head layer", name)
    calls, n_heads = record["calls"], record["n_heads"]
    if calls == 1:
        return f"\u2714 {name} calls scaled_dot_product_attention once for all {n_heads} heads: no loop over heads."
    if calls == 0:
        fail(f"{name} never calls your scaled_dot_product_attention: build the layer on it, with the head "
             "axis as one more batch axis, so that one bug is fixed in one place.")
    if calls == n_heads:
        fail(f"{name} calls scaled_dot_product_attention {calls} times for {n_heads} heads: that is the loop "
             "of chapter 3. Split q, k and v into (B, H, T, d_k) and make one call; the head axis is a batch "
             "axis like B.")
    fail(f"{name} calls scaled_dot_product_attention {calls} times for {n_heads} heads; one call must do "
         "all the heads at once.")


# --------------------------------------------------------------------------
# Custom: one self-attention sub-layer of the pretrained MiniLM (NumPy track)
# --------------------------------------------------------------------------

def _minilm_inputs():
    from .. import minilm
    return minilm.layer_inputs(0)


def _minilm_reference(sol):
    out, weights = sol["multi_head_attention"](*_minilm_inputs())
    return {"out": out, "weights": weights}


def _collect_minilm(checks, fn):
    try:
        inputs = _minilm_inputs()
    except ImportError as exc:
        return {"missing": str(exc)[:500]}
    records = collect_calls(fn, [None], lambda _: inputs, 2, checks.backend)
    return {"records": records}


def _judge_minilm(checks, record):
    name = "multi_head_attention"
    if "missing" in record:
        fail(f"MiniLM's weights could not be loaded: {record['missing']} Run the install cell above, "
             "then this check again.")
    (_, call), = judge_records(record["records"], [None], name)
    got = outputs_of(call, ("out", "weights"), name, checks.array_type_name)
    want = checks.cases("minilm_layer")[0].expected
    for label in ("out", "weights"):
        array, dtype = got[label]
        if array.shape != want[label].shape:
            fail(f"on MiniLM's layer 0, {label} has shape {array.shape}, expected {want[label].shape} "
                 "(3 sentences, 12 heads, the longest sentence's tokens).")
        if dtype != "float32":
            fail(f"on MiniLM's float32 weights, {label} came back as {dtype}: keep the input's dtype.")
        if not np.isfinite(array).all():
            fail(f"on MiniLM's layer 0, {label} holds NaN or inf. The shorter sentences are padded, so the mask "
                 "is (B, 1, T): insert the head axis so it broadcasts over (B, H, T, T).")
        if not is_close(array, want[label], "float32", "cpu"):
            fail(f"on MiniLM's layer 0, {label} differs from the model's: {worst_mismatch(array, want[label])}. "
                 f"If {name} passes its own checks, look at what only a real model has: biases on every "
                 "projection, a (B, 1, T) padding mask, float32 throughout.")
    return ("\u2714 your multi_head_attention reproduces self-attention layer 0 of all-MiniLM-L6-v2 "
            "(3 sentences, 12 heads, float32).")


# --------------------------------------------------------------------------
# Customs of the PyTorch track: nn.MultiheadAttention both ways, the module, training
# --------------------------------------------------------------------------

TORCH_PROBLEMS = (  # (seed, B, T, d_model, n_heads, dtype, bias)
    (0, 2, 5, 12, 3, "float64", True),
    (1, 3, 4, 8, 2, "float32", True),
    (2, 2, 6, 12, 4, "float64", False),
    (3, 1, 7, 10, 5, "float32", False),
)
PRUNED_PROBLEM = (4, 2, 5, 12, 3, 3, "float64")  # H*d_k = 9 != d_model: not an nn.MultiheadAttention


def _torch_problem(seed, B, T, d_model, n_heads, dtype, bias):
    rng = np.random.default_rng([4, seed])
    x = _normal(rng, (B, T, d_model), np.dtype(dtype))
    params = layers.layer_params(rng, d_model, n_heads, d_model // n_heads, np.dtype(dtype), bias)
    return x, params


def _torch_reference(sol):
    """The course layer's outputs on TORCH_PROBLEMS, and on the same problems with the projections
    used transposed (what a conversion that forgets nn.Linear's (out, in) layout computes)."""
    produced = {}
    for problem in TORCH_PROBLEMS:
        x, params = _torch_problem(*problem)
        n_heads = problem[4]
        out, weights = sol["multi_head_attention"](x, params, n_heads)
        produced[f"out_{problem[0]}"], produced[f"weights_{problem[0]}"] = out, weights
        transposed = {n: np.ascontiguousarray(params[n].T) for n in ("w_q", "w_k", "w_v")}
        produced[f"in_t_{problem[0]}"] = sol["multi_head_attention"](x, layers.changed(params, **transposed),
                                                                     n_heads)[0]
        produced[f"out_t_{problem[0]}"] = sol["multi_head_attention"](
            x, layers.changed(params, w_o=np.ascontiguousarray(params["w_o"].T)), n_heads)[0]
    return produced


def _state_record(module) -> dict:
    """What the grader needs to rebuild a student's nn.MultiheadAttention: its settings and tensors."""
    return {"type": f"{type(module).__module__}.{type(module).__name__}",
            "batch_first": bool(getattr(module, "batch_first", False)),
            "num_heads": int(getattr(module, "num_heads", -1)),
            "embed_dim": int(getattr(module, "embed_dim", -1)),
            "state": {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}}


def _collect_to_torch(checks, fn):
    import torch
    if not callable(fn):
        return {"not_callable": type(fn).__name__}
    records = []
    for problem in TORCH_PROBLEMS:
        x, params = _torch_problem(*problem)
        try:
            module = fn({k: torch.from_numpy(v) for k, v in params.items()}, problem[4])
            if not isinstance(module, torch.nn.MultiheadAttention):
                records.append({"wrong_type": f"{type(module).__module__}.{type(module).__name__}"})
                break
            records.append(_state_record(module))
        except Exception as exc:
            records.append(describe_exception(exc))
            break
    seed, B, T, d_model, n_heads, d_k, dtype = PRUNED_PROBLEM
    rng = np.random.default_rng([4, seed])
    pruned = layers.layer_params(rng, d_model, n_heads, d_k, np.dtype(dtype))
    try:
        fn({k: torch.from_numpy(v) for k, v in pruned.items()}, n_heads)
        pruned_record = {"raised": None}
    except Exception as exc:
        pruned_record = describe_exception(exc)
    return {"problems": records, "pruned": pruned_record}


def _rebuild(record, d_model, n_heads, dtype, bias):
    """An nn.MultiheadAttention with the student's module's tensors, built from plain data."""
    import torch
    module = torch.nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=record["batch_first"],
                                         dtype=getattr(torch, dtype))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in record["state"].items()})
    return module.eval()


def _judge_to_torch(checks, record):
    import torch
    name = "to_torch_mha"
    if "not_callable" in record:
        fail(f"{name} is {record['not_callable']}, not a function: run the cell that defines it.")
    want = checks.cases("to_torch_mha")[0].expected
    for problem, rec in judge_records(record["problems"], list(TORCH_PROBLEMS), name):
        seed, B, T, d_model, n_heads, dtype, bias = problem
        where = f"d_model {d_model}, {n_heads} heads, {dtype}, {'with' if bias else 'without'} biases"
        if "wrong_type" in rec:
            fail(f"{name} returned {rec['wrong_type']}; return a torch.nn.MultiheadAttention.")
        if rec["num_heads"] != n_heads or rec["embed_dim"] != d_model:
            fail(f"{name} ({where}) built a module with embed_dim {rec['embed_dim']} and num_heads "
                 f"{rec['num_heads']}.")
        if not rec["batch_first"]:
            fail(f"{name} ({where}): the module needs batch_first=True; the course's x is (B, T, d_model), "
                 "while nn.MultiheadAttention's default is (T, B, d_model).")
        has_bias = "in_proj_bias" in rec["state"]
        if has_bias != bias:
            fail(f"{name} ({where}): the module {'has' if has_bias else 'lacks'} biases; create it with "
                 f"bias={bias}, since params {'has' if bias else 'has no'} b_q, b_k, b_v, b_o.")
        dtypes = {str(v.dtype) for v in rec["state"].values()}
        if dtypes != {dtype}:
            fail(f"{name} ({where}): the module's tensors are {', '.join(sorted(dtypes))}; keep the params' "
                 f"dtype, {dtype} (pass dtype= when you create the module).")
        try:
            module = _rebuild(rec, d_model, n_heads, dtype, bias)
        except Exception as exc:
            fail(f"{name} ({where}): its module cannot be rebuilt from its state_dict ({type(exc).__name__}: "
                 f"{str(exc)[:200]}). Fill the module's own tensors (in_proj_weight, out_proj.weight, ...) "
                 "with copy_ rather than replacing them with new shapes.")
        x, _ = _torch_problem(*problem)
        with torch.no_grad():
            xt = torch.from_numpy(x)
            out, weights = module(xt, xt, xt, need_weights=True, average_attn_weights=False)
        out = out.numpy()
        if is_close(out, want[f"out_{seed}"], dtype, "cpu"):
            if not is_close(weights.numpy(), want[f"weights_{seed}"], dtype, "cpu"):
                fail(f"{name} ({where}): the outputs match but the per-head weights do not.")
            continue
        if is_close(out, want[f"in_t_{seed}"], dtype, "cpu"):
            fail(f"{name} ({where}): in_proj_weight holds w_q, w_k, w_v untransposed. nn.Linear-style weights "
                 "are (out, in) and computed as x @ W.T, so the rows of in_proj_weight are w_q.T, then w_k.T, "
                 "then w_v.T.")
        if is_close(out, want[f"out_t_{seed}"], dtype, "cpu"):
            fail(f"{name} ({where}): out_proj.weight holds w_o untransposed; it must be w_o.T, (out, in) = "
                 "(d_model, H*d_k).")
        fail(f"{name} ({where}): nn.MultiheadAttention with your converted weights differs from "
             f"multi_head_attention: {worst_mismatch(out, want[f'out_{seed}'])}. The rows of in_proj_weight "
             "are q's, then k's, then v's; in_proj_bias likewise.")
    pruned = record["pruned"]
    if pruned.get("raised") != "ValueError":
        fail(f"{name} on a pruned-style layer (H*d_k = 9, d_model = 12) "
             + ("returned a module" if pruned.get("raised") is None else f"raised {pruned['raised']}")
             + ": nn.MultiheadAttention needs H*d_k = embed_dim, so raise a ValueError that says so.")
    return (f"\u2714 {name}: nn.MultiheadAttention with your weights gives multi_head_attention's outputs and "
            f"per-head weights on {len(TORCH_PROBLEMS)} layers (float32 and float64, with and without biases), "
            "and a pruned layer is refused with a ValueError.")


MASK_PROBLEMS = (  # (seed, B, T, n_heads, kind)
    (0, 2, 5, 3, "causal"),
    (1, 3, 4, 2, "padding"),
    (2, 2, 6, 4, "per_example"),
)


def _course_mask(seed, B, T, n_heads, kind):
    return layers.layer_mask(np.random.default_rng([5, seed]), kind, B, T)


def _collect_attn_mask(checks, fn):
    import torch
    if not callable(fn):
        return [{"not_callable": type(fn).__name__}]
    records = []
    for problem in MASK_PROBLEMS:
        mask = _course_mask(*problem)
        try:
            got = fn(torch.from_numpy(mask), problem[1], problem[3])
        except Exception as exc:
            records.append(describe_exception(exc))
            break
        records.append(plain_result(got, 1, checks.backend))
    return records


def _judge_attn_mask(checks, records):
    name = "torch_attn_mask"
    for problem, rec in judge_records(records, list(MASK_PROBLEMS), name):
        seed, B, T, n_heads, kind = problem
        mask = _course_mask(*problem)
        got, dtype = outputs_of(rec, ("attn_mask",), name, checks.array_type_name)["attn_mask"]
        where = f"a {kind} mask of shape {mask.shape}, B = {B}, {n_heads} heads"
        if dtype != "bool":
            fail(f"{name} ({where}) returned {dtype}; return a boolean mask (a float mask is added to the scores, "
                 "which means something else).")
        if got.shape not in ((T, T), (B * n_heads, T, T)):
            fail(f"{name} ({where}) returned shape {got.shape}. nn.MultiheadAttention takes a (T, T) attn_mask "
                 f"or one per batch element and head, (B*H, T, T) = {(B * n_heads, T, T)}, batch-major.")
        seen = np.broadcast_to(got, (B * n_heads, T, T)).reshape(B, n_heads, T, T)
        allowed = np.broadcast_to(mask, (B, T, T))[:, None]
        if np.array_equal(seen, np.broadcast_to(allowed, seen.shape)):
            fail(f"{name} ({where}): True must mean the opposite here. In nn.MultiheadAttention's boolean "
                 "attn_mask, True means 'may NOT attend', the reverse of the course's convention.")
        if not np.array_equal(seen, np.broadcast_to(~allowed, seen.shape)):
            fail(f"{name} ({where}): the mask torch sees for some batch element and head is not the course's "
                 "mask, inverted. Repeat each batch element's mask for its H heads in a row (batch-major, "
                 "element b's heads at rows b*H .. b*H + H-1), and keep the query axis.")
    return (f"\u2714 {name}: causal, padding and per-example masks all reach every head of "
            "nn.MultiheadAttention with True = 'may not attend'.")


FROM_TORCH_PROBLEMS = ((0, 12, 3, "float64", True), (1, 8, 4, "float32", False))  # (seed, E, H, dtype, bias)


def _torch_module(seed, E, n_heads, dtype, bias):
    """A seeded nn.MultiheadAttention, with random biases (torch starts them at zero)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = torch.nn.MultiheadAttention(E, n_heads, bias=bias, batch_first=True, dtype=getattr(torch, dtype))
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _collect_from_torch(checks, fn):
    if not callable(fn):
        return [{"not_callable": type(fn).__name__}]
    records = []
    for problem in FROM_TORCH_PROBLEMS:
        try:
            result = fn(_torch_module(*problem))
        except Exception as exc:
            records.append(describe_exception(exc))
            break
        if not isinstance(result, (tuple, list)) or len(result) != 2 or not isinstance(result[0], dict):
            records.append({"structure": type(result).__name__})
            break
        params, n_heads = result
        records.append({"n_heads": int(n_heads) if isinstance(n_heads, (int, np.integer)) else repr(n_heads),
                        "params": {k: plain_result(v, 1, checks.backend)["values"][0]
                                   for k, v in params.items() if v is not None}})
    return records


def _judge_from_torch(checks, records):
    """Each converted projection must act on random rows as the module's own projection does."""
    import torch
    import torch.nn.functional as F
    name = "from_torch_mha"
    for problem, rec in judge_records(records, list(FROM_TORCH_PROBLEMS), name):
        seed, E, n_heads, dtype, bias = problem
        where = f"nn.MultiheadAttention({E}, {n_heads}, bias={bias}), {dtype}"
        if "structure" in rec:
            fail(f"{name} must return (params, n_heads) with params a dict; got {rec['structure']}.")
        if rec["n_heads"] != n_heads:
            fail(f"{name} ({where}) gave n_heads = {rec['n_heads']}; read it from the module's num_heads.")
        expected = {"w_q", "w_k", "w_v", "w_o"} | ({"b_q", "b_k", "b_v", "b_o"} if bias else set())
        if set(rec["params"]) != expected:
            fail(f"{name} ({where}) gave params {sorted(rec['params'])}; expected {sorted(expected)}"
                 + ("" if bias else " (the module has no biases, so leave them out or None)") + ".")
        params = {}
        for key, value in rec["params"].items():
            if not value.get("native"):
                fail(f"{name} ({where}): params['{key}'] is {value.get('type')}; return torch tensors.")
            params[key] = value["array"]
        module = _torch_module(*problem)
        x = torch.randn(7, E, generator=torch.Generator().manual_seed(99), dtype=getattr(torch, dtype))
        with torch.no_grad():
            theirs = dict(zip(("q", "k", "v"), F.linear(x, module.in_proj_weight, module.in_proj_bias).chunk(3, -1)))
            theirs["o"] = module.out_proj(x)
        for short in ("q", "k", "v", "o"):
            w = params[f"w_{short}"]
            if w.shape != (E, E):
                fail(f"{name} ({where}): w_{short} has shape {w.shape}, expected {(E, E)}.")
            ours = x.numpy() @ w + (params[f"b_{short}"] if bias else 0)
            want = theirs[short].numpy()
            if not is_close(ours, want, dtype, "cpu"):
                transposed = x.numpy() @ w.T + (params[f"b_{short}"] if bias else 0)
                if is_close(transposed, want, dtype, "cpu"):
                    fail(f"{name} ({where}): w_{short} is transposed. torch stores (out, in) and computes "
                         f"x @ W.T; the course stores (in, out) and computes x @ W, so take the transpose.")
                fail(f"{name} ({where}): x @ w_{short} + b_{short} differs from the module's own "
                     f"{'out_proj' if short == 'o' else short + ' projection'}: take rows "
                     "0..E-1 of in_proj_weight for q, E..2E-1 for k, 2E..3E-1 for v (and of in_proj_bias).")
    return (f"\u2714 {name}: every converted projection acts like the module's own on random inputs "
            f"({len(FROM_TORCH_PROBLEMS)} modules, with and without biases).")


TRAINING_STEPS = 60


def _collect_training(checks, module_class):
    """A few Adam steps on a fixed toy task: make token t's output the sum of the inputs before it."""
    import torch
    with torch.random.fork_rng():
        torch.manual_seed(0)
        try:
            layer = module_class(8, 2, d_k=4, bias=True).double()
            x = torch.randn(16, 6, 8, dtype=torch.float64)
            mask = torch.tril(torch.ones(6, 6, dtype=torch.bool))
            target = torch.cumsum(x, dim=1) / torch.arange(1, 7, dtype=torch.float64)[:, None]
            optimiser = torch.optim.Adam(layer.parameters(), lr=1e-2)
            losses, grads = [], {}
            for step in range(TRAINING_STEPS):
                out, _ = layer(x, mask)
                loss = ((out - target) ** 2).mean()
                optimiser.zero_grad()
                loss.backward()
                if step == 0:
                    grads = {n: (None if p.grad is None else float(p.grad.abs().sum()))
                             for n, p in layer.named_parameters()}
                optimiser.step()
                losses.append(float(loss.detach()))
        except Exception as exc:
            return describe_exception(exc)
    return {"losses": losses, "grads": grads}


def _judge_training(checks, record):
    name = "MultiHeadAttention"
    if "raised" in record:
        judge_exception(record, f"training {name}(8, 2) for {TRAINING_STEPS} Adam steps", name)
    missing = sorted(n for n, g in record["grads"].items() if not g)
    if missing:
        fail(f"after backward(), {', '.join(missing)} got no gradient: the output does not depend on them "
             "through operations autograd can see (no .detach(), .data, NumPy or torch.tensor(...) on the way).")
    losses = record["losses"]
    if not all(math.isfinite(v) for v in losses):
        fail(f"the loss became NaN or inf while training {name}.")
    if not losses[-1] < 0.5 * losses[0]:
        fail(f"{TRAINING_STEPS} Adam steps took the loss from {losses[0]:.4g} to {losses[-1]:.4g}; a layer whose "
             "gradients reach every parameter halves it easily.")
    return (f"\u2714 {name} trains: every parameter gets a gradient, and {TRAINING_STEPS} Adam steps take the "
            f"loss from {losses[0]:.3g} to {losses[-1]:.3g}.")


# --------------------------------------------------------------------------
# The chapter
# --------------------------------------------------------------------------

LAYER_ARGS = ("x", "params", "n_heads", "mask")

MERGE_HEADS = Function(
    "merge_heads", args=("x",), outputs=("out",),
    doc="merge_heads(x): (B, H, T, d_k) -> (B, T, H*d_k), head h in columns h*d_k:(h+1)*d_k.",
    visible=merge_visible, hidden=merge_hidden,
    mistakes=(Mistake("no_transpose", layers.MERGE_NO_TRANSPOSE, layers.merge_no_transpose),
              Mistake("heads_reversed", layers.MERGE_REVERSED, layers.merge_heads_reversed),
              Mistake("interleaved", layers.MERGE_INTERLEAVED, layers.merge_interleaved)),
    validate=_validate_merge)

MULTI_HEAD_ATTENTION = Function(
    "multi_head_attention", args=LAYER_ARGS, outputs=("out", "weights"),
    doc="multi_head_attention(x, params, n_heads, mask=None) -> (out (B, T, d_model), weights (B, H, T, T)).",
    visible=layers.layer_visible, hidden=layers.layer_hidden,
    mistakes=layers.layer_mistakes("multi_head_attention"),
    validate=layers.validate_layer_weights, diagnose=layers.diagnose_layer,
    uses=("split_heads", "scaled_dot_product_attention", "merge_heads"),
    inherited=(layers.inherited_from_attention("multi_head_attention")
               + layers.inherited_from_split("multi_head_attention")
               + layers.inherited_from_merge("multi_head_attention")))

HEAD_CONTRIBUTIONS = Function(
    "head_contributions", args=LAYER_ARGS, outputs=("contributions",),
    doc="head_contributions(x, params, n_heads, mask=None) -> (B, H, T, d_model): each head through its rows "
        "of w_o, without b_o.",
    visible=layers.layer_visible, hidden=layers.layer_hidden,
    mistakes=layers.layer_mistakes("head_contributions", adds_b_o=False) + (
        Mistake("b_o_added", "b_o was added to the heads' contributions: it belongs to the layer, not to any "
                "head. Leave it out here; the layer's output is the sum over heads plus b_o, once.", _b_o_added),),
    validate=_validate_contributions, diagnose=layers.diagnose_layer,
    uses=("split_heads", "scaled_dot_product_attention"),
    inherited=(layers.inherited_from_attention("head_contributions")
               + layers.inherited_from_split("head_contributions")))

FUSE_QKV = Function(
    "fuse_qkv", args=("params",), outputs=("w_qkv", "b_qkv"), tracks=("numpy",),
    doc="fuse_qkv(params) (stretch) -> (w_qkv (d_model, 3*H*d_k), b_qkv (3*H*d_k,)): q, k, v in one product.",
    visible=fuse_visible, hidden=fuse_hidden,
    mistakes=(Mistake("q_k_swapped", "the blocks are in the wrong order: q's columns first, then k's, then v's.",
                      _fuse_swapped),),
    validate=_validate_fused)


# --------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------

def _batch_key_mask():
    """The key-padding mask (B, T) of MiniLM's example batch, True for real tokens."""
    from .. import minilm
    return minilm.tokenize(minilm.SENTENCES)[1]


QUESTIONS = (
    Question(
        "padding_keys", notebook="1_numpy", tracks=("numpy",),
        doc="How many key positions of MiniLM's example batch are padding (mask False)?",
        answer=lambda sol: sol["padding_keys"],
        mistakes=(
            Mistake("query_key_pairs", "That counts (query, key) pairs. The mask is (B, 1, T): one row of keys "
                    "per sentence, shared by all its queries, so count each padding key once.",
                    lambda sol: int((~_batch_key_mask()).sum()) * _batch_key_mask().shape[1]),
            Mistake("real_tokens", "That counts the real tokens (True); padding keys are the False entries.",
                    lambda sol: int(_batch_key_mask().sum())),
        ),
        hint="Padding is where the mask is False: invert it and count."),
    Question(
        "pruned_w_o_rows", notebook="1_numpy", tracks=("numpy",),
        doc="After removing 4 of MiniLM's 12 heads from a layer, how many rows does its w_o have?",
        answer=lambda sol: sol["pruned_w_o_rows"],
        mistakes=(
            Mistake("d_model", "w_o has one row per feature of the concatenated heads, H*d_k, not d_model: "
                    "d_model is its number of columns, which pruning does not change.", lambda sol: 384),
            Mistake("heads", "w_o has a block of d_k = 32 rows per head, not one row per head.", lambda sol: 8),
        ),
        hint="Each of the 8 remaining heads keeps its block of d_k = 384 / 12 rows."),
    Question(
        "merge_copy_mib", notebook="2_cupy", tracks=("cupy",),
        doc="How many MiB does merge_heads copy for float32 heads (B, H, T, d_k) = (8, 12, 1024, 64)?",
        answer=lambda sol: sol["merge_copy_mib"],
        mistakes=(
            Mistake("float64", "That is for float64; these heads are float32, 4 bytes a number.",
                    lambda sol: 2 * sol["merge_copy_mib"]),
            Mistake("megabytes", "That is in MB (10^6 bytes); a MiB is 2^20 bytes.",
                    lambda sol: sol["merge_copy_mib"] * 2**20 / 1e6),
            Mistake("one_head", "That is one head; the merge copies all 12.", lambda sol: sol["merge_copy_mib"] / 12),
        ),
        hint="The merge writes a new array as large as its input: multiply the sizes and the bytes per number."),
    Question(
        "transpose_copies", notebook="2_cupy", tracks=("cupy",), kind="choice", choices=("yes", "no"),
        doc="Does x.transpose(0, 2, 1, 3) on its own copy the data of x? ('yes' or 'no')",
        answer=lambda sol: sol["transpose_copies"],
        mistakes=(Mistake("yes", "A transpose returns a view: the same memory with new strides. The copy happens "
                          "later, when reshape (or ascontiguousarray) needs the data in the new order.",
                          lambda sol: "yes"),),
        hint="Compare x.data.ptr with the transpose's, and look at its flags.c_contiguous."),
    Question(
        "torch_mha_parameter_count", notebook="3_pytorch", tracks=("torch",),
        doc="How many numbers does nn.MultiheadAttention(48, 6) learn?",
        answer=lambda sol: sol["torch_mha_parameter_count"],
        mistakes=(
            Mistake("no_bias", "That leaves out the biases: in_proj_bias (3E) and out_proj.bias (E) are learned "
                    "too.", lambda sol: 4 * 48 * 48),
            Mistake("per_head", "The heads share in_proj_weight: splitting E into 6 heads of 8 does not multiply "
                    "the parameters by 6.", lambda sol: 6 * (4 * 48 * 48 + 4 * 48)),
            Mistake("no_out_proj", "That leaves out the output projection, out_proj (E*E weights and E biases).",
                    lambda sol: 3 * 48 * 48 + 3 * 48),
        ),
        hint="Sum p.numel() over the module's parameters: in_proj_weight, in_proj_bias, out_proj.weight, "
             "out_proj.bias."),
    Question(
        "attn_mask_true_means", notebook="3_pytorch", tracks=("torch",), kind="choice", choices=("a", "b"),
        doc="In nn.MultiheadAttention's boolean attn_mask, True means (a) 'may attend' or (b) 'may not attend'?",
        answer=lambda sol: sol["attn_mask_true_means"],
        mistakes=(Mistake("course_convention", "That is the course's convention (and F.scaled_dot_product_"
                          "attention's); nn.MultiheadAttention's boolean masks mark what to leave out.",
                          lambda sol: "a"),),
        hint="Run the layer with a mask that is True at one key only and look at which weight becomes 0."),
)

CHAPTER = Chapter(
    "ch04_concat_and_wo",
    functions=(SOFTMAX, SCALED_DOT_PRODUCT_ATTENTION, SPLIT_HEADS, MERGE_HEADS, MULTI_HEAD_ATTENTION,
               HEAD_CONTRIBUTIONS, FUSE_QKV),
    questions=QUESTIONS,
    custom=(
        Custom("no_head_loop", "multi_head_attention calls scaled_dot_product_attention once for all heads.",
               _collect_no_head_loop, _judge_no_head_loop, tracks=("numpy", "cupy", "torch")),
        Custom("minilm_layer", "multi_head_attention reproduces self-attention layer 0 of all-MiniLM-L6-v2.",
               _collect_minilm, _judge_minilm, tracks=("numpy",), reference=_minilm_reference),
        Custom("to_torch_mha", "to_torch_mha(params, n_heads) builds an nn.MultiheadAttention that computes the "
               "course's layer.", _collect_to_torch, _judge_to_torch, tracks=("torch",), reference=_torch_reference),
        Custom("torch_attn_mask", "torch_attn_mask(mask, batch, n_heads) turns a course mask into "
               "nn.MultiheadAttention's boolean attn_mask.", _collect_attn_mask, _judge_attn_mask,
               tracks=("torch",)),
        Custom("from_torch_mha", "from_torch_mha(mha) -> (params, n_heads) in the course's layout.",
               _collect_from_torch, _judge_from_torch, tracks=("torch",)),
        Custom("module", "MultiHeadAttention(d_model, n_heads, d_k=None, bias=True) computes the layer with its "
               "own parameters, with a head_mask.", collect_module, judge_module, tracks=("torch",),
               target="module_class"),
        Custom("training", "MultiHeadAttention trains: gradients reach every parameter and Adam lowers a loss.",
               _collect_training, _judge_training, tracks=("torch",), target="module_class"),
    ))

Checks = CHAPTER.checks_class()
