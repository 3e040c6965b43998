"""A Keras model saved without a compiled loss (an inference export) migrates: parity's
training steps and the metric use the task's usual loss (or --loss), and the run says so.
It used to stop with Keras' "No loss to compute", or to compare the loss against Keras'
regularization term alone."""

from __future__ import annotations

import pytest

from autopilot_lab import api
from autopilot_lab.store import Store


def _classifier():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((30,)), keras.layers.Dense(8, activation="relu", name="hidden"),
        keras.layers.Dense(2, activation="softmax", name="out")], name="exported_classifier")


def _regressor(compile_optimizer: bool):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(8, activation="relu", name="hidden",
                           kernel_regularizer=keras.regularizers.l2(1e-3)),
        keras.layers.Dense(1, name="out")], name="exported_regressor")
    if compile_optimizer:
        model.compile(optimizer=keras.optimizers.SGD(0.01))  # an optimizer, no loss
    return model


def _migrate(model, data, tmp_path, **kw):
    return api.migrate(model, data, fit={"epochs": 3}, max_iters=1,
                       store=Store(tmp_path / "home"), **kw)


def test_an_uncompiled_classifier_is_probed_with_cross_entropy(tmp_path):
    model = _classifier()
    result = _migrate(model, "sklearn:breast_cancer", tmp_path)
    card = result.history[0].scorecard
    assert card.all_gates_passed and not [h for h in card.hints if h.kind.name != "STYLE"], \
        [h.to_text() for h in card.hints]
    note = result.report["objective"]["loss_note"]
    assert "no compiled loss" in note and "sparse_categorical_crossentropy" in note
    assert "Adam(1e-3)" in note and "--loss" in note
    assert not getattr(model, "compiled", False)  # the caller's model is left as it was


def test_an_optimizer_without_a_loss_keeps_its_optimizer_and_penalties(tmp_path):
    result = _migrate(_regressor(compile_optimizer=True), "sklearn:diabetes", tmp_path)
    card = result.history[0].scorecard
    assert card.verdict("parity").passed, [h.to_text() for h in card.hints]
    recipe = result.report["objective"]["starting_recipe"]
    assert recipe["optimizer"] == "sgd" and recipe["penalties"]
    note = result.report["objective"]["loss_note"]
    assert "mean_squared_error" in note and "Adam" not in note


def test_loss_chooses_the_probe_loss_and_a_bad_one_is_refused(tmp_path):
    result = _migrate(_regressor(compile_optimizer=False), "sklearn:diabetes", tmp_path,
                      loss="mean_absolute_error")
    assert result.report["objective"]["starting_recipe"]["loss"] == "mae"
    assert result.history[0].scorecard.verdict("parity").passed
    with pytest.raises(ValueError, match="loss 'hinge' is not one parity can probe with"):
        _migrate(_regressor(compile_optimizer=False), "sklearn:diabetes", tmp_path,
                 loss="hinge")
