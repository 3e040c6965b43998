"""`migrate`: a TensorFlow/Keras model to idiomatic PyTorch that provably matches.

The first draft is the translator's: a readable ``model.py``, converted weights and the Keras
recipe. The ladder adds tier 2 (parity with the Keras model: forward, per layer, loss,
gradients, K training steps) and tier 5 compares the task metric of both frameworks trained
with their own recipes on the same split (target: no worse than Keras by the parity
tolerance: 0.01 for AUC / accuracy, 2% relative for errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from autopilot_lab import data as data_mod
from autopilot_lab import metrics
from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.checks import CheckContext, Ladder
from autopilot_lab.checks.build import BuildCheck
from autopilot_lab.checks.metric import MetricCheck
from autopilot_lab.checks.parity import ParityCheck
from autopilot_lab.checks.stability import StabilityCheck
from autopilot_lab.checks.static import StaticCheck
from autopilot_lab.checks.train_script import TrainScriptCheck
from autopilot_lab.checks.trainability import TrainabilityCheck
from autopilot_lab.checks.unsupported import UnsupportedCheck
from autopilot_lab.objectives.base import Objective
from autopilot_lab.objectives.target import Target
from autopilot_lab.sandbox import Sandbox

PARITY_ABS = 0.01      # ROC AUC / balanced accuracy / accuracy / r2
PARITY_REL = 0.02      # RMSE / MAE, relative


class MigrateObjective(Objective):
    name = "migrate"
    # a migration keeps Keras' recipe: the rules agent restores what differs from Keras and
    # never tunes (a longer schedule or weight decay would beat Keras by changing training)
    repairs = frozenset({"keras_setting", "module_setting", "reconvert_weights",
                         "remove_detach"})
    repairs_reason = ("the translation already trains with Keras' recipe; a remaining gap to "
                      "Keras' metric is not a setting to restore (see the metric hint), and "
                      "tuning would stop the PyTorch model from being Keras' model")

    def __init__(self, keras_model: Any, data: str | data_mod.Task | None = None, *,
                 fit: dict | None = None, start: str | Path | None = None,
                 datasets_dir: str | None = None, seed: int = 0, threads: int = 1,
                 device: str = "cpu", keras_path: str | None = None, loss: str | None = None):
        """``loss``: the Keras loss to probe a model with that has none compiled (default:
        :data:`PROBE_LOSSES` by the task's kind), or to use instead of the compiled one."""
        from autopilot_lab.migrate import load_keras_model, translate
        from autopilot_lab.migrate.recipe import keras_fit_config

        self.keras_path = keras_path or (str(keras_model) if isinstance(keras_model, (str, Path))
                                         else None)
        self.loss = loss
        self.model = load_keras_model(keras_model)
        self.fit = _jsonable_fit(fit or {})
        self.data_spec = data if isinstance(data, str) else None
        self.datasets_dir, self.seed, self.threads, self.device = datasets_dir, seed, threads, \
            device
        self.start = str(start) if start else None
        self.task = (data if isinstance(data, data_mod.Task) else
                     data_mod.load_task(data, datasets_dir=datasets_dir, seed=seed)
                     if data else None)
        self.translation = translate(self.model)
        self.model, self.probe_note = with_probe_loss(
            self.model, self.task.kind if self.task else None, loss)
        self.fit_config = keras_fit_config(self.model, fit)
        if self.probe_note:
            self.fit_config["notes"].append(self.probe_note)
        self.kind = self.task.kind if self.task else _kind_from_keras(self.fit_config,
                                                                      self.translation)
        from autopilot_lab.migrate.reference import recipe_from_keras

        self.recipe = recipe_from_keras(self.fit_config, self.translation, self.kind)
        self.target: Target | None = None
        self.keras_metrics: dict | None = None
        self.reference_meta: dict | None = None
        self.workdir: Path | None = None
        from autopilot_lab.migrate.shared_masks import shareable

        self.shared_dropout = shareable(self.model, self.translation)
        if self.task is not None:
            _check_input_width(self.translation, self.task)

    def shared_draws(self) -> dict[str, Any]:
        """The dropout draws both frameworks share (``migrate.shared_masks``): recorded with
        the run, so `improve --from` trains the chosen candidate exactly as this run did."""
        return {"seed": self.seed,
                "modules": {v["module"]: v["salt"] for v in self.shared_dropout.values()}}

    # -- spec ------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        if self.keras_path is None:
            raise ValueError("save the Keras model to a .keras file to make this run "
                             "resumable (an in-memory model has no path)")
        if self.task is not None and self.data_spec is None:
            raise ValueError("a run on in-memory arrays cannot be rebuilt from its spec")
        return {"objective": self.name, "keras": self.keras_path,
                "model_name": self.model.name,  # what the console calls the run
                "data": self.data_spec, "fit": self.fit, "start": self.start,
                "datasets_dir": self.datasets_dir,
                "seed": self.seed, "threads": self.threads, "device": self.device,
                "loss": self.loss, "shared_dropout": self.shared_draws()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MigrateObjective:
        return cls(spec["keras"], spec.get("data"), fit=spec.get("fit"),
                   start=spec.get("start"), datasets_dir=spec.get("datasets_dir"),
                   seed=spec.get("seed", 0), threads=spec.get("threads", 1),
                   device=spec.get("device", "cpu"), loss=spec.get("loss"))

    # -- setup -----------------------------------------------------------------------------
    def setup(self, workdir: Path, sandbox: Sandbox) -> CheckContext:
        import torch

        from autopilot_lab.migrate.reference import KerasReference

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        torch.save(self.translation.torch_state_dict(), workdir / "weights.pt")
        task = self.task or self._synthetic_task()
        data_path = task.save_npz(workdir / "data.npz")
        ref = KerasReference(self.model, self.translation, self.recipe, self.kind)
        # parity's fixed rows are train rows: their labels may enter the sandbox (the loss
        # and gradients need them); the held-out labels never do
        rows, y = task.part("train")
        self.reference_meta = ref.write(workdir / "reference.npz",
                                        rows if self.task is not None else None,
                                        y if self.task is not None else None, seed=self.seed)
        self.reference_meta["arrays"] = str(workdir / "reference.npz")
        from autopilot_lab.migrate.translator import camel

        self.reference_meta["unsupported"] = [
            {"name": u.name, "cls": u.cls, "reason": u.reason, "stub": f"Untranslated"
             f"{camel(u.name)}"} for u in self.translation.unsupported]
        self.reference_meta["shared_dropout"] = self.shared_draws()
        if self.task is not None:
            self.keras_metrics = _train_keras(self.model, self.fit_config, self.recipe, task,
                                              self.seed, self.shared_dropout)
            self.target = _parity_target(task.kind, self.keras_metrics)
        y_train = task.part("train")[1]
        y_std = float(np.std(y_train)) if task.kind == "regression" else None
        info = {"kind": task.kind, "n_features": task.n_features, "n_outputs": task.n_outputs,
                "n_classes": task.n_classes}
        return CheckContext(task=info, data_path=data_path, sandbox=sandbox, target=self.target,
                            seed=self.seed, threads=self.threads, device=self.device,
                            y_std=y_std, reference=self.reference_meta, oracle=ref)

    def _synthetic_task(self) -> data_mod.Task:
        """No data given: seeded random inputs labelled by the Keras model itself."""
        from autopilot_lab.migrate.reference import KerasReference

        ref = KerasReference(self.model, self.translation, self.recipe, self.kind)
        xs = ref.sample_inputs(None, n=256, seed=self.seed)
        if self.kind == "regression":
            y = ref.labels(xs, None)
        else:
            y = spread_labels(ref.outputs(xs)[0])
        X = xs[0].reshape(len(xs[0]), -1) if len(xs) == 1 else np.zeros((256, 1), np.float32)
        return data_mod.task_from_arrays(X, y, name="synthetic", kind=self.kind, seed=self.seed)

    # -- candidates ------------------------------------------------------------------------
    def initial_candidate(self) -> Candidate:
        if self.start:
            return load_candidate_dir(self.start, self.translation.class_name)
        return Candidate(files={"model.py": self.translation.source},
                         entry=self.translation.class_name, recipe=self.recipe,
                         artifacts={"weights.pt": str(self.workdir / "weights.pt")})

    def draft_summary(self) -> str:
        if self.start:
            return f"the candidate in {self.start}"
        n = len(self.translation.unsupported)
        return (f"translation of {self.model.name} ({len(self.model.layers)} layers"
                + (f", {n} unsupported" if n else "") + ")")

    def reference_weights(self) -> dict[str, np.ndarray]:
        return self.translation.state_dict

    def ladder(self) -> Ladder:
        if len(self.translation.inputs) > 1 or self.task is None:
            # multi-input models or no data: parity is the contract (probes need one X)
            return Ladder([StaticCheck(), UnsupportedCheck(), ParityCheck()])
        # trainability reports but does not gate: once parity has shown the first training
        # steps to match Keras', a slow start is Keras' own (NOT_LEARNING on a model that
        # learns slowly in TensorFlow too kept the metric from ever being measured)
        return Ladder([StaticCheck(), UnsupportedCheck(), BuildCheck(), ParityCheck(),
                       TrainScriptCheck(), TrainabilityCheck(hard=False), StabilityCheck(),
                       MetricCheck()])

    def export(self, candidate: Candidate) -> dict[str, bytes | str]:
        """Files of the run folder beside model.py: weights, recipe and a train.py."""
        from autopilot_lab.migrate.train_script import train_script

        out: dict[str, bytes | str] = {
            "recipe.json": json.dumps(candidate.recipe.to_dict(), indent=2) + "\n",
            "train.py": train_script(candidate, self.kind)}
        weights = candidate.artifacts.get("weights.pt")
        if weights and Path(weights).exists():
            out["weights.pt"] = Path(weights).read_bytes()
        return out

    def describe(self) -> dict[str, Any]:
        return {"objective": self.name, "keras_model": self.model.name,
                "keras_path": self.keras_path,
                "task": self.task.summary() if self.task else None,
                "layers": len(self.model.layers),
                "unsupported": [u.__dict__ for u in self.translation.unsupported],
                "translation_notes": list(self.translation.notes),
                "loss_note": self.probe_note,
                "keras_metrics": {p: m for p, m in (self.keras_metrics or {}).items()
                                  if p != "test"} or None,
                "target": self.target.to_dict() if self.target else None,
                "starting_recipe": self.recipe.to_dict()}

    def test_references(self) -> dict[str, dict[str, float]]:
        return {"Keras": self.keras_metrics["test"]} if self.keras_metrics else {}

    def test_target(self) -> Target | None:
        """Parity on test: within the tolerance of Keras' test figure."""
        return _parity_target(self.kind, self.keras_metrics, "test") if self.keras_metrics \
            else None

    def prompt_context(self, hints: list) -> dict[str, Any]:
        """The Keras model for the LLM prompt: a config summary, its layers (name, class,
        output shape) and, for the layer an UNSUPPORTED_LAYER or IO_MISMATCH hint points at,
        its Keras config and (a custom layer or Lambda) a bit of its Python source."""
        model = self.model
        layers = [{"name": la.name, "class": type(la).__name__,
                   "output_shape": _output_shape(la)} for la in model.layers]
        fit = self.fit_config or {}
        out: dict[str, Any] = {
            "keras_config": {
                "class_name": type(model).__name__, "name": model.name,
                "inputs": [list(i["shape"]) for i in self.translation.inputs],
                "outputs": [list(o["shape"]) for o in self.translation.outputs],
                "parameters": int(model.count_params()),
                "loss": (fit.get("loss") or {}).get("name"),
                "optimizer": (fit.get("optimizer") or {}).get("name"),
                "torch_attributes": {k: v for k, v in self.translation.layer_map.items() if v}},
            "layers": layers}
        failing = _failing_layer(self, hints)
        if failing is not None:
            out["failing_layer"] = failing
        return out


def _output_shape(layer: Any) -> list | None:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError, RuntimeError):  # shared or never-called layers
        return None
    return [None if d is None else int(d) for d in shape]


def _failing_layer(objective: MigrateObjective, hints: list) -> dict[str, Any] | None:
    """The Keras layer the first UNSUPPORTED_LAYER or IO_MISMATCH hint points at."""
    from autopilot_lab.hints import HintKind
    from autopilot_lab.migrate.layers import _python_source
    from autopilot_lab.migrate.translator import camel

    by_name = {la.name: la for la in objective.model.layers}
    unsupported = {u.name: u for u in objective.translation.unsupported}
    keras_of_attr = {attr: name for name, attr in objective.translation.layer_map.items()
                     if attr}
    name = None
    for h in hints:
        if h.kind is HintKind.UNSUPPORTED_LAYER:
            said = f"{h.observed} {h.where} {h.suggestion}"
            name = next((u for u in unsupported if str(h.observed).startswith(f"{u} (")
                         or f"Untranslated{camel(u)}" in said), None)
        elif h.kind is HintKind.IO_MISMATCH and h.where and not h.where.startswith("recipe"):
            attr = h.where.split(":", 1)[-1]
            while attr and attr not in keras_of_attr:  # "block.dense.weight" -> "block.dense"
                attr = attr.rpartition(".")[0]
            name = keras_of_attr.get(attr)
        if name in by_name:
            break
        name = None
    if name is None:
        return None
    layer = by_name[name]
    if name in unsupported:
        config = dict(unsupported[name].config)
    else:
        try:
            config = dict(layer.get_config())
        except Exception:  # noqa: BLE001 - custom layers may not implement get_config
            config = {}
    config = {k: v for k, v in config.items() if k not in ("dtype", "trainable", "autocast")}
    if isinstance(config.get("function"), dict):  # a Lambda's marshalled bytecode
        config["function"] = getattr(getattr(layer, "function", None), "__name__", "?")
    out: dict[str, Any] = {"name": name, "class": type(layer).__name__, "config": config}
    source = _python_source(layer, max_lines=30)
    if source:
        out["source"] = source
    return out


def load_candidate_dir(folder: str | Path, entry: str | None = None) -> Candidate:
    """A candidate folder: model.py, weights.pt and recipe.json (what `migrate` writes)."""
    folder = Path(folder)
    missing = [f for f in ("model.py", "weights.pt") if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"candidate folder {folder} lacks {', '.join(missing)}; it "
                                "needs model.py, weights.pt and (optionally) recipe.json")
    source = (folder / "model.py").read_text()
    files = {"model.py": source}
    if (folder / "train.py").exists():  # what ships is verified too (checks.train_script)
        files["train.py"] = (folder / "train.py").read_text()
    from autopilot_lab.objectives.model_source import resolve_model

    _, entry = resolve_model(source, entry if entry and f"class {entry}" in source else None)
    recipe_path = folder / "recipe.json"
    recipe = Recipe.from_dict(json.loads(recipe_path.read_text())) if recipe_path.exists() \
        else Recipe()
    return Candidate(files=files, entry=entry, recipe=recipe,
                     artifacts={"weights.pt": str((folder / "weights.pt").resolve())})


def _jsonable_fit(fit: dict) -> dict:
    """fit() kwargs as JSON (callbacks become their translated settings)."""
    out = {k: v for k, v in fit.items() if k != "callbacks"}
    if fit.get("class_weight"):
        out["class_weight"] = {int(k): float(v) for k, v in fit["class_weight"].items()}
    for cb in fit.get("callbacks") or []:
        if isinstance(cb, dict):
            out.setdefault("callbacks_json", []).append(cb)
        elif type(cb).__name__ == "EarlyStopping":
            out.setdefault("callbacks_json", []).append(
                {"EarlyStopping": {"monitor": cb.monitor, "patience": int(cb.patience),
                                   "restore_best_weights": bool(cb.restore_best_weights)}})
    return out


def _kind_from_keras(fit: dict, translation) -> str:
    loss = (fit.get("loss") or {}).get("name", "")
    width = translation.outputs[0]["shape"][-1] if translation.outputs[0]["shape"] else 1
    if "binary" in loss or (width == 1 and "crossentropy" in loss):
        return "binary"
    if "crossentropy" in loss:
        return "multiclass"
    return "regression"


def _check_input_width(translation, task: data_mod.Task) -> None:
    shape = translation.inputs[0]["shape"]
    if len(translation.inputs) == 1 and len(shape) == 1 and shape[0] not in (None,
                                                                            task.n_features):
        raise ValueError(f"the Keras model takes {shape[0]} features but {task.spec} has "
                         f"{task.n_features}; pass the dataset the model was built for")


def _parity_target(kind: str, keras_metrics: dict, part: str = "valid") -> Target:
    """Within the parity tolerance of Keras' figure on ``part``: valid decides in the loop,
    test confirms at the end."""
    metric = metrics.PRIMARY[kind]
    value = keras_metrics[part][metric]
    if metrics.HIGHER_IS_BETTER[metric]:
        return Target(metric, ">=", value - PARITY_ABS, f"keras-{PARITY_ABS:g}", value)
    return Target(metric, "<=", value * (1 + PARITY_REL), f"keras+{PARITY_REL:.0%}", value)


def _train_keras(model, fit: dict, recipe: Recipe, task: data_mod.Task, seed: int,
                 shared_dropout: dict | None = None) -> dict[str, Any]:
    """Train a copy of the Keras model with its own recipe on the same split; metrics.

    ``model.fit`` reads the train rows through ``OrderedBatches``: each epoch in the order our
    harness uses (``harness.training.epoch_order``); the Dropout layers of ``shared_dropout``
    (``migrate.shared_masks.shareable``) draw the masks our harness draws. Both frameworks
    then take the same steps on the same batches with the same masks, and the metric tier
    compares translations, not random draws."""
    import keras

    from autopilot_lab.migrate.reference import clone_keras
    from autopilot_lab.migrate.shared_masks import with_shared_masks

    keras.utils.set_random_seed(seed)
    clone = with_shared_masks(clone_keras(model), seed, shared_dropout or {})
    opt = model.optimizer
    clone.compile(optimizer=type(opt).from_config(opt.get_config()) if opt is not None
                  else "adam", loss=model.loss)
    (X, y), (Xv, yv), (Xt, yt) = (task.part(p) for p in ("train", "valid", "test"))
    shape_y = (lambda a: a.reshape(-1, 1).astype(np.float32)) if recipe.loss in (
        "binary_cross_entropy", "mse", "mae", "huber") else (lambda a: a)
    callbacks = []
    if recipe.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=recipe.early_stopping,
            restore_best_weights=recipe.restore_best))
    batches = ordered_batches(X.astype(np.float32), shape_y(y), recipe.batch_size, seed)
    clone.fit(batches, epochs=recipe.epochs, validation_data=(Xv, shape_y(yv)),
              class_weight=recipe.class_weight, callbacks=[*callbacks, batches.sync],
              verbose=0, shuffle=False)
    batches.verify(len(clone.history.epoch))
    out = {}
    for part, (Xp, yp) in (("train", (X, y)), ("valid", (Xv, yv)), ("test", (Xt, yt))):
        pred = np.asarray(clone.predict(Xp, verbose=0), dtype=np.float64)
        out[part] = metrics.all_metrics(task.kind, yp, _probabilities(pred, recipe, task.kind))
    return out


