"""Minimal torchvision stand-in for the baseline route only (see benchmarks/onnx_route.py).

PyPI's torchvision wheels fail to import beside the CPU torch 2.13.0 (`operator torchvision::nms
does not exist`), and onnx2torch imports torchvision at module load for two converters
(NonMaxSuppression, RoiAlign) that no model of the corpus uses. This stub exposes the names
they import; calling any of them raises.
"""

from . import ops

__all__ = ["ops"]
__version__ = "0.0.0+benchmark-stub"
