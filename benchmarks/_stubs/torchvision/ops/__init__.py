"""The torchvision.ops names onnx2torch imports (NMS and RoiAlign converters); none works."""

from __future__ import annotations

from typing import Any

__all__ = ["box_convert", "nms", "roi_align"]


def _missing(name: str) -> Any:
    def op(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"torchvision.ops.{name} is a benchmark stub: the real torchvision does not import "
            "beside the CPU torch 2.13.0"
        )

    op.__name__ = name
    return op


box_convert = _missing("box_convert")
nms = _missing("nms")
roi_align = _missing("roi_align")
