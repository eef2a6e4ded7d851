"""Known-wrong Chapter 2 implementations, written the way students get them wrong.

Each mutant replaces one solution cell (by its grade_id) of one notebook. The tests
check that (1) the visible check for that function fails with a message naming the
mistake, and (2) grading a notebook carrying the mutant loses points.
"""
from mutants import Mutant

ENTROPY_HEAD = "def attention_entropy(weights):\n"

MUTANTS = [
    Mutant("entropy_in_bits", "1_numpy", "attention_entropy", "attention_entropy", "in bits", ENTROPY_HEAD + """
    positive = np.where(weights > 0, weights, 1)
    return -(weights * np.log2(positive)).sum(axis=-1)
"""),
    Mutant("entropy_nan_on_zero_weights", "1_numpy", "attention_entropy", "attention_entropy", "0·log 0",
           ENTROPY_HEAD + """
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(weights * np.log(weights)).sum(axis=-1)
"""),
    Mutant("entropy_renormalises_rows", "1_numpy", "attention_entropy", "attention_entropy",
           "an all-zero row (a query with no allowed key) gave NaN", ENTROPY_HEAD + """
    with np.errstate(invalid="ignore"):
        p = weights / weights.sum(axis=-1, keepdims=True)
    positive = np.where(p > 0, p, 1)
    return -(p * np.log(positive)).sum(axis=-1)
"""),
    Mutant("entropy_over_queries", "1_numpy", "attention_entropy", "attention_entropy",
           "instead of the keys (axis -1)", ENTROPY_HEAD + """
    positive = np.where(weights > 0, weights, 1)
    return -(weights * np.log(positive)).sum(axis=-2)
"""),
    Mutant("entropy_no_minus_sign", "1_numpy", "attention_entropy", "attention_entropy", "minus sign", ENTROPY_HEAD + """
    positive = np.where(weights > 0, weights, 1)
    return (weights * np.log(positive)).sum(axis=-1)
"""),
    Mutant("entropy_mean_over_keys", "1_numpy", "attention_entropy", "attention_entropy", "averaged over the keys",
           ENTROPY_HEAD + """
    positive = np.where(weights > 0, weights, 1)
    return -(weights * np.log(positive)).mean(axis=-1)
"""),
    Mutant("entropy_promotes_float32", "1_numpy", "attention_entropy", "attention_entropy",
           "float64, but the inputs are float32", ENTROPY_HEAD + """
    weights = weights.astype(np.float64)
    positive = np.where(weights > 0, weights, 1)
    return -(weights * np.log(positive)).sum(axis=-1)
"""),
    Mutant("entropy_not_summed", "1_numpy", "attention_entropy", "attention_entropy", "one number per weight",
           ENTROPY_HEAD + """
    positive = np.where(weights > 0, weights, 1)
    return -(weights * np.log(positive))
"""),
    Mutant("torch_entropy_in_bits", "3_pytorch", "attention_entropy", "attention_entropy", "in bits", ENTROPY_HEAD + """
    positive = torch.where(weights > 0, weights, torch.ones_like(weights))
    return -(weights * torch.log2(positive)).sum(dim=-1)
"""),
    Mutant("torch_entropy_nan_on_zero_weights", "3_pytorch", "attention_entropy", "attention_entropy", "0·log 0",
           ENTROPY_HEAD + """
    return -(weights * torch.log(weights)).sum(dim=-1)
"""),
    Mutant("torch_entropy_returns_numpy", "3_pytorch", "attention_entropy", "attention_entropy", "returned entropy as",
           ENTROPY_HEAD + """
    import numpy as np
    w = weights.numpy()
    return -(w * np.log(np.where(w > 0, w, 1))).sum(axis=-1)
"""),

    # the stretch exercise
    Mutant("effective_keys_is_the_entropy", "1_numpy", "effective_keys", "effective_keys", "the entropy itself", """
def effective_keys(weights):
    return attention_entropy(weights)
"""),
    Mutant("effective_keys_base_two", "1_numpy", "effective_keys", "effective_keys", "only for an entropy in bits", """
def effective_keys(weights):
    return 2 ** attention_entropy(weights)
"""),

    # questions: known wrong answers (their visible check only confirms the form)
    Mutant("even_split_entropy_in_bits", "1_numpy", "even_split_entropy", "even_split_entropy", "in bits", """
even_split_entropy = -2 * 0.5 * math.log2(0.5)
"""),
    Mutant("blended_accuracy_of_two_heads", "1_numpy", "blended_accuracy", "blended_accuracy", "two sharp heads", """
blended_accuracy = round(readout_accuracy(two_head_features, previous), 2)
"""),
    Mutant("blended_accuracy_a_coin_flip", "1_numpy", "blended_accuracy", "blended_accuracy", "same token twice", """
blended_accuracy = 0.5
"""),
    Mutant("bottleneck_task_symmetric", "1_numpy", "bottleneck_task", "bottleneck_task", "symmetric in its two tokens", """
bottleneck_task = "b"
"""),
    Mutant("maps_mib_in_float64", "2_cupy", "maps_mib", "maps_mib", "float64", """
maps_mib = 32 * 8 * 512 * 512 * 8 / 2**20
"""),
    Mutant("copy_saving_one_entropy_per_map", "2_cupy", "copy_saving", "copy_saving", "one number per map", """
copy_saving = 512 * 512
"""),
    Mutant("sharper_model_one", "3_pytorch", "sharper_model", "sharper_model", "spreads each row", """
sharper_model = "one"
"""),
    Mutant("two_heads_accuracy_of_one_head", "3_pytorch", "two_heads_accuracy", "two_heads_accuracy",
           "one-head model's accuracy", """
two_heads_accuracy = (history["one"]["acc_prev"][-1] + history["one"]["acc_prev2"][-1]) / 2
"""),
]