def ordered_batches(X: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    """A ``keras.utils.PyDataset`` serving the train rows in ``epoch_order`` batches.

    Its ``sync`` callback tells it which epoch ``fit`` is in (Keras peeks at the first batches
    before training and calls ``on_epoch_end`` at other times too, so counting those calls
    would drift); ``verify`` raises if some trained epoch was not served whole, in order."""
    import keras

    from autopilot_lab.harness.training import epoch_order

    n_batches = -(-len(X) // batch_size)

    class OrderedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch, self.order = 0, epoch_order(len(X), 0, seed)
            self.served: dict[int, list[int]] = {}
            self.sync = _EpochSync(self)

        def set_epoch(self, epoch: int) -> None:
            self.epoch, self.order = epoch, epoch_order(len(X), epoch, seed)
            self.served[epoch] = []

        def __len__(self) -> int:
            return n_batches

        def __getitem__(self, i: int):
            self.served.setdefault(self.epoch, []).append(i)
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            return X[idx], y[idx]

        def verify(self, epochs: int) -> None:
            bad = [e for e in range(epochs) if self.served.get(e) != list(range(n_batches))]
            if bad:
                raise RuntimeError(f"Keras did not read epoch {bad[0]} of the ordered batches "
                                   f"whole and in order (read {self.served.get(bad[0])}); "
                                   f"the batch order would not match our harness")

    class _EpochSync(keras.callbacks.Callback):
        def __init__(self, batches):
            super().__init__()
            self.batches = batches

        def on_epoch_begin(self, epoch, logs=None):
            self.batches.set_epoch(epoch)

    return OrderedBatches()


def _probabilities(pred: np.ndarray, recipe: Recipe, kind: str) -> np.ndarray:
    if kind == "regression":
        return pred.reshape(-1)
    if pred.shape[-1] == 1:
        p = pred[:, 0]
        return 1 / (1 + np.exp(-p)) if recipe.from_logits else p
    if recipe.from_logits:
        e = np.exp(pred - pred.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return pred / pred.sum(axis=1, keepdims=True)


def spread_labels(outputs: np.ndarray) -> np.ndarray:
    """Class labels for synthetic inputs that a classifier can learn and a metric can judge:
    each row's class is the output that stands out most for it relative to the other rows
    (scores standardized per class), so an untrained model whose argmax is one class for every
    row still yields every class. One output (binary): above or below the median score. Where
    the outputs cannot tell rows apart at all (a constant model), the classes go by row."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    n, k = out.shape
    if k == 1:
        y = np.zeros(n, dtype=np.int64)
        y[np.argsort(out[:, 0], kind="stable")[n // 2:]] = 1
        return y
    z = (out - out.mean(0)) / (out.std(0) + 1e-12)
    y = z.argmax(-1).astype(np.int64)
    if len(np.unique(y)) < 2:  # nothing to tell rows apart: every class, by row
        y = np.arange(n, dtype=np.int64) % k
    return y


# The loss parity's training steps and the metric tier use for a Keras model compiled without
# one (an inference export, say): the usual loss of its task, on what its last layer outputs.
PROBE_LOSSES = {"multiclass": "sparse_categorical_crossentropy",
                "binary": "binary_crossentropy", "regression": "mean_squared_error"}
_LOSS_CLASSES = {"sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
                 "categorical_crossentropy": "CategoricalCrossentropy",
                 "binary_crossentropy": "BinaryCrossentropy",
                 "mean_squared_error": "MeanSquaredError", "mse": "MeanSquaredError",
                 "mean_absolute_error": "MeanAbsoluteError", "mae": "MeanAbsoluteError",
                 "huber": "Huber"}


def with_probe_loss(model: Any, kind: str | None, loss: str | None) -> tuple[Any, str | None]:
    """``model`` as it is when it has a compiled loss and none is asked for; else a copy
    compiled with ``loss`` (or the task's :data:`PROBE_LOSSES`) and its own optimizer (Adam
    at 1e-3 without one), with the sentence that says so. The caller's model is not touched."""
    compiled = getattr(model, "compiled", False) and getattr(model, "loss", None) is not None
    if compiled and loss is None:
        return model, None
    import keras

    from autopilot_lab.migrate.reference import clone_keras

    if loss is not None and loss not in _LOSS_CLASSES:
        raise ValueError(f"loss {loss!r} is not one parity can probe with; use one of "
                         f"{', '.join(sorted(_LOSS_CLASSES))}")
    last = getattr(getattr(model.layers[-1], "activation", None), "__name__", "")
    width = model.outputs[0].shape[-1] if model.outputs[0].shape else 1
    if kind is None:
        kind = ("binary" if last == "sigmoid" and width == 1 else
                "multiclass" if last == "softmax" else "regression")
    name = loss or PROBE_LOSSES[kind]
    if loss is None and kind == "binary" and (width or 1) > 1:
        name = "sparse_categorical_crossentropy"  # two softmax outputs for two classes
    cls = getattr(keras.losses, _LOSS_CLASSES[name])
    logits = kind != "regression" and last not in ("softmax", "sigmoid")
    probe = cls(from_logits=True) if logits and "crossentropy" in name else cls()
    opt = getattr(model, "optimizer", None) if getattr(model, "compiled", False) else None
    copy = clone_keras(model)
    copy.compile(optimizer=type(opt).from_config(opt.get_config()) if opt is not None
                 else keras.optimizers.Adam(1e-3), loss=probe)
    if compiled:
        return copy, f"trained with the loss {name} given instead of the compiled one"
    return copy, (f"the Keras model has no compiled loss: parity's training steps and the "
                  f"metric use {name}{' on logits' if logits and 'crossentropy' in name else ''}"
                  f"{'' if opt is not None else ' with Adam(1e-3)'}, the default probe loss "
                  f"for a {kind} model; --loss (loss= in the API) chooses another")
