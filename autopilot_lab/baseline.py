"""The classical baseline a candidate is measured against: scikit-learn HistGradientBoosting.

Protocol, the same a candidate gets (docs/evaluation.md): fit on the train part, early
stopping on the valid part (not merged into train), decisions on valid, the test part scored
once for the final report. Defaults otherwise, with room for up to MAX_ITER boosting rounds
since early stopping picks the number.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from autopilot_lab.data import Task
from autopilot_lab.metrics import PRIMARY, all_metrics

MAX_ITER = 500


def hgb_baseline(task: Task, seed: int = 0) -> dict[str, Any]:
    """Fit HistGradientBoosting{Classifier,Regressor}(random_state=seed); score it on valid
    (what decisions compare with: a ``baseline+D`` target) and on test (the final report's
    reference, scored once).

    Returns {"model", "metrics", "primary", "value", "test_metrics", "test_value",
    "seconds", "n_iter", "seed", "protocol"}: ``metrics``/``value`` are valid's,
    ``seconds`` is wall-clock fit + predict time, everything else is deterministic.
    :func:`public` drops the test figures for anything an agent or a live view sees.
    """
    regression = task.kind == "regression"
    cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    model = cls(random_state=seed, max_iter=MAX_ITER, early_stopping=True)
    X_train, y_train = task.part("train")
    X_valid, y_valid = task.part("valid")
    X_test, y_test = task.part("test")
    start = time.perf_counter()
    model.fit(X_train, y_train, X_val=X_valid, y_val=y_valid)

    def scores(X: np.ndarray) -> np.ndarray:
        if regression:
            return model.predict(X)
        out = np.zeros((len(X), task.n_outputs))  # one column per task class, even a class
        out[:, model.classes_] = model.predict_proba(X)  # the train part happened to lack
        return out

    valid, test = scores(X_valid), scores(X_test)
    seconds = time.perf_counter() - start
    primary = PRIMARY[task.kind]
    metrics = all_metrics(task.kind, y_valid, valid)
    test_metrics = all_metrics(task.kind, y_test, test)
    return {"model": cls.__name__, "metrics": metrics, "primary": primary,
            "value": metrics[primary], "test_metrics": test_metrics,
            "test_value": test_metrics[primary], "seconds": round(seconds, 3),
            "n_iter": int(model.n_iter_), "seed": seed,
            "protocol": "fit on train, early stopping on valid, decisions on valid, "
                        "scored on test once"}


def public(baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    """The baseline without its test figures: what a prompt, a hint or a live view may show."""
    if baseline is None:
        return None
    return {k: v for k, v in baseline.items() if not k.startswith("test_")}
