"""The Keras -> PyTorch translator: every layer family matches Keras to 1e-4, trains, reads well."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from autopilot_lab.migrate import (  # noqa: E402
    MigrationError,
    keras_fit_config,
    load_keras_model,
    translate,
)
from autopilot_lab.migrate.translator import ruff_binary  # noqa: E402

L = keras.layers
ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-4


# ----- helpers -----------------------------------------------------------------------------------
def build_torch(t):
    """Exec the emitted source in a fresh module and load the translated weights."""
    mod = types.ModuleType(f"translated_{t.class_name}")
    exec(
        compile(t.source, f"<{t.class_name}>", "exec"), mod.__dict__
    )  # our own translator's output
    net = getattr(mod, t.class_name)()
    net.load_state_dict(t.torch_state_dict(), strict=True)
    return net.eval()


def _as_list(x):
    if isinstance(x, dict):
        return list(x.values())
    return list(x) if isinstance(x, (list, tuple)) else [x]


def keras_outputs(model, inputs):
    out = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    return [np.asarray(o) for o in _as_list(out)]


def torch_outputs(net, inputs):
    with torch.no_grad():
        out = net(*[torch.from_numpy(np.asarray(i)) for i in inputs])
    return [o.numpy() for o in _as_list(out)]


def random_inputs(model, seed=0, batch=3):
    rng = np.random.default_rng(seed)
    xs = []
    for t in model.inputs:
        shape = (batch, *[d or 5 for d in t.shape[1:]])
        if "int" in str(t.dtype):
            xs.append(rng.integers(0, 10, size=shape).astype(str(t.dtype)))
        else:
            xs.append(rng.normal(size=shape).astype("float32"))
    return xs


def assert_matches(model, inputs=None, *, tol=TOL):
    """Translate, run both, compare; return (translation, torch model, max abs error)."""
    t = translate(model)
    assert not t.unsupported, [(u.name, u.reason) for u in t.unsupported]
    net = build_torch(t)
    inputs = inputs if inputs is not None else random_inputs(model)
    ko, to = keras_outputs(model, inputs), torch_outputs(net, inputs)
    assert len(ko) == len(to)
    err = 0.0
    for k, p in zip(ko, to):
        assert k.shape == p.shape, (k.shape, p.shape)
        err = max(err, float(np.abs(k - p).max()) if k.size else 0.0)
    assert err <= tol, f"{model.name}: max abs error {err:.3g} > {tol}\n{t.source}"
    return t, net, err


def assert_trainable(model, t, net, inputs=None):
    """Every Keras weight has a state_dict key; trainable ones are parameters with gradients."""
    keys = {e["torch"] for e in t.weight_map}
    mapped = {e["keras_weight"] for e in t.weight_map}
    for v in model.weights:
        assert v.path in mapped, f"Keras weight {v.path} not mapped"
    params = dict(net.named_parameters())
    buffers = dict(net.named_buffers())
    for e in t.weight_map:
        assert e["torch"] in t.state_dict
        v = next(w for w in model.weights if w.path == e["keras_weight"])
        if v.trainable:
            assert e["torch"] in params, f"{e['torch']} (Keras {v.path}) is not a parameter"
            assert params[e["torch"]].requires_grad
        else:
            assert e["torch"] in buffers or e["torch"] in params
    assert keys <= set(t.state_dict)
    if not params:
        return
    inputs = inputs if inputs is not None else random_inputs(model, seed=1, batch=6)
    net.zero_grad()
    outs = _as_list(net(*[torch.from_numpy(np.asarray(i)) for i in inputs]))
    gen = torch.Generator().manual_seed(0)
    loss = sum(
        (o * torch.randn(o.shape, generator=gen)).sum() for o in outs if o.is_floating_point()
    )
    loss.backward()
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has non-finite gradients"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def ruff_check(source: str) -> None:
    ruff = ruff_binary()
    if ruff is None:
        pytest.skip("ruff not installed")
    proc = subprocess.run(
        [
            ruff,
            "check",
            "--config",
            str(ROOT / "pyproject.toml"),
            "--stdin-filename",
            "model.py",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n" + source


# ----- per-layer cases ---------------------------------------------------------------------------
def seq(input_shape, *layers, dtype="float32", name=None):
    inp = keras.Input(input_shape, dtype=dtype)
    x = inp
    for layer in layers:
        x = layer(x)
    return keras.Model(inp, x, name=name or layers[0].__class__.__name__.lower() + "_model")


CASES = {
    "dense_rank2": lambda: seq((6,), L.Dense(5, activation="relu"), L.Dense(3)),
    "dense_rank3_no_bias": lambda: seq((4, 6), L.Dense(5, use_bias=False, activation="tanh")),
    "conv1d_same_stride2": lambda: seq((9, 3), L.Conv1D(4, 4, strides=2, padding="same")),
    "conv1d_causal_dilated": lambda: seq((9, 3), L.Conv1D(4, 3, padding="causal", dilation_rate=2)),
    "conv2d_valid_dilated": lambda: seq((9, 9, 3), L.Conv2D(4, 3, dilation_rate=2)),
    "conv2d_same_even_kernel": lambda: seq(
        (8, 7, 3), L.Conv2D(4, (2, 4), strides=(2, 3), padding="same", activation="relu")
    ),
    "conv2d_groups": lambda: seq((6, 6, 4), L.Conv2D(6, 3, groups=2, padding="same")),
    "conv3d": lambda: seq((5, 6, 6, 2), L.Conv3D(3, 3, strides=2, padding="same")),
    "depthwise2d_mult2": lambda: seq(
        (7, 7, 3), L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)
    ),
    "depthwise1d": lambda: seq((9, 3), L.DepthwiseConv1D(3, padding="same")),
    "separable2d": lambda: seq(
        (8, 8, 3), L.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2)
    ),
    "separable1d": lambda: seq((9, 3), L.SeparableConv1D(4, 3, activation="relu")),
    "conv2d_transpose_same": lambda: seq(
        (5, 5, 3), L.Conv2DTranspose(4, 3, strides=2, padding="same")
    ),
    "conv2d_transpose_valid": lambda: seq((5, 5, 3), L.Conv2DTranspose(4, 4, strides=2)),
    "conv1d_transpose_same_even": lambda: seq(
        (6, 3), L.Conv1DTranspose(2, 4, strides=2, padding="same")
    ),
    "maxpool2d_same_asym": lambda: seq((7, 7, 3), L.MaxPooling2D(2, padding="same")),
    "avgpool2d_same_asym": lambda: seq((7, 6, 3), L.AveragePooling2D(3, strides=2, padding="same")),
    "avgpool2d_same_sym": lambda: seq((6, 6, 3), L.AveragePooling2D(3, strides=1, padding="same")),
    "pool1d": lambda: seq((9, 3), L.MaxPooling1D(2), L.AveragePooling1D(2, padding="same")),
    "pool3d": lambda: seq((4, 6, 6, 2), L.MaxPooling3D(2), L.AveragePooling3D((1, 2, 2))),
    "global_pool_2d": lambda: seq((5, 5, 3), L.Conv2D(4, 3), L.GlobalAveragePooling2D()),
    "global_pool_keepdims": lambda: seq(
        (5, 5, 3), L.Conv2D(4, 1), L.GlobalMaxPooling2D(keepdims=True)
    ),
    "global_pool_1d_3d": lambda: _global_1d_3d(),
    "batchnorm_conv": lambda: _with_stats(
        seq((6, 6, 3), L.Conv2D(4, 3), L.BatchNormalization(momentum=0.9))
    ),
    "batchnorm_dense": lambda: _with_stats(
        seq((6,), L.Dense(4), L.BatchNormalization(epsilon=1e-5, center=False))
    ),
    "batchnorm_seq": lambda: _with_stats(seq((5, 4), L.BatchNormalization(scale=False))),
    "layernorm": lambda: seq(
        (4, 6), L.LayerNormalization(), L.Dense(3), L.LayerNormalization(epsilon=1e-6, center=False)
    ),
    "dropouts": lambda: seq(
        (6, 6, 3),
        L.Dropout(0.3),
        L.SpatialDropout2D(0.2),
        L.GaussianNoise(0.1),
        L.GaussianDropout(0.2),
        L.AlphaDropout(0.1),
        L.Conv2D(2, 1),
    ),
    "spatial_dropout1d": lambda: seq((5, 3), L.SpatialDropout1D(0.5), L.Dense(2)),
    "flatten_after_conv": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.Flatten(), L.Dense(3)),
    "reshape_permute_repeat": lambda: seq(
        (12,), L.Reshape((3, 4)), L.Permute((2, 1)), L.Flatten(), L.RepeatVector(2)
    ),
    "embedding": lambda: seq((7,), L.Embedding(10, 4), L.GlobalAveragePooling1D(), dtype="int32"),
    "lstm_sequences": lambda: seq((5, 3), L.LSTM(4, return_sequences=True), L.LSTM(3)),
    "gru": lambda: seq((5, 3), L.GRU(4, return_sequences=True), L.GRU(2)),
    "gru_no_bias": lambda: seq((5, 3), L.GRU(4, use_bias=False)),
    "simple_rnn": lambda: seq(
        (5, 3), L.SimpleRNN(4, activation="relu", return_sequences=True), L.SimpleRNN(2)
    ),
    "bidirectional_concat": lambda: seq(
        (5, 3), L.Bidirectional(L.LSTM(4, return_sequences=True)), L.Bidirectional(L.GRU(3))
    ),
    "bidirectional_modes": lambda: seq(
        (5, 3),
        L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum"),
        L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="ave"),
        L.Bidirectional(L.SimpleRNN(2), merge_mode="mul"),
    ),
    "lstm_return_state": lambda: _lstm_state(),
    "mha_self_causal": lambda: _mha(causal=True),
    "mha_cross_key": lambda: _mha(cross=True),
    "dot_attention": lambda: _dot_attention(),
    "activation_layers": lambda: seq(
        (6,),
        L.ReLU(),
        L.Dense(6),
        L.LeakyReLU(0.1),
        L.Dense(6),
        L.ELU(0.5),
        L.Dense(6),
        L.ReLU(max_value=6.0),
        L.Dense(6),
        L.Activation("gelu"),
        L.Softmax(),
    ),
    # Keras' ReLU in every combination of threshold, max_value and negative_slope
    "relu_threshold_max_slope": lambda: seq(
        (6,),
        L.ReLU(threshold=0.3),
        L.Dense(6),
        L.ReLU(max_value=1.5, negative_slope=0.2),
        L.Dense(6),
        L.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.5),
        L.Dense(6),
        L.ReLU(negative_slope=0.3, threshold=0.2),
    ),
    "einsum_dense": lambda: seq(
        (4, 6),
        L.EinsumDense("abc,cd->abd", output_shape=(4, 5), bias_axes="d",
                      activation="relu"),
        L.EinsumDense("abc,bcd->ad", output_shape=(3,), bias_axes="d"),
        L.EinsumDense("ab,bc->ac", output_shape=(2,), kernel_initializer="he_normal"),
    ),
    "group_normalization": lambda: seq(
        (5, 5, 4),
        L.Conv2D(6, 3, padding="same"),
        L.GroupNormalization(groups=3, beta_initializer="random_normal",
                             gamma_initializer="random_normal"),
        L.Conv2D(4, 1),
        L.GroupNormalization(groups=-1, center=False),
        L.Flatten(),
        L.Dense(8),
        L.GroupNormalization(groups=2, scale=False, epsilon=1e-5),
    ),
    "rms_unit_normalization": lambda: seq(
        (4, 6),
        L.Dense(6),
        L.UnitNormalization(),
        L.Dense(5, bias_initializer="random_normal"),
        L.RMSNormalization(),
        L.Dense(3),
        L.RMSNormalization(axis=[1, 2], epsilon=1e-3),
        L.UnitNormalization(axis=[1, 2]),
    ),
    "prelu": lambda: seq(
        (4, 4, 3), L.Conv2D(3, 1), L.PReLU(shared_axes=[1, 2], alpha_initializer="random_normal")
    ),
    "padding_cropping": lambda: seq(
        (6, 6, 3), L.ZeroPadding2D(((1, 2), (0, 1))), L.Conv2D(2, 3), L.Cropping2D(((1, 0), (1, 1)))
    ),
    "padding_cropping_1d_3d": lambda: _pad_1d_3d(),
    # GRU(reset_after=False): the reset gate before the recurrent kernel, an explicit loop
    "gru_reset_before": lambda: seq(
        (5, 3),
        L.GRU(4, reset_after=False, return_sequences=True, bias_initializer="random_normal"),
        L.GRU(4, reset_after=False, return_sequences=True, go_backwards=True),
        L.GRU(3, reset_after=False, use_bias=False),
        L.Dense(2)),
    "go_backwards": lambda: _go_backwards(),
    # activations nn.LSTM / nn.GRU hard-code otherwise: an explicit loop, both GRU forms
    "recurrent_activations": lambda: seq(
        (5, 3),
        L.LSTM(4, activation="relu", return_sequences=True, bias_initializer="random_normal"),
        L.GRU(4, recurrent_activation="hard_sigmoid", return_sequences=True,
              bias_initializer="random_normal"),
        L.GRU(4, activation="relu", reset_after=False, go_backwards=True,
              return_sequences=True),
        L.LSTM(3, recurrent_activation="relu", go_backwards=True),
        L.Dense(2)),
    "keras_ops_unary_reduce": lambda: _keras_ops(),
    "resizing": lambda: seq(
        (6, 5, 2), L.Resizing(9, 7), L.Conv2D(3, 2), L.Resizing(4, 3, interpolation="nearest"),
        L.Resizing(5, 2), L.Flatten(), L.Dense(2)),
    "center_crop": lambda: seq(
        (7, 6, 3), L.CenterCrop(4, 3), L.Conv2D(2, 2), L.CenterCrop(2, 2), L.Flatten(),
        L.Dense(2)),
    "upsampling": lambda: seq(
        (3, 4, 2),
        L.UpSampling2D(2),
        L.Conv2D(2, 1),
        L.UpSampling2D((1, 2), interpolation="bilinear"),
    ),
    "upsampling1d_3d": lambda: _up_1d_3d(),
    "rescaling_normalization": lambda: _normalization(),
    "time_distributed": lambda: seq(
        (4, 6, 6, 2),
        L.TimeDistributed(L.Conv2D(3, 3)),
        L.TimeDistributed(L.Flatten()),
        L.TimeDistributed(L.Dense(5)),
    ),
    "merges": lambda: _merges(),
    "squeeze_excite_reshape": lambda: _squeeze_excite(),
    "dot": lambda: _dot(),
    "keras_ops_arithmetic": lambda: _ops(),
    "multi_io_shared": lambda: _multi_io_shared(),
    "nested_sequential": lambda: _nested(),
}

ACTIVATIONS = [
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "sigmoid",
    "hard_sigmoid",
    "hard_silu",
    "tanh",
    "softmax",
    "log_softmax",
    "softplus",
    "softsign",
    "swish",
    "silu",
    "mish",
    "exponential",
    "linear",
    "celu",
    "log_sigmoid",
]


def _with_stats(model):
    """Give BatchNorm non-trivial moving statistics and affine weights."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            for v in layer.weights:
                shape = tuple(v.shape)
                val = (
                    rng.uniform(0.5, 1.5, shape) if "variance" in v.path else rng.normal(size=shape)
                )
                v.assign(val.astype("float32"))
    return model


