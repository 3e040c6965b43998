"""The Keras side of parity, computed in the calling process (the reference is the user's own
model, not agent code): outputs, per-layer outputs, the loss and the gradient of every weight
on one batch, and K optimizer steps. Everything lands in one ``reference.npz`` (plus a JSON
meta) in torch layout, so the sandboxed probe compares without TensorFlow.

Dropout is switched off on both sides for the K-step comparison; dropout placement is
compared structurally instead. Embedding gradients reach Keras' optimizer as they do in
``fit`` (IndexedSlices: Adam squares each occurrence of a repeated id before summing), which
our harness's ``KerasAdam`` reproduces (``harness.keras_optim.keras_sparse_squares``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from autopilot_lab.candidate import Recipe
from autopilot_lab.migrate.translator import Translation, translate

DYNAMICS_STEPS = 20
BATCH = 32
# Layers whose place relative to each other changes training (dropout before or after a
# normalization changes the statistics it sees): parity compares the order they are called in.
NORMALIZATION_CLASSES = ("BatchNormalization", "LayerNormalization", "GroupNormalization")
DROPOUT_CLASSES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                   "GaussianDropout", "GaussianNoise", "AlphaDropout")


def clone_keras(model: Any) -> Any:
    """A structural copy with the same weights. The model is the caller's own object, so a
    Lambda's Python function may be re-created (Keras refuses that by default for files)."""
    import keras
    from keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(False):
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for layer in _all_layers(clone):
        # adapted preprocessing layers (Normalization) derive their tensors from the
        # weights only in finalize_state(): set_weights alone leaves them at the defaults
        if getattr(layer, "_is_adapted", False) or type(layer).__name__ == "Normalization":
            finalize = getattr(layer, "finalize_state", None)
            if finalize is not None:
                finalize()
    return clone


def _np(x: Any) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def recipe_from_keras(fit: dict[str, Any], translation: Translation, kind: str) -> Recipe:
    """The translated training recipe as our harness's Recipe, Keras semantics kept."""
    opt = fit.get("optimizer") or {}
    loss = fit.get("loss") or {}
    name = opt.get("name", "adam")
    optimizer = {"adam": "adam", "adamw": "adamw", "sgd": "sgd", "rmsprop": "rmsprop"}.get(
        name, "adam")
    if optimizer == "adam" and opt.get("weight_decay"):
        optimizer = "adamw"
    by_layer = {(w["keras_layer"], w["keras_weight"].rsplit("/", 1)[-1]): w["torch"]
                for w in translation.weight_map}
    penalties = []
    for reg in fit.get("regularizers") or []:
        key = by_layer.get((reg["layer"], reg["weight"]))
        if key and (reg.get("l1") or reg.get("l2")):
            penalties.append({"param": key, "l1": reg.get("l1", 0.0), "l2": reg.get("l2", 0.0)})
    loss_name = {"sparse_categorical_crossentropy": "cross_entropy",
                 "categorical_crossentropy": "cross_entropy",
                 "binary_crossentropy": "binary_cross_entropy",
                 "mean_squared_error": "mse", "mean_absolute_error": "mae",
                 "huber": "huber"}.get(loss.get("name"), "auto")
    es = fit.get("early_stopping") or {}
    return Recipe(
        optimizer=optimizer, lr=float(opt.get("lr") or 1e-3),
        batch_size=int(fit.get("batch_size") or 32), epochs=int(fit.get("epochs") or 1),
        weight_decay=float(opt.get("weight_decay") or 0.0), loss=loss_name,
        early_stopping=int(es.get("patience") or 0),
        restore_best=bool(es.get("restore_best_weights", False)),
        from_logits=bool(loss.get("from_logits", True)) if loss else True,
        label_smoothing=float(loss.get("label_smoothing") or 0.0),
        eps=float(opt.get("epsilon") or 1e-7),
        momentum=float(opt.get("momentum") or 0.0) if optimizer in ("sgd", "rmsprop") else 0.9,
        betas=(float(opt.get("beta_1") or 0.9), float(opt.get("beta_2") or 0.999)),
        rho=float(opt.get("rho") or 0.9), nesterov=bool(opt.get("nesterov", False)),
        centered=bool(opt.get("centered", False)),
        penalties=tuple(penalties), keras_epsilon=True,
        grad_clip=float(opt.get("global_clipnorm") or 0.0),
        clipnorm=float(opt.get("clipnorm") or 0.0), clipvalue=float(opt.get("clipvalue") or 0.0),
        class_weight=fit.get("class_weight"))


