"""The Keras side of shared dropout masks (see ``harness.shared_dropout``): which Dropout
layers can share their masks with the PyTorch port, and a training copy of the Keras model in
which those layers draw the hash's masks (``SharedMaskDropout``: the same Bernoulli keep with
probability 1 - rate and the same 1 / (1 - rate) scaling as ``keras.layers.Dropout``)."""

from __future__ import annotations

from typing import Any

from autopilot_lab.harness.shared_dropout import MASK32, mix, salt, stream_key
from autopilot_lab.migrate.translator import Translation


def shareable(model: Any, translation: Translation) -> dict[str, dict[str, Any]]:
    """Top-level ``Dropout`` layers on (batch, features) tensors without a noise shape, that
    the translation maps to a module: ``{keras name: {"module": torch name, "salt": int}}``."""
    out = {}
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ != "Dropout" or getattr(layer, "noise_shape", None):
            continue
        shape = getattr(layer, "output", None)
        rank = len(shape.shape) if shape is not None else None
        module = translation.layer_map.get(layer.name)
        if rank == 2 and module:
            out[layer.name] = {"module": module, "salt": salt(layer.name)}
    return out


def with_shared_masks(model: Any, seed: int, layers: dict[str, dict[str, Any]]) -> Any:
    """A clone of the functional ``model`` (same weights) whose named Dropout layers draw the
    shared masks; the model itself when it cannot be cloned that way (subclassed)."""
    import keras

    if not layers or not isinstance(model, keras.Model) or not hasattr(model, "inputs"):
        return model
    shared_layer = _layer_class()

    def clone_function(layer):
        if layer.name in layers:
            return shared_layer(layer.rate, stream_key(seed, layers[layer.name]["salt"]),
                                name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    try:
        clone = keras.models.clone_model(model, clone_function=clone_function)
    except (ValueError, TypeError):
        return model
    by_name = {layer.name: layer for layer in model.layers}
    for layer in clone.layers:
        if layer.name not in layers and layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())
            finalize = getattr(layer, "finalize_state", None)
            if type(layer).__name__ == "Normalization" and finalize is not None:
                finalize()
    return clone


_CLASS: list = []


def _layer_class():
    """``SharedMaskDropout``, defined on first use (keras is imported lazily)."""
    if _CLASS:
        return _CLASS[0]
    import keras
    from keras import ops

    class SharedMaskDropout(keras.layers.Layer):
        """Dropout whose mask at training step t is the hash's (key, t) draw."""

        def __init__(self, rate: float, key: int, **kwargs):
            super().__init__(**kwargs)
            self.rate, self.key = float(rate), int(key)

        def build(self, input_shape):
            self.step = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                        trainable=False, name="step")

        def call(self, x, training=None):
            if not training or self.rate == 0:
                return x
            step = self.step + 1
            self.step.assign(step)
            n = ops.prod(ops.shape(x))
            base = _mix(ops.bitwise_and(ops.bitwise_xor(ops.convert_to_tensor(
                self.key, "int64"), step), MASK32))
            bits = _mix(ops.bitwise_and(ops.arange(n, dtype="int64") + base, MASK32))
            u = ops.cast(ops.right_shift(bits, 8), "float32") * (1.0 / (1 << 24))
            keep = ops.cast(ops.reshape(u, ops.shape(x)) >= self.rate, x.dtype)
            return x * keep / (1 - self.rate)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "rate": self.rate, "key": self.key}

    def _mix(x):
        return mix(x, ops.bitwise_xor, ops.right_shift, ops.bitwise_and)

    _CLASS.append(SharedMaskDropout)
    return SharedMaskDropout
