"""Back ends, registered by name. Importing this package fills the registry."""

from edgec.backends import onnxruntime  # noqa: F401  (registers "ort")
from edgec.backends.registry import get_backend, register_backend

__all__ = ["get_backend", "register_backend"]
