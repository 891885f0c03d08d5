"""Back ends, registered by name. Importing this package fills the registry."""

from edgec.backends import executorch, mobile, onnxruntime, tensorrt  # noqa: F401  (register "executorch", "mobile", "ort", "tensorrt")
from edgec.backends.registry import get_backend, register_backend

__all__ = ["get_backend", "register_backend"]
