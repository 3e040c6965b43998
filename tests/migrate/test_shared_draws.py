"""The metric tier's shared random draws: Keras' fit and our harness see the same batches in the
same order and the same dropout masks, bit for bit; BatchNorm trains as Keras' does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

from autopilot_lab import data  # noqa: E402
from autopilot_lab.harness import keras_optim, shared_dropout, training  # noqa: E402
from autopilot_lab.migrate import keras_fit_config, translate  # noqa: E402
from autopilot_lab.migrate.reference import recipe_from_keras  # noqa: E402
from autopilot_lab.migrate.shared_masks import _layer_class, shareable  # noqa: E402
from autopilot_lab.objectives.migrate import _train_keras, ordered_batches  # noqa: E402


def _model(d: int, seed: int = 0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((d,))
    h = keras.layers.Dense(16, use_bias=False, name="dense")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("relu", name="relu")(h)
    h = keras.layers.Dropout(0.3, name="drop")(h)
    out = keras.layers.Dense(1, name="z")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def test_the_keras_layer_and_the_torch_hook_draw_bit_identical_masks_step_after_step():
    key = shared_dropout.stream_key(7, shared_dropout.salt("drop"))
    layer = _layer_class()(0.3, key)
    x = np.arange(1, 1 + 40 * 12, dtype=np.float32).reshape(40, 12)
    layer.build(x.shape)
    net = torch.nn.Sequential()
    net.add_module("drop", torch.nn.Dropout(0.3))
    assert shared_dropout.install(net, 7, {"drop": shared_dropout.salt("drop")}) == ["drop"]
    net.train()
    masks = []
    for _ in range(3):
        ours = net(torch.from_numpy(x)).numpy()
        theirs = np.asarray(layer(x, training=True))
        np.testing.assert_array_equal(ours, theirs)
        masks.append(ours == 0)
        assert 0.2 < masks[-1].mean() < 0.4  # keep probability 1 - rate
    assert not np.array_equal(masks[0], masks[1])  # a new mask each step
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)  # inference: identity


def test_keras_fit_reads_every_epoch_whole_in_the_harness_order():
    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = X.sum(axis=1, keepdims=True)
    batches = ordered_batches(X, y, 16, seed=3)
    model = _model(3)
    model.fit(batches, epochs=3, callbacks=[batches.sync], verbose=0, shuffle=False)
    batches.verify(3)
    for epoch in range(3):
        order = training.epoch_order(50, epoch, 3)
        batches.set_epoch(epoch)
        np.testing.assert_array_equal(batches[1][0], X[order[16:32]])
    assert not np.array_equal(training.epoch_order(50, 0, 3), training.epoch_order(50, 1, 3))
    with pytest.raises(RuntimeError, match="whole and in order"):
        batches.verify(4)  # epoch 3 was never served


def test_a_translation_trained_on_the_shared_draws_ends_where_keras_ends():
    """Same batches, same masks, Keras-exact BatchNorm and Adam: after 15 epochs (a last
    batch of one row each epoch) the test RMSE of both frameworks agrees to 1e-3 relative."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(281, 5)).astype(np.float32)
    y = X @ rng.normal(size=5) + 0.1 * rng.normal(size=281)
    task = data.task_from_arrays(X, y, name="toy", kind="regression", seed=0)
    n_train = len(task.part("train")[0])
    model = _model(5)
    batch = next(b for b in range(60, 10, -1) if n_train % b == 1)  # a last batch of one row
    fit = {"epochs": 15, "batch_size": batch}
    config = keras_fit_config(model, fit)
    translation = translate(model)
    recipe = recipe_from_keras(config, translation, "regression")
    shared = shareable(model, translation)
    assert shared == {"drop": {"module": "drop", "salt": shared_dropout.salt("drop")}}
    keras_rmse = _train_keras(model, config, recipe, task, 0, shared)["test"]["rmse"]

    namespace: dict = {}
    exec(compile(translation.source, "model.py", "exec"), namespace)
    net = namespace[translation.class_name]()
    net.load_state_dict(translation.torch_state_dict())
    shared_dropout.install(net, 0, {v["module"]: v["salt"] for v in shared.values()})
    parts = {f"{k}_{p}": v for p in ("train", "valid", "test")
             for k, v in zip("Xy", task.part(p))}
    prep = training.prepare(parts, recipe, "regression")
    torch.manual_seed(0)
    training.fit(net, prep, recipe, "regression", 1, seed=0)
    pred = training.predict_scores(net, prep.parts["test"][0], "mse", prep)
    torch_rmse = float(np.sqrt(np.mean((pred - task.part("test")[1]) ** 2)))
    assert torch_rmse == pytest.approx(keras_rmse, rel=1e-3)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_a_saturated_output_trains_from_its_logits_as_in_keras(head):
    """Keras computes a from_logits=False cross-entropy from the logits behind a softmax or
    sigmoid output: a class the model is sure is wrong (p < 1e-7) still gets its gradient.
    The harness loss gives Keras' loss and gradient there, where clipping would give none."""
    import tensorflow as tf

    from autopilot_lab.candidate import Recipe

    n_out = 3 if head == "softmax" else 1
    keras.utils.set_random_seed(0)
    inp = keras.Input((2,))
    z = keras.layers.Dense(n_out, name="z")(inp)
    model = keras.Model(inp, keras.layers.Activation(head, name="p")(z))
    model.get_layer("z").set_weights([np.array([[40.0] * n_out, [-40.0] * n_out],
                                               dtype=np.float32) * (1 + np.arange(n_out)),
                                      np.zeros(n_out, dtype=np.float32)])
    x = np.array([[1.0, -1.0], [2.0, 0.5]], dtype=np.float32)
    y = np.array([0, 0]) if head == "softmax" else np.zeros((2, 1), dtype=np.float32)
    loss_fn = keras.losses.get("sparse_categorical_crossentropy" if head == "softmax"
                               else "binary_crossentropy")
    with tf.GradientTape() as tape:
        keras_loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))
    keras_grad = tape.gradient(keras_loss, model.get_layer("z").kernel).numpy()

    translation = translate(model)
    namespace: dict = {}
    exec(compile(translation.source, "model.py", "exec"), namespace)
    net = training.tag_logits(namespace[translation.class_name]())
    net.load_state_dict(translation.torch_state_dict())
    name = "cross_entropy" if head == "softmax" else "binary_cross_entropy"
    loss = training.RecipeLoss(name, Recipe(from_logits=False))
    target = torch.as_tensor(y, dtype=torch.long if head == "softmax" else torch.float32)
    ours = loss(net(torch.from_numpy(x)), target)
    ours.backward()
    assert float(ours.detach()) == pytest.approx(float(keras_loss), rel=1e-5)
    assert float(keras_loss) > 40  # far past -log(1e-7) = 16.1: Keras did not clip
    grad = dict(net.named_parameters())["z.weight"].grad.numpy().T
    np.testing.assert_allclose(grad, keras_grad, rtol=1e-5, atol=1e-6)
    assert np.abs(grad).max() > 0.1

    untagged = namespace[translation.class_name]()  # a model outside the harness: clipped
    untagged.load_state_dict(translation.torch_state_dict())
    assert float(loss(untagged(torch.from_numpy(x)), target)) < 16.2


