"""Known-wrong Chapter 7 implementations, written the way students get them wrong.

Each mutant replaces one solution cell (by its grade_id) of one notebook. The tests
check that (1) the visible check named by the mutant fails with a message naming the
mistake, and (2) grading a notebook carrying the mutant loses points.
"""
from mha_checks import registry
from mutants import Mutant, filled, of_chapter

FIRST_CHAPTER = registry.assignments()[0]   # softmax, causal_mask, sdpa: pasted into the NumPy notebook
FOURTH_CHAPTER = registry.assignments()[3]  # split/merge, multi_head_attention, head_contributions

MASKED = '''
def masked_multi_head_attention(x, params, n_heads, head_mask, mask=None):
    heads, weights = attend_per_head(QUERIES, params, n_heads, mask)
    heads = HEADS
    out = merge_heads(heads) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + BIAS
    return out, WEIGHTS
'''
RIGHT_MASKED = dict(QUERIES="x", HEADS="heads * head_mask[:, None, None]", BIAS='params["b_o"]', WEIGHTS="weights")


def masked(**changes) -> str:
    return filled(MASKED, RIGHT_MASKED, **changes)


QUERIES_SCALED = '''
def masked_multi_head_attention(x, params, n_heads, head_mask, mask=None):
    d_k = params["w_q"].shape[1] // n_heads
    scale = np.repeat(head_mask, d_k)
    scaled = dict(params, w_q=params["w_q"] * scale)
    if params.get("b_q") is not None:
        scaled["b_q"] = params["b_q"] * scale
    heads, weights = attend_per_head(x, scaled, n_heads, mask)
    out = merge_heads(heads) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, weights
'''

FORWARD = '''
def masked_forward(tokens, model, n_heads, head_mask):
    T = tokens.shape[1]
    x = model["embed"][tokens] + model["position"][:T]
    maps = []
    for l, params in enumerate(model["layers"]):
        out, weights = masked_multi_head_attention(x, params, n_heads, ROW, causal_mask(T))
        x = RESIDUAL
        maps.append(weights)
    return x @ model["unembed"] + model["b_unembed"], np.stack(maps, axis=1)
'''
RIGHT_FORWARD = dict(ROW="head_mask[l]", RESIDUAL="x + out")


def forward(**changes) -> str:
    return filled(FORWARD, RIGHT_FORWARD, **changes)


LOSS = '''
def predictable_loss(logits, tokens, periods):
    z = LOGITS
    LOG_PROBS
    picked = np.take_along_axis(log_probs, TARGETS[..., None], axis=-1)[..., 0]
    scored = toy_task.predictable(PERIODS, tokens.shape[1])
    return -(picked * scored).sum(axis=1) / DIVISOR
'''
RIGHT_LOSS = dict(LOGITS="logits[:, :-1]", TARGETS="tokens[:, 1:]", PERIODS="periods",
                  LOG_PROBS="z = z - z.max(axis=-1, keepdims=True)\n    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))",
                  DIVISOR="scored.sum(axis=1).astype(logits.dtype)")


def loss(**changes) -> str:
    return filled(LOSS, RIGHT_LOSS, **changes)


DIFFERENCE = '''
def central_difference(f, xi, eps=1e-3):
    quotients = []
    for i in np.ndindex(xi.shape):
        up, down = xi.copy(), xi.copy()
        up[i] += eps
        down[i] -= eps
        quotients.append(QUOTIENT)
    stacked = np.stack(quotients, axis=-1)
    return stacked.reshape(stacked.shape[:-1] + xi.shape)
'''
RIGHT_DIFFERENCE = dict(QUOTIENT="(np.asarray(f(up)) - np.asarray(f(down))) / (2 * eps)")


def difference(**changes) -> str:
    return filled(DIFFERENCE, RIGHT_DIFFERENCE, **changes)


IMPORTANCE = '''
def head_importance(mask_grads):
    importance = MEAN
    norms = NORMS
    return importance / np.where(norms > 0, norms, 1)
'''
RIGHT_IMPORTANCE = dict(MEAN="np.abs(mask_grads).mean(axis=0)",
                        NORMS="np.sqrt((importance ** 2).sum(axis=-1, keepdims=True))")


