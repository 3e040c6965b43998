"""A layer the translator cannot translate: an UNSUPPORTED_LAYER P1 hint that names it, never
a silently wrong model; with the offline agent the run ends and says what is needed."""

from __future__ import annotations

from autopilot_lab import api
from autopilot_lab.hints import HintKind
from autopilot_lab.sandbox import Limits


def test_an_untranslatable_layer_is_a_p1_hint_and_the_rules_run_says_what_to_do(home):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    x = keras.layers.Lambda(lambda t: t * keras.ops.sigmoid(t) * 1.7, name="odd_gate")(x)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inp, out, name="with_lambda")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # the model object (a .keras file with a Python lambda needs unsafe deserialization)
    result = api.migrate(model, "sklearn:iris",
                         fit={"epochs": 2}, max_iters=3, limits=Limits(wall_s=120))
    (it,) = result.history
    card = it.scorecard
    assert card.failed_gate == "unsupported"
    (hint,) = card.hints
    assert hint.kind is HintKind.UNSUPPORTED_LAYER and hint.priority.name == "P1"
    assert hint.observed == "odd_gate (Lambda)"
    assert "implement UntranslatedOddGate.forward" in hint.suggestion
    assert "no untried repair for UNSUPPORTED_LAYER" in result.reason
    assert "--agent llm or auto" in result.reason
