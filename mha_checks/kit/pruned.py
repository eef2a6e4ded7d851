"""A pruned layer or model as the student's function returns it (chapter 8's ``prune_heads``
and ``prune_model``).

A pruned layer is a dict and a count, not an array, so these functions' checks call the
student's function through a ``call`` that turns what comes back into the track's arrays
(CuPy arrays in the CuPy notebook, tensors in PyTorch) in the student's process: each params
entry (an absent bias as an empty array), the head count, and a code saying whether the input
was left alone (0), its dict changed (1), its arrays written in place (2), or the result
shares memory with it (3). A value of the student's that is not the track's array is passed
on as it is, so that the engine's result check names it.
"""
import numpy as np


WEIGHTS = ("w_q", "w_k", "w_v", "w_o")
BIASES = ("b_q", "b_k", "b_v", "b_o")
SLICED = ("w_q", "w_k", "w_v", "b_q", "b_k", "b_v")   # a head's columns (entries, for a bias)
LAYER_OUTPUTS = (*WEIGHTS, *BIASES, "n_heads", "input")

UNTOUCHED, DICT_CHANGED, ARRAYS_CHANGED, SHARED = 0, 1, 2, 3
INPUT_MESSAGES = {
    DICT_CHANGED: "the input's dict was changed (an entry replaced, added or removed): build a new dict for the "
                  "pruned layer and leave the one you were given as it was; the experiments prune the same "
                  "layer several ways.",
    ARRAYS_CHANGED: "the input's arrays were changed in place: the pruned layer is new arrays, and the layer you "
                    "were given must stay as it was.",
    SHARED: "the result shares memory with the input (the same arrays, or views of them): writing into the "
            "pruned layer changes the full one. Return new arrays: indexing with the kept columns makes copies "
            "(or call .copy() / .clone()), and a layer with nothing removed is a copy too.",
}


# --------------------------------------------------------------------------
# Calling the student's function: a pruned layer as arrays
# --------------------------------------------------------------------------

