"""Keras weight arrays -> torch layout. Each transform returns (array, human description).

Pure numpy, so every rule in `layers/` states its weight conversion in one line and the
descriptions land in `Translation.weight_map`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "as_array",
    "conv_kernel",
    "conv_transpose_kernel",
    "dense_kernel",
    "depthwise_kernel",
    "gru_gates",
    "identity",
    "keras_fans",
    "mha_input_kernel",
    "mha_output_kernel",
    "torch_fans",
]


def as_array(variable: Any) -> np.ndarray:
    """A Keras variable (or tensor) as a float32 numpy array."""
    if hasattr(variable, "numpy"):
        value = variable.numpy()
    else:
        import keras

        value = keras.ops.convert_to_numpy(variable)
    return np.asarray(value, dtype=np.float32)


def identity(a: np.ndarray) -> tuple[np.ndarray, str]:
    return a, "as is"


def dense_kernel(k: np.ndarray) -> tuple[np.ndarray, str]:
    """Dense kernel (in, out) -> nn.Linear weight (out, in)."""
    return k.T, "transpose(1, 0)"


def conv_kernel(k: np.ndarray) -> tuple[np.ndarray, str]:
    """ConvND kernel (*k, in/groups, out) -> (out, in/groups, *k)."""
    n = k.ndim - 2
    perm = (n + 1, n, *range(n))
    return np.transpose(k, perm), f"permute{perm}"


def conv_transpose_kernel(k: np.ndarray) -> tuple[np.ndarray, str]:
    """ConvNDTranspose kernel (*k, out, in) -> nn.ConvTransposeNd weight (in, out, *k)."""
    n = k.ndim - 2
    perm = (n + 1, n, *range(n))
    return np.transpose(k, perm), f"permute{perm}"


def depthwise_kernel(k: np.ndarray) -> tuple[np.ndarray, str]:
    """Depthwise kernel (*k, in, mult) -> grouped conv weight (in*mult, 1, *k)."""
    n = k.ndim - 2
    spatial, cin, mult = k.shape[:n], k.shape[n], k.shape[n + 1]
    flat = k.reshape(*spatial, cin * mult)
    out = np.transpose(flat, (n, *range(n)))[:, None]
    return out, f"reshape(*k, {cin}*{mult}) -> permute to ({cin * mult}, 1, *k)"


def gru_gates(w: np.ndarray, axis: int = -1) -> np.ndarray:
    """Reorder GRU gate blocks Keras (z, r, h) -> torch (r, z, n) along `axis`."""
    z, r, h = np.split(w, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


def mha_input_kernel(k: np.ndarray) -> tuple[np.ndarray, str]:
    """MHA query/key/value kernel (dim, heads, head_dim) -> nn.Linear (heads*head_dim, dim)."""
    d, h, e = k.shape
    return k.reshape(d, h * e).T, f"reshape({d}, {h}*{e}) -> transpose(1, 0)"


def mha_output_kernel(k: np.ndarray) -> tuple[np.ndarray, str]:
    """MHA output kernel (heads, head_dim, out) -> nn.Linear (out, heads*head_dim)."""
    h, e, d = k.shape
    return k.reshape(h * e, d).T, f"reshape({h}*{e}, {d}) -> transpose(1, 0)"


def keras_fans(shape: tuple) -> tuple[int, int]:
    """fan_in, fan_out as Keras computes them for its initializers."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    rf = int(np.prod(shape[:-2]))
    return shape[-2] * rf, shape[-1] * rf


def torch_fans(shape: tuple) -> tuple[int, int]:
    """fan_in, fan_out as torch.nn.init computes them."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return (shape[0] if shape else 1,) * 2
    rf = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * rf, shape[0] * rf
