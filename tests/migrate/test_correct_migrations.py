"""A hint on a correct candidate is a bug (issue 14): the translator's own migrations of a set
of models a team holds (tabular, embedding, sequence, attention, class-weighted, clipped),
verified on real data through every tier, must raise no hint at all."""

from __future__ import annotations

import json

import pytest
import torch

from autopilot_lab import api, data
from autopilot_lab.cli import main as cli_main
from autopilot_lab.objectives.migrate import MigrateObjective
from autopilot_lab.scorecard import Scorecard

FIT = {"epochs": 2, "batch_size": 32}


def _tabular(n_features: int, n_classes: int, *, optimizer=None, name="tabular"):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((n_features,)),
        keras.layers.Normalization(mean=0.0, variance=1.0),
        keras.layers.Dense(16, activation="relu",
                           kernel_regularizer=keras.regularizers.l2(1e-4)),
        keras.layers.BatchNormalization(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(n_classes, activation="softmax"),
    ], name=name)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy")
    return model


def _sequence(n_features: int, n_classes: int):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((n_features,))
    x = keras.layers.Reshape((n_features, 1))(inp)
    x = keras.layers.LSTM(8)(x)
    out = keras.layers.Dense(n_classes, activation="softmax")(x)
    model = keras.Model(inp, out, name="sequence")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _attention(n_features: int, n_classes: int):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((n_features,))
    x = keras.layers.Reshape((n_features, 1))(inp)
    x = keras.layers.Dense(8)(x)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(n_classes, activation="softmax")(x)
    model = keras.Model(inp, out, name="attention")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _embedding(task):
    from benchmarks import fleet

    assignment = fleet.assign(task, None)
    assert assignment.arch == "wide_deep", assignment  # integer-coded columns: embeddings
    return fleet.build(task, assignment, 0)


def _case(name: str):
    import keras

    if name == "tabular":
        return _tabular(30, 2), "sklearn:breast_cancer", FIT
    if name == "class-weighted":
        return _tabular(30, 2, name="weighted"), "sklearn:breast_cancer", \
            {**FIT, "class_weight": {0: 1.0, 1: 2.5}}
    if name == "clipped":
        opt = keras.optimizers.Adam(1e-2, clipnorm=0.05)
        return _tabular(30, 2, optimizer=opt, name="clipped"), "sklearn:breast_cancer", FIT
    if name == "globally clipped":
        opt = keras.optimizers.SGD(0.05, momentum=0.9, global_clipnorm=0.1)
        return _tabular(4, 3, optimizer=opt, name="global_clip"), "sklearn:iris", FIT
    if name == "sequence":
        return _sequence(4, 3), "sklearn:iris", FIT
    if name == "attention":
        return _attention(4, 3), "sklearn:iris", FIT
    task = data.load_task("local:1027_ESL", datasets_dir=data.PACKAGE_DATASETS)
    return _embedding(task), "local:1027_ESL", FIT


CASES = ["tabular", "embedding", "sequence", "attention", "class-weighted", "clipped",
         "globally clipped"]


@pytest.mark.parametrize("name", CASES)
def test_a_correct_migration_raises_no_hint(name, tmp_path, capsys):
    model, spec, fit = _case(name)
    datasets_dir = str(data.PACKAGE_DATASETS) if spec.startswith("local:") else None
    objective = MigrateObjective(model, spec, fit=fit, datasets_dir=datasets_dir)
    folder = tmp_path / "candidate"
    folder.mkdir()
    (folder / "model.py").write_text(objective.translation.source)
    torch.save(objective.translation.torch_state_dict(), folder / "weights.pt")
    (folder / "recipe.json").write_text(json.dumps(objective.recipe.to_dict()))
    if name == "class-weighted":  # through the command line: --class-weight reaches Keras
        keras_path = tmp_path / "weighted.keras"
        model.save(keras_path)
        code = cli_main(["verify", str(keras_path), str(folder), "--data", spec, "--epochs",
                         "2", "--batch-size", "32", "--class-weight", '{"0": 1, "1": 2.5}',
                         "--json"])
        assert code == 0
        card = Scorecard.from_dict(json.loads(capsys.readouterr().out))
    else:
        card = api.verify(model, folder, spec, fit=fit, datasets_dir=datasets_dir)
    assert [v.check for v in card.verdicts][-1] == "metric", card.skipped
    assert card.all_gates_passed and not card.hints, [h.to_text() for h in card.hints]
