"""The classical baseline a candidate is measured against: scikit-learn HistGradientBoosting.

Protocol, the same a candidate gets: fit on the train part, early stopping on the valid part
(not merged into train), metrics on the test part. Defaults otherwise, with room for up to
MAX_ITER boosting rounds since early stopping picks the number.
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
    """Fit HistGradientBoosting{Classifier,Regressor}(random_state=seed) and score it on test.

    Returns {"model", "metrics", "primary", "value", "seconds", "n_iter", "seed", "protocol"};
    ``seconds`` is wall-clock fit + predict time, everything else is deterministic.
    """
    regression = task.kind == "regression"
    cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    model = cls(random_state=seed, max_iter=MAX_ITER, early_stopping=True)
    X_train, y_train = task.part("train")
    X_valid, y_valid = task.part("valid")
    X_test, y_test = task.part("test")
    start = time.perf_counter()
    model.fit(X_train, y_train, X_val=X_valid, y_val=y_valid)
    if regression:
        scores = model.predict(X_test)
    else:  # one column per task class, even for a class the train part happened to lack
        scores = np.zeros((len(X_test), task.n_outputs))
        scores[:, model.classes_] = model.predict_proba(X_test)
    seconds = time.perf_counter() - start
    metrics = all_metrics(task.kind, y_test, scores)
    primary = PRIMARY[task.kind]
    return {"model": cls.__name__, "metrics": metrics, "primary": primary,
            "value": metrics[primary], "seconds": round(seconds, 3), "n_iter": int(model.n_iter_),
            "seed": seed, "protocol": "fit on train, early stopping on valid, scored on test"}
