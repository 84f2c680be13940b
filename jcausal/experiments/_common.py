"""Shared plumbing of the experiments: configs, output folders, metrics files, CLI parsing."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(x: Any) -> Any:
    """Convert numpy / JAX scalars and arrays (nested in dicts and lists) to JSON types."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if hasattr(x, "__array__") and not isinstance(x, str | bytes):
        arr = np.asarray(x)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def output_dir(name: str, out: str | Path | None = None) -> Path:
    """``results/<name>`` (or ``out``), created."""
    path = Path(out) if out is not None else Path("results") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_metrics(path: Path, metrics: dict[str, Any], config: Any = None) -> Path:
    """Write ``metrics.json`` (with the config and a timestamp) into ``path``; return its path."""
    record = {
        "metrics": to_jsonable(metrics),
        "config": to_jsonable(config),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    target = path / "metrics.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(target)  # atomic: a killed run never leaves half a file
    return target


def experiment_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The common command line of an experiment: ``--smoke``, ``--out``, ``--seed``."""
    p = argparse.ArgumentParser(prog=f"jcausal experiment {name}", description=description)
    p.add_argument("--smoke", action="store_true", help="small, fast configuration (used in CI)")
    p.add_argument("--out", default=None, help=f"output folder (default results/{name})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def run_cli(
    name: str,
    description: str,
    run: Callable[..., dict[str, Any]],
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> dict[str, Any]:
    """Parse the common options (plus ``extra``), call ``run(**options)``, return its metrics."""
    parser = experiment_parser(name, description)
    if extra is not None:
        extra(parser)
    args = vars(parser.parse_args(argv))
    return run(**args)
