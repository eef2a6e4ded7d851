"""Known-wrong Chapter 8 implementations, written the way students get them wrong.

Each mutant replaces one solution cell (by its grade_id) of one notebook. The tests check that
(1) the visible check named by the mutant fails with a message naming the mistake, and (2) grading
a notebook carrying the mutant loses points.
"""
from mha_checks import registry
from mutants import Mutant, filled, of_chapter

FIRST_CHAPTER = registry.assignments()[0]     # softmax, causal_mask, sdpa: pasted into the NumPy and CuPy notebooks
FOURTH_CHAPTER = registry.assignments()[3]    # split/merge heads, multi_head_attention
SEVENTH_CHAPTER = registry.assignments()[6]   # masked_multi_head_attention, head_importance

PRUNE = '''
def prune_heads(params, n_heads, heads):
    d_k = DK
    removed = REMOVED
    kept = [h for h in range(n_heads) if h not in removed]
    columns = np.array([c for h in kept for c in COLUMNS], dtype=np.int64)
    new_params = NEW
    for name, value in params.items():
        if value is None:
            continue
        if name in ("w_q", "w_k", "w_v"):
            new_params[name] = QKV
        elif name in SLICED:
            new_params[name] = ROWS
        else:
            new_params[name] = value.copy()
    return new_params, COUNT
'''
RIGHT = dict(DK='params["w_q"].shape[1] // n_heads', REMOVED="set(int(h) for h in heads)",
             COLUMNS="range(h * d_k, (h + 1) * d_k)", NEW="{}", QKV="value[:, columns]",
             SLICED='("b_q", "b_k", "b_v", "w_o")', ROWS="value[columns]", COUNT="len(kept)")


def prune(**changes) -> str:
    return filled(PRUNE, RIGHT, **changes)


TORCH_PRUNE = prune().replace("np.array(", "torch.tensor(").replace("dtype=np.int64", "dtype=torch.long").replace(
    "value.copy()", "value.clone()")

RANK = '''
def heads_to_prune(importance, alive, count):
    scores = SCORES
    norms = np.sqrt((scores ** 2).sum(axis=AXIS, keepdims=True))
    scores = np.where(norms > 0, scores / np.where(norms > 0, norms, 1), 0)
    L, H = scores.shape
    ranked = sorted((KEY, l, h) for l in range(L) for h in range(H) if ALIVE)
    return [(l, h) for _, l, h in ranked[:count]]
'''
RIGHT_RANK = dict(SCORES="np.where(alive, importance, 0).astype(np.float64)", AXIS="1", KEY="scores[l, h]",
                  ALIVE="alive[l, h]")


def rank(**changes) -> str:
    return filled(RANK, RIGHT_RANK, **changes)


MODEL = '''
def prune_model(model, n_heads, heads):
    counts = COUNTS
    new_layers, new_counts = [], []
    for l, params in enumerate(model["layers"]):
        new_params, new_n = prune_heads(params, counts[l], [h for PAIR in heads if layer == l])
        new_layers.append(new_params)
        new_counts.append(new_n)
    return RESULT
'''
RIGHT_MODEL = dict(COUNTS='[n_heads] * len(model["layers"]) if isinstance(n_heads, (int, np.integer)) else list(n_heads)',
                   PAIR="layer, h", RESULT='{**model, "layers": new_layers}, new_counts')


def model(**changes) -> str:
    return filled(MODEL, RIGHT_MODEL, **changes)


