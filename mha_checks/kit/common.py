"""Case inputs every chapter draws from: random arrays, masks with every row
keeping a key, the causal mask. Shapes are the caller's; these only fill them."""
import dataclasses

import numpy as np


def normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def random_mask(rng, shape, empty_row=None):
    mask = rng.random(shape) < 0.6
    mask[..., 0] |= ~mask.any(axis=-1)   # every row keeps a key and masks one, so a flipped
    mask[..., -1] &= ~mask.all(axis=-1)  # mask is a distinct mistake on every row ...
    if empty_row is not None:
        mask[..., empty_row, :] = False  # ... except the one that tests the no-key rule
    return mask


def causal(T):
    return np.tril(np.ones((T, T), dtype=bool))


def flip_is_distinct(mask, batch_shape, T_q, T_k) -> bool:
    """Flipping is only a distinct mistake where it leaves every row a key."""
    full = np.broadcast_to(mask, (*batch_shape, T_q, T_k))
    return bool(full.any(axis=-1).all() and (~full).any(axis=-1).all())


def pasted_in(function, *tracks):
    """An earlier chapter's function, checked here only in the notebooks whose students paste it in."""
    return dataclasses.replace(function, tracks=tracks)