def test_an_embedding_steps_as_keras_adam_steps_its_sparse_gradient():
    """Keras' Adam squares each occurrence of a repeated id before summing; KerasAdam with the
    embedding hooks gives the same weights after 3 steps, torch's dense square does not."""
    import tensorflow as tf

    from autopilot_lab.candidate import Recipe

    ids = np.array([[0, 1, 1, 1, 2, 2]])
    table = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    layer = keras.layers.Embedding(4, 3)
    layer.build((None, 6))
    layer.embeddings.assign(table)
    opt = keras.optimizers.Adam(0.1)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids) ** 3)
        (grad,) = tape.gradient(loss, [layer.embeddings])
        assert isinstance(grad, tf.IndexedSlices)
        opt.apply_gradients([(grad, layer.embeddings)])

    def torch_steps(hooks: bool) -> np.ndarray:
        emb = torch.nn.Embedding(4, 3)
        emb.weight.data = torch.from_numpy(table.copy())
        recipe = Recipe(optimizer="adam", lr=0.1, keras_epsilon=True, eps=1e-7)
        opt_t = training.make_optimizer(emb, recipe) if hooks else keras_optim.KerasAdam(
            emb.parameters(), lr=0.1, eps=1e-7)
        for _ in range(3):
            opt_t.zero_grad()
            (emb(torch.from_numpy(ids)) ** 3).sum().backward()
            opt_t.step()
        return emb.weight.detach().numpy()

    keras_table = layer.embeddings.numpy()
    np.testing.assert_allclose(torch_steps(hooks=True), keras_table, atol=2e-5)  # lr 0.1
    assert np.abs(torch_steps(hooks=False) - keras_table).max() > 1e-2
