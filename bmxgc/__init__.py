"""bmxgc: plan, review, apply and undo garbage collection of S3 objects.

The Python API (``bmxgc.plan``, ``bmxgc.apply``, ``bmxgc.undo``, ...) is what
the CLI runs; see ``bmxgc.api``. It is imported on first use, so that
``import bmxgc`` (and every pure module) stays light: no boto3, no SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.1.0"

_API = ("plan", "apply", "undo", "recover", "history", "unlock", "verify", "diff", "summary")
__all__ = [*_API, "load_config", "config_from_dict", "BmxgcError", "__version__"]

if TYPE_CHECKING:  # what a type checker sees; at run time __getattr__ imports it
    from bmxgc.api import apply as apply
    from bmxgc.api import diff as diff
    from bmxgc.api import history as history
    from bmxgc.api import plan as plan
    from bmxgc.api import recover as recover
    from bmxgc.api import summary as summary
    from bmxgc.api import undo as undo
    from bmxgc.api import unlock as unlock
    from bmxgc.api import verify as verify
    from bmxgc.config import config_from_dict as config_from_dict
    from bmxgc.config import load_config as load_config
    from bmxgc.errors import BmxgcError as BmxgcError


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
