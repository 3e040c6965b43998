"""Our Keras-stepped optimizers against Keras' own: the same gradients must give the same
weights, to float rounding, over a long run. A systematic gap grows with every step: Adam's
bias correction in Python floats once moved every step by 6.4e-6 of the learning rate and sent
trainings apart after ~100 steps; torch's RMSprop and SGD ended 0.05-0.49 away.

The path is the one a migration takes: a compiled Keras model -> ``keras_fit_config`` ->
``recipe_from_keras`` -> ``make_optimizer``; and the exported ``train.py`` runs with it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from autopilot_lab.candidate import Candidate
from autopilot_lab.harness.keras_optim import KerasAdam
from autopilot_lab.harness.training import make_optimizer
from autopilot_lab.migrate import keras_fit_config, translate
from autopilot_lab.migrate.reference import recipe_from_keras
from autopilot_lab.migrate.train_script import train_script

STEPS = 200
CASES = {  # Keras optimizer name -> its arguments
    "adam": ("Adam", {"learning_rate": 1e-3}),
    "adamw": ("AdamW", {"learning_rate": 1e-3, "weight_decay": 0.01}),
    "rmsprop": ("RMSprop", {"learning_rate": 1e-3}),
    "rmsprop_momentum": ("RMSprop", {"learning_rate": 1e-3, "momentum": 0.9, "rho": 0.8}),
    "rmsprop_centered": ("RMSprop", {"learning_rate": 1e-3, "centered": True}),
    "sgd": ("SGD", {"learning_rate": 1e-2}),
    "sgd_nesterov": ("SGD", {"learning_rate": 1e-2, "momentum": 0.9, "nesterov": True}),
    "sgd_decay": ("SGD", {"learning_rate": 1e-2, "momentum": 0.9, "weight_decay": 0.01}),
}


def _dense_model(optimizer):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((20,))
    model = keras.Model(inp, keras.layers.Dense(5, name="d")(inp))
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _drift(name: str, args: dict) -> float:
    """Largest |Keras weight - ours| over STEPS steps of the same seeded gradients."""
    import keras

    model = _dense_model(getattr(keras.optimizers, name)(**args))
    recipe = recipe_from_keras(keras_fit_config(model, {"epochs": 1, "batch_size": 8}),
                               translate(model), "regression")
    kernel, bias = model.trainable_weights
    model.optimizer.build([kernel, bias])
    net = torch.nn.Linear(20, 5)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(kernel.numpy().T))
        net.bias.copy_(torch.tensor(bias.numpy()))
    ours = make_optimizer(net, recipe)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(STEPS):
        # gradients over many scales, some near epsilon where a step is most sensitive
        gk = (rng.standard_normal((20, 5)) * 10.0 ** rng.integers(-6, 1, (20, 5))).astype(
            np.float32)
        gb = (rng.standard_normal(5) * 1e-2).astype(np.float32)
        model.optimizer.apply([keras.ops.convert_to_tensor(gk), keras.ops.convert_to_tensor(gb)],
                              [kernel, bias])
        net.weight.grad, net.bias.grad = torch.tensor(gk.T.copy()), torch.tensor(gb)
        ours.step()
        worst = max(worst, float(np.abs(kernel.numpy() - net.weight.detach().numpy().T).max()),
                    float(np.abs(bias.numpy() - net.bias.detach().numpy()).max()))
    return worst


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_recipes_step_as_keras_steps(case):
    name, args = CASES[case]
    worst = _drift(name, args)
    # weights stay below ~0.5: one float32 ulp is 3e-8 there (measured now: <= 1.5e-8)
    assert worst < 6e-8, f"{case}: our optimizer drifted {worst:.3g} from Keras' in {STEPS} steps"


def test_float64_adam_steps_agree_to_rounding():
    import keras

    rng = np.random.default_rng(0)
    start = rng.standard_normal(500) * 0.1
    var = keras.Variable(start.copy(), dtype="float64")
    keras_opt = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    keras_opt.build([var])
    param = torch.nn.Parameter(torch.tensor(start.copy()))
    ours = KerasAdam([param], lr=1e-3, weight_decay=0.01)
    for _ in range(STEPS):
        grad = rng.standard_normal(500) * 10.0 ** rng.integers(-6, 1, 500)
        keras_opt.apply([keras.ops.convert_to_tensor(grad)], [var])
        param.grad = torch.tensor(grad)
        ours.step()
    # the old Python-float bias correction drifted 2.8e-7 here
    assert np.abs(np.asarray(var.numpy()) - param.detach().numpy()).max() < 1e-15


def test_exported_train_script_trains_with_keras_rmsprop(tmp_path):
    """train.py carries the Keras-stepped optimizer and runs with torch and numpy alone."""
    import keras

    model = _dense_model(keras.optimizers.RMSprop(1e-3, momentum=0.5))
    translation = translate(model)
    recipe = recipe_from_keras(keras_fit_config(model, {"epochs": 2, "batch_size": 16}),
                               translation, "regression")
    script = train_script(Candidate(files={"model.py": translation.source},
                                    entry=translation.class_name, recipe=recipe), "regression")
    assert "class KerasRMSprop(KerasOptimizer)" in script and "autopilot_lab" not in script.split(
        "copied from autopilot_lab.harness.keras_optim")[1]
    (tmp_path / "model.py").write_text(translation.source)
    (tmp_path / "train.py").write_text(script)
    torch.save(translation.torch_state_dict(), tmp_path / "weights.pt")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 20)).astype(np.float32)
    y = X[:, :5].sum(axis=1).astype(np.float32)
    np.savez(tmp_path / "data.npz", X_train=X[:48], y_train=y[:48], X_valid=X[48:],
             y_valid=y[48:])
    run = subprocess.run([sys.executable, "train.py", "data.npz"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("valid loss") == 2
    trained = torch.load(tmp_path / "trained_weights.pt", weights_only=True)
    assert not torch.equal(trained["d.weight"], translation.torch_state_dict()["d.weight"])
