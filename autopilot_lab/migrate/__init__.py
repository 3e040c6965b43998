"""Keras -> PyTorch migration: readable model.py, trainable weights, a Keras-faithful recipe.

from autopilot_lab.migrate import translate
t = translate("model.keras")
open("model.py", "w").write(t.source)   # one nn.Module, imports torch only
model = load_module("model.py").MyModel(); model.load_state_dict(t.torch_state_dict())
"""

from .keras_model import MigrationError, load_keras_model
from .recipe import keras_fit_config
from .translator import Translation, UnsupportedLayer, translate

__all__ = [
    "MigrationError",
    "Translation",
    "UnsupportedLayer",
    "keras_fit_config",
    "load_keras_model",
    "translate",
]
