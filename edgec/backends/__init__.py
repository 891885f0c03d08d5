"""Back ends, registered by name. Importing this package fills the registry."""

from edgec.backends import mobile, onnxruntime, tensorrt  # noqa: F401  (register "mobile", "ort" and "tensorrt")
from edgec.backends.registry import get_backend, register_backend

__all__ = ["get_backend", "register_backend"]
