"""Dropout masks both frameworks can draw: a counter-based hash of (seed, layer, step,
element), so that migrate's metric tier trains the Keras model and its PyTorch port with the
same masks, not merely masks of the same law.

Without it two correct translations, fed the same batches, still end ~5% apart in RMSE after
a few hundred steps with 10% dropout: the masks differ at every step and the trajectories
never meet again. With it (and the shared batch order of ``training.epoch_order``) they differ
by float rounding only. The hash needs integer multiply, xor, shift and and, nothing else, so
the Keras side (``migrate.reference.SharedMaskDropout``) computes the very same bits with
``keras.ops``.

A mask is shared only for a ``Dropout`` on a rank-2 tensor (batch, features) without a
noise shape: there both frameworks lay the elements out the same way. Others keep their own
dropout.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

MASK32 = 0xFFFFFFFF
MULT = 0x045D9F3B  # < 2**27: a 32-bit value times it stays below 2**59, exact in int64


def mix(x: Any, xor: Callable, shr: Callable, band: Callable) -> Any:
    """A 32-bit avalanche hash of int64 values in [0, 2**32), written with the four integer
    operations the caller passes, so torch and keras.ops give bit-identical results."""
    x = band(xor(x, shr(x, 16)) * MULT, MASK32)
    x = band(xor(x, shr(x, 16)) * MULT, MASK32)
    return xor(x, shr(x, 16))


def salt(layer_name: str) -> int:
    """A layer's stream: a stable hash of its Keras name (below 2**31)."""
    return zlib.crc32(layer_name.encode()) & 0x7FFFFFFF


def stream_key(seed: int, layer_salt: int) -> int:
    """The per-layer, per-run key (plain Python ints)."""
    py = (lambda a, b: a ^ b, lambda a, n: a >> n, lambda a, m: a & m)
    return int(mix((int(seed) * 0x9E3779B1 + layer_salt) & MASK32, *py))


def keep_uniform_torch(key: int, step: int, n: int, device: Any = "cpu") -> torch.Tensor:
    """``n`` uniforms in [0, 1) for one step of one layer (float32, 24 random bits each)."""
    ops = (torch.bitwise_xor, torch.bitwise_right_shift, torch.bitwise_and)
    base = mix(torch.tensor((key ^ step) & MASK32, dtype=torch.int64), *ops)
    idx = torch.arange(n, dtype=torch.int64, device=device)
    bits = mix(torch.bitwise_and(idx + base.to(device), MASK32), *ops)
    return torch.bitwise_right_shift(bits, 8).to(torch.float32) * (1.0 / (1 << 24))


def install(model: nn.Module, seed: int, modules: dict[str, int]) -> list[str]:
    """Make the named ``nn.Dropout`` modules draw shared masks in training (forward hooks:
    the model's code is untouched). ``modules``: torch module name -> layer salt. Returns the
    names hooked; a name the model does not have is skipped (its dropout stays torch's)."""
    named = dict(model.named_modules())
    hooked = []
    for name, layer_salt in sorted(modules.items()):
        module = named.get(name)
        if type(module) is not nn.Dropout:
            continue
        module.register_forward_hook(_hook(stream_key(seed, layer_salt)))
        hooked.append(name)
    return hooked


def _hook(key: int):
    state = {"step": 0}

    def hook(module: nn.Dropout, inputs: tuple, output: torch.Tensor):
        x = inputs[0]
        if not module.training or module.p == 0 or x.dim() != 2:
            return None
        state["step"] += 1
        u = keep_uniform_torch(key, state["step"], x.numel(), x.device).view(x.shape)
        return x * (u >= module.p).to(x.dtype) / (1 - module.p)

    return hook
