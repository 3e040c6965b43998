"""The Keras -> PyTorch translation rules, one module per Keras layer family.

A rule is a function decorated with `@register("KerasClass", ..., family=..., torch=...)` (from
`registry.py`). It gets the `Builder` and one `GraphNode` (a call of the layer), declares
submodules and weights, and emits forward lines. It raises `Unsupported(reason)` when this call
cannot be translated exactly; the translator then emits a stub module (`stubs.py`) instead of a
wrong one. Helpers several families share are in `common.py`. To add a layer, add its rule to
its family's module; a new family module must also be imported below.

Importing this package registers every rule. The family modules are imported in the order the
rules were written, which is the registry's order.
"""

from __future__ import annotations

# Importing a family module registers its rules; keep this order (the registry's).
# isort: off
from . import core  # noqa: F401
from . import activations  # noqa: F401
from . import convolution  # noqa: F401
from . import pooling  # noqa: F401
from . import normalization  # noqa: F401
from . import preprocessing  # noqa: F401
from . import regularization  # noqa: F401
from . import reshaping  # noqa: F401
from . import merging  # noqa: F401
from . import keras_ops  # noqa: F401
from . import embedding  # noqa: F401
from . import recurrent  # noqa: F401
from . import wrappers  # noqa: F401
from . import attention  # noqa: F401
from . import applications  # noqa: F401

# isort: on
from .catalogue import supported_layers_markdown
from .registry import RULES, RuleInfo, mask_sensitive, missing_reason, register, rule_for
from .stubs import _python_source as _python_source
from .stubs import emit_stub

__all__ = [
    "RULES",
    "RuleInfo",
    "emit_stub",
    "mask_sensitive",
    "missing_reason",
    "register",
    "rule_for",
    "supported_layers_markdown",
]
