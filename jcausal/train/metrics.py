"""The metrics file of a run: one JSON record per line, trimmed to the restored checkpoint."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Any

import numpy as np


def _atomic_write_text(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-metrics-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def trim(path: str, upto: int) -> None:
    """Keep the records of steps ``<= upto``: later ones belong to a run that was cut short.

    A last line without its newline was being written when the run was killed: it is dropped
    (with a warning). Any other line that is not a JSON record means the file is not a
    metrics file of ``fit``.

    Raises:
        ValueError: naming the file and the line that is not a JSON record.
    """
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    kept = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        torn = i == len(lines) - 1  # no newline after it: cut off mid-write
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if torn:
                warnings.warn(
                    f"dropped the half-written last line of {path} (the run was cut short)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            raise ValueError(
                f"line {i + 1} of {path} is not a JSON record of fit's metrics; use another "
                "metrics_path or remove the file"
            ) from None
        step = rec.get("step", 0)
        if isinstance(step, (int, float)) and step <= upto:
            kept.append(line + "\n")
    _atomic_write_text(path, "".join(kept))


def to_values(tree: dict[str, Any]) -> dict[str, Any]:
    """A flat dict of arrays as JSON-ready values: scalars as floats, others as nested lists."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        a = np.asarray(v)
        if a.dtype == bool:
            out[k] = bool(a) if a.ndim == 0 else a.tolist()
        else:
            out[k] = float(a) if a.ndim == 0 else a.astype(np.float64).tolist()
    return out


__all__ = ["to_values", "trim"]
