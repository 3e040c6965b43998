"""Arrays across the sandbox boundary: packed by the harness, unpacked and validated by the
parent.

A sandboxed job returns raw measurements (outputs, gradients, weights, losses) as JSON; an
array travels as ``{"dtype": "float32", "shape": [n, k], "b64": "..."}`` with its exact bytes,
so the parent judges the very numbers the candidate produced, not a rounded summary. The
parent treats every packed array as hostile input: :func:`unpack` accepts only the listed
dtypes, a shape that matches the byte count (and the shape the parent expected, when it says),
and raises :class:`Malformed` for anything else.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DTYPES = ("float16", "float32", "float64", "int64", "int32", "bool")
MAX_ELEMENTS = 1 << 24


class Malformed(ValueError):
    """A message from the sandbox that breaks the measurement protocol."""


def pack(value: Any) -> dict[str, Any]:
    """An array (numpy or torch) as JSON: dtype, shape and base64 of its little-endian bytes."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16: widen, exactly
            value = value.float()
        value = value.numpy()
    arr = np.array(value, order="C", copy=True)  # (ascontiguousarray makes a scalar 1-d)
    dtype = arr.dtype.name
    if dtype not in DTYPES:
        raise TypeError(f"cannot pack an array of dtype {dtype}")
    return {"dtype": dtype, "shape": list(arr.shape),
            "b64": base64.b64encode(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).decode()}


def unpack(obj: Any, what: str, *, shape: Sequence[int | None] | None = None,
           floating: bool = True) -> np.ndarray:
    """The array ``obj`` carries, as float64 (``floating``) or as sent; :class:`Malformed` when
    it is not a packed array, has another dtype family, or another shape than ``shape``
    (``None`` entries match any size)."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "b64"}:
        raise Malformed(f"{what}: expected a packed array, got {_kind(obj)}")
    dtype, dims, data = obj["dtype"], obj["shape"], obj["b64"]
    if dtype not in DTYPES:
        raise Malformed(f"{what}: dtype {str(dtype)[:40]!r} is not one of {DTYPES}")
    if not (isinstance(dims, list) and len(dims) <= 8 and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ELEMENTS
            for d in dims)):
        raise Malformed(f"{what}: shape {str(dims)[:80]} is not a list of sizes")
    if math.prod(dims) > MAX_ELEMENTS or not isinstance(data, str):
        raise Malformed(f"{what}: too many elements or no data")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise Malformed(f"{what}: the data is not base64 ({exc})") from exc
    np_dtype = np.dtype(dtype).newbyteorder("<")
    if len(raw) != math.prod(dims) * np_dtype.itemsize:
        raise Malformed(f"{what}: {len(raw)} bytes do not make an array of shape {dims} "
                        f"{dtype}")
    arr = np.frombuffer(raw, dtype=np_dtype).reshape(dims)
    if shape is not None and (len(shape) != len(dims) or any(
            want is not None and want != have for want, have in zip(shape, dims))):
        raise Malformed(f"{what}: shape {dims}, expected {list(shape)}")
    if floating:
        if dtype in ("int64", "int32", "bool"):
            raise Malformed(f"{what}: dtype {dtype}, expected a floating array")
        return arr.astype(np.float64)
    return arr.copy()


def _kind(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"an object with keys {sorted(map(str, obj))[:6]}"
    return type(obj).__name__