def _global_1d_3d():
    a = keras.Input((5, 3))
    b = keras.Input((3, 4, 4, 2))
    y1 = L.GlobalMaxPooling1D()(a)
    y2 = L.GlobalAveragePooling3D()(L.Conv3D(3, 1)(b))
    return keras.Model([a, b], [y1, y2], name="global_1d_3d")


def _lstm_state():
    inp = keras.Input((5, 3))
    seq_, h, c = L.LSTM(4, return_sequences=True, return_state=True)(inp)
    out = L.LSTM(4)(seq_, initial_state=[h, c])
    gru_out, gh = L.GRU(3, return_state=True)(inp)
    return keras.Model(inp, [out, gru_out, gh], name="lstm_state")


def _mha(causal=False, cross=False):
    q = keras.Input((5, 8))
    if cross:
        v = keras.Input((4, 6))
        k = keras.Input((4, 7))
        y = L.MultiHeadAttention(2, 3, value_dim=5)(q, v, key=k)
        return keras.Model([q, v, k], y, name="mha_cross")
    y = L.MultiHeadAttention(2, 4, output_shape=6)(q, q, use_causal_mask=causal)
    return keras.Model(q, y, name="mha_self")


def _keras_ops():
    """keras.ops calls in a functional graph: gelu (Keras' approximate default and exact),
    elementwise functions, and reductions over any axes with and without keepdims."""
    ops = keras.ops
    inp = keras.Input((4, 5))
    x = L.Dense(5)(inp)
    g = ops.gelu(x) + ops.gelu(x, approximate=False) + ops.tanh(x) * ops.sigmoid(x)
    m = ops.mean(g, axis=1) + ops.max(g, axis=1) + ops.sum(ops.square(g), axis=-2)
    k = ops.mean(ops.abs(g), axis=-1, keepdims=True)
    out = L.Dense(2)(m + ops.mean(k, axis=1) + ops.min(ops.exp(-g), axis=1))
    # the mask-like flag Keras models compute, cast back to numbers and reshaped
    flag = ops.cast(ops.any(ops.not_equal(x, 0.0), axis=-1), "float32")  # (batch, 4)
    shaped = ops.squeeze(ops.expand_dims(flag, 1), axis=1) * ops.mean(m, axis=-1, keepdims=True)
    return keras.Model(inp, [out, ops.mean(g, axis=[1, 2]), shaped], name="keras_ops")