def described(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: ({', '.join(type(v).__name__ for v in value)})"
    return type(value).__name__


def _snapshot(params: dict, backend) -> dict:
    return {k: backend.to_numpy(v).copy() for k, v in params.items() if backend.is_native(v)}


def _changed(params: dict, entries: dict, before: dict, backend) -> int:
    """How the student's function left its input ``params`` (entries: the dict's values before the call)."""
    if set(params) != set(entries) or any(params[k] is not v for k, v in entries.items()):
        return DICT_CHANGED
    if any(not np.array_equal(backend.to_numpy(params[k]), v) for k, v in before.items()):
        return ARRAYS_CHANGED
    return UNTOUCHED


def _count(value, name: str = "prune_heads"):
    """A head count (or a list of counts) as a NumPy integer array, converted to the track's array type with
    the other outputs; its dtype and shape are judged by the validate hooks."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, (list, tuple)):
        value = [v.item() if hasattr(v, "item") else v for v in value]
    try:
        array = np.asarray(value)
    except Exception:
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must return new_n_heads as a number of heads (an int, or one int per layer); "
                        f"it returned {described(value)}")
    return array


def _layer_arrays(new: dict, name: str) -> tuple:
    """The student's pruned params dict, after checking it is a dict with every weight matrix."""
    if not isinstance(new, dict):
        raise TypeError(f"{name} must return (new_params, new_n_heads) with new_params a dict; its first "
                        f"element is {type(new).__name__}")
    missing = [k for k in WEIGHTS if new.get(k) is None]
    if missing:
        raise KeyError(f"the pruned params returned by {name} have no {', '.join(missing)}: keep every weight "
                       "matrix, sliced to the kept heads")
    return new


class _Theirs:
    """A value the student returned that is not the track's array (a NumPy array in the CuPy notebook, a
    list): passed on as it is, so that the engine's result check names its type."""

    def __init__(self, value):
        self.value = value


def _copied(value, backend):
    return backend.to_numpy(value).copy() if backend.is_native(value) else _Theirs(value)


def _as_outputs(new: dict, backend) -> dict:
    """A pruned layer's entries: the student's arrays as NumPy copies (anything else as ``_Theirs``);
    a bias absent or None as an empty array of the weights' dtype."""
    out = {}
    dtype = None
    for k in WEIGHTS:
        out[k] = _copied(new[k], backend)
        if dtype is None and isinstance(out[k], np.ndarray):
            dtype = out[k].dtype
    for k in BIASES:
        value = new.get(k)
        out[k] = np.zeros(0, dtype or np.float64) if value is None else _copied(value, backend)
    return out


def _write_into(arrays) -> None:
    """Overwrite the student's returned arrays (the check's own copies of the case): an input that
    changes with them shares memory with the result."""
    for value in arrays:
        try:
            value[...] = 0
        except Exception:  # a read-only array or a tensor that needs grad: nothing written, nothing learned
            pass


def _native(outputs: dict, backend) -> tuple:
    """The outputs in the track's array type, as the engine's result check wants them (a CuPy array in the
    CuPy track, a tensor in PyTorch): every NumPy array or NumPy scalar the call made (the copies of the
    student's arrays, the head count, the input's status code) is converted; a ``_Theirs`` is handed back
    unchanged, so that a wrong type is reported as the student's."""
    converted = []
    for value in outputs.values():
        if isinstance(value, _Theirs):
            converted.append(value.value)
        else:
            converted.append(backend.asarray(np.asarray(value)))
    return tuple(converted)


def call_prune_heads(fn, args, kwargs, backend):
    params, n_heads, heads = args[0], args[1], [int(h) for h in args[2]]
    entries, before = dict(params), _snapshot(params, backend)
    result = fn(params, n_heads, heads, **kwargs)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"prune_heads must return the pair (new_params, new_n_heads); it returned {described(result)}")
    new, new_n = result
    new = _layer_arrays(new, "prune_heads")
    code = _changed(params, entries, before, backend)
    outputs = _as_outputs(new, backend)
    _write_into([v for k, v in new.items() if backend.is_native(v)])
    if code == UNTOUCHED and _changed(params, entries, before, backend) != UNTOUCHED:
        code = SHARED
    outputs["n_heads"] = _count(new_n)
    outputs["input"] = np.int64(code)
    return _native(outputs, backend)


def flat_layer(params: dict, n_heads) -> dict:
    """A pruned layer as the check compares it (the reference's and the known mistakes')."""
    dtype = params["w_q"].dtype
    out = {k: np.asarray(params[k]) for k in WEIGHTS}
    out.update({k: np.asarray(params[k]) if params.get(k) is not None else np.zeros(0, dtype) for k in BIASES})
    out["n_heads"] = np.int64(n_heads)
    out["input"] = np.int64(UNTOUCHED)
    return out

MODEL_KEYS = ("embed", "position", "unembed", "b_unembed")
MODEL_OUTPUTS = (*WEIGHTS, *BIASES, "n_heads", "rest", "input")


def head_pairs(heads) -> list:
    return [(int(l), int(h)) for l, h in np.asarray(heads).reshape(-1, 2).tolist()]


def head_counts(n_heads):
    """An int stays an int; a stored list of counts (an array) becomes a list of ints."""
    if hasattr(n_heads, "ndim") and n_heads.ndim == 0:
        return int(n_heads)
    if isinstance(n_heads, (int, np.integer)):
        return int(n_heads)
    return [int(n) for n in n_heads]