class KerasReference:
    """A Keras model with its translation: computes what the candidate must reproduce."""

    def __init__(self, model: Any, translation: Translation, recipe: Recipe, kind: str):
        self.model, self.translation, self.recipe, self.kind = model, translation, recipe, kind

    # -- inputs --------------------------------------------------------------------------
    def sample_inputs(self, rows: np.ndarray | None, n: int = 64, seed: int = 0):
        """Real rows when given (single-input models), else seeded random inputs."""
        if rows is not None and len(self.translation.inputs) == 1:
            return [np.asarray(rows[:n], dtype=np.float32)]
        rng = np.random.default_rng(seed)
        out = []
        for spec in self.translation.inputs:
            shape = (n, *[d or 8 for d in spec["shape"]])
            if "int" in str(spec.get("dtype")):
                out.append(rng.integers(0, self._vocab(), size=shape).astype(np.int64))
            else:
                out.append(rng.standard_normal(shape).astype(np.float32))
        return out

    def _vocab(self) -> int:
        dims = [layer.input_dim for layer in self.model.layers if hasattr(layer, "input_dim")]
        return int(min(dims)) if dims else 10

    # -- computations ----------------------------------------------------------------------
    @staticmethod
    def _inputs_for(model, xs):
        """``xs`` in the structure ``model`` was built with (a one-input model saved from a
        Sequential expects a list of one): the other way round Keras warns that "the
        structure of `inputs` doesn't match", into every run's output."""
        struct = getattr(model, "_inputs_struct", None)
        return list(xs) if isinstance(struct, (list, tuple)) or len(xs) > 1 else xs[0]

    def _keras_inputs(self, xs):
        return self._inputs_for(self.model, xs)

    def outputs(self, xs) -> list[np.ndarray]:
        out = self.model(self._keras_inputs(xs), training=False)
        return [_np(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    def layer_outputs(self, xs) -> dict[str, np.ndarray]:
        """Inference outputs of every layer that maps to a torch submodule, by attribute."""
        import keras

        mapped = [(layer, self.translation.layer_map.get(layer.name))
                  for layer in self.model.layers]
        mapped = [(layer, attr) for layer, attr in mapped
                  if attr and not isinstance(layer.output, (list, tuple))]
        if not mapped:
            return {}
        probe = keras.Model(self.model.inputs, [layer.output for layer, _ in mapped])
        outs = probe(self._inputs_for(probe, xs), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {attr: _np(o) for (_, attr), o in zip(mapped, outs)}

    def labels(self, xs, y: np.ndarray | None) -> np.ndarray:
        if y is not None:
            return np.asarray(y)
        pred = self.outputs(xs)[0]
        if self.kind == "regression":
            return pred.reshape(len(pred), -1)[:, 0].astype(np.float32)
        if pred.shape[-1] == 1:
            return (pred[:, 0] > (0.5 if not self.recipe.from_logits else 0.0)).astype(np.int64)
        return pred.argmax(-1).astype(np.int64)

    def _trainable_clone(self):
        """A copy with dropout off and a fresh optimizer from the model's config."""
        import keras

        clone = clone_keras(self.model)
        for layer in _all_layers(clone):
            if type(layer).__name__ in DROPOUT_CLASSES:
                for attr in ("rate", "stddev"):
                    if hasattr(layer, attr):
                        setattr(layer, attr, 0.0)
        opt_cfg = (self.model.optimizer.get_config() if getattr(self.model, "optimizer", None)
                   else {"name": "adam", "learning_rate": self.recipe.lr})
        optimizer = type(self.model.optimizer).from_config(opt_cfg) if getattr(
            self.model, "optimizer", None) else keras.optimizers.Adam(self.recipe.lr)
        clone.compile(optimizer=optimizer, loss=self.model.loss)
        return clone

    def _sample_weight(self, y: np.ndarray):
        cw = self.recipe.class_weight
        if not cw:
            return None
        return np.array([cw.get(int(c), 1.0) for c in np.asarray(y).reshape(-1)],
                        dtype=np.float32)

    def _y_keras(self, y: np.ndarray) -> np.ndarray:
        return y.reshape(-1, 1).astype(np.float32) if self.recipe.loss in (
            "binary_cross_entropy", "mse", "mae", "huber") else y

    def loss_and_grads(self, xs, y) -> tuple[float, float, dict[str, np.ndarray]]:
        """(total loss, regularization part, gradient of each trainable weight in torch
        layout) on one batch, in training mode with dropout off."""
        import tensorflow as tf

        clone = self._trainable_clone()
        with tf.GradientTape() as tape:
            pred = clone(self._inputs_for(clone, xs), training=True)
            loss = clone.compute_loss(x=None, y=self._y_keras(y), y_pred=pred,
                                      sample_weight=self._sample_weight(y), training=True)
        reg = float(sum(_np(v).sum() for v in clone.losses)) if clone.losses else 0.0
        grads = [tf.convert_to_tensor(g) if g is not None else None  # IndexedSlices: dense
                 for g in tape.gradient(loss, clone.trainable_weights)]
        return float(_np(loss)), reg, self._as_torch(clone, grads)

    def train_steps(self, xs, y, index: np.ndarray) -> tuple[list[float], dict[str, np.ndarray]]:
        """K optimizer steps on the batches ``index`` -> (loss before each step, final state
        in torch layout, buffers included)."""
        import tensorflow as tf

        clone = self._trainable_clone()
        opt = clone.optimizer
        losses = []
        for rows in index:
            bx = [x[rows] for x in xs]
            by = y[rows]
            with tf.GradientTape() as tape:
                pred = clone(self._inputs_for(clone, bx), training=True)
                loss = clone.compute_loss(x=None, y=self._y_keras(by), y_pred=pred,
                                          sample_weight=self._sample_weight(by), training=True)
            # as fit steps: an embedding's gradient stays IndexedSlices (Adam squares each
            # occurrence of a repeated id), the semantics our KerasAdam reproduces
            grads = tape.gradient(loss, clone.trainable_weights)
            opt.apply_gradients(zip(grads, clone.trainable_weights))
            losses.append(float(_np(loss)))
        mapped = {w["torch"] for w in self.translation.weight_map}
        return losses, {k: v for k, v in translate(clone).state_dict.items() if k in mapped}

    def _as_torch(self, clone, grads) -> dict[str, np.ndarray]:
        """Gradients in torch layout: put them in place of the weights and convert."""
        saved = clone.get_weights()
        by_id = {id(w): g for w, g in zip(clone.trainable_weights, grads)}
        clone.set_weights([_np(by_id[id(w)]) if id(w) in by_id and by_id[id(w)] is not None
                           else np.zeros(w.shape, dtype=np.float32) if id(w) in by_id
                           else _np(w) for w in clone.weights])
        converted = translate(clone).state_dict
        clone.set_weights(saved)
        trainable = {w["torch"] for w in self.translation.weight_map if not w["buffer"]}
        return {k: v for k, v in converted.items() if k in trainable}

    def expectations(self) -> dict[str, Any]:
        """Settings the candidate must carry, for naming the cause of a mismatch."""
        bn, dropout, order = {}, {}, []
        for layer in _all_layers(self.model):
            attr = self.translation.layer_map.get(layer.name)
            cls = type(layer).__name__
            if not attr:
                continue
            if cls == "BatchNormalization":
                bn[attr] = {"eps": float(layer.epsilon), "momentum": round(1 - float(
                    layer.momentum), 6)}
            elif cls in DROPOUT_CLASSES and hasattr(layer, "rate"):
                dropout[attr] = float(layer.rate)
            if cls in NORMALIZATION_CLASSES or attr in dropout:
                order.append([attr, "dropout" if attr in dropout else "normalization"])
        r = self.recipe
        return {"batchnorm": bn, "dropout": dropout, "order": order,
                "recipe": {"optimizer": r.optimizer, "lr": r.lr, "eps": r.eps,
                           "betas": list(r.betas), "momentum": r.momentum, "rho": r.rho,
                           "nesterov": r.nesterov, "centered": r.centered,
                           "from_logits": r.from_logits, "loss": r.loss,
                           "penalties": [dict(p) for p in r.penalties],
                           "epochs": r.epochs, "batch_size": r.batch_size,
                           "early_stopping": r.early_stopping,
                           "weight_decay": r.weight_decay,
                           "class_weight": r.to_dict()["class_weight"],
                           "grad_clip": r.grad_clip, "clipnorm": r.clipnorm,
                           "clipvalue": r.clipvalue, "keras_epsilon": r.keras_epsilon}}

    # -- the file ----------------------------------------------------------------------------
    def write(self, path: Path, rows: np.ndarray | None, y: np.ndarray | None,
              seed: int = 0) -> dict[str, Any]:
        """Compute everything and write ``path`` (npz); returns the JSON meta."""
        xs = self.sample_inputs(rows, seed=seed)
        n = len(xs[0])
        yy = self.labels(xs, y[:n] if y is not None else None)
        arrays: dict[str, np.ndarray] = {f"x_{i}": x for i, x in enumerate(xs)}
        arrays["y"] = yy
        for j, o in enumerate(self.outputs(xs)):
            arrays[f"out_{j}"] = o
        layers = self.layer_outputs(xs)
        for attr, o in layers.items():
            arrays[f"layer__{attr}"] = o
        bx = [x[:BATCH] for x in xs]
        loss, reg, grads = self.loss_and_grads(bx, yy[:BATCH])
        for k, g in grads.items():
            arrays[f"grad__{k}"] = g
        rng = np.random.default_rng(seed)
        index = np.stack([rng.choice(n, size=min(BATCH, n), replace=False)
                          for _ in range(DYNAMICS_STEPS)])
        arrays["dyn_index"] = index
        losses, final = self.train_steps(xs, yy, index)
        arrays["dyn_losses"] = np.asarray(losses, dtype=np.float64)
        for k, v in final.items():
            arrays[f"final__{k}"] = v
        np.savez(path, **arrays)
        activations = {}
        for layer in self.model.layers:
            attr = self.translation.layer_map.get(layer.name)
            act = getattr(layer, "activation", None)
            if attr and act is not None:
                activations[attr] = getattr(act, "__name__", str(act))
        buffers = sorted(w["torch"] for w in self.translation.weight_map if w["buffer"])
        meta = {"n_inputs": len(xs), "buffers": buffers, "batch": int(index.shape[1]),
                "n_outputs": len([k for k in arrays if k.startswith("out_")]),
                "layers": list(layers), "activations": activations, "keras_loss": loss,
                "keras_regularization": reg, "steps": int(len(index)),
                "expect": self.expectations()}
        Path(str(path) + ".json").write_text(json.dumps(meta, sort_keys=True))
        return meta


def _all_layers(model: Any) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        for sub in ("forward_layer", "backward_layer", "layer"):
            inner = getattr(layer, sub, None)
            if inner is not None and inner is not layer and hasattr(inner, "get_config"):
                out.append(inner)
        if hasattr(layer, "layers") and layer is not model:
            out.extend(_all_layers(layer))
    return out
