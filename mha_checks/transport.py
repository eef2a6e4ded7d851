"""Plain data across the sandbox boundary: JSON with NumPy arrays, never pickle.

The student's process writes what its functions returned with :func:`dumps`;
the grader reads it with :func:`loads`, which accepts only dicts with string
keys, lists, strings, numbers, booleans, None and numeric or boolean arrays
(``.npy`` bytes loaded with ``allow_pickle=False``). Anything else is refused,
so a crafted record can carry wrong numbers but never code or objects with
surprising behaviour (an ``__eq__`` that is always True, say).
"""
import base64
import io
import json

import numpy as np

ARRAY_KEY = "__ndarray__"
MAX_DEPTH = 32
MAX_ARRAY_BYTES = 64 * 1024 * 1024
ARRAY_KINDS = "biufc"  # bool, int, unsigned, float, complex: no objects, strings or records


class NotPlainData(ValueError):
    """A record from the student's process that is not plain data."""


def to_plain(obj, depth: int = 0):
    """``obj`` made of dicts, lists, tuples, scalars and arrays, as JSON-ready values."""
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deeply")
    if isinstance(obj, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(obj).reshape(obj.shape), allow_pickle=False)  # 0-d stays 0-d
        return {ARRAY_KEY: base64.b64encode(buffer.getvalue()).decode("ascii")}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, depth + 1) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise NotPlainData(f"cannot send a {type(obj).__name__}")


def dumps(obj) -> str:
    return json.dumps(to_plain(obj))


def from_plain(value, depth: int = 0):
    """The inverse of :func:`to_plain`, refusing anything that is not plain data."""
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deeply")
    if isinstance(value, dict):
        if set(value) == {ARRAY_KEY}:
            return _array(value[ARRAY_KEY])
        return {k: from_plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v, depth + 1) for v in value]
    if value is None or type(value) in (bool, int, float, str):
        return value
    raise NotPlainData(f"unexpected {type(value).__name__}")


def loads(text: str):
    try:
        return from_plain(json.loads(text))
    except (ValueError, RecursionError) as err:
        raise NotPlainData(f"not plain data: {str(err)[:200]}") from None


def _array(encoded) -> np.ndarray:
    if not isinstance(encoded, str) or len(encoded) > MAX_ARRAY_BYTES * 4 // 3 + 4:
        raise NotPlainData("array too large or malformed")
    try:
        array = np.load(io.BytesIO(base64.b64decode(encoded, validate=True)), allow_pickle=False)
    except Exception as err:  # any malformed .npy payload
        raise NotPlainData(f"malformed array ({type(err).__name__})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in ARRAY_KINDS or array.dtype.fields:
        raise NotPlainData(f"array of dtype {getattr(array, 'dtype', '?')} is not numeric")
    return array
