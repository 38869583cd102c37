"""bmxgc: plan, review, apply and undo garbage collection of S3 objects.

The Python API (``bmxgc.plan``, ``bmxgc.apply``, ``bmxgc.undo``, ...) is what
the CLI runs; it is imported on first use so that ``import bmxgc`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("plan", "apply", "undo", "recover", "history", "verify", "diff", "summary")
__all__ = [*_API, "load_config", "config_from_dict", "BmxgcError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from bmxgc import api

        return getattr(api, name)
    if name in ("load_config", "config_from_dict"):
        from bmxgc import config

        return getattr(config, name)
    if name == "BmxgcError":
        from bmxgc.errors import BmxgcError

        return BmxgcError
    raise AttributeError(f"module 'bmxgc' has no attribute {name!r}")
