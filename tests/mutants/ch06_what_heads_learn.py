"""Known-wrong Chapter 6 implementations, written the way students get them wrong.

Each mutant replaces one solution cell (by its grade_id) of one notebook. The tests
check that (1) the visible check named by the mutant fails with a message naming the
mistake, and (2) grading a notebook carrying the mutant loses points.
"""
from mha_checks import registry
from mutants import Mutant, filled, of_chapter

FIRST_CHAPTER = registry.assignments()[0]   # causal_mask, pasted into the NumPy notebook
FOURTH_CHAPTER = registry.assignments()[3]  # multi_head_attention, pasted in too

FORWARD = '''
def attention_only_forward(tokens, model, n_heads):
    T = tokens.shape[1]
    x = EMBED
    maps = []
    for params in model["layers"]:
        out, weights = multi_head_attention(x, params, n_heads, MASK)
        x = RESIDUAL
        maps.append(weights)
    return x @ model["unembed"] + model["b_unembed"], STACKED
'''
RIGHT = dict(EMBED='model["embed"][tokens] + model["position"][:T]', MASK="causal_mask(T)", RESIDUAL="x + out",
             STACKED="np.stack(maps, axis=1)")


def forward(**changes) -> str:
    return filled(FORWARD, RIGHT, **changes)


# The PyTorch solution's loop: {PERIOD} and {LOSS} change per mutant.
TRAIN = '''
def train(model, steps, batch_size=64, lr=5e-3, seed=0, period=None):
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        tokens = torch.from_numpy(toy_task.repeated_patterns(rng, batch_size, period=PERIOD)[0])
        logits, _ = model(tokens)
        loss = LOSS
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
'''
RIGHT_TRAIN = dict(PERIOD="period",
                   LOSS="F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))")


def train(**changes) -> str:
    return filled(TRAIN, RIGHT_TRAIN, **changes)


