"""bmxgc: plan, review, apply and undo garbage collection of S3 objects."""

from __future__ import annotations

__version__ = "0.1.0"
