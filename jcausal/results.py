"""Writing results: JSON conversion, metrics and CSV files, and safe output folders.

Output folders are never half-written or silently replaced.

:func:`staged_output` is how every command writes its folder (``jcausal design``, ``jcausal
experiment``): the files go into a hidden temporary folder next to the target, which is
renamed into place only when the run succeeds. So

* a folder that already holds files is refused unless ``overwrite=True`` (then the old folder
  is moved aside, the new one renamed in, the old one deleted); since that deletes the old
  files, ``overwrite`` applies only to folders written here (they hold a ``.jcausal-output``
  file), never to the working folder or its parents;
* a failing or interrupted run (an exception, Ctrl-C) leaves the target as it was and removes
  its temporary folder; a killed run (``kill -9``) leaves a hidden ``.NAME.partial-PID`` folder,
  which the next run into the same target removes;
* an unwritable target is found before any computation (the temporary folder is created on
  entry, next to the target).

*State* entries (``state=("checkpoints", "train_*.jsonl")``) are a run's resumable state, not
its results: they live directly in the target (a resumed run must find them after a crash),
do not make the target count as non-empty, and are never moved or deleted. A target with state
entries is updated by renaming each result file into place (each rename atomic) instead of
one rename of the whole folder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fnmatch
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(x: Any) -> Any:
    """Convert numpy / JAX scalars and arrays (nested in dicts and lists) to JSON types.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (JSON has none).
    """
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if hasattr(x, "__array__") and not isinstance(x, str | bytes):
        arr = np.asarray(x)
        return to_jsonable(arr.item()) if arr.ndim == 0 else to_jsonable(arr.tolist())
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def output_dir(name: str, out: str | Path | None = None) -> Path:
    """``results/<name>`` (or ``out``), created (inside :func:`staged_output`: its folder)."""
    path = Path(out) if out is not None else Path("results") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_metrics(path: Path, metrics: dict[str, Any], config: Any = None) -> Path:
    """Write ``metrics.json`` (with the config and a timestamp) into ``path``; return its path.

    Args:
        path: output folder (it must exist).
        metrics: JSON-convertible metrics (arrays and numpy scalars are converted).
        config: the run's configuration (a dataclass or a dict), stored next to the metrics.
    """
    record = {
        "metrics": to_jsonable(metrics),
        "config": to_jsonable(config),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    target = Path(path) / "metrics.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(target)  # atomic: a killed run never leaves half a file
    return target


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` (through :func:`to_jsonable`) as indented JSON."""
    Path(path).write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    return Path(path)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write dict rows as CSV (header from the first row; floats with 10 significant digits)."""
    path = Path(path)
    if not rows:
        path.write_text("")
        return path
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
    return path


# ----------------------------------------------------------------------------------------------
# staged output folders

_PARTIAL = ".partial-"
#: Written into every staged folder: ``overwrite`` replaces only folders that hold it.
MARKER = ".jcausal-output"


def _is_state(name: str, state: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in state)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(target: Path) -> None:
    # Temporary folders of killed runs into the same target (their process is gone).
    prefix = f".{target.name}{_PARTIAL}"
    for entry in target.parent.glob(f"{prefix}*"):
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def check_output(out: str | Path, *, overwrite: bool = False, state: Sequence[str] = ()) -> Path:
    """Check that ``out`` can receive a run's results, before the run; return it as a Path.

    Args:
        out: the output folder (created later; its parent may not exist yet).
        overwrite: accept a folder that already holds results.
        state: name patterns of resumable-state entries, which do not count as results.

    Raises:
        ValueError: ``out`` is a file, holds results and ``overwrite`` is false, or cannot be
            written (the message says what to do).
    """
    given = Path(out)
    target = given.absolute()  # "." and "x/.." get a real name and parent
    target = Path(os.path.normpath(target))
    if target == Path.cwd() or target in Path.cwd().parents or target.parent == target:
        raise ValueError(
            f"--out {str(given)!r} is the working folder or one of its parents; results replace "
            "the folder as a whole, so choose a sub-folder (e.g. results/run1)"
        )
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out {str(given)!r} is a file, not a folder; choose a folder")
    if target.is_dir():
        results = sorted(p.name for p in target.iterdir() if not _is_state(p.name, state))
        visible = [r for r in results if r != MARKER]
        shown = ", ".join(visible[:4]) + (", ..." if len(visible) > 4 else "")
        if results and not overwrite:
            raise ValueError(
                f"--out {str(given)!r} already holds results ({shown}); pass --overwrite to "
                "replace them, or choose another folder"
            )
        if results and not (target / MARKER).is_file():
            # --overwrite deletes the folder's files: only a folder this package wrote.
            raise ValueError(
                f"--out {str(given)!r} holds files that jcausal did not write ({shown}), and "
                "--overwrite replaces the folder as a whole; choose another folder, or empty "
                "this one first"
            )
    parent = target.parent
    probe = parent
    while not probe.exists():  # the nearest existing ancestor must let us create folders
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(
            f"--out {str(target)!r} cannot be written ({str(probe)!r} is not a writable folder); "
            "choose another folder"
        )
    if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
        raise ValueError(f"--out {str(target)!r} is not writable; choose another folder")
    return target


@contextlib.contextmanager
def staged_output(
    out: str | Path, *, overwrite: bool = False, state: Sequence[str] = ()
) -> Iterator[Path]:
    """A temporary folder for a run's results, moved to ``out`` when the block succeeds.

    See the module docstring for the rules. Use::

        with staged_output(out, overwrite=args.overwrite) as path:
            ...                      # compute, write files into path
        # here out holds exactly the new files; on an exception it is unchanged

    Args:
        out: the output folder.
        overwrite: replace a folder that already holds results (else :class:`ValueError`).
        state: name patterns (``fnmatch``) of resumable-state entries kept in ``out`` itself.

    Yields:
        The temporary folder to write into (a hidden sibling of ``out``).

    Raises:
        ValueError: from :func:`check_output`, on entry, before any work.
    """
    target = check_output(out, overwrite=overwrite, state=state)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)
        stage = Path(
            tempfile.mkdtemp(prefix=f".{target.name}{_PARTIAL}{os.getpid()}-", dir=target.parent)
        )
    except OSError as err:
        msg = f"--out {str(target)!r} cannot be written ({err}); choose another folder"
        raise ValueError(msg) from None
    try:
        (stage / MARKER).write_text(
            "written by jcausal; --overwrite may replace this folder as a whole\n"
        )
        yield stage
        _commit(stage, target, overwrite=overwrite, state=state)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _commit(stage: Path, target: Path, *, overwrite: bool, state: Sequence[str]) -> None:
    # Re-check: another process may have written into the target meanwhile.
    check_output(target, overwrite=overwrite, state=state)
    if not target.exists():
        stage.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    has_state = any(_is_state(p.name, state) for p in target.iterdir())
    if has_state:
        # Keep the state in place: move old results aside, then each new entry in.
        for p in target.iterdir():
            if not _is_state(p.name, state):
                p.rename(old / p.name)
        for p in stage.iterdir():
            p.replace(target / p.name)
        stage.rmdir()
    else:
        target.rename(old / target.name)  # the whole folder: two renames, no mix
        stage.rename(target)
    shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "check_output",
    "output_dir",
    "staged_output",
    "to_jsonable",
    "write_csv",
    "write_json",
    "write_metrics",
]
