"""Known-wrong Chapter 5 implementations, written the way students get them wrong.

Each mutant replaces one solution cell (by its grade_id) of one notebook. The tests
check that (1) the visible check named by the mutant fails with a message naming the
mistake, and (2) grading a notebook carrying the mutant loses points.
"""
from mha_checks import registry
from mutants import Mutant, filled, of_chapter

FIRST_CHAPTER = registry.assignments()[0]  # whose softmax and attention the NumPy notebook pastes in
FOURTH_CHAPTER = registry.assignments()[3]  # whose split_heads and merge_heads it pastes in

# The NumPy solution's loop, with one line to change per mutant: {setup}, {scores}, {update}, {end}.
ONLINE = '''
def online_softmax_attention(q, k, v, mask=None, block_size=64):
    T_q, T_k, d_v = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                               () if mask is None else np.shape(mask)[:-2])
    if mask is not None:
        mask = np.broadcast_to(mask, (*lead, T_q, T_k))
    scale = 1 / math.sqrt(q.shape[-1])
    m = np.full((*lead, T_q, 1), -np.inf, dtype=q.dtype)
    total = np.zeros((*lead, T_q, 1), dtype=q.dtype)
    acc = np.zeros((*lead, T_q, d_v), dtype=q.dtype)
    for start in BLOCK_STARTS:
        stop = min(start + block_size, T_k)
        scores = q @ np.swapaxes(k[..., start:stop, :], -1, -2) * scale
        if mask is not None:
            scores = np.where(mask[..., start:stop], scores, -np.inf)
        m_new = np.maximum(m, scores.max(axis=-1, keepdims=True))
        shift = SHIFT
        p = np.exp(scores - shift)
        rescale = np.exp(m - shift)
        total = TOTAL
        acc = ACC
        m = m_new
    return np.where(total > 0, acc / np.where(total > 0, total, 1), 0).astype(q.dtype)
'''
RIGHT = dict(BLOCK_STARTS="range(0, T_k, block_size)", SHIFT="np.where(np.isneginf(m_new), 0, m_new)",
             TOTAL="total * rescale + p.sum(axis=-1, keepdims=True)", ACC="acc * rescale + p @ v[..., start:stop, :]")


def online(**changes) -> str:
    return filled(ONLINE, RIGHT, **changes)


