"""Without --data, migrate labels seeded random inputs with the Keras model itself: the labels
must have more than one class even when the untrained model's argmax is one class for every
row (it was: "the target has a single class", and the run could not start)."""

from __future__ import annotations

import numpy as np

from autopilot_lab import api
from autopilot_lab.objectives.migrate import spread_labels
from autopilot_lab.store import Store


def test_labels_spread_over_every_class_when_the_argmax_is_one_class():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.0, 0.1, size=(300, 3)) + np.array([10.0, 0.0, 0.0])
    assert set(probs.argmax(-1)) == {0}
    y = spread_labels(probs)
    assert set(y) == {0, 1, 2} and min(np.bincount(y)) > 50


def test_binary_labels_split_at_the_median_and_constant_outputs_still_give_classes():
    score = np.linspace(0.9, 0.95, 256)[:, None]  # a sigmoid that says "1" to every row
    y = spread_labels(score)
    assert np.bincount(y).tolist() == [128, 128] and y[-1] == 1
    assert set(spread_labels(np.ones((30, 4)))) == {0, 1, 2, 3}


def test_migrate_without_data_runs_on_labels_of_several_classes(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu", name="hidden"),
        # a bias that makes class 0 win everywhere before training
        keras.layers.Dense(3, activation="softmax", name="out",
                           bias_initializer=keras.initializers.Constant([6.0, 0.0, 0.0])),
    ], name="one_class_before_training")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    result = api.migrate(model, None, fit={"epochs": 2}, max_iters=1,
                         store=Store(tmp_path / "home"))
    card = result.history[0].scorecard
    assert card.verdict("parity").passed, [h.to_text() for h in card.hints]
    assert result.targets_met  # it started, and the translation passed on synthetic data
