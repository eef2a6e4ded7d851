"""The whole-layer function with a head mask, ``f(x, params, n_heads, head_mask, mask=None)``
(chapter 7's ``masked_multi_head_attention``, pasted into chapter 8), and a model's head mask
``(L, H)``: cases with head masks, the head mask's known mistakes, and the whole layer's
mistakes (:mod:`.layers`) made with the case's head mask in place.

Head h's output is multiplied by ``head_mask[h]`` before ``w_o``; ``b_o`` and the returned
weights are not scaled.
"""
import dataclasses

import numpy as np

from . import layers

MASKED = "masked_multi_head_attention"


def with_head_masks(cases, masks):
    out = []
    for case, head_mask in zip(cases, masks):
        dtype = case["x"].dtype
        out.append({**case, "head_mask": np.asarray(head_mask, dtype=dtype)})
    return out

def masked_layer(sol, head_mask):
    """The reference layer with this head mask, as a function of the whole-layer signature."""
    def layer(x, params, n_heads, mask=None):
        return sol[MASKED](x, params, n_heads, head_mask, mask)
    return layer


def adapted(entry):
    """A whole-layer mistake (or inherited mistake) of :mod:`.layers` or chapter 4, made by the
    masked layer: the same mistake with the case's head mask in place."""
    def outputs(sol, x, params, n_heads, head_mask, mask=None):
        layer = masked_layer(sol, head_mask)
        return entry.outputs({**sol, MASKED: layer, "multi_head_attention": layer}, x, params, n_heads, mask)
    return dataclasses.replace(entry, outputs=outputs)


def all_ones(head_mask) -> bool:
    return bool(np.all(np.asarray(head_mask) == 1))


def weights_scaled(sol, x, params, n_heads, head_mask, mask=None):
    if all_ones(head_mask):
        return None
    out, weights = sol[MASKED](x, params, n_heads, head_mask, mask)
    return out, weights * head_mask[:, None, None]


def b_o_scaled(sol, x, params, n_heads, head_mask, mask=None):
    b_o = params.get("b_o")
    if b_o is None:
        return None
    out, weights = sol[MASKED](x, params, n_heads, head_mask, mask)
    forms = []
    for factor in (head_mask.sum(), head_mask.mean()):   # b_o once per head kept, or by the mask's mean
        if not np.isclose(factor, 1):
            forms.append((out + b_o * (factor - 1).astype(b_o.dtype), weights))
    return forms or None


def columns_scaled(params, head_mask, names, rows=False):
    d_k = params["w_q"].shape[1] // len(head_mask)
    scale = np.repeat(head_mask, d_k)
    moved = {}
    for name in names:
        value = params.get(name)
        if value is None:
            continue
        moved[name] = value * (scale[:, None] if rows else scale)
    return layers.changed(params, **moved)


def queries_scaled(sol, x, params, n_heads, head_mask, mask=None):
    """The mask applied to the queries, or to the scores (the same: q·k scales with q)."""
    if all_ones(head_mask):
        return None
    scaled = columns_scaled(params, head_mask, ("w_q", "b_q"))
    return sol[MASKED](x, scaled, n_heads, np.ones_like(head_mask), mask)


def mask_interleaved(sol, x, params, n_heads, head_mask, mask=None):
    """The concatenated heads' column c scaled by head_mask[c % H] (np.tile instead of np.repeat)."""
    d_k = params["w_q"].shape[1] // n_heads
    if n_heads == 1 or d_k == 1 or len(set(np.asarray(head_mask).tolist())) == 1:
        return None
    scale = np.tile(head_mask, d_k)
    return sol[MASKED](x, layers.changed(params, w_o=params["w_o"] * scale[:, None]), n_heads,
                       np.ones_like(head_mask), mask)


WEIGHTS_SCALED = ("the attention weights came back multiplied by the head mask: the mask scales what each head "
                  "*writes* (its output, before w_o); the weights it returns are the softmax weights, unscaled "
                  "(rows of a kept head still sum to 1).")
B_O_SCALED = ("b_o changed with the head mask: b_o belongs to the layer, not to a head. Scale the heads' outputs "
              "(B, H, T, d_k) by head_mask before merging and w_o, then add b_o once.")
QUERIES_SCALED = ("the head mask went into the attention itself (the queries, or the scores before the softmax), "
                  "which changes where the head looks. It multiplies the head's *output*: heads * "
                  "head_mask[:, None, None], after the attention and before w_o.")
INTERLEAVED = ("column c of the concatenated heads was scaled by head_mask[c % H] (np.tile): head h owns columns "
               "h*d_k:(h+1)*d_k. Scale the (B, H, T, d_k) heads by head_mask[:, None, None] before merging, "
               "or repeat each entry d_k times.")

def forward_same_row(sol, tokens, model, n_heads, head_mask):
    if np.all(head_mask == head_mask[0]):
        return None
    return sol["masked_forward"](tokens, model, n_heads, np.broadcast_to(head_mask[0], head_mask.shape).copy())


def forward_rows_reversed(sol, tokens, model, n_heads, head_mask):
    if np.array_equal(head_mask, head_mask[::-1]):
        return None
    return sol["masked_forward"](tokens, model, n_heads, np.ascontiguousarray(head_mask[::-1]))


def forward_no_mask(sol, tokens, model, n_heads, head_mask):
    return None if all_ones(head_mask) else sol["masked_forward"](tokens, model, n_heads, np.ones_like(head_mask))
