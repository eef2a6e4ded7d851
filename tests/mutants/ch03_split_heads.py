"""Known-wrong Chapter 3 implementations, written the way students get them wrong.

Each mutant replaces one solution cell (by its grade_id) of one notebook. The tests
check that (1) the visible check for that function fails with a message naming the
mistake, and (2) grading a notebook carrying the mutant loses points. The chapter-1
blocks pasted at the top of each notebook have mutants too: their check is worth no
points here, so each of theirs is a mistake that also breaks the loop over heads.
"""
from mha_checks import registry
from mutants import Mutant, of_chapter

FIRST_CHAPTER = registry.assignments()[0]  # whose softmax and attention the notebooks paste in

SPLIT_HEAD = '''
def split_heads(x, n_heads):
    B, T, d_model = x.shape
    if d_model % n_heads != 0:
        raise ValueError(f"d_model = {d_model} is not a multiple of n_heads = {n_heads}")
    d_k = d_model // n_heads
'''

LOOP_HEAD = "def multi_head_attention_loop(x, params, n_heads, mask=None):\n"
# The usual projections of head h's block, for the loop mutants below.
PROJECT = '''
    def project(name, block):
        bias = params.get(f"b_{name}")
        projected = x @ params[f"w_{name}"][:, block]
        return projected if bias is None else projected + bias[block]
'''
HEADS = '''
    outputs, maps = [], []
    for h in range(n_heads):
        block = slice(h * d_k, (h + 1) * d_k)
        out_h, weights_h = scaled_dot_product_attention(project("q", block), project("k", block),
                                                         project("v", block), mask)
        outputs.append(out_h)
        maps.append(weights_h)
'''
CORRECT_OUTPUT = '''
    out = np.concatenate(outputs, axis=-1) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, np.stack(maps, axis=1)
'''
D_K = '    d_k = params["w_q"].shape[1] // n_heads\n'

