"""The route a user takes today without our translator: Keras -> ONNX with tf2onnx, then
ONNX -> torch.fx with onnx2torch (the optional `bench` extra). Used by the migration corpus
benchmark as its baseline, in a child process of its own."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPSET = 15  # what tf2onnx 1.17 emits by default
STUBS = Path(__file__).resolve().parent / "_stubs"


@dataclass
class RouteResult:
    """What the conversion gave: the torch module, or the stage that failed and why."""

    module: Any = None  # torch.fx.GraphModule
    onnx_model: Any = None  # onnx.ModelProto, kept to tell exporter and converter faults apart
    stage: str = ""  # "tf2onnx" or "onnx2torch" when it failed
    error: str = ""
    seconds: float = 0.0


def torchvision_import_error() -> str | None:
    """Why `import torchvision` fails in a fresh interpreter (None when it imports). Checked in
    a throwaway process: a broken torchvision can leave half-registered torch ops behind."""
    proc = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def use_torchvision_stub() -> None:
    """Put the minimal torchvision stub first on sys.path (call in the baseline child only)."""
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.path.insert(0, str(STUBS))


def convert(model: Any) -> RouteResult:
    """tf2onnx.convert.from_keras, then onnx2torch.convert; never raises."""
    import tensorflow as tf

    result = RouteResult()
    start = time.perf_counter()
    try:
        import tf2onnx

        signature = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name)
                     for t in model.inputs]
        result.onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=signature,
                                                          opset=OPSET)
    except Exception as exc:  # a converter fault is a result, not a crash
        result.stage, result.error = "tf2onnx", _describe(exc)
        result.seconds = time.perf_counter() - start
        return result
    try:
        import onnx2torch

        result.module = onnx2torch.convert(result.onnx_model)
    except Exception as exc:
        result.stage, result.error = "onnx2torch", _describe(exc)
    result.seconds = time.perf_counter() - start
    return result


def onnxruntime_outputs(onnx_model: Any, inputs: list) -> list:
    """Run the exported graph in onnxruntime (to tell an exporter fault from a converter one)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"