MUTANTS = [
    # ---- the scores
    Mutant("previous_divided_by_T", "1_numpy", "previous_token_score", "previous_token_score",
           "query 0 has no previous token", """
def previous_token_score(weights):
    T = weights.shape[-1]
    return weights[..., np.arange(1, T), np.arange(T - 1)].sum(axis=2).mean(axis=0) / T
"""),
    Mutant("previous_main_diagonal", "1_numpy", "previous_token_score", "previous_token_score",
           "the weight each query puts on itself", """
def previous_token_score(weights):
    T = weights.shape[-1]
    return weights[..., np.arange(1, T), np.arange(1, T)].mean(axis=(0, 2))
"""),
    Mutant("previous_next_token", "1_numpy", "previous_token_score", "previous_token_score",
           "weights[b, h, t, t+1]", """
def previous_token_score(weights):
    T = weights.shape[-1]
    return weights[..., np.arange(T - 1), np.arange(1, T)].mean(axis=(0, 2))
"""),
    Mutant("previous_per_example", "1_numpy", "previous_token_score", "previous_token_score",
           "also average over the batch", """
def previous_token_score(weights):
    T = weights.shape[-1]
    return weights[..., np.arange(1, T), np.arange(T - 1)].mean(axis=-1)
"""),
    Mutant("induction_same_token", "1_numpy", "induction_score", "induction_score",
           "earlier copies of the query's own token", """
def induction_score(weights, tokens):
    B, H, T, _ = weights.shape
    same = (tokens[:, :, None] == tokens[:, None, :]) & np.tril(np.ones((T, T), dtype=bool), k=-1)
    has_target = same.any(axis=-1)
    if not has_target.any():
        return np.zeros(H, dtype=weights.dtype)
    per_query = (weights * same[:, None]).sum(axis=-1)
    return per_query.transpose(1, 0, 2)[:, has_target].mean(axis=1)
"""),
    Mutant("induction_over_all_queries", "1_numpy", "induction_score", "induction_score",
           "averaged over every query", """
def induction_score(weights, tokens):
    B, H, T, _ = weights.shape
    after_copy = np.zeros((B, T, T), dtype=bool)
    after_copy[:, :, 1:] = tokens[:, :, None] == tokens[:, None, :-1]
    after_copy &= np.tril(np.ones((T, T), dtype=bool), k=-1)
    return (weights * after_copy[:, None]).sum(axis=-1).mean(axis=(0, 2))
"""),
    Mutant("induction_nan_without_repeats", "1_numpy", "induction_score", "induction_score",
           "do not divide by a count of 0", """
def induction_score(weights, tokens):
    B, H, T, _ = weights.shape
    after_copy = np.zeros((B, T, T), dtype=bool)
    after_copy[:, :, 1:] = tokens[:, :, None] == tokens[:, None, :-1]
    after_copy &= np.tril(np.ones((T, T), dtype=bool), k=-1)
    has_target = after_copy.any(axis=-1)
    per_query = (weights * after_copy[:, None]).sum(axis=-1)
    return (per_query * has_target[:, None]).sum(axis=(0, 2)) / weights.dtype.type(has_target.sum())
"""),
    # ---- knocking heads out
    Mutant("knock_out_columns", "1_numpy", "knock_out", "knock_out", "you zeroed columns", """
def knock_out(w_o, n_heads, heads):
    d_k = w_o.shape[0] // n_heads
    out = w_o.copy()
    for h in set(int(h) for h in heads):
        out[:, h * d_k:(h + 1) * d_k] = 0
    return out
"""),
    Mutant("knock_out_every_h_th_row", "1_numpy", "knock_out", "knock_out", "every H-th row", """
def knock_out(w_o, n_heads, heads):
    out = w_o.copy()
    for h in set(int(h) for h in heads):
        out[h::n_heads] = 0
    return out
"""),
    # ---- the forward pass
    Mutant("forward_no_residual", "1_numpy", "attention_only_forward", "attention_only_forward",
           "the output is added, not substituted", forward(RESIDUAL="out")),
    Mutant("forward_no_position", "1_numpy", "attention_only_forward", "attention_only_forward",
           "without its position vectors", forward(EMBED='model["embed"][tokens]')),
    Mutant("forward_not_causal", "1_numpy", "attention_only_forward", "attention_only_forward",
           "its mask is causal", forward(MASK="None")),
    Mutant("forward_last_layer_maps", "1_numpy", "attention_only_forward", "attention_only_forward",
           "stack every layer's", forward(STACKED="maps[-1]")),
    Mutant("offset_sign_flipped", "1_numpy", "offset_score", "offset_score", "the sign of offset is flipped", """
def offset_score(weights, offset):
    offset = -offset
    T = weights.shape[-1]
    queries = np.arange(max(0, -offset), min(T, T - offset))
    return weights[..., queries, queries + offset].mean(axis=(0, 2))
"""),
    # ---- questions
    Mutant("previous_heads_in_layer_1", "1_numpy", "previous_token_heads", "previous_token_heads",
           "That is the count in layer 1", """
previous_token_heads = int((scores["previous"][1] > 0.2).sum())
"""),
    Mutant("knockout_of_the_other_heads", "1_numpy", "knockout_induction", "knockout_induction",
           "the *other* layer-0 heads", """
knockout_induction = others_knockout_induction
"""),
    Mutant("minilm_previous_head_index", "1_numpy", "minilm_previous_layer", "minilm_previous_layer",
           "find the layer of its largest entry", """
minilm_previous_layer = int(minilm_scores["previous"].argmax())
"""),
    Mutant("shortcut_on_its_own_period", "3_pytorch", "shortcut_accuracy", "shortcut_accuracy",
           "its accuracy on period-8 sequences", """
shortcut_accuracy = shortcut_accuracy_period_8
"""),
    Mutant("next_token_heads_above_a_quarter", "3_pytorch", "minilm_next_token_heads", "minilm_next_token_heads",
           "count the entries above 0.5", """
minilm_next_token_heads = int((next_scores > 0.25).sum())
"""),
    # ---- PyTorch: the scores, the model, the loop
    Mutant("torch_previous_divided_by_T", "3_pytorch", "previous_token_score", "previous_token_score",
           "query 0 has no previous token", """
def previous_token_score(weights):
    T = weights.shape[-1]
    return weights[..., torch.arange(1, T), torch.arange(T - 1)].sum(dim=2).mean(dim=0) / T
"""),
    Mutant("torch_induction_same_token", "3_pytorch", "induction_score", "induction_score",
           "earlier copies of the query's own token", """
def induction_score(weights, tokens):
    B, H, T, _ = weights.shape
    same = (tokens[:, :, None] == tokens[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril(-1)
    has_target = same.any(dim=-1)
    if not has_target.any():
        return torch.zeros(H, dtype=weights.dtype)
    per_query = (weights * same[:, None]).sum(dim=-1)
    return per_query.transpose(0, 1)[:, has_target].mean(dim=1)
"""),
    Mutant("model_not_causal", "3_pytorch", "AttentionOnlyTransformer", "model",
           "attention reaches keys after the query", """
class AttentionOnlyTransformer(nn.Module):
    def __init__(self, vocab=toy_task.VOCAB, seq_len=toy_task.SEQ_LEN, d_model=64, n_heads=4, n_layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        self.layers = nn.ModuleList(MultiHeadAttention(d_model, n_heads) for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, vocab)

    def forward(self, tokens, head_mask=None):
        x = self.embed(tokens) + self.position(torch.arange(tokens.shape[1]))
        maps = []
        for l, layer in enumerate(self.layers):
            out, weights = layer(x, None, None if head_mask is None else head_mask[l])
            x = x + out
            maps.append(weights)
        return self.unembed(x), torch.stack(maps, dim=1)
"""),
    Mutant("model_with_layer_norm", "3_pytorch", "AttentionOnlyTransformer", "model", "No extra parameters", """
class AttentionOnlyTransformer(nn.Module):
    def __init__(self, vocab=toy_task.VOCAB, seq_len=toy_task.SEQ_LEN, d_model=64, n_heads=4, n_layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        self.layers = nn.ModuleList(MultiHeadAttention(d_model, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab)
        self.register_buffer("causal", torch.ones(seq_len, seq_len, dtype=torch.bool).tril())

    def forward(self, tokens, head_mask=None):
        T = tokens.shape[1]
        x = self.embed(tokens) + self.position(torch.arange(T))
        maps = []
        for l, layer in enumerate(self.layers):
            out, weights = layer(x, self.causal[:T, :T], None if head_mask is None else head_mask[l])
            x = x + out
            maps.append(weights)
        return self.unembed(self.norm(x)), torch.stack(maps, dim=1)
"""),
    Mutant("train_on_one_period", "3_pytorch", "train", "training", "a fixed period teaches a positional shortcut",
           train(PERIOD="period or 8")),
    Mutant("train_predicts_the_current_token", "3_pytorch", "train", "training",
           "each position predicts the next token",
           train(LOSS="F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))")),
    Mutant("batch_maps_mib_float64", "2_cupy", "batch_maps_mib", "batch_maps_mib", "That is for float64", """
batch_maps_mib = 4096 * 2 * 4 * 32 * 32 * 8 / 2**20
"""),
    Mutant("copy_ratio_per_sequence", "2_cupy", "scores_copy_ratio", "scores_copy_ratio",
           "scores per sequence", """
scores_copy_ratio = (4096 * 2 * 4 * 32 * 32) / (4096 * 2 * 4)
"""),
    # ---- building blocks pasted from earlier chapters: paid for there, but the forward pass shows them
    *of_chapter(FIRST_CHAPTER, "softmax_no_keepdims_axis0", "causal_mask_upper_triangle", "sdpa_mask_after_softmax"),
    *of_chapter(FOURTH_CHAPTER, "split_heads_reshape_only", "merge_without_transpose", "mha_w_o_forgotten"),
]