MUTANTS = [
    # split_heads
    Mutant("split_reshape_without_transpose", "1_numpy", "split_heads", "split_heads",
           "did you reshape without transposing the head axis?", SPLIT_HEAD + """
    return x.reshape(B, n_heads, T, d_k)
"""),
    Mutant("split_head_axis_not_moved", "1_numpy", "split_heads", "split_heads",
           "you reshaped but did not move the head axis", SPLIT_HEAD + """
    return x.reshape(B, T, n_heads, d_k)
"""),
    Mutant("split_strided", "1_numpy", "split_heads", "split_heads", "every H-th feature", SPLIT_HEAD + """
    return x.reshape(B, T, d_k, n_heads).transpose(0, 3, 1, 2)
"""),
    Mutant("split_last_axes_swapped", "1_numpy", "split_heads", "split_heads", "the last two axes are swapped",
           SPLIT_HEAD + """
    return x.reshape(B, T, n_heads, d_k).transpose(0, 2, 3, 1)
"""),
    Mutant("split_promotes_float32", "1_numpy", "split_heads", "split_heads", "float64, but the inputs are float32",
           SPLIT_HEAD + """
    x = np.asarray(x, dtype=float)
    return x.reshape(B, T, n_heads, d_k).transpose(0, 2, 1, 3)
"""),
    # split_heads' error
    Mutant("split_error_from_numpy", "1_numpy", "split_heads", "split_heads_error", "the library's own reshape error",
           """
def split_heads(x, n_heads):
    B, T, d_model = x.shape
    return x.reshape(B, T, n_heads, d_model // n_heads).transpose(0, 2, 1, 3)
"""),
    Mutant("split_error_assert", "1_numpy", "split_heads", "split_heads_error", "Raise a ValueError", """
def split_heads(x, n_heads):
    B, T, d_model = x.shape
    assert d_model % n_heads == 0, f"{d_model} features do not split into {n_heads} heads"
    return x.reshape(B, T, n_heads, d_model // n_heads).transpose(0, 2, 1, 3)
"""),
    Mutant("split_error_without_the_sizes", "1_numpy", "split_heads", "split_heads_error",
           "names both sizes only if it says", """
def split_heads(x, n_heads):
    B, T, d_model = x.shape
    if d_model % n_heads:
        raise ValueError("d_model must be divisible by n_heads")
    return x.reshape(B, T, n_heads, d_model // n_heads).transpose(0, 2, 1, 3)
"""),
    # the loop over heads
    Mutant("loop_d_k_from_d_model", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "never d_model // n_heads", LOOP_HEAD + "    d_k = x.shape[-1] // n_heads\n" + PROJECT + HEADS
           + CORRECT_OUTPUT),
    Mutant("loop_scaled_by_sqrt_d_model", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "divided by sqrt(d_model) instead of sqrt(d_k)", LOOP_HEAD + D_K + PROJECT + """
    outputs, maps = [], []
    for h in range(n_heads):
        block = slice(h * d_k, (h + 1) * d_k)
        q, k, v = project("q", block), project("k", block), project("v", block)
        scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(x.shape[-1])
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
            scores = np.where(np.any(mask, axis=-1, keepdims=True), scores, 0.0)
        weights_h = softmax(scores)
        if mask is not None:
            weights_h = np.where(mask, weights_h, 0.0)
        outputs.append(weights_h @ v)
        maps.append(weights_h)
""" + CORRECT_OUTPUT),
    Mutant("loop_heads_reversed", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "combined in the wrong order", LOOP_HEAD + D_K + PROJECT + HEADS + """
    out = np.concatenate(outputs[::-1], axis=-1) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, np.stack(maps, axis=1)
"""),
    Mutant("loop_strided_heads", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "every H-th column", LOOP_HEAD + D_K + PROJECT + """
    outputs, maps = [], []
    for h in range(n_heads):
        block = slice(h, None, n_heads)
        out_h, weights_h = scaled_dot_product_attention(project("q", block), project("k", block),
                                                         project("v", block), mask)
        outputs.append(out_h)
        maps.append(weights_h)
""" + CORRECT_OUTPUT),
    Mutant("loop_w_o_forgotten", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "the output projection is missing", LOOP_HEAD + D_K + PROJECT + HEADS + """
    out = np.concatenate(outputs, axis=-1)
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, np.stack(maps, axis=1)
"""),
    Mutant("loop_w_o_transposed", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "w_o was used transposed", LOOP_HEAD + D_K + PROJECT + HEADS + """
    out = np.concatenate(outputs, axis=-1) @ params["w_o"].T
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, np.stack(maps, axis=1)
"""),
    Mutant("loop_b_o_ignored", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "the output bias b_o was left out", LOOP_HEAD + D_K + PROJECT + HEADS + """
    return np.concatenate(outputs, axis=-1) @ params["w_o"], np.stack(maps, axis=1)
"""),
    Mutant("loop_qkv_biases_ignored", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "the biases b_q, b_k, b_v were left out", LOOP_HEAD + D_K + """
    def project(name, block):
        return x @ params[f"w_{name}"][:, block]
""" + HEADS + CORRECT_OUTPUT),
    Mutant("loop_mask_not_passed", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "the mask was not applied", LOOP_HEAD + D_K + PROJECT + """
    outputs, maps = [], []
    for h in range(n_heads):
        block = slice(h * d_k, (h + 1) * d_k)
        out_h, weights_h = scaled_dot_product_attention(project("q", block), project("k", block),
                                                         project("v", block))
        outputs.append(out_h)
        maps.append(weights_h)
""" + CORRECT_OUTPUT),
    Mutant("loop_weights_averaged", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "Averaging over heads", LOOP_HEAD + D_K + PROJECT + HEADS + """
    out = np.concatenate(outputs, axis=-1) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, np.mean(maps, axis=0)
"""),
    Mutant("loop_weights_stacked_first", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "stacked on axis 0", LOOP_HEAD + D_K + PROJECT + HEADS + """
    out = np.concatenate(outputs, axis=-1) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, np.stack(maps)
"""),
    Mutant("loop_promotes_float32", "1_numpy", "multi_head_attention_loop", "multi_head_attention_loop",
           "float64, but the inputs are float32", LOOP_HEAD + "    x = np.asarray(x, dtype=np.float64)\n" + D_K
           + PROJECT + HEADS + CORRECT_OUTPUT),
    # chapter 1's blocks, pasted: mistakes that break the layer too
    *of_chapter(FIRST_CHAPTER, "softmax_promotes_float32", "softmax_no_keepdims_axis0",
                "sdpa_mask_after_softmax", "sdpa_nan_on_fully_masked_row"),
    # the PyTorch track
    Mutant("torch_split_view_without_transpose", "3_pytorch", "split_heads", "split_heads",
           "did you reshape without transposing the head axis?", SPLIT_HEAD + """
    return x.view(B, n_heads, T, d_k)
"""),
    Mutant("torch_split_error_from_torch", "3_pytorch", "split_heads", "split_heads_error",
           "the library's own reshape error", """
def split_heads(x, n_heads):
    B, T, d_model = x.shape
    return x.view(B, T, n_heads, d_model // n_heads).transpose(1, 2)
"""),
    Mutant("torch_loop_heads_reversed", "3_pytorch", "multi_head_attention_loop", "matches_torch_per_head",
           "differs from one built on torch.nn.functional.scaled_dot_product_attention", LOOP_HEAD + D_K + PROJECT
           + HEADS + """
    out = torch.cat(outputs[::-1], dim=-1) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, torch.stack(maps, dim=1)
"""),
    Mutant("torch_loop_mask_not_passed", "3_pytorch", "multi_head_attention_loop", "multi_head_attention_loop",
           "the mask was not applied", LOOP_HEAD + D_K + PROJECT + """
    outputs, maps = [], []
    for h in range(n_heads):
        block = slice(h * d_k, (h + 1) * d_k)
        out_h, weights_h = scaled_dot_product_attention(project("q", block), project("k", block),
                                                         project("v", block))
        outputs.append(out_h)
        maps.append(weights_h)
    out = torch.cat(outputs, dim=-1) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, torch.stack(maps, dim=1)
"""),
    # the stretch exercise
    Mutant("heads_to_matrix_reshape_only", "1_numpy", "heads_to_matrix", "heads_to_matrix",
           "without moving the head axis first", """
def heads_to_matrix(per_head):
    n_heads, d_model, d_k = per_head.shape
    return per_head.reshape(d_model, n_heads * d_k)
"""),
    Mutant("heads_to_matrix_interleaved", "1_numpy", "heads_to_matrix", "heads_to_matrix", "interleaved", """
def heads_to_matrix(per_head):
    return np.concatenate([per_head[:, :, j].T for j in range(per_head.shape[2])], axis=1)
"""),
    # questions: known wrong answers (their visible check only confirms the form)
    Mutant("head_2_first_column_strided", "1_numpy", "head_2_first_column", "head_2_first_column",
           "every H-th column", """
head_2_first_column = 2
"""),
    Mutant("head_2_first_column_counted_from_1", "1_numpy", "head_2_first_column", "head_2_first_column",
           "counted from 0", """
head_2_first_column = 12 // 3
"""),
    Mutant("wrong_split_token_as_if_transposed", "1_numpy", "wrong_split_token", "wrong_split_token",
           "what the correct split puts there", """
wrong_split_token = 0
"""),
    Mutant("pruned_d_k_from_d_model", "1_numpy", "pruned_d_k", "pruned_d_k", "d_model // n_heads", """
pruned_d_k = 768 // 9
"""),
    Mutant("loop_matmul_launches_batched", "2_cupy", "loop_matmul_launches", "loop_matmul_launches",
           "the batched form's count", """
loop_matmul_launches = 2
"""),
    Mutant("split_is_contiguous_yes", "2_cupy", "split_is_contiguous", "split_is_contiguous",
           "what a transpose does to the strides", """
split_is_contiguous = "yes"
"""),
    Mutant("projection_param_ratio_full_width_heads", "3_pytorch", "projection_param_ratio", "projection_param_ratio",
           "full (512, 512) projection", """
projection_param_ratio = 8 * 3 * 512 * 512 / (3 * 512 * 512)
"""),
    Mutant("head_0_grad_columns_all", "3_pytorch", "head_0_grad_columns", "head_0_grad_columns",
           "its own columns of w_q alone", """
head_0_grad_columns = 12
"""),
]
