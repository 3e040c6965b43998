"""A Keras model's compile/fit configuration as a training recipe with Keras semantics.

The recipe is plain data (JSON-able): which torch optimizer and loss reproduce Keras' update
and loss, with Keras' defaults (Adam epsilon 1e-7, 'sum_over_batch_size' = mean, ...) spelled
out, plus regularization penalties, class weights and early stopping.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["keras_fit_config", "loss_recipe", "optimizer_recipe"]


def _f(v: Any) -> Any:
    """A float32-stored hyperparameter as typed (0.001, not 0.0010000000474974513)."""
    if isinstance(v, (float, np.floating)):
        return float(f"{float(v):.7g}")
    return v


def _lr(v: Any) -> Any:
    if isinstance(v, dict):  # a LearningRateSchedule
        return {"schedule": v.get("class_name"), "config": v.get("config")}
    return _f(v)


def optimizer_recipe(optimizer: Any) -> dict | None:
    """Keras optimizer (object or config) -> torch optimizer name and arguments."""
    if optimizer is None:
        return None
    if isinstance(optimizer, str):
        import keras

        optimizer = keras.optimizers.get(optimizer)
    if hasattr(optimizer, "get_config"):
        name, c = type(optimizer).__name__, optimizer.get_config()
    else:
        name, c = optimizer.get("class_name", "?"), optimizer.get("config", {})
    c = {k: _f(v) for k, v in c.items()}
    c["learning_rate"] = _lr(c.get("learning_rate"))
    out: dict[str, Any] = {"name": name.lower(), "keras": c, "lr": c.get("learning_rate")}
    wd = c.get("weight_decay") or 0.0
    notes: list[str] = []
    if name in ("Adam", "AdamW", "Adamax", "Nadam"):
        out.update(
            beta_1=c.get("beta_1"),
            beta_2=c.get("beta_2"),
            epsilon=c.get("epsilon"),
            amsgrad=c.get("amsgrad", False),
        )
        torch_name = {"Adam": "Adam", "AdamW": "AdamW", "Adamax": "Adamax", "Nadam": "NAdam"}[name]
        if name == "Adam" and wd:
            torch_name = "AdamW"
            notes.append(
                "Keras applies weight_decay decoupled (w -= lr * wd * w), which is "
                "torch's AdamW, not Adam(weight_decay=...)"
            )
        out["torch"] = f"torch.optim.{torch_name}"
        out["torch_kwargs"] = {
            "lr": out["lr"],
            "betas": (c.get("beta_1"), c.get("beta_2")),
            "eps": c.get("epsilon"),
            "weight_decay": wd,
        }
        if name in ("Adam", "AdamW"):
            out["torch_kwargs"]["amsgrad"] = bool(c.get("amsgrad", False))
        notes.append(
            "Keras adds epsilon to sqrt(v) after bias correction of the step size "
            "('epsilon hat'); torch adds it to sqrt(v_hat): equal up to a factor "
            "sqrt(1 - beta_2^t) on epsilon"
        )
    elif name == "SGD":
        out.update(momentum=c.get("momentum", 0.0), nesterov=c.get("nesterov", False))
        out["torch"] = "torch.optim.SGD"
        out["torch_kwargs"] = {
            "lr": out["lr"],
            "momentum": c.get("momentum", 0.0),
            "nesterov": bool(c.get("nesterov", False)),
            "dampening": 0.0,
        }
        if wd:
            notes.append(
                "Keras weight_decay is decoupled (w -= lr * wd * w): apply it by hand, "
                "not as SGD(weight_decay=...) which adds wd * w to the gradient"
            )
    elif name == "RMSprop":
        out.update(
            rho=c.get("rho"),
            momentum=c.get("momentum", 0.0),
            epsilon=c.get("epsilon"),
            centered=c.get("centered", False),
        )
        out["torch"] = "torch.optim.RMSprop"
        out["torch_kwargs"] = {
            "lr": out["lr"],
            "alpha": c.get("rho"),
            "eps": c.get("epsilon"),
            "momentum": c.get("momentum", 0.0),
            "centered": bool(c.get("centered", False)),
        }
        notes.append(
            "Keras divides by sqrt(v + epsilon), torch by sqrt(v) + eps: same for v >> epsilon"
        )
    elif name == "Adagrad":
        out["torch"] = "torch.optim.Adagrad"
        out["torch_kwargs"] = {
            "lr": out["lr"],
            "initial_accumulator_value": c.get("initial_accumulator_value"),
            "eps": c.get("epsilon"),
        }
    else:
        out["torch"] = None
        notes.append(f"no torch mapping for Keras optimizer {name}")
    out["weight_decay"] = wd
    for clip in ("clipnorm", "clipvalue", "global_clipnorm"):
        out[clip] = c.get(clip)
    if c.get("clipnorm"):
        notes.append(
            "Keras clipnorm clips each gradient tensor separately; torch's "
            "clip_grad_norm_ clips the global norm (use it per parameter)"
        )
    if c.get("global_clipnorm"):
        notes.append("global_clipnorm -> torch.nn.utils.clip_grad_norm_(params, value)")
    if c.get("clipvalue"):
        notes.append("clipvalue -> torch.nn.utils.clip_grad_value_(params, value)")
    if c.get("use_ema"):
        notes.append(
            f"Keras use_ema=True (momentum {c.get('ema_momentum')}): use "
            f"torch.optim.swa_utils.AveragedModel with an EMA"
        )
    out["notes"] = notes
    return out


_LOSS_ALIASES = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
    "logcosh": "log_cosh",
}
_CLASS_TO_FN = {
    "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "BinaryCrossentropy": "binary_crossentropy",
    "BinaryFocalCrossentropy": "binary_focal_crossentropy",
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "Huber": "huber",
    "KLDivergence": "kl_divergence",
    "Poisson": "poisson",
    "Hinge": "hinge",
    "LogCosh": "log_cosh",
    "CosineSimilarity": "cosine_similarity",
}


def loss_recipe(loss: Any) -> Any:
    """Keras loss (name, object, config, list or dict) -> torch loss description."""
    if loss is None:
        return None
    if isinstance(loss, (list, tuple)):
        return [loss_recipe(v) for v in loss]
    if isinstance(loss, dict) and "class_name" not in loss:
        return {k: loss_recipe(v) for k, v in loss.items()}
    c: dict = {}
    if isinstance(loss, str):
        name = loss
    elif isinstance(loss, dict):
        name, c = loss.get("class_name", "?"), dict(loss.get("config") or {})
    elif hasattr(loss, "get_config") and not callable(getattr(loss, "__name__", None)):
        name, c = type(loss).__name__, dict(loss.get_config())
    else:
        name = getattr(loss, "__name__", str(loss))
    name = _CLASS_TO_FN.get(name, name)
    name = _LOSS_ALIASES.get(name, name)
    reduction = c.get("reduction", "sum_over_batch_size")
    from_logits = bool(c.get("from_logits", False))
    smoothing = _f(c.get("label_smoothing", 0.0))
    torch_red = {
        "sum_over_batch_size": "mean",
        "sum": "sum",
        None: "none",
        "none": "none",
        "mean": "mean",
        "mean_with_sample_weight": "mean",
    }.get(reduction, "mean")
    out = {
        "name": name,
        "from_logits": from_logits,
        "reduction": reduction,
        "torch_reduction": torch_red,
        "label_smoothing": smoothing,
        "keras": c or name,
    }
    eps = "1e-7"
    if name == "sparse_categorical_crossentropy":
        out["torch"] = (
            "F.cross_entropy(logits, target.long())"
            if from_logits
            else f"F.nll_loss(torch.log(probs.clamp({eps}, 1 - {eps})), target.long())"
        )
        out["target"] = "class indices"
    elif name == "categorical_crossentropy":
        out["torch"] = (
            f"F.cross_entropy(logits, target_onehot, label_smoothing={smoothing})"
            if from_logits
            else f"-(target_onehot * torch.log(probs.clamp({eps}, 1 - {eps}))).sum(-1)"
            f".mean()  (probabilities renormalized to sum 1 first, as Keras does)"
        )
        out["target"] = "one-hot"
    elif name == "binary_crossentropy":
        out["torch"] = (
            "F.binary_cross_entropy_with_logits(logits, target)"
            if from_logits
            else f"F.binary_cross_entropy(probs.clamp({eps}, 1 - {eps}), target)"
        )
        if smoothing:
            out["target"] = f"target * (1 - {smoothing}) + 0.5 * {smoothing}"
    elif name == "mean_squared_error":
        out["torch"] = "F.mse_loss(pred, target)"
    elif name == "mean_absolute_error":
        out["torch"] = "F.l1_loss(pred, target)"
    elif name == "huber":
        out["torch"] = f"F.huber_loss(pred, target, delta={_f(c.get('delta', 1.0))})"
    elif name == "kl_divergence":
        out["torch"] = "F.kl_div(torch.log(pred.clamp(1e-7, 1)), target.clamp(1e-7, 1), "
        out["torch"] += "reduction='batchmean')"
    elif name == "poisson":
        out["torch"] = "F.poisson_nll_loss(pred, target, log_input=False, eps=1e-7)"
    elif name == "hinge":
        out["torch"] = "torch.clamp(1 - target_pm1 * pred, min=0).mean()"
    elif name == "log_cosh":
        out["torch"] = "torch.log(torch.cosh(pred - target)).mean()"
    elif name == "cosine_similarity":
        out["torch"] = "-F.cosine_similarity(pred, target, dim=-1).mean()"
    else:
        out["torch"] = None
    if torch_red != "mean" and out.get("torch"):
        out["notes"] = [f"use reduction={torch_red!r} in the torch call"]
    return out


def _regularizer(r: Any) -> dict | None:
    if r is None:
        return None
    c = (
        r.get_config()
        if hasattr(r, "get_config")
        else (r.get("config", {}) if isinstance(r, dict) else {})
    )
    l1, l2 = float(c.get("l1", 0.0) or 0.0), float(c.get("l2", 0.0) or 0.0)
    if not l1 and not l2:
        return {"l1": 0.0, "l2": 0.0, "unknown": type(r).__name__}
    return {"l1": _f(l1), "l2": _f(l2)}


def _regularizers(model: Any) -> list[dict]:
    out = []
    for layer in _all_layers(model):
        for attr, weight in (
            ("kernel_regularizer", "kernel"),
            ("bias_regularizer", "bias"),
            ("depthwise_regularizer", "depthwise_kernel"),
            ("pointwise_regularizer", "pointwise_kernel"),
            ("recurrent_regularizer", "recurrent_kernel"),
            ("embeddings_regularizer", "embeddings"),
            ("gamma_regularizer", "gamma"),
            ("beta_regularizer", "beta"),
            ("activity_regularizer", "activity"),
        ):
            reg = getattr(layer, attr, None)
            if reg is None and hasattr(layer, "cell"):
                reg = getattr(layer.cell, attr, None)
            r = _regularizer(reg)
            if r:
                out.append(
                    {
                        "layer": layer.name,
                        "weight": weight,
                        **r,
                        "penalty": "l1 * sum(|w|) + l2 * sum(w ** 2), added to the mean loss"
                        + (
                            " (on the layer's output, averaged over the batch)"
                            if weight == "activity"
                            else ""
                        ),
                    }
                )
    return out


def _all_layers(model: Any) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers") and layer is not model:
            out.extend(_all_layers(layer))
        for sub in ("forward_layer", "backward_layer", "layer"):
            inner = getattr(layer, sub, None)
            if inner is not None and hasattr(inner, "get_config") and inner is not layer:
                out.append(inner)
    return out


def _callbacks(callbacks: list) -> dict:
    out: dict[str, Any] = {"early_stopping": None, "reduce_lr_on_plateau": None, "other": []}
    for cb in callbacks or []:
        name = type(cb).__name__
        if name == "EarlyStopping":
            out["early_stopping"] = {
                "monitor": cb.monitor,
                "patience": int(cb.patience),
                "restore_best_weights": bool(cb.restore_best_weights),
                "min_delta": _f(abs(float(cb.min_delta))),
                "mode": getattr(cb, "mode", "auto"),
                "baseline": cb.baseline,
                "start_from_epoch": getattr(cb, "start_from_epoch", 0),
            }
        elif name == "ReduceLROnPlateau":
            out["reduce_lr_on_plateau"] = {
                "monitor": cb.monitor,
                "factor": _f(cb.factor),
                "patience": int(cb.patience),
                "min_delta": _f(cb.min_delta),
                "cooldown": int(cb.cooldown),
                "min_lr": _f(cb.min_lr),
                "torch": "torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor, patience, "
                "threshold=min_delta, threshold_mode='abs', cooldown, min_lr)",
            }
        else:
            out["other"].append(name)
    return out


def keras_fit_config(model: Any, fit_kwargs: dict | None = None) -> dict:
    """Optimizer, loss, metrics, regularizers and fit() settings of a Keras model, as a recipe.

    `fit_kwargs` are the arguments the Keras code passed to `model.fit` (epochs, batch_size,
    class_weight, callbacks, validation_split, shuffle, ...); Keras' fit defaults fill the rest.
    """
    fit_kwargs = dict(fit_kwargs or {})
    compiled = None
    try:
        compiled = model.get_compile_config() if getattr(model, "compiled", False) else None
    except Exception:  # noqa: BLE001 - an uncompiled model has no compile config
        compiled = None
    optimizer = getattr(model, "optimizer", None) if compiled else None
    recipe: dict[str, Any] = {
        "compiled": compiled is not None,
        "optimizer": optimizer_recipe(optimizer) if optimizer is not None else None,
        "loss": loss_recipe(compiled.get("loss")) if compiled else None,
        "loss_weights": compiled.get("loss_weights") if compiled else None,
        "metrics": compiled.get("metrics") if compiled else None,
        "epochs": fit_kwargs.get("epochs", 1),
        "batch_size": fit_kwargs.get("batch_size", 32),
        "shuffle": fit_kwargs.get("shuffle", True),
        "validation_split": fit_kwargs.get("validation_split", 0.0),
        "class_weight": fit_kwargs.get("class_weight"),
        "regularizers": _regularizers(model),
        "init": "Keras initializers reproduced in the model's _init_weights (glorot_uniform "
        "kernels, zero biases, orthogonal recurrent kernels, uniform(-0.05, 0.05) "
        "embeddings unless configured otherwise)",
        "notes": [],
    }
    cbs = _callbacks(fit_kwargs.get("callbacks"))
    recipe["early_stopping"] = cbs["early_stopping"]
    recipe["reduce_lr_on_plateau"] = cbs["reduce_lr_on_plateau"]
    if cbs["other"]:
        recipe["notes"].append(f"callbacks not translated: {', '.join(cbs['other'])}")
    if recipe["class_weight"]:
        recipe["notes"].append(
            "class_weight scales each sample's loss by its class weight "
            "before Keras' mean over the batch"
        )
    if recipe["regularizers"]:
        recipe["notes"].append(
            "add the regularizers' penalties to the loss each step, as Keras adds model.losses"
        )
    if not compiled:
        recipe["notes"].append("model was not compiled: no optimizer or loss to translate")
    return recipe
