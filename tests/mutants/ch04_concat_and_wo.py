"""Known-wrong Chapter 4 implementations, written the way students get them wrong.

Each mutant replaces one solution cell (by its grade_id) of one notebook. The tests
check that (1) the visible check named by the mutant fails with a message naming the
mistake, and (2) grading a notebook carrying the mutant loses points.
"""
from mha_checks import registry
from mutants import Mutant, of_chapter

FIRST_CHAPTER = registry.assignments()[0]  # whose softmax and attention the notebooks paste in

# The NumPy layer's helper, correct: mutants of multi_head_attention keep it, so that
# head_contributions (which calls it) still runs, as in a student's notebook.
ATTEND_PER_HEAD = '''
def attend_per_head(x, params, n_heads, mask=None):
    def project(name):
        bias = params.get(f"b_{name}")
        y = x @ params[f"w_{name}"]
        return y if bias is None else y + bias

    q, k, v = (split_heads(project(name), n_heads) for name in ("q", "k", "v"))
    if mask is not None and mask.ndim == 3:
        mask = mask[:, None]
    return scaled_dot_product_attention(q, k, v, mask)

'''
MHA_HEAD = ATTEND_PER_HEAD + "def multi_head_attention(x, params, n_heads, mask=None):\n"
B_O = '''    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, weights
'''
CONTRIBUTIONS_HEAD = "def head_contributions(x, params, n_heads, mask=None):\n    heads, _ = attend_per_head(x, params, n_heads, mask)\n"
TORCH_ATTEND_PER_HEAD = ATTEND_PER_HEAD.replace("mask[:, None]", "mask.unsqueeze(1)")

