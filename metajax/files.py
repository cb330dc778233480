"""Files written whole and atomically, and JSON without NaN.

A results or config file is written to a temporary name, flushed to disk and renamed over the
old one (``os.replace`` is atomic on POSIX): a reader, or a crash, sees the old file or the
new one, never a part. JSON has no NaN or Inf; a diverged figure is written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from metajax.errors import file_errors


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, Inf) replaced by ``None``, recursively,
    so that it encodes as standard JSON (``null``), which has no NaN.

    Example:
      >>> finite_or_none({"mse": [1.5, float("nan")], "n": 3})
      {'mse': [1.5, None], 'n': 3}
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Standard JSON of ``value``: NaN and Inf become ``null`` (`finite_or_none`)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename: readers and a crash
    see the old file or the new one, never a part.

    Raises:
      metajax.errors.StorageError: the disk is full, read-only, or the folder is missing.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with file_errors("write", path):
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
