"""Deliberate mistakes in an otherwise correct translation, each caught by the migrate ladder
with the right hint kind and the layer or setting it concerns; and no hint at all for the
correct translation (no false alarm). The Keras side is real TensorFlow, the candidate runs
in the real sandbox."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autopilot_lab.hints import HintKind
from autopilot_lab.objectives.migrate import MigrateObjective
from autopilot_lab.sandbox import Limits, Sandbox


def _tabular_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((13,)),
        keras.layers.Dense(16, activation="relu", name="hidden",
                           kernel_regularizer=keras.regularizers.l2(1e-3)),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dropout(0.2, name="drop"),
        keras.layers.Dense(16, activation="relu", name="square"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ], name="wine_mlp")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    return model


def _sequence_model():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((12,), dtype="int32")
    x = keras.layers.Embedding(50, 8, name="emb")(inp)
    x = keras.layers.LSTM(6, name="lstm")(x)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inp, out, name="seq")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    objective = MigrateObjective(_tabular_model(), "sklearn:wine",
                                 fit={"epochs": 30, "batch_size": 16})
    ctx = objective.setup(tmp_path_factory.mktemp("tab"), Sandbox(Limits(wall_s=120)))
    return objective, ctx


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    objective = MigrateObjective(_sequence_model())
    ctx = objective.setup(tmp_path_factory.mktemp("seq"), Sandbox(Limits(wall_s=120)))
    return objective, ctx


def _with_weights(candidate, tmp_path, change):
    state = torch.load(candidate.artifacts["weights.pt"], weights_only=True)
    change(state)
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    return candidate.replace(artifacts={"weights.pt": str(path)})


def _with_source(candidate, old, new):
    assert old in candidate.source, old
    return candidate.replace(files={"model.py": candidate.source.replace(old, new, 1)})


def _score(objective, ctx, candidate):
    card = objective.ladder().score(candidate, ctx)
    return card, [h for h in card.hints if h.kind is not HintKind.STYLE]


def test_the_correct_translation_raises_no_hint_at_all(tabular):
    objective, ctx = tabular
    card, hints = _score(objective, ctx, objective.initial_candidate())
    assert hints == [], [h.to_text() for h in hints]
    assert card.all_gates_passed and card.targets_met
    assert card.verdict("parity").evidence["max_abs_error"] <= 1e-4


def test_the_correct_sequence_translation_passes_parity(sequence):
    objective, ctx = sequence
    card, hints = _score(objective, ctx, objective.initial_candidate())
    assert hints == [], [h.to_text() for h in hints]
    assert card.verdict("parity").passed


def test_a_wrong_kernel_transpose_names_the_layer(tabular, tmp_path):
    objective, ctx = tabular
    cand = _with_weights(objective.initial_candidate(), tmp_path,
                         lambda s: s.__setitem__("square.weight", s["square.weight"].T.clone()))
    card, hints = _score(objective, ctx, cand)
    assert card.failed_gate == "parity"
    (hint,) = [h for h in hints if h.kind is HintKind.IO_MISMATCH]
    assert hint.where == "square" and "first layer whose output differs" in hint.suggestion


def test_a_wrong_lstm_gate_order_names_the_lstm(sequence, tmp_path):
    objective, ctx = sequence

    def swap_input_and_forget_gates(state):
        for key in ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0"):
            i, f, g, o = state[key].chunk(4)
            state[key] = torch.cat([f, i, g, o]).clone()

    cand = _with_weights(objective.initial_candidate(), tmp_path, swap_input_and_forget_gates)
    card, hints = _score(objective, ctx, cand)
    assert card.failed_gate == "parity"
    assert hints[0].kind is HintKind.IO_MISMATCH and hints[0].where == "lstm"


@pytest.mark.parametrize("setting,old,new,want", [
    ("epsilon", "eps=0.001, momentum=0.01", "eps=1e-05, momentum=0.01", 0.001),
    ("momentum", "eps=0.001, momentum=0.01", "eps=0.001, momentum=0.1", 0.01),
])
def test_batchnorm_settings_are_named(tabular, setting, old, new, want):
    objective, ctx = tabular
    card, hints = _score(objective, ctx, _with_source(objective.initial_candidate(), old, new))
    assert card.failed_gate == "parity"
    (hint,) = [h for h in hints if h.metric == f"BatchNorm {setting}"]
    assert hint.kind is HintKind.IO_MISMATCH and hint.where == "model.py:bn"
    assert hint.expected == pytest.approx(want)


def test_a_wrong_adam_epsilon_is_caught_by_the_training_steps(tabular):
    objective, ctx = tabular
    cand = objective.initial_candidate()
    cand = cand.replace(recipe=cand.recipe.replace(eps=1e-8))
    card, hints = _score(objective, ctx, cand)
    assert card.failed_gate == "parity"
    (hint,) = hints
    assert hint.kind is HintKind.IO_MISMATCH and hint.where == "recipe.eps"
    assert hint.expected == pytest.approx(1e-7) and "20-step training" in hint.metric


def test_a_missing_l2_penalty_is_named_with_its_weight(tabular):
    objective, ctx = tabular
    cand = objective.initial_candidate()
    cand = cand.replace(recipe=cand.recipe.replace(penalties=()))
    card, hints = _score(objective, ctx, cand)
    penalty = [h for h in hints if h.where == "recipe.penalties"]
    assert penalty and penalty[0].kind is HintKind.IO_MISMATCH
    assert penalty[0].expected == [{"param": "hidden.weight", "l1": 0.0, "l2": 0.001}]


def test_a_flipped_from_logits_is_named(tabular):
    objective, ctx = tabular
    cand = objective.initial_candidate()
    cand = cand.replace(recipe=cand.recipe.replace(from_logits=True))
    card, hints = _score(objective, ctx, cand)
    (hint,) = [h for h in hints if h.where == "recipe.from_logits"]
    assert hint.kind is HintKind.IO_MISMATCH and hint.expected is False


def test_a_detached_tensor_is_a_no_gradient_hint_on_the_cut_off_weights(tabular):
    objective, ctx = tabular
    cand = _with_source(objective.initial_candidate(), "x = self.hidden(x)",
                        "x = self.hidden(x).detach()")
    card, hints = _score(objective, ctx, cand)
    assert card.failed_gate == "parity"
    assert {h.where for h in hints if h.kind is HintKind.NO_GRADIENT} == {"hidden.weight",
                                                                           "hidden.bias"}


def test_the_keras_reference_is_real_train_data_and_stays_in_the_parent(tabular):
    """Parity's fixed rows are train rows (their labels may enter the sandbox, held-out
    labels never do); Keras' numbers are not among the sandbox's inputs."""
    objective, ctx = tabular
    ref = ctx.reference_arrays()
    X_train, y_train = objective.task.part("train")
    np.testing.assert_array_equal(ref["x_0"], X_train[:len(ref["x_0"])])
    np.testing.assert_array_equal(ref["y"], y_train[:len(ref["y"])])
    assert not any("reference" in name for name in ctx.extra_inputs)


@pytest.mark.parametrize("setting, value", [
    ("clipnorm", 0.5), ("grad_clip", 0.5), ("clipvalue", 0.01), ("batch_size", 8),
    ("keras_epsilon", False), ("class_weight", {0: 2.0, 1: 1.0, 2: 1.0})])
def test_each_training_setting_that_differs_from_keras_is_named(tabular, setting, value):
    """Settings that change how training steps: gradient clipping of each kind, the batch
    size, whether the optimizer steps as Keras does, class weights."""
    objective, ctx = tabular
    cand = objective.initial_candidate()
    cand = cand.replace(recipe=cand.recipe.replace(**{setting: value}))
    card, hints = _score(objective, ctx, cand)
    assert card.failed_gate == "parity", [h.to_text() for h in hints]
    assert [h.where for h in hints] == [f"recipe.{setting}"], [h.to_text() for h in hints]
    assert hints[0].kind is HintKind.IO_MISMATCH


def test_dropout_on_the_other_side_of_a_normalization_is_named(tabular):
    """Invisible in inference and in the K steps (dropout off): the call order is compared."""
    objective, ctx = tabular
    swapped = _with_source(objective.initial_candidate(),
                           "        x = self.bn(x)\n        x = self.drop(x)\n",
                           "        x = self.drop(x)\n        x = self.bn(x)\n")
    card, hints = _score(objective, ctx, swapped)
    assert card.failed_gate == "parity"
    (hint,) = [h for h in hints if h.metric == "dropout order"]
    assert hint.kind is HintKind.IO_MISMATCH and hint.where == "model.py:drop"
    assert hint.observed == "drop -> bn" and hint.expected == "bn -> drop"