def _go_backwards():
    """LSTM, GRU and SimpleRNN reading the steps last to first, outside Bidirectional: a
    returned sequence in that order, the last state, and a state passed on."""
    inp = keras.Input((5, 3))
    seq_out = L.LSTM(4, return_sequences=True, go_backwards=True)(inp)
    last, state = L.GRU(4, go_backwards=True, return_state=True)(seq_out)
    rnn = L.SimpleRNN(4, go_backwards=True)(seq_out, initial_state=state)
    return keras.Model(inp, [last, rnn], name="backwards")


def _dot_attention():
    """Keras' Attention: self, causal and scaled; cross with a key; concat scores, with the
    attention weights as a second output."""
    q, v, k = keras.Input((5, 4)), keras.Input((3, 4)), keras.Input((3, 4))
    x = L.Dense(4)(q)
    own = L.Attention(use_scale=True)([x, x], use_causal_mask=True)
    cross = L.Attention()([x, v, k])
    out, weights = L.Attention(score_mode="concat", use_scale=True)(
        [own, cross], return_attention_scores=True)
    bahdanau = L.AdditiveAttention()([out, v])
    scaled = L.AdditiveAttention(use_scale=True)([bahdanau, v, k], use_causal_mask=False)
    return keras.Model([q, v, k], [L.Dense(2)(scaled), weights], name="dot_attention")