def flat_model(model: dict, n_heads) -> dict:
    """A model as the check compares it: the layers' arrays concatenated (w_q... along the heads' axis), the
    head counts, the other arrays raveled one after another."""
    layers_ = [flat_layer(p, 1) for p in model["layers"]]
    out = {k: np.concatenate([l[k] for l in layers_], axis=1) for k in ("w_q", "w_k", "w_v")}
    out["w_o"] = np.concatenate([l["w_o"] for l in layers_], axis=0)
    out.update({k: np.concatenate([l[k] for l in layers_]) for k in BIASES})
    L = len(model["layers"])
    counts = np.asarray(n_heads if isinstance(n_heads, (list, tuple, np.ndarray)) else [n_heads] * L)
    out["n_heads"] = counts.astype(np.int64)
    out["rest"] = np.concatenate([np.asarray(model[k]).ravel() for k in MODEL_KEYS])
    out["input"] = np.int64(UNTOUCHED)
    return out


def _model_entries(model):
    return {"model": dict(model), "layers": list(model.get("layers", [])),
            "layer_dicts": [dict(p) for p in model.get("layers", [])]}


def _model_changed(model, entries, before, backend) -> int:
    if set(model) != set(entries["model"]) or any(model[k] is not v for k, v in entries["model"].items()):
        return DICT_CHANGED
    if list(model["layers"]) != entries["layers"] or any(
            p is not q for p, q in zip(model["layers"], entries["layers"])):
        return DICT_CHANGED
    for params, entries_l, before_l in zip(model["layers"], entries["layer_dicts"], before["layers"]):
        code = _changed(params, entries_l, before_l, backend)
        if code:
            return code
    if any(not np.array_equal(backend.to_numpy(model[k]), before["top"][k]) for k in before["top"]):
        return ARRAYS_CHANGED
    return UNTOUCHED


def call_prune_model(fn, args, kwargs, backend):
    model, n_heads, heads = args[0], head_counts(args[1]), head_pairs(backend.to_numpy(args[2]))
    entries = _model_entries(model)
    before = {"layers": [_snapshot(p, backend) for p in model["layers"]],
              "top": {k: backend.to_numpy(model[k]).copy() for k in MODEL_KEYS if backend.is_native(model.get(k))}}
    result = fn(model, n_heads, heads, **kwargs)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"prune_model must return the pair (new_model, new_n_heads); it returned {described(result)}")
    new, new_n = result
    if not isinstance(new, dict) or not isinstance(new.get("layers"), (list, tuple)):
        raise TypeError("prune_model must return (new_model, new_n_heads) with new_model a dict like the model, "
                        f"its 'layers' a list; got {type(new).__name__}")
    if len(new["layers"]) != len(model["layers"]):
        raise ValueError(f"the pruned model has {len(new['layers'])} layers; the model has {len(model['layers'])}: "
                         "pruning removes heads, never a layer (a layer with no head left is not a case here)")
    code = _model_changed(model, entries, before, backend)
    layer_outputs = [_as_outputs(_layer_arrays(p, "prune_model"), backend) for p in new["layers"]]
    for k in MODEL_KEYS:
        if not backend.is_native(new.get(k)):
            raise TypeError(f"the pruned model's {k} is {type(new.get(k)).__name__}; keep the model's other arrays "
                            "(embed, position, unembed, b_unembed) as they are")
    rest = np.concatenate([backend.to_numpy(new[k]).ravel() for k in MODEL_KEYS])
    _write_into([v for p in new["layers"] for v in p.values() if backend.is_native(v)])
    if code == UNTOUCHED and _model_changed(model, entries, before, backend) != UNTOUCHED:
        code = SHARED
    for values in layer_outputs:
        for k, v in values.items():
            if isinstance(v, _Theirs):
                raise TypeError(f"a pruned layer's {k} is {described(v.value)}; this notebook works with "
                                f"{backend.array_type_name}: return one (no conversion to or from other "
                                "libraries)")
    out = {k: np.concatenate([v[k] for v in layer_outputs], axis=1) for k in ("w_q", "w_k", "w_v")}
    out["w_o"] = np.concatenate([v["w_o"] for v in layer_outputs], axis=0)
    out.update({k: np.concatenate([v[k] for v in layer_outputs]) for k in BIASES})
    out["n_heads"] = _count(new_n, "prune_model")
    out["rest"] = rest
    out["input"] = np.int64(code)
    return _native(out, backend)