MODULE = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, d_k=None, bias=True):
        super().__init__()
        self.n_heads = n_heads
        width = n_heads * (d_model // n_heads if d_k is None else d_k)
        for name in ("w_q", "w_k", "w_v"):
            setattr(self, name, nn.Parameter(torch.randn(d_model, width) / math.sqrt(d_model)))
        self.w_o = nn.Parameter(torch.randn(width, d_model) / math.sqrt(width))
        if bias:
            for name in ("b_q", "b_k", "b_v"):
                setattr(self, name, nn.Parameter(torch.zeros(width)))
            self.b_o = nn.Parameter(torch.zeros(d_model))

    def forward(self, x, mask=None, head_mask=None):
        params = dict(self.named_parameters())
        heads, weights = attend_per_head(x, params, self.n_heads, mask)
        if head_mask is not None:
            heads = heads * HEAD_MASK
        out = merge_heads(heads) @ self.w_o
        if "b_o" in params:
            out = out + self.b_o
        return out, weights

    def prune_heads(self, heads):
        params = {name: p.detach() for name, p in self.named_parameters()}
        new_params, new_n = prune_heads(params, self.n_heads, heads)
        for name, value in new_params.items():
            SET
        UPDATE
        return self
'''
RIGHT_MODULE = dict(HEAD_MASK="head_mask[..., None, None]", SET="setattr(self, name, nn.Parameter(value.clone()))",
                    UPDATE="self.n_heads = new_n")


def module(**changes) -> str:
    return filled(MODULE, RIGHT_MODULE, **changes)


GATES = '''
class HardConcreteGates(nn.Module):
    beta, gamma, zeta = 2 / 3, -0.1, 1.1

    def __init__(self, shape):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full(tuple(shape), 3.0))

    def forward(self):
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + self.log_alpha) / self.beta)
        else:
            s = torch.sigmoid(self.log_alpha)
        return STRETCH

    def l0_penalty(self):
        return PENALTY
'''
RIGHT_GATES = dict(STRETCH="(s * (self.zeta - self.gamma) + self.gamma).clamp(0, 1)",
                   PENALTY="torch.sigmoid(self.log_alpha - self.beta * math.log(-self.gamma / self.zeta)).sum()")


def gates(**changes) -> str:
    return filled(GATES, RIGHT_GATES, **changes)


MUTANTS = [
    # ---- prune_heads, NumPy
    Mutant("prune_rows_of_w_q", "1_numpy", "prune_heads", "prune_heads", "you removed rows",
           prune(QKV="value[columns]", SLICED='("b_q", "b_k", "b_v")', ROWS="value[columns]")
           .replace('elif name in ("b_q", "b_k", "b_v"):', 'elif name in ("b_q", "b_k", "b_v", "w_o"):')),
    Mutant("prune_columns_of_w_o", "1_numpy", "prune_heads", "prune_heads", "you removed columns",
           prune(SLICED='("b_q", "b_k", "b_v")').replace(
               '        else:\n            new_params[name] = value.copy()',
               '        elif name == "w_o":\n            new_params[name] = value[:, columns]\n'
               '        else:\n            new_params[name] = value.copy()')),
    Mutant("prune_biases_kept_whole", "1_numpy", "prune_heads", "prune_heads", "slice the biases b_q, b_k, b_v",
           prune(SLICED='("w_o",)')),
    Mutant("prune_b_o_sliced", "1_numpy", "prune_heads", "prune_heads", "belongs to no head",
           prune(SLICED='("b_q", "b_k", "b_v", "w_o", "b_o")')),
    Mutant("prune_strided_columns", "1_numpy", "prune_heads", "prune_heads", "every H-th column",
           prune(COLUMNS="range(h, n_heads * d_k, n_heads)")),
    Mutant("prune_keeps_the_listed_heads", "1_numpy", "prune_heads", "prune_heads", "heads lists the heads to remove",
           prune(REMOVED="set(range(n_heads)) - set(int(h) for h in heads)")),
    Mutant("prune_count_not_updated", "1_numpy", "prune_heads", "prune_heads", "still the old count",
           prune(COUNT="n_heads")),
    Mutant("prune_repeat_counted_twice", "1_numpy", "prune_heads", "prune_heads", "a repeat counts once",
           prune(COUNT="n_heads - len(heads)")),
    Mutant("prune_d_k_from_d_model", "1_numpy", "prune_heads", "prune_heads", "never d_model // n_heads",
           prune(DK='params["w_q"].shape[0] // n_heads')),
    Mutant("prune_into_the_input_dict", "1_numpy", "prune_heads", "prune_heads", "the input's dict was changed",
           prune(NEW="params")),
    Mutant("prune_returns_views", "1_numpy", "prune_heads", "prune_heads", "shares memory with the input", '''