MUTANTS = [
    # ---- building blocks pasted from earlier chapters: a faulty one costs points in the layer
    *of_chapter(FIRST_CHAPTER, "softmax_no_keepdims_axis0", "sdpa_mask_after_softmax"),
    Mutant("split_heads_reshape_only", "1_numpy", "split_heads", "split_heads",
           "did you reshape without transposing the head axis", """
def split_heads(x, n_heads):
    B, T, width = x.shape
    return x.reshape(B, n_heads, T, width // n_heads)
"""),
    # ---- merge_heads
    Mutant("merge_without_transpose", "1_numpy", "merge_heads", "merge_heads", "the tokens are scrambled", """
def merge_heads(x):
    B, H, T, d_k = x.shape
    return x.reshape(B, T, H * d_k)
"""),
    Mutant("merge_heads_reversed", "1_numpy", "merge_heads", "merge_heads", "concatenated in reverse order", """
def merge_heads(x):
    B, H, T, d_k = x.shape
    return x[:, ::-1].transpose(0, 2, 1, 3).reshape(B, T, H * d_k)
"""),
    Mutant("merge_interleaved", "1_numpy", "merge_heads", "merge_heads", "the columns are interleaved", """
def merge_heads(x):
    B, H, T, d_k = x.shape
    return x.transpose(0, 2, 3, 1).reshape(B, T, H * d_k)
"""),
    Mutant("merge_not_merged", "1_numpy", "merge_heads", "merge_heads", "the heads were not merged", """
def merge_heads(x):
    return x.transpose(0, 2, 1, 3)
"""),
    # ---- multi_head_attention
    Mutant("mha_scale_by_sqrt_d_model", "1_numpy", "multi_head_attention", "multi_head_attention",
           "divided by sqrt(d_model) instead of sqrt(d_k)", MHA_HEAD + """
    d_model = x.shape[-1]
    q, k, v = (split_heads(x @ params[f"w_{n}"] + params.get(f"b_{n}", 0), n_heads) for n in ("q", "k", "v"))
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(d_model)
    if mask is not None:
        m = mask[:, None] if mask.ndim == 3 else mask
        scores = np.where(m, scores, -np.inf)
        scores = np.where(np.any(m, axis=-1, keepdims=True), scores, 0.0)
    weights = softmax(scores)
    if mask is not None:
        weights = np.where(m, weights, 0.0)
    out = merge_heads(weights @ v) @ params["w_o"]
""" + B_O),
    Mutant("mha_heads_concatenated_in_reverse", "1_numpy", "multi_head_attention", "multi_head_attention",
           "combined in the wrong order", MHA_HEAD + """
    heads, weights = attend_per_head(x, params, n_heads, mask)
    out = merge_heads(heads[:, ::-1]) @ params["w_o"]
""" + B_O),
    Mutant("mha_w_o_transposed", "1_numpy", "multi_head_attention", "multi_head_attention",
           "w_o was used transposed", MHA_HEAD + """
    heads, weights = attend_per_head(x, params, n_heads, mask)
    out = merge_heads(heads) @ params["w_o"].T
""" + B_O),
    Mutant("mha_w_o_forgotten", "1_numpy", "multi_head_attention", "multi_head_attention",
           "the output projection is missing", MHA_HEAD + """
    heads, weights = attend_per_head(x, params, n_heads, mask)
    out = merge_heads(heads)
""" + B_O),
    Mutant("mha_b_o_missing", "1_numpy", "multi_head_attention", "multi_head_attention",
           "the output bias b_o was left out", MHA_HEAD + """
    heads, weights = attend_per_head(x, params, n_heads, mask)
    return merge_heads(heads) @ params["w_o"], weights
"""),
    Mutant("mha_mask_without_head_axis", "1_numpy", "multi_head_attention", "multi_head_attention",
           "could not be broadcast", ATTEND_PER_HEAD.replace("mask[:, None]", "mask") + """
def multi_head_attention(x, params, n_heads, mask=None):
    heads, weights = attend_per_head(x, params, n_heads, mask)
    out = merge_heads(heads) @ params["w_o"]
""" + B_O),
    Mutant("mha_weights_averaged", "1_numpy", "multi_head_attention", "multi_head_attention",
           "Averaging over heads", MHA_HEAD + """
    heads, weights = attend_per_head(x, params, n_heads, mask)
    out = merge_heads(heads) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, weights.mean(axis=1)
"""),
    Mutant("mha_python_loop_left_in", "1_numpy", "multi_head_attention", "no_head_loop",
           "that is the loop of chapter 3", MHA_HEAD + """
    d_k = params["w_q"].shape[1] // n_heads
    outs, maps = [], []
    for h in range(n_heads):
        cols = slice(h * d_k, (h + 1) * d_k)
        q, k, v = (x @ params[f"w_{n}"][:, cols] + (params[f"b_{n}"][cols] if params.get(f"b_{n}") is not None else 0)
                   for n in ("q", "k", "v"))
        out_h, w_h = scaled_dot_product_attention(q, k, v, mask)
        outs.append(out_h)
        maps.append(w_h)
    out, weights = np.concatenate(outs, axis=-1) @ params["w_o"], np.stack(maps, axis=1)
""" + B_O),
    # ---- head_contributions
    Mutant("contributions_add_b_o", "1_numpy", "head_contributions", "head_contributions", "b_o was added",
           CONTRIBUTIONS_HEAD + """
    w_o = params["w_o"]
    parts = heads @ w_o.reshape(n_heads, -1, w_o.shape[1])
    return parts if params.get("b_o") is None else parts + params["b_o"]
"""),
    Mutant("contributions_summed_over_heads", "1_numpy", "head_contributions", "head_contributions",
           "that is the sum over the heads", CONTRIBUTIONS_HEAD + """
    return merge_heads(heads) @ params["w_o"]
"""),
    Mutant("contributions_heads_reversed", "1_numpy", "head_contributions", "head_contributions",
           "combined in the wrong order", CONTRIBUTIONS_HEAD + """
    w_o = params["w_o"]
    return heads @ w_o.reshape(n_heads, -1, w_o.shape[1])[::-1]
"""),
    # ---- fuse_qkv (stretch)
    Mutant("fuse_qkv_stacked", "1_numpy", "fuse_qkv", "fuse_qkv", "stacked on a new axis", """
def fuse_qkv(params):
    zeros = np.zeros(params["w_q"].shape[1], dtype=params["w_q"].dtype)
    w_qkv = np.stack([params["w_q"], params["w_k"], params["w_v"]])
    b_qkv = np.concatenate([params.get(f"b_{n}", zeros) for n in ("q", "k", "v")])
    return w_qkv, b_qkv
"""),
    # ---- questions: known wrong answers
    Mutant("padding_keys_counted_per_query", "1_numpy", "padding_keys", "padding_keys", "(query, key) pairs", """
padding_keys = int((~mask_minilm).sum()) * mask_minilm.shape[-1]
"""),
    Mutant("pruned_w_o_rows_d_model", "1_numpy", "pruned_w_o_rows", "pruned_w_o_rows", "not d_model", """
pruned_w_o_rows = 384
"""),
    Mutant("merge_copy_mib_float64", "2_cupy", "merge_copy_mib", "merge_copy_mib", "That is for float64", """
merge_copy_mib = 8 * 12 * 1024 * 64 * 8 / 2**20
"""),
    Mutant("transpose_copies_yes", "2_cupy", "transpose_copies", "transpose_copies", "A transpose returns a view", """
transpose_copies = "yes"
"""),
    Mutant("torch_parameter_count_no_bias", "3_pytorch", "torch_mha_parameter_count", "torch_mha_parameter_count",
           "leaves out the biases", """
torch_mha_parameter_count = 4 * 48 * 48
"""),
    Mutant("attn_mask_course_convention", "3_pytorch", "attn_mask_true_means", "attn_mask_true_means",
           "the course's convention", """
attn_mask_true_means = "a"
"""),
    # ---- the PyTorch track
    Mutant("torch_mha_weights_averaged", "3_pytorch", "multi_head_attention", "multi_head_attention",
           "Averaging over heads", TORCH_ATTEND_PER_HEAD + """
def multi_head_attention(x, params, n_heads, mask=None):
    heads, weights = attend_per_head(x, params, n_heads, mask)
    out = merge_heads(heads) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, weights.mean(dim=1)
"""),
    Mutant("to_torch_in_proj_not_transposed", "3_pytorch", "to_torch_mha", "to_torch_mha",
           "in_proj_weight holds w_q, w_k, w_v untransposed", """
def to_torch_mha(params, n_heads):
    d_model, width = params["w_q"].shape
    if width != d_model:
        raise ValueError("nn.MultiheadAttention needs H*d_k = d_model")
    bias = params.get("b_q") is not None
    mha = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True, dtype=params["w_q"].dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([params["w_q"], params["w_k"], params["w_v"]]))
        mha.out_proj.weight.copy_(params["w_o"].T)
        if bias:
            mha.in_proj_bias.copy_(torch.cat([params["b_q"], params["b_k"], params["b_v"]]))
            mha.out_proj.bias.copy_(params["b_o"])
    return mha
"""),
    Mutant("to_torch_not_batch_first", "3_pytorch", "to_torch_mha", "to_torch_mha", "batch_first=True", """
def to_torch_mha(params, n_heads):
    d_model, width = params["w_q"].shape
    if width != d_model:
        raise ValueError("nn.MultiheadAttention needs H*d_k = d_model")
    bias = params.get("b_q") is not None
    mha = nn.MultiheadAttention(d_model, n_heads, bias=bias, dtype=params["w_q"].dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([params["w_q"].T, params["w_k"].T, params["w_v"].T]))
        mha.out_proj.weight.copy_(params["w_o"].T)
        if bias:
            mha.in_proj_bias.copy_(torch.cat([params["b_q"], params["b_k"], params["b_v"]]))
            mha.out_proj.bias.copy_(params["b_o"])
    return mha
"""),
    Mutant("attn_mask_not_inverted", "3_pytorch", "torch_attn_mask", "torch_attn_mask", "True must mean the opposite",
           """
def torch_attn_mask(mask, batch, n_heads):
    if mask.ndim == 2:
        return mask
    T = mask.shape[-1]
    return mask.expand(batch, T, T).repeat_interleave(n_heads, dim=0)
"""),
    Mutant("attn_mask_head_major", "3_pytorch", "torch_attn_mask", "torch_attn_mask", "batch-major", """
def torch_attn_mask(mask, batch, n_heads):
    if mask.ndim == 2:
        return ~mask
    T = mask.shape[-1]
    return (~mask.expand(batch, T, T)).repeat(n_heads, 1, 1)
"""),
    Mutant("from_torch_not_transposed", "3_pytorch", "from_torch_mha", "from_torch_mha", "is transposed", """
def from_torch_mha(mha):
    w_q, w_k, w_v = (w.detach().clone() for w in mha.in_proj_weight.chunk(3))
    params = {"w_q": w_q, "w_k": w_k, "w_v": w_v, "w_o": mha.out_proj.weight.detach().clone()}
    if mha.in_proj_bias is not None:
        b_q, b_k, b_v = (b.detach().clone() for b in mha.in_proj_bias.chunk(3))
        params.update(b_q=b_q, b_k=b_k, b_v=b_v, b_o=mha.out_proj.bias.detach().clone())
    return params, mha.num_heads
"""),
    Mutant("module_head_mask_scales_b_o", "3_pytorch", "MultiHeadAttention", "module",
           "should return b_o alone", """
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
        out, weights = multi_head_attention(x, params, self.n_heads, mask)
        if head_mask is not None:
            out = out * head_mask.mean()
        return out, weights
"""),
]