def _pad_1d_3d():
    a = keras.Input((6, 2))
    b = keras.Input((3, 4, 4, 2))
    y1 = L.Cropping1D((1, 2))(L.ZeroPadding1D((2, 1))(a))
    y2 = L.Conv3D(2, 1)(L.ZeroPadding3D(1)(b))
    return keras.Model([a, b], [y1, y2], name="pad_1d_3d")


def _up_1d_3d():
    a = keras.Input((4, 2))
    b = keras.Input((2, 3, 3, 2))
    return keras.Model([a, b], [L.UpSampling1D(3)(a), L.UpSampling3D(2)(b)], name="up_1d_3d")


def _normalization():
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(0).normal(2.0, 3.0, size=(64, 4, 4, 3)).astype("float32"))
    return seq(
        (4, 4, 3),
        L.Rescaling(1 / 255.0),
        norm,
        L.Rescaling([0.5, 2.0, 1.5], offset=0.1),
        L.Conv2D(2, 1),
        name="normalization_model",
    )


def _merges():
    a = keras.Input((4, 4, 3))
    x = L.Conv2D(3, 1)(a)
    y = L.Conv2D(3, 1)(a)
    z = L.Add()([x, y, a])
    z = L.Subtract()([z, x])
    z = L.Multiply()([z, y])
    z = L.Average()([z, x])
    z = L.Maximum()([z, y])
    z = L.Minimum()([z, a])
    z = L.Concatenate()([z, x])
    w = L.Concatenate(axis=1)([L.Flatten()(z), L.Flatten()(y)])
    return keras.Model(a, [z, w], name="merges")