MUTANTS = [
    # ---- counting
    Mutant("param_count_times_heads", "1_numpy", "mha_param_count", "mha_param_count",
           "multiplies by the number of heads", """
def mha_param_count(d_model, n_heads, bias=True):
    per_head = 4 * d_model * d_model + (4 * d_model if bias else 0)
    return n_heads * per_head
"""),
    Mutant("param_count_no_w_o", "1_numpy", "mha_param_count", "mha_param_count",
           "leaves out the output projection", """
def mha_param_count(d_model, n_heads, bias=True):
    return 3 * d_model * d_model + (3 * d_model if bias else 0)
"""),
    Mutant("param_count_float", "1_numpy", "mha_param_count", "mha_param_count", "a count is a Python int", """
def mha_param_count(d_model, n_heads, bias=True):
    d_k = d_model / n_heads
    return 4 * d_model * n_heads * d_k + (4 * d_model if bias else 0)
"""),
    Mutant("flops_multiply_add_once", "1_numpy", "mha_flops", "mha_flops", "a multiply-add counts 2 FLOPs", """
def mha_flops(batch, seq_len, d_model, n_heads):
    return 4 * batch * seq_len * d_model * d_model + 2 * batch * seq_len * seq_len * d_model
"""),
    Mutant("flops_projections_only", "1_numpy", "mha_flops", "mha_flops", "counts only the four projections", """
def mha_flops(batch, seq_len, d_model, n_heads):
    return 8 * batch * seq_len * d_model * d_model
"""),
    Mutant("flops_one_head_width", "1_numpy", "mha_flops", "mha_flops", "counted for one head of width d_k", """
def mha_flops(batch, seq_len, d_model, n_heads):
    d_k = d_model // n_heads
    return 8 * batch * seq_len * d_model * d_model + 4 * batch * seq_len * seq_len * d_k
"""),
    # ---- online softmax
    Mutant("online_whole_blocks_only", "1_numpy", "online_softmax_attention", "online_softmax_attention",
           "the keys after the last whole block were never used",
           online(BLOCK_STARTS="range(0, T_k // block_size * block_size, block_size)")),
    Mutant("online_no_rescale", "1_numpy", "online_softmax_attention", "online_softmax_attention",
           "the rows whose largest score is in the first block are right",
           online(TOTAL="total + p.sum(axis=-1, keepdims=True)", ACC="acc + p @ v[..., start:stop, :]")),
    Mutant("online_rescale_sum_only", "1_numpy", "online_softmax_attention", "online_softmax_attention",
           "the weights of a row do not sum to 1", online(ACC="acc + p @ v[..., start:stop, :]")),
    Mutant("online_no_guard_for_minus_inf", "1_numpy", "online_softmax_attention", "online_softmax_attention",
           "exp(-inf - (-inf)) is NaN", online(SHIFT="m_new")),
    Mutant("online_new_block_replaces", "1_numpy", "online_softmax_attention", "online_softmax_attention",
           "only the last block of keys counted",
           online(TOTAL="p.sum(axis=-1, keepdims=True)", ACC="p @ v[..., start:stop, :]")),
    Mutant("online_builds_all_scores", "1_numpy", "online_softmax_attention", "online_memory",
           "builds an array as large as the (T_q, T_k) scores", """
def online_softmax_attention(q, k, v, mask=None, block_size=64):
    return scaled_dot_product_attention(q, k, v, mask)[0]
"""),
    # ---- stretch
    Mutant("gqa_heads_round_robin", "1_numpy", "grouped_query_attention", "grouped_query_attention",
           "used K/V head h % n_kv_heads", """
def grouped_query_attention(x, params, n_heads, n_kv_heads, mask=None):
    def project(name):
        bias = params.get(f"b_{name}")
        y = x @ params[f"w_{name}"]
        return y if bias is None else y + bias

    q = split_heads(project("q"), n_heads)
    k, v = (np.tile(split_heads(project(name), n_kv_heads), (1, n_heads // n_kv_heads, 1, 1)) for name in ("k", "v"))
    if mask is not None and mask.ndim == 3:
        mask = mask[:, None]
    heads, weights = scaled_dot_product_attention(q, k, v, mask)
    out = merge_heads(heads) @ params["w_o"]
    if params.get("b_o") is not None:
        out = out + params["b_o"]
    return out, weights
"""),
    # ---- questions
    Mutant("crossover_at_d_model", "1_numpy", "crossover_seq_len", "crossover_seq_len", "solve for T", """
crossover_seq_len = 384
"""),
    Mutant("naive_weights_gib_float64", "1_numpy", "naive_weights_gib", "naive_weights_gib", "That is for float64", """
naive_weights_gib = 65536 ** 2 * 8 / 2 ** 30
"""),
    Mutant("naive_exponent_linear", "1_numpy", "naive_memory_exponent", "naive_memory_exponent",
           "the naive form builds (T, T) arrays", """
naive_memory_exponent = 1.0
"""),
    Mutant("tile_shared_bytes_one_tile", "2_cupy", "tile_shared_bytes", "tile_shared_bytes", "That is one tile", """
tile_shared_bytes = 32 * 64 * 4
"""),
    Mutant("key_reads_per_tile", "2_cupy", "key_reads", "key_reads", "That is the number of key tiles", """
key_reads = 4096 // 32
"""),
    Mutant("flop_counter_projections_only", "3_pytorch", "flop_counter_total", "flop_counter_total",
           "the projections' 8·B·T·d² alone", """
flop_counter_total = 8 * 2 * 1024 * 256 ** 2
"""),
    Mutant("one_vs_many_heads_per_head", "3_pytorch", "one_vs_many_heads_params", "one_vs_many_heads_params",
           "they do not have 8 copies", """
one_vs_many_heads_params = 1 / 8
"""),
    # ---- the PyTorch track: the memory check watches every tensor, and PyTorch's own attention
    Mutant("torch_online_calls_the_library", "3_pytorch", "online_softmax_attention", "online_memory",
           "calls PyTorch's own scaled_dot_product_attention", """
def online_softmax_attention(q, k, v, mask=None, block_size=64):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask is not None:
        out = torch.where(mask.any(dim=-1, keepdim=True), out, 0.0)
    return out
"""),
    Mutant("torch_online_all_scores_at_once", "3_pytorch", "online_softmax_attention", "online_memory",
           "builds an array as large as the (T_q, T_k) scores", """
def online_softmax_attention(q, k, v, mask=None, block_size=64):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1))
    return weights @ v
"""),
    Mutant("torch_online_no_rescale", "3_pytorch", "online_softmax_attention", "online_softmax_attention",
           "the rows whose largest score is in the first block are right", """
def online_softmax_attention(q, k, v, mask=None, block_size=64):
    T_q, T_k, d_v = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], () if mask is None else mask.shape[:-2])
    if mask is not None:
        mask = mask.expand(*lead, T_q, T_k)
    scale = 1 / math.sqrt(q.shape[-1])
    m = torch.full((*lead, T_q, 1), -math.inf, dtype=q.dtype)
    total = torch.zeros((*lead, T_q, 1), dtype=q.dtype)
    acc = torch.zeros((*lead, T_q, d_v), dtype=q.dtype)
    for start in range(0, T_k, block_size):
        scores = q @ k[..., start:start + block_size, :].transpose(-2, -1) * scale
        if mask is not None:
            scores = torch.where(mask[..., start:start + block_size], scores, -math.inf)
        m = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
        p = torch.exp(scores - torch.where(torch.isneginf(m), 0.0, m))
        total = total + p.sum(dim=-1, keepdim=True)
        acc = acc + p @ v[..., start:start + block_size, :]
    return torch.where(total > 0, acc / torch.where(total > 0, total, 1.0), 0.0)
"""),
    # ---- faulty building blocks pasted in: the stretch layer is judged on top of them
    *of_chapter(FIRST_CHAPTER, "softmax_no_keepdims_axis0", "sdpa_mask_after_softmax"),
    *of_chapter(FOURTH_CHAPTER, "split_heads_reshape_only", "merge_without_transpose"),
]
