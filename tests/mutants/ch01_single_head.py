"""Known-wrong Chapter 1 implementations, written the way students get them wrong.

Each mutant replaces one solution cell (by its grade_id) of one notebook. The tests
check that (1) the visible check for that function fails with a message naming the
mistake, and (2) grading a notebook carrying the mutant loses points.
"""
from mutants import Mutant

SDPA_HEAD = "def scaled_dot_product_attention(q, k, v, mask=None):\n"
# The correct rest of a NumPy attention after its scores line: mutants that get
# only the scores wrong are SDPA_HEAD + one wrong line + this.
CORRECT_MASKED_SOFTMAX = """\
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
        scores = np.where(np.any(mask, axis=-1, keepdims=True), scores, 0.0)
    weights = softmax(scores)
    if mask is not None:
        weights = np.where(mask, weights, 0.0)
    return weights @ v, weights
"""

MUTANTS = [
    Mutant("softmax_no_max_subtraction", "1_numpy", "softmax", "softmax", "Subtract the maximum", """
def softmax(x, axis=-1):
    exps = np.exp(x)
    return exps / exps.sum(axis=axis, keepdims=True)
"""),
    Mutant("softmax_ignores_axis", "1_numpy", "softmax", "softmax", "another axis", """
def softmax(x, axis=-1):
    shifted = x - x.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=-1, keepdims=True)
"""),
    Mutant("softmax_no_keepdims_axis0", "1_numpy", "softmax", "softmax", "another axis", """
def softmax(x, axis=-1):
    shifted = x - x.max(axis=0)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=0)
"""),
    Mutant("softmax_promotes_float32", "1_numpy", "softmax", "softmax", "float64, but the inputs are float32", """
def softmax(x, axis=-1):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=axis, keepdims=True)
"""),
    Mutant("causal_mask_upper_triangle", "1_numpy", "causal_mask", "causal_mask", "upper triangle", """
def causal_mask(T):
    return np.triu(np.ones((T, T), dtype=bool))
"""),
    Mutant("causal_mask_no_diagonal", "1_numpy", "causal_mask", "causal_mask", "diagonal must be True", """
def causal_mask(T):
    return np.tril(np.ones((T, T), dtype=bool), k=-1)
"""),
    Mutant("causal_mask_float", "1_numpy", "causal_mask", "causal_mask", "return booleans", """
def causal_mask(T):
    return np.tril(np.ones((T, T)))
"""),
    Mutant("sdpa_no_scale", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "not divided by sqrt(d_k)", SDPA_HEAD + """
    scores = q @ np.swapaxes(k, -1, -2)
""" + CORRECT_MASKED_SOFTMAX),
    Mutant("sdpa_scale_by_d", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "divided by d_k instead of sqrt(d_k)", SDPA_HEAD + """
    scores = q @ np.swapaxes(k, -1, -2) / q.shape[-1]
""" + CORRECT_MASKED_SOFTMAX),
    Mutant("sdpa_mask_after_softmax", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "applied after the softmax", SDPA_HEAD + """
    weights = softmax(q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]))
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights
"""),
    Mutant("sdpa_mask_flipped", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "wrong way round", SDPA_HEAD + """
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    mask = None if mask is None else ~mask
""" + CORRECT_MASKED_SOFTMAX),
    Mutant("sdpa_nan_on_fully_masked_row", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "gave NaN", SDPA_HEAD + """
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    with np.errstate(invalid="ignore"):
        weights = softmax(scores)
    return weights @ v, weights
"""),
    Mutant("sdpa_uniform_fully_masked_row", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "all masked got non-zero weights", SDPA_HEAD + """
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -1e9)
    weights = softmax(scores)
    return weights @ v, weights
"""),
    Mutant("sdpa_promotes_float32", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "float64, but the inputs are float32", SDPA_HEAD + """
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
""" + CORRECT_MASKED_SOFTMAX),
    Mutant("sdpa_k_dot_T", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "Hint: check the shapes", SDPA_HEAD + """
    scores = q @ k.T / math.sqrt(q.shape[-1])
""" + CORRECT_MASKED_SOFTMAX),
    Mutant("sdpa_softmax_over_queries", "1_numpy", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "softmax over the wrong axis", SDPA_HEAD + """
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    weights = softmax(scores, axis=-2)
    if mask is not None:
        weights = np.where(mask, weights, 0.0)
    return weights @ v, weights
"""),
    Mutant("single_head_transposed_weights", "1_numpy", "single_head_attention", "single_head_attention",
           "Weights are (d_in, d_out)", """
def single_head_attention(x, w_q, w_k, w_v, mask=None):
    return scaled_dot_product_attention(x @ w_q.T, x @ w_k.T, x @ w_v.T, mask)
"""),
    Mutant("single_head_scale_d_model", "1_numpy", "single_head_attention", "single_head_attention",
           "sqrt(d_model)", """
def single_head_attention(x, w_q, w_k, w_v, mask=None):
    q = x @ w_q * math.sqrt(w_q.shape[1]) / math.sqrt(x.shape[-1])
    return scaled_dot_product_attention(q, x @ w_k, x @ w_v, mask)
"""),
    Mutant("single_head_values_unprojected", "1_numpy", "single_head_attention", "single_head_attention",
           "has shape", """
def single_head_attention(x, w_q, w_k, w_v, mask=None):
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x, mask)
"""),
    Mutant("torch_mask_flipped", "3_pytorch", "scaled_dot_product_attention", "scaled_dot_product_attention",
           "wrong way round", SDPA_HEAD + """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
        scores = torch.where((~mask).any(dim=-1, keepdim=True), scores, 0.0)
    weights = softmax(scores)
    if mask is not None:
        weights = weights.masked_fill(mask, 0.0)
    return weights @ v, weights
"""),
    Mutant("torch_numpy_detour", "3_pytorch", "scaled_dot_product_attention", "gradient",
           "not connected", SDPA_HEAD + """
    import numpy as np
    qn, kn, vn = (t.detach().numpy() for t in (q, k, v))
    scores = qn @ np.swapaxes(kn, -1, -2) / math.sqrt(qn.shape[-1])
    if mask is not None:
        m = mask.numpy()
        scores = np.where(m, scores, -np.inf)
        scores = np.where(m.any(axis=-1, keepdims=True), scores, 0.0)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = weights / weights.sum(axis=-1, keepdims=True)
    if mask is not None:
        weights = np.where(m, weights, 0.0)
    return torch.from_numpy(weights @ vn), torch.from_numpy(weights)
"""),

    # the stretch exercise
    Mutant("padding_mask_one_too_many", "1_numpy", "padding_mask", "padding_mask", "one padding key too many", """
def padding_mask(lengths, T):
    return (np.arange(T) <= np.asarray(lengths)[:, None])[:, None, :]
"""),
    Mutant("padding_mask_no_query_axis", "1_numpy", "padding_mask", "padding_mask", "give it the query axis", """
def padding_mask(lengths, T):
    return np.arange(T) < np.asarray(lengths)[:, None]
"""),
    # questions: known wrong answers (their visible check only confirms the form)
    Mutant("variance_growth_of_the_std", "1_numpy", "variance_growth", "variance_growth", "standard deviation", """
rng = np.random.default_rng(7)


def dot_product_std(d_k, n_pairs=20_000):
    return np.std(np.sum(rng.standard_normal((n_pairs, d_k)) * rng.standard_normal((n_pairs, d_k)), axis=-1))


variance_growth = dot_product_std(64) / dot_product_std(16)
"""),
    Mutant("sleeps_cat_weight_read_transposed", "1_numpy", "sleeps_cat_weight", "sleeps_cat_weight",
           "what 'Cat' gives 'sleeps'", """
sleeps_cat_weight = round(float(head_1[0, 1]), 2)
"""),
    Mutant("sleeps_cat_weight_from_the_page", "1_numpy", "sleeps_cat_weight", "sleeps_cat_weight",
           "two-token sentence of the chapter page", """
sleeps_cat_weight = 0.5
"""),
    Mutant("masked_first_weight_after_softmax", "1_numpy", "masked_first_weight", "masked_first_weight",
           "after the softmax", """
masked_first_weight = float(softmax(np.array([2.0, 1.0, 0.0]))[0])
"""),
    Mutant("weights_mib_in_float64", "2_cupy", "weights_mib", "weights_mib", "float64", """
weights_mib = 8 * 1024 * 1024 * 8 / 2**20
"""),
    Mutant("asnumpy_waits_no", "2_cupy", "asnumpy_waits", "asnumpy_waits", "can only be copied", """
asnumpy_waits = "no"
"""),
    Mutant("weight_grad_shape_of_the_output", "3_pytorch", "weight_grad_shape", "weight_grad_shape",
           "each number of the tensor it belongs to", """
weight_grad_shape = "b"
"""),
    Mutant("head_parameter_count_square_values", "3_pytorch", "head_parameter_count", "head_parameter_count",
           "here d_v = 6", """
head_parameter_count = 3 * 16 * 4
"""),
]
