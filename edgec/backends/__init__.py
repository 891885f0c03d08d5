"""Back ends, registered by name. Importing this package imports every module in it, and each back end's module
registers itself: adding a back end is adding its module (and its profile), nothing else."""

import importlib
import pkgutil

from edgec.backends.registry import Backend, get_backend, register_backend

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Backend", "get_backend", "register_backend"]