def _squeeze_excite():
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(4, 3, padding="same")(inp)
    s = L.GlobalAveragePooling2D()(x)
    s = L.Reshape((1, 1, 4))(s)
    s = L.Conv2D(4, 1, activation="sigmoid")(s)
    return keras.Model(inp, L.Multiply()([x, s]), name="squeeze_excite")


def _dot():
    a, b = keras.Input((4, 5)), keras.Input((3, 5))
    c, d = keras.Input((6,)), keras.Input((6,))
    y1 = L.Dot(axes=(2, 2))([a, b])
    y2 = L.Dot(axes=1, normalize=True)([c, d])
    return keras.Model([a, b, c, d], [y1, y2], name="dot")


def _ops():
    inp = keras.Input((4, 4, 3))
    x = L.Conv2D(3, 1)(inp)
    y = L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)  # MobileNetV3's hard_sigmoid
    z = y * x - inp
    return keras.Model(inp, z / 2.0, name="ops")


def _multi_io_shared():
    a, b = keras.Input((6,), name="left"), keras.Input((6,), name="right")
    shared = L.Dense(4, activation="relu", name="shared_encoder")
    ea, eb = shared(a), shared(b)
    merged = L.Concatenate()([ea, eb])
    return keras.Model(
        [a, b], [L.Dense(2, name="score")(merged), L.Subtract()([ea, eb])], name="siamese"
    )


