"""Build and save the demo's Keras model: a tabular MLP for scikit-learn's breast-cancer data.

    python examples/make_keras_model.py OUT.keras

Dense + BatchNormalization + Dropout with an L2 penalty, compiled with Adam and sparse
categorical cross-entropy: the kind of model a production fleet holds.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((30,), name="features"),
        keras.layers.Normalization(name="scale", mean=0.0, variance=1.0),
        keras.layers.Dense(32, activation="relu", name="hidden",
                           kernel_regularizer=keras.regularizers.l2(1e-4)),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dropout(0.2, name="dropout"),
        keras.layers.Dense(16, activation="relu", name="hidden2"),
        keras.layers.Dense(2, activation="softmax", name="diagnosis"),
    ], name="breast_cancer_mlp")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "breast_cancer_mlp.keras"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    build().save(out)
    print(f"saved {out}")