def prune_heads(params, n_heads, heads):
    d_k = params["w_q"].shape[1] // n_heads
    removed = set(int(h) for h in heads)
    if not removed:
        return dict(params), n_heads
    kept = [h for h in range(n_heads) if h not in removed]
    columns = np.array([c for h in kept for c in range(h * d_k, (h + 1) * d_k)], dtype=np.int64)
    new_params = {}
    for name, value in params.items():
        if name in ("w_q", "w_k", "w_v"):
            new_params[name] = value[:, columns]
        elif name in ("b_q", "b_k", "b_v", "w_o"):
            new_params[name] = value[columns]
        else:
            new_params[name] = value
    return new_params, len(kept)
'''),
    # ---- prune_model and pruned_forward
    Mutant("model_pairs_read_as_head_layer", "1_numpy", "prune_model", "prune_model", "you read the pairs as (head, layer)",
           model(PAIR="h, layer")),
    Mutant("model_one_count", "1_numpy", "prune_model", "prune_model", "one count per layer",
           model(RESULT='{**model, "layers": new_layers}, new_counts[0]')),
    Mutant("model_changed_in_place", "1_numpy", "prune_model", "prune_model", "the input's dict was changed",
           model(RESULT='model.update(layers=new_layers) or (model, new_counts)')),
    Mutant("forward_first_layer_count", "1_numpy", "pruned_forward", "pruned_forward", "the first layer's head count", '''
def pruned_forward(tokens, model, n_heads):
    count = n_heads if isinstance(n_heads, (int, np.integer)) else n_heads[0]
    T = tokens.shape[1]
    x = model["embed"][tokens] + model["position"][:T]
    for params in model["layers"]:
        x = x + multi_head_attention(x, params, count, causal_mask(T))[0]
    return x @ model["unembed"] + model["b_unembed"]
'''),
    # ---- heads_to_prune
    Mutant("rank_highest_first", "1_numpy", "heads_to_prune", "heads_to_prune", "highest importance",
           rank(KEY="-scores[l, h]")),
    Mutant("rank_dead_heads_too", "1_numpy", "heads_to_prune", "heads_to_prune", "already pruned",
           rank(SCORES="importance.astype(np.float64)", ALIVE="True")),
    Mutant("rank_normalised_as_a_whole", "1_numpy", "heads_to_prune", "heads_to_prune", "each layer's alive importances",
           rank(AXIS="(0, 1)")),
    Mutant("rank_per_layer", "1_numpy", "heads_to_prune", "heads_to_prune", "the same number of heads from every layer",
           rank(KEY="(sorted(scores[l][alive[l]].tolist()).index(scores[l, h]), l)")),
    # ---- questions
    Mutant("toy_steps_counted", "1_numpy", "heads_pruned_before_drop", "heads_pruned_before_drop",
           "the first step below 0.95", "heads_pruned_before_drop = sum(a >= 0.95 for a in toy_curve)"),
    Mutant("toy_first_step_below", "1_numpy", "heads_pruned_before_drop", "heads_pruned_before_drop",
           "the first step below 0.95", "heads_pruned_before_drop = next(k for k, a in enumerate(toy_curve) if a < 0.95)"),
    Mutant("minilm_distractor_of_the_full_model", "1_numpy", "minilm_distractor_test", "minilm_distractor_test",
           "the full model's share", "minilm_distractor_test = minilm_curve[0][3]"),
    Mutant("minilm_distractor_read_as_retrieval", "1_numpy", "minilm_distractor_test", "minilm_distractor_test",
           "the retrieval accuracy", "minilm_distractor_test = next(r for n, _, r, _ in minilm_curve if n == 63)"),
    Mutant("minilm_distractor_failures", "1_numpy", "minilm_distractor_test", "minilm_distractor_test",
           "the share of pairs that fail", "minilm_distractor_test = 1 - minilm_curve[-1][3]"),
    Mutant("parameters_b_o_halved", "1_numpy", "pruned_layer_parameters", "pruned_layer_parameters", "belongs to no head",
           "pruned_layer_parameters = 4 * 384 * 192 + 4 * 192"),
    Mutant("mib_in_float64", "2_cupy", "half_pruned_mib_saved", "half_pruned_mib_saved", "That is for float64",
           "half_pruned_mib_saved = 6 * (4 * 384 * 192 + 3 * 192) * 8 / 2**20"),
    Mutant("maps_with_three_pruned", "2_cupy", "maps_mib_kept", "maps_mib_kept", "3 heads are kept",
           "maps_mib_kept = 8 * 9 * 128 * 128 * 4 / 2**20"),
    Mutant("flops_squared", "2_cupy", "flop_ratio_half", "flop_ratio_half", "does not square",
           "flop_ratio_half = 0.25"),
    Mutant("agreement_read_as_retrieval", "3_pytorch", "minilm_agreement_half", "minilm_agreement_half",
           "the retrieval accuracy", "minilm_agreement_half = next(r for n, _, r, _ in torch_curve if n == 35)"),
    # ---- PyTorch
    Mutant("torch_prune_count_not_updated", "3_pytorch", "prune_heads", "prune_heads", "still the old count",
           TORCH_PRUNE.replace("return new_params, len(kept)", "return new_params, n_heads")),
    Mutant("torch_rank_highest_first", "3_pytorch", "heads_to_prune", "heads_to_prune", "highest importance", '''