def _nested():
    inner = keras.Sequential(
        [keras.Input((6,)), L.Dense(5, activation="relu"), L.Dense(4)], name="encoder"
    )
    a, b = keras.Input((6,)), keras.Input((6,))
    return keras.Model([a, b], L.Add()([inner(a), inner(b)]), name="nested")


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_family_matches_keras_and_trains(case):
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    model = CASES[case]()
    t, net, err = assert_matches(model)
    assert_trainable(model, t, net)
    ruff_check(t.source)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_functions_match_keras(name):
    keras.utils.set_random_seed(0)
    model = seq((7,), L.Dense(6, activation=name), name=f"act_{name}")
    x = [np.random.default_rng(0).normal(scale=3.0, size=(4, 7)).astype("float32")]
    t, _, _ = assert_matches(model, x)
    ruff_check(t.source)


def test_gelu_approximate_matches_keras():
    keras.utils.set_random_seed(0)
    model = seq((7,), L.Dense(6), L.Activation(keras.activations.gelu), name="gelu_exact")
    assert_matches(model)


# ----- the emitted code --------------------------------------------------------------------------
def test_emitted_source_reads_like_a_module():
    keras.utils.set_random_seed(0)
    model = seq(
        (8, 8, 3),
        L.Conv2D(4, 3, name="stem_conv"),
        L.BatchNormalization(name="stem_bn"),
        L.ReLU(name="stem_relu"),
        L.GlobalAveragePooling2D(name="pool"),
        L.Dense(2, name="head"),
        name="tiny_classifier",
    )
    t = translate(model)
    src = t.source
    assert t.class_name == "TinyClassifier"
    assert "class TinyClassifier(nn.Module):" in src
    assert "self.stem_conv = nn.Conv2d(3, 4, kernel_size=3)" in src
    assert "KerasBatchNorm2d(4, eps=0.001, momentum=0.01)" in src
    assert src.count(".permute(") == 1  # in once; pooling leaves no spatial axes to permute back
    assert "def _init_weights(self):" in src and "xavier_uniform_" in src
    assert t.layer_map["stem_conv"] == "stem_conv" and t.layer_map["pool"] == ""
    assert t.inputs[0]["shape"] == (8, 8, 3)
    entry = next(e for e in t.weight_map if e["torch"] == "stem_bn.running_var")
    assert entry["buffer"] and entry["keras_weight"] == "stem_bn/moving_variance"
    assert next(e for e in t.weight_map if e["torch"] == "head.weight")["transform"] == (
        "transpose(1, 0)"
    )
    fmt = subprocess.run(
        [
            ruff_binary(),
            "format",
            "--check",
            "--config",
            str(ROOT / "pyproject.toml"),
            "--stdin-filename",
            "model.py",
            "-",
        ],
        input=src,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_fresh_model_has_keras_initialization():
    inp = keras.Input((20,), dtype="int32")
    x = L.Embedding(50, 16, name="embedding")(inp)
    x = L.LSTM(8, name="lstm")(x)
    model = keras.Model(inp, L.Dense(64, name="dense")(x), name="init_check")
    t = translate(model)
    mod = types.ModuleType("init_check")
    exec(t.source, mod.__dict__)
    torch.manual_seed(0)
    net = getattr(mod, t.class_name)()
    limit = np.sqrt(6 / (8 + 64))
    w = net.dense.weight.detach().numpy()
    assert np.abs(w).max() <= limit + 1e-6 and np.abs(w).max() > 0.8 * limit
    assert not net.dense.bias.detach().numpy().any()
    assert np.abs(net.embedding.weight.detach().numpy()).max() <= 0.05
    bias = net.lstm.bias_ih_l0.detach().numpy()
    assert (bias[8:16] == 1).all() and not bias[:8].any()  # unit_forget_bias
    assert not net.lstm.bias_hh_l0.requires_grad


@pytest.mark.parametrize("layer", ["Conv1D", "Conv1DTranspose"])
def test_fresh_convolution_takes_keras_bias_initializer(layer):
    """A non-default bias initializer holds on a fresh init (transposed convolutions used to
    keep the zero default)."""
    inp = keras.Input((8, 3))
    out = getattr(L, layer)(4, 3, bias_initializer="ones", name="conv")(inp)
    t = translate(keras.Model(inp, out, name="bias_init"))
    mod = types.ModuleType("bias_init")
    exec(t.source, mod.__dict__)
    net = getattr(mod, t.class_name)()
    assert (net.conv.bias.detach().numpy() == 1).all()


def test_emitted_model_imports_with_torch_alone(tmp_path):
    keras.utils.set_random_seed(0)
    models = {
        "cnn": CASES["conv2d_same_even_kernel"](),
        "mha": _mha(causal=True),
        "rnn": CASES["bidirectional_modes"](),
    }
    classes = []
    for name, model in models.items():
        t = translate(model)
        (tmp_path / f"{name}.py").write_text(t.source)
        classes.append(f"{name}:{t.class_name}")
    script = textwrap.dedent(
        """
        import importlib, importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "autopilot_lab", "tf_keras"):
                    raise ImportError(f"blocked import of {name}")
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, sys.argv[1])
        for spec in sys.argv[2:]:
            module, cls = spec.split(":")
            getattr(importlib.import_module(module), cls)()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *classes], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# ----- loading, errors, unsupported --------------------------------------------------------------
def test_keras_file_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = CASES["lstm_sequences"]()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=3e-4), loss="mse")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_keras_model(path)
    t, _, _ = assert_matches(loaded, random_inputs(model))
    assert t.recipe["optimizer"]["lr"] == pytest.approx(3e-4)
    assert t.recipe["optimizer"]["epsilon"] == pytest.approx(1e-7)
    t2 = translate(str(path), class_name="SequenceModel")
    assert "class SequenceModel(nn.Module):" in t2.source
    h5 = tmp_path / "model.h5"
    model.save(h5)
    assert_matches(load_keras_model(h5), random_inputs(model))


def test_missing_file_raises_migration_error(tmp_path):
    missing = tmp_path / "nope.keras"
    with pytest.raises(MigrationError, match="nope.keras"):
        translate(missing)
    with pytest.raises(MigrationError, match="not a Keras model file"):
        (tmp_path / "model.txt").write_text("x")
        load_keras_model(tmp_path / "model.txt")
    with pytest.raises(MigrationError, match="SavedModel"):
        load_keras_model(tmp_path)


class _Subclassed(keras.Model):
    """A subclassed model whose call() is layers and ops: traceable."""

    def __init__(self, branchy=False):
        super().__init__(name="subclassed_net")
        self.hidden = L.Dense(8, activation="relu")
        self.norm = L.LayerNormalization()
        self.out = L.Dense(3)
        self.branchy = branchy

    def call(self, x):
        h = self.norm(self.hidden(x))
        if self.branchy and bool(keras.ops.sum(h) > 0):  # a decision on a tensor's value
            h = h * 2.0
        return self.out(h) * 0.5 + 1.0


def test_a_subclassed_model_is_translated_through_the_graph_its_call_builds():
    model = _Subclassed()
    model(np.zeros((2, 5), "float32"))  # built by a call, as subclassed models are
    t, net, err = assert_matches(model, [np.random.default_rng(0).normal(
        size=(4, 5)).astype("float32")])
    assert t.class_name == "SubclassedNet" and any("_Subclassed.call()" in n for n in t.notes)


def test_a_subclassed_model_that_cannot_be_traced_says_why_and_what_to_do():
    with pytest.raises(MigrationError, match="never called, so its input shape is unknown"):
        translate(_Subclassed())
    branchy = _Subclassed(branchy=True)
    branchy(np.ones((2, 5), "float32"))
    with pytest.raises(MigrationError, match=r"could not be traced .*--agent llm"):
        translate(branchy)
    with pytest.raises(MigrationError, match="not built"):
        translate(keras.Sequential([L.Dense(2)]))


@keras.saving.register_keras_serializable(package="tests")
class CustomScale(L.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


def test_unsupported_layer_becomes_a_named_stub():
    inp = keras.Input((4,))
    x = L.Dense(4, name="before")(inp)
    x = CustomScale(name="custom_scale")(x)
    x = L.Lambda(lambda v: v * 2, name="double")(x)
    model = keras.Model(inp, L.Dense(2, name="after")(x), name="with_custom")
    t = translate(model)
    names = {u.name: u for u in t.unsupported}
    assert set(names) == {"custom_scale", "double"}
    assert (
        names["custom_scale"].cls == "CustomScale"
        and "custom layer" in names["custom_scale"].reason
    )
    assert "Lambda" in names["double"].reason
    assert "custom_scale.scale" in t.state_dict
    ruff_check(t.source)
    net = build_torch(t)
    assert "class UntranslatedCustomScale(nn.Module):" in t.source
    with pytest.raises(NotImplementedError, match="custom_scale.*CustomScale"):
        net(torch.zeros(2, 4))


def test_masked_rnn_is_reported_not_silently_wrong():
    inp = keras.Input((6,), dtype="int32")
    x = L.Embedding(10, 4, mask_zero=True)(inp)
    model = keras.Model(inp, L.LSTM(3)(x), name="masked")
    t = translate(model)
    assert [u.cls for u in t.unsupported] == ["LSTM"]
    assert "Embedding" in t.source
    assert "mask" in t.unsupported[0].reason


def test_an_explicit_mask_is_honoured_or_flagged_never_ignored():
    """Keras averages over the unmasked steps only: a plain mean would be silently wrong."""
    inp, mask = keras.Input((5, 3)), keras.Input((5,), dtype="bool")
    pooled = L.GlobalAveragePooling1D(name="pool")(inp, mask=mask)
    model = keras.Model([inp, mask], pooled, name="explicit_mask")
    t = translate(model)
    assert [u.name for u in t.unsupported] == ["pool"]
    assert "explicit mask= argument" in t.unsupported[0].reason


def test_a_model_named_like_a_helper_class_gets_its_own_class_name():
    t = translate(_dot_attention())  # the model "dot_attention", the helper DotAttention
    assert t.class_name == "DotAttentionModel"
    assert "class DotAttention(nn.Module):" in t.source
    assert "class DotAttentionModel(nn.Module):" in t.source


def test_a_center_crop_that_would_resize_is_flagged():
    t = translate(seq((3, 3, 2), L.CenterCrop(4, 4), name="crop_up"))
    assert [u.cls for u in t.unsupported] == ["CenterCrop"]
    assert "smart_resize" in t.unsupported[0].reason


def test_gru_reset_before_in_bidirectional_is_unsupported():
    model = seq((5, 3), L.Bidirectional(L.GRU(4, reset_after=False)), name="gru_v1_bi")
    t = translate(model)
    assert [u.name for u in t.unsupported] == [model.layers[-1].name]
    assert "reset_after" in t.unsupported[0].reason


# ----- recipe ------------------------------------------------------------------------------------
def test_fit_config_recipe():
    model = seq(
        (4,),
        L.Dense(3, kernel_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.001)),
        L.Dense(2),
        name="recipe",
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=3, restore_best_weights=True, min_delta=0.01
    )
    r = keras_fit_config(
        model,
        {"epochs": 7, "batch_size": 16, "class_weight": {0: 1.0, 1: 2.0}, "callbacks": [stop]},
    )
    assert r["optimizer"]["torch"] == "torch.optim.AdamW"
    assert r["optimizer"]["epsilon"] == pytest.approx(1e-7)
    assert r["optimizer"]["weight_decay"] == pytest.approx(0.05)
    assert r["loss"]["name"] == "sparse_categorical_crossentropy" and r["loss"]["from_logits"]
    assert r["loss"]["torch_reduction"] == "mean"
    assert r["metrics"] == ["accuracy"]
    assert (r["epochs"], r["batch_size"]) == (7, 16)
    assert r["class_weight"] == {0: 1.0, 1: 2.0}
    assert r["early_stopping"] == {
        "monitor": "val_loss",
        "patience": 3,
        "restore_best_weights": True,
        "min_delta": 0.01,
        "mode": "auto",
        "baseline": None,
        "start_from_epoch": 0,
    }
    reg = r["regularizers"][0]
    assert (reg["layer"], reg["weight"], reg["l1"], reg["l2"]) == (
        model.layers[1].name,
        "kernel",
        0.01,
        0.001,
    )
    sgd = seq((4,), L.Dense(2), name="sgd")
    sgd.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), loss="binary_crossentropy"
    )
    r = keras_fit_config(sgd)
    assert r["optimizer"]["torch_kwargs"]["nesterov"] is True
    assert r["loss"]["name"] == "binary_crossentropy" and not r["loss"]["from_logits"]


# ----- keras.applications and docs ---------------------------------------------------------------
def test_mobilenet_v3_small_matches_keras():
    """hard_swish, keras.ops arithmetic, Rescaling, squeeze-excite Multiply, asymmetric padding."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), classifier_activation=None
    )
    _with_stats(model)
    x = [np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")]
    t, net, err = assert_matches(model, x)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert params == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert t.source.count(".permute(") <= 2


def test_supported_layers_doc_is_generated_from_the_registry():
    from autopilot_lab.migrate.layers import supported_layers_markdown

    doc = ROOT / "docs" / "supported_layers.md"
    assert doc.read_text() == supported_layers_markdown(), (
        "regenerate docs/supported_layers.md with supported_layers_markdown()"
    )


def test_a_long_model_name_still_gives_a_ruff_clean_model_py():
    import keras

    from autopilot_lab.checks.static import ruff_findings
    from autopilot_lab.migrate import translate

    name = "bidirectional_gru_classifier_for_production"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")], name=name)
    assert ruff_findings(translate(model).source) == []