def importance(**changes) -> str:
    return filled(IMPORTANCE, RIGHT_IMPORTANCE, **changes)


MUTANTS = [
    # ---- the masked layer
    Mutant("masked_weights_scaled", "1_numpy", "masked_multi_head_attention", "masked_multi_head_attention",
           "the attention weights came back multiplied by the head mask",
           masked(WEIGHTS="weights * head_mask[:, None, None]")),
    Mutant("masked_b_o_scaled", "1_numpy", "masked_multi_head_attention", "masked_multi_head_attention",
           "b_o changed with the head mask", masked(BIAS='params["b_o"] * head_mask.sum()')),
    Mutant("masked_queries_scaled", "1_numpy", "masked_multi_head_attention", "masked_multi_head_attention",
           "the head mask went into the attention itself", QUERIES_SCALED),
    Mutant("masked_tiled", "1_numpy", "masked_multi_head_attention", "masked_multi_head_attention",
           "np.tile", '''
def masked_multi_head_attention(x, params, n_heads, head_mask, mask=None):
    heads, weights = attend_per_head(x, params, n_heads, mask)
    d_k = heads.shape[-1]
    out = (merge_heads(heads) * np.tile(head_mask, d_k)) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, weights
'''),
    Mutant("masked_mask_ignored", "1_numpy", "masked_multi_head_attention", "masked_multi_head_attention",
           "the head mask had no effect", masked(HEADS="heads")),
    # ---- the masked model
    Mutant("forward_first_row_everywhere", "1_numpy", "masked_forward", "masked_forward",
           "every layer got head_mask[0]", forward(ROW="head_mask[0]")),
    Mutant("forward_no_residual", "1_numpy", "masked_forward", "masked_forward",
           "the output is added, not substituted", forward(RESIDUAL="out")),
    Mutant("forward_rows_reversed", "1_numpy", "masked_forward", "masked_forward",
           "in reverse order", forward(ROW="head_mask[-1 - l]")),
    # ---- the loss
    Mutant("loss_every_position", "1_numpy", "predictable_loss", "predictable_loss", "every position was scored",
           loss(PERIODS="np.ones_like(periods)")),
    Mutant("loss_logits_shifted", "1_numpy", "predictable_loss", "predictable_loss", "misaligned by one",
           loss(LOGITS="logits[:, 1:]")),
    Mutant("loss_in_bits", "1_numpy", "predictable_loss", "predictable_loss", "in bits",
           loss(LOG_PROBS="log_probs = np.log2(softmax(z, axis=-1))")),
    Mutant("loss_unstable", "1_numpy", "predictable_loss", "predictable_loss", "subtract each row's max",
           loss(LOG_PROBS="log_probs = np.log(np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True))")),
    Mutant("loss_divided_by_all_positions", "1_numpy", "predictable_loss", "predictable_loss", "summed",
           loss(DIVISOR="logits.dtype.type(tokens.shape[1] - 1)")),
    Mutant("loss_one_number", "1_numpy", "predictable_loss", "predictable_loss", "one loss per sequence", '''
def predictable_loss(logits, tokens, periods):
    z = logits[:, :-1]
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
    scored = toy_task.predictable(periods, tokens.shape[1])
    return np.asarray(-(picked * scored).sum() / scored.sum().astype(logits.dtype))
'''),
    # ---- finite differences
    Mutant("difference_forward", "1_numpy", "central_difference", "central_difference", "forward difference", '''
def central_difference(f, xi, eps=1e-3):
    base = np.asarray(f(xi))
    quotients = []
    for i in np.ndindex(xi.shape):
        up = xi.copy()
        up[i] += eps
        quotients.append((np.asarray(f(up)) - base) / eps)
    stacked = np.stack(quotients, axis=-1)
    return stacked.reshape(stacked.shape[:-1] + xi.shape)
'''),
    Mutant("difference_divided_by_eps", "1_numpy", "central_difference", "central_difference",
           "divide by 2 eps", difference(QUOTIENT="(np.asarray(f(up)) - np.asarray(f(down))) / eps")),
    Mutant("difference_all_at_once", "1_numpy", "central_difference", "central_difference",
           "every entry of xi was moved at once", '''
def central_difference(f, xi, eps=1e-3):
    d = (np.asarray(f(xi + eps)) - np.asarray(f(xi - eps))) / (2 * eps)
    return np.broadcast_to(d[..., None], d.shape + (xi.size,)).reshape(d.shape + xi.shape)
'''),
    Mutant("difference_in_place", "1_numpy", "central_difference", "central_difference", "changed xi itself", '''
def central_difference(f, xi, eps=1e-3):
    quotients = []
    for i in np.ndindex(xi.shape):
        xi[i] += eps
        up = np.asarray(f(xi))
        xi[i] -= 2 * eps
        quotients.append((up - np.asarray(f(xi))) / (2 * eps))
    stacked = np.stack(quotients, axis=-1)
    return stacked.reshape(stacked.shape[:-1] + xi.shape)
'''),
    # ---- per-example gradients
    Mutant("gradients_of_the_batch_mean", "1_numpy", "mask_gradients", "mask_gradients", "one loss for the whole batch", '''
def mask_gradients(tokens, periods, model, n_heads, eps=1e-3):
    L = len(model["layers"])

    def loss(head_mask):
        logits, _ = masked_forward(tokens, model, n_heads, head_mask)
        return float(predictable_loss(logits, tokens, periods).mean())

    return central_difference(loss, np.ones((L, n_heads), dtype=model["embed"].dtype), eps)
'''),
    Mutant("gradients_at_zero", "1_numpy", "mask_gradients", "mask_gradients", "head_mask = 0", '''
def mask_gradients(tokens, periods, model, n_heads, eps=1e-3):
    L = len(model["layers"])

    def losses(head_mask):
        logits, _ = masked_forward(tokens, model, n_heads, head_mask)
        return predictable_loss(logits, tokens, periods)

    return central_difference(losses, np.zeros((L, n_heads), dtype=model["embed"].dtype), eps)
'''),
    # ---- importance
    Mutant("importance_abs_after_mean", "1_numpy", "head_importance", "head_importance", "abs was taken after the mean",
           importance(MEAN="np.abs(mask_grads.mean(axis=0))")),
    Mutant("importance_whole_matrix", "1_numpy", "head_importance", "head_importance", "one norm",
           importance(NORMS="np.sqrt((importance ** 2).sum())")),
    Mutant("importance_l1", "1_numpy", "head_importance", "head_importance", "l1 norm",
           importance(NORMS="importance.sum(axis=-1, keepdims=True)")),
    Mutant("importance_columns", "1_numpy", "head_importance", "head_importance", "the columns",
           importance(NORMS="np.sqrt((importance ** 2).sum(axis=0, keepdims=True))")),
    Mutant("importance_nan_for_a_zero_row", "1_numpy", "head_importance", "head_importance", "A zero row stays zero", '''
def head_importance(mask_grads):
    importance = np.abs(mask_grads).mean(axis=0)
    return importance / np.sqrt((importance ** 2).sum(axis=-1, keepdims=True))
'''),
    Mutant("importance_no_abs", "1_numpy", "head_importance", "head_importance", "signed means",
           importance(MEAN="mask_grads.mean(axis=0)", NORMS="np.sqrt((importance ** 2).sum(axis=-1, keepdims=True))")),
    # ---- similarity and the stretch
    Mutant("similarity_dot_products", "1_numpy", "head_similarity", "head_similarity", "raw dot products", '''
def head_similarity(per_head):
    H = per_head.shape[1]
    vectors = np.moveaxis(per_head, 1, 0).reshape(H, -1)
    return vectors @ vectors.T
'''),
    Mutant("similarity_heads_on_axis_0", "1_numpy", "head_similarity", "head_similarity", "the heads are on axis 1", '''
def head_similarity(per_head):
    vectors = per_head.reshape(per_head.shape[0], -1)
    vectors = vectors / np.sqrt((vectors * vectors).sum(axis=1, keepdims=True))
    return vectors @ vectors.T
'''),
    Mutant("similarity_pearson", "1_numpy", "head_similarity", "head_similarity", "centred", '''
def head_similarity(per_head):
    H = per_head.shape[1]
    vectors = np.moveaxis(per_head, 1, 0).reshape(H, -1)
    return np.corrcoef(vectors).astype(per_head.dtype)
'''),
    Mutant("estimate_sign", "1_numpy", "ablation_estimate", "ablation_estimate", "the sign is flipped", '''
def ablation_estimate(mask_grads):
    return mask_grads.mean(axis=0)
'''),
    # ---- questions
    Mutant("costly_head_numbered_by_head", "1_numpy", "most_costly_head", "most_costly_head", "That is h*L + l", """
layer, head = np.unravel_index(ablation["accuracy"].argmin(), ablation["accuracy"].shape)
most_costly_head = int(head * L + layer)
"""),
    Mutant("harmless_heads_in_percent", "1_numpy", "harmless_heads", "harmless_heads", "one point is 0.01", """
harmless_heads = int((np.abs(ablation["accuracy"] - full_accuracy) < 1).sum())
"""),
    Mutant("saturated_agreement_of_the_course_model", "1_numpy", "saturated_agreement", "saturated_agreement",
           "the course's model itself", """
saturated_agreement = round(agreement["all predictable"], 2)
"""),
    Mutant("sweep_maps_in_float64", "2_cupy", "sweep_maps_mib", "sweep_maps_mib", "That is for float64", """
sweep_maps_mib = 8 * 256 * 2 * 4 * 32 * 32 * 8 / 2**20
"""),
    Mutant("difference_passes_one_per_head", "2_cupy", "difference_passes", "difference_passes", "two per head", """
difference_passes = 6 * 12
"""),
    Mutant("agreement_gradient_of_the_contrastive_loss", "3_pytorch", "agreement_gradient", "agreement_gradient",
           "That is the contrastive loss's largest gradient", """
agreement_gradient = contrastive_gradient
"""),
    Mutant("costly_layer_flat_index", "3_pytorch", "minilm_costly_layer", "minilm_costly_layer", "the flat index", """
minilm_costly_layer = minilm_costly_flat
"""),
    # ---- PyTorch
    Mutant("torch_masked_weights_scaled", "3_pytorch", "masked_multi_head_attention", "masked_multi_head_attention",
           "the attention weights came back multiplied by the head mask", '''
def masked_multi_head_attention(x, params, n_heads, head_mask, mask=None):
    heads, weights = attend_per_head(x, params, n_heads, mask)
    out = merge_heads(heads * head_mask[..., None, None]) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, weights * head_mask[..., None, None]
'''),
    Mutant("torch_loss_every_position", "3_pytorch", "predictable_loss", "predictable_loss", "every position was scored", '''
def predictable_loss(logits, tokens, periods):
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none").mean(dim=1)
'''),
    Mutant("torch_gradients_of_the_mean", "3_pytorch", "mask_gradients", "autograd_gradients", "the *mean*", '''
def mask_gradients(model, tokens, periods):
    L, H = len(model.layers), model.layers[0].n_heads
    head_mask = torch.ones(tokens.shape[0], L, H, dtype=model.embed.weight.dtype, requires_grad=True)
    logits, _ = model(tokens, head_mask)
    predictable_loss(logits, tokens, periods).mean().backward()
    return head_mask.grad
'''),
    Mutant("torch_gradients_one_mask", "3_pytorch", "mask_gradients", "autograd_gradients", "one gradient for the whole batch", '''
def mask_gradients(model, tokens, periods):
    L, H = len(model.layers), model.layers[0].n_heads
    head_mask = torch.ones(L, H, dtype=model.embed.weight.dtype, requires_grad=True)
    logits, _ = model(tokens, head_mask)
    predictable_loss(logits, tokens, periods).sum().backward()
    return head_mask.grad
'''),
    Mutant("torch_importance_abs_after_mean", "3_pytorch", "head_importance", "head_importance",
           "abs was taken after the mean", '''
def head_importance(mask_grads):
    importance = mask_grads.mean(dim=0).abs()
    norms = torch.linalg.vector_norm(importance, dim=-1, keepdim=True)
    return importance / torch.where(norms > 0, norms, torch.ones_like(norms))
'''),
    # ---- building blocks pasted from earlier chapters
    *of_chapter(FIRST_CHAPTER, "softmax_no_keepdims_axis0", "causal_mask_upper_triangle", "sdpa_mask_after_softmax"),
    *of_chapter(FOURTH_CHAPTER, "split_heads_reshape_only", "merge_without_transpose", "mha_w_o_forgotten",
                "contributions_add_b_o"),
]
