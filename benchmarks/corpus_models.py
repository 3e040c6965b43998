"""The migration corpus: every keras.applications model at a small input, plus the
production-style models teams actually ship, each built seeded so that every route (and every
child process) sees the same weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CorpusEntry:
    """One model of the corpus: how to build it and what its inputs look like."""

    name: str
    kind: str  # "application" or "production"
    build: Callable[[], Any]
    value_range: tuple[float, float] = (-1.0, 1.0)  # float inputs are drawn from this range
    vocab: int = 0  # integer inputs are token ids in [1, vocab)


BN_SPREAD = 0.05  # BatchNorm statistics and affine weights: 1 +- 5% and 0 +- 5% (std)

# ----- keras.applications ----------------------------------------------------------------------
# Every application builds with weights=None at these inputs (32x32 unless the architecture
# needs more), NASNetLarge and ConvNeXtXLarge included; the smallest member of each family is in
# the default corpus.
APPLICATION_SIZES: dict[str, int] = {
    "ConvNeXtTiny": 32, "DenseNet121": 32, "EfficientNetB0": 32, "EfficientNetV2B0": 32,
    "InceptionResNetV2": 75, "InceptionV3": 75, "MobileNet": 32, "MobileNetV2": 32,
    "MobileNetV3Small": 32, "MobileNetV3Large": 32, "NASNetMobile": 32, "ResNet50": 32,
    "ResNet50V2": 32, "VGG16": 32, "VGG19": 32, "Xception": 71,
}

LEFT_OUT_WHY = ("The larger variants of a family are left out of the default run to keep it near "
                "25 minutes on 2 cores: they are built from the same layer types as the "
                "family's smallest member, which is in the corpus, and in a full run here they "
                "took 1.5 to 2.5 minutes each for the two routes, mostly in tf2onnx. Any of them "
                "runs by name: `--models NAME`.")
_VARIANTS = {
    "ConvNeXtTiny": ("ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge"),
    "DenseNet121": ("DenseNet169", "DenseNet201"),
    "EfficientNetB0": tuple(f"EfficientNetB{i}" for i in range(1, 8)),
    "EfficientNetV2B0": ("EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
                         "EfficientNetV2S", "EfficientNetV2M", "EfficientNetV2L"),
    "NASNetMobile": ("NASNetLarge",),
    "ResNet50": ("ResNet101", "ResNet152"),
    "ResNet50V2": ("ResNet101V2", "ResNet152V2"),
}
# Applications left out of the default corpus, and why (each still runs by name).
APPLICATIONS_LEFT_OUT: dict[str, str] = {
    name: f"family of {base}, larger" for base, names in _VARIANTS.items() for name in names
}
APPLICATION_SIZES.update({name: 32 for name in APPLICATIONS_LEFT_OUT})

# These take raw 0-255 pixels (their preprocessing is inside the model); the others take what
# their `preprocess_input` returns, roughly [-1, 1].
_RAW_PIXELS = ("ConvNeXt", "EfficientNet", "MobileNetV3")


def _application(name: str) -> Callable[[], Any]:
    def build() -> Any:
        import keras

        size = APPLICATION_SIZES[name]
        return getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3),
            classifier_activation=None)  # compare logits, not a saturated softmax

    return build


# ----- production-style models -----------------------------------------------------------------
def mlp_batchnorm_dropout() -> Any:
    """Tabular MLP: Dense -> BatchNorm -> ReLU -> Dropout, twice, then a logit head."""
    import keras
    from keras import layers as L

    inp = keras.Input((20,), name="features")
    x = inp
    for width in (64, 32):
        x = L.Dense(width, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Dropout(0.3)(x)
    return keras.Model(inp, L.Dense(3)(x), name="mlp_batchnorm_dropout")


def cnn_classifier() -> Any:
    """Small image CNN: Conv2D/BatchNorm/MaxPool blocks, SpatialDropout, Flatten, Dense."""
    import keras
    from keras import layers as L

    inp = keras.Input((28, 28, 1), name="image")
    x = inp
    for filters in (16, 32):
        x = L.Conv2D(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.MaxPooling2D()(x)
    x = L.SpatialDropout2D(0.1)(x)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu")(x)
    return keras.Model(inp, L.Dense(10)(x), name="cnn_classifier")


def embedding_classifier() -> Any:
    """Bag-of-embeddings text classifier: Embedding -> GlobalAveragePooling1D -> Dense."""
    import keras
    from keras import layers as L

    inp = keras.Input((24,), dtype="int32", name="tokens")
    x = L.Embedding(1000, 32)(inp)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(32, activation="relu")(x)
    x = L.Dropout(0.2)(x)
    return keras.Model(inp, L.Dense(1, activation="sigmoid")(x), name="embedding_classifier")


def lstm_text_classifier() -> Any:
    """Stacked LSTM over token embeddings."""
    import keras
    from keras import layers as L

    inp = keras.Input((20,), dtype="int32", name="tokens")
    x = L.Embedding(500, 24)(inp)
    x = L.LSTM(32, return_sequences=True)(x)
    x = L.LSTM(16)(x)
    return keras.Model(inp, L.Dense(4)(x), name="lstm_text_classifier")


def gru_forecaster() -> Any:
    """Time-series forecaster: GRU over float features, Dense head."""
    import keras
    from keras import layers as L

    inp = keras.Input((30, 6), name="series")
    x = L.GRU(32, return_sequences=True)(inp)
    x = L.GRU(16)(x)
    return keras.Model(inp, L.Dense(1)(x), name="gru_forecaster")


def bidirectional_lstm_tagger() -> Any:
    """Sequence tagger: Bidirectional LSTM + TimeDistributed Dense per token."""
    import keras
    from keras import layers as L

    inp = keras.Input((16,), dtype="int32", name="tokens")
    x = L.Embedding(300, 16)(inp)
    x = L.Bidirectional(L.LSTM(16, return_sequences=True))(x)
    return keras.Model(inp, L.TimeDistributed(L.Dense(5))(x), name="bidirectional_lstm_tagger")


def bidirectional_gru_classifier() -> Any:
    """Bidirectional GRU (merge_mode='sum') over float sequences."""
    import keras
    from keras import layers as L

    inp = keras.Input((12, 8), name="sequence")
    x = L.Bidirectional(L.GRU(16), merge_mode="sum")(inp)
    return keras.Model(inp, L.Dense(3)(x), name="bidirectional_gru_classifier")


def conv1d_signal() -> Any:
    """1-D CNN for signals: Conv1D/BatchNorm/MaxPooling1D, GlobalMaxPooling1D, Dense."""
    import keras
    from keras import layers as L

    inp = keras.Input((64, 3), name="signal")
    x = L.Conv1D(16, 5, padding="same", activation="relu")(inp)
    x = L.BatchNormalization()(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(32, 3, dilation_rate=2, activation="relu")(x)
    x = L.GlobalMaxPooling1D()(x)
    return keras.Model(inp, L.Dense(2)(x), name="conv1d_signal")


def transformer_block() -> Any:
    """Transformer encoder block: token Embedding, MultiHeadAttention, residual LayerNorm,
    GELU feed-forward, mean pooling, classifier."""
    import keras
    from keras import layers as L

    inp = keras.Input((16,), dtype="int32", name="tokens")
    x = L.Embedding(200, 32)(inp)
    attn = L.MultiHeadAttention(num_heads=4, key_dim=8, dropout=0.1)(x, x)
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dropout(0.1)(attn)]))
    ff = L.Dense(64, activation="gelu")(x)
    ff = L.Dense(32)(ff)
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dropout(0.1)(ff)]))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(2)(x), name="transformer_block")


def two_input_functional() -> Any:
    """Two inputs (image + tabular metadata), concatenated, two outputs."""
    import keras
    from keras import layers as L

    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((8,), name="meta")
    x = L.Conv2D(8, 3, activation="relu")(image)
    x = L.GlobalAveragePooling2D()(x)
    m = L.Dense(8, activation="relu")(meta)
    h = L.Dense(16, activation="relu")(L.Concatenate()([x, m]))
    cls = L.Dense(3, name="label")(h)
    reg = L.Dense(1, name="score")(h)
    return keras.Model([image, meta], [cls, reg], name="two_input_functional")


def wide_and_deep() -> Any:
    """Wide-and-deep recommender: a linear wide part on dense features, a deep part on
    categorical embeddings, summed into one logit."""
    import keras
    from keras import layers as L

    wide_in = keras.Input((10,), name="wide")
    cat_in = keras.Input((4,), dtype="int32", name="categories")
    deep = L.Flatten()(L.Embedding(100, 8)(cat_in))
    deep = L.Dense(32, activation="relu")(deep)
    deep = L.Dropout(0.2)(deep)
    deep = L.Dense(16, activation="relu")(deep)
    logit = L.Add()([L.Dense(1)(wide_in), L.Dense(1)(deep)])
    return keras.Model([wide_in, cat_in], L.Activation("sigmoid")(logit), name="wide_and_deep")


def conv_autoencoder() -> Any:
    """Convolutional autoencoder: strided Conv2D down, Conv2DTranspose / UpSampling2D up."""
    import keras
    from keras import layers as L

    inp = keras.Input((16, 16, 1), name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(x)
    x = L.UpSampling2D()(x)
    return keras.Model(inp, L.Conv2D(1, 3, padding="same", activation="sigmoid")(x),
                       name="conv_autoencoder")


_PRODUCTION: list[tuple[Callable[[], Any], dict[str, Any]]] = [
    (mlp_batchnorm_dropout, {}),
    (cnn_classifier, {"value_range": (0.0, 1.0)}),
    (embedding_classifier, {"vocab": 1000}),
    (lstm_text_classifier, {"vocab": 500}),
    (gru_forecaster, {}),
    (bidirectional_lstm_tagger, {"vocab": 300}),
    (bidirectional_gru_classifier, {}),
    (conv1d_signal, {}),
    (transformer_block, {"vocab": 200}),
    (two_input_functional, {}),
    (wide_and_deep, {"vocab": 100}),
    (conv_autoencoder, {"value_range": (0.0, 1.0)}),
]

# The quick subset (`--small`): one of each family, fast on both routes.
SMALL = ("mlp_batchnorm_dropout", "embedding_classifier", "lstm_text_classifier",
         "transformer_block", "two_input_functional", "MobileNetV3Small")


def _application_entry(name: str) -> CorpusEntry:
    value_range = (0.0, 255.0) if name.startswith(_RAW_PIXELS) else (-1.0, 1.0)
    return CorpusEntry(name, "application", _application(name), value_range=value_range)


def corpus() -> list[CorpusEntry]:
    """The default run: production-style models first, then the applications."""
    entries = [CorpusEntry(fn.__name__, "production", fn, **kw) for fn, kw in _PRODUCTION]
    return entries + [_application_entry(name) for name in APPLICATION_SIZES
                      if name not in APPLICATIONS_LEFT_OUT]


def by_name() -> dict[str, CorpusEntry]:
    """Every model that can be run by name: the corpus and the left-out applications."""
    entries = corpus() + [_application_entry(name) for name in APPLICATIONS_LEFT_OUT]
    return {e.name: e for e in entries}


def build(entry: CorpusEntry, seed: int = 0) -> Any:
    """The entry's Keras model with seeded weights and BatchNorm moved off its fresh state
    (mean 0, variance 1, gamma 1, beta 0 would hide a wrong epsilon or a swapped statistic).

    The moves are small on purpose: a randomly initialized deep BatchNorm network is chaotic,
    and with statistics drawn at +-10% or more EfficientNetV2M's own Keras output already moves
    by more than 1e-4 when its input moves by one part in a million, so no converter could be
    judged on it. At +-5% every model's Keras output is stable to well below the tolerance
    (the rows' `keras_sensitivity` shows it)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = entry.build()
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for v in layer.weights:
                shape = tuple(v.shape)
                if "variance" in v.path or "gamma" in v.path:
                    val = rng.uniform(1 - BN_SPREAD, 1 + BN_SPREAD, shape)
                else:
                    val = rng.normal(scale=BN_SPREAD, size=shape)
                v.assign(val.astype("float32"))
    return model


def random_inputs(entry: CorpusEntry, model: Any, seed: int = 0, batch: int = 2) -> list:
    """Seeded inputs of the right dtype: token ids for integer inputs, floats in range."""
    rng = np.random.default_rng(seed)
    xs = []
    for t in model.inputs:
        shape = (batch, *[d or 8 for d in t.shape[1:]])
        if "int" in str(t.dtype):
            xs.append(rng.integers(1, max(entry.vocab, 2), size=shape).astype(str(t.dtype)))
        else:
            lo, hi = entry.value_range
            xs.append(rng.uniform(lo, hi, size=shape).astype("float32"))
    return xs