def heads_to_prune(importance, alive, count):
    scores = torch.where(alive, importance, 0).double()
    scores = scores / scores.norm(dim=1, keepdim=True)
    L, H = scores.shape
    ranked = sorted((-scores[l, h].item(), l, h) for l in range(L) for h in range(H) if alive[l, h])
    return [(l, h) for _, l, h in ranked[:count]]
'''),
    Mutant("module_n_heads_not_updated", "3_pytorch", "MultiHeadAttention", "module_pruning", "update self.n_heads",
           module(UPDATE="pass")),
    Mutant("module_data_assigned", "3_pytorch", "MultiHeadAttention", "module_pruning", "new nn.Parameter",
           module(SET="getattr(self, name).data = value.clone()")),
    Mutant("module_head_mask_one_shape", "3_pytorch", "MultiHeadAttention", "module_pruning", "per-example head_mask",
           module(HEAD_MASK="head_mask.view(1, -1, 1, 1)")),
    Mutant("gates_not_stretched", "3_pytorch", "HardConcreteGates", "gates", "stretch the concrete sample",
           gates(STRETCH="s")),
    Mutant("gates_penalty_of_log_alpha", "3_pytorch", "HardConcreteGates", "gates", "the probability that each gate",
           gates(PENALTY="torch.sigmoid(self.log_alpha).sum()")),
    Mutant("gates_closed_wrong", "3_pytorch", "gates_closed", "gates_closed", "compare them",
           'gates_closed = "no" if set(closed_heads) <= set(importance_order[:4]) else "yes"'),
    # ---- building blocks pasted from earlier chapters: paid for there, checked again here at 0 points
    *of_chapter(FIRST_CHAPTER, "softmax_no_keepdims_axis0", "causal_mask_upper_triangle", "sdpa_mask_after_softmax"),
    *of_chapter(FOURTH_CHAPTER, "split_heads_reshape_only", "merge_without_transpose", "mha_w_o_forgotten"),
    # (chapter 7's masked_weights_scaled is left out: nothing here reads the masked layer's weights, so it costs no
    # points in this chapter)
    *of_chapter(SEVENTH_CHAPTER, "masked_mask_ignored", "masked_b_o_scaled", "importance_abs_after_mean"),
]
