"""Shared plumbing of the experiments: the command line and its staged output folder.

Results writing (``to_jsonable``, ``output_dir``, ``write_metrics``, ``staged_output``) lives in
:mod:`jcausal.results`; it is re-exported here for the experiment modules.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..results import output_dir, staged_output, to_jsonable, write_metrics

OVERWRITE_HELP = (
    "replace the results already in --out (without it, a folder holding results is refused); "
    "results are written to a temporary folder and moved into place when the run succeeds"
)


def experiment_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The common command line of an experiment.

    Options ``--smoke``, ``--out``, ``--overwrite`` and ``--seed``.
    """
    p = argparse.ArgumentParser(prog=f"jcausal experiment {name}", description=description)
    p.add_argument("--smoke", action="store_true", help="small, fast configuration (used in CI)")
    p.add_argument("--out", default=None, help=f"output folder (default results/{name})")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def run_cli(
    name: str,
    description: str,
    run: Callable[..., dict[str, Any]],
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    state: Sequence[str] = (),
) -> dict[str, Any]:
    """Parse the common options (plus ``extra``), call ``run(**options)``, return its metrics.

    ``run`` writes into a staged folder (:func:`jcausal.results.staged_output`) that replaces
    ``--out`` only when it returns. With ``state`` (name patterns of resumable state, e.g.
    checkpoints), ``run`` also receives ``state_dir``: the final folder, where that state lives.
    """
    parser = experiment_parser(name, description)
    if extra is not None:
        extra(parser)
    args = vars(parser.parse_args(argv))
    final = Path(args.pop("out") or Path("results") / name)
    overwrite = args.pop("overwrite")
    created = not final.exists()
    try:
        with staged_output(final, overwrite=overwrite, state=state) as path:
            if state:
                final.mkdir(parents=True, exist_ok=True)
                args["state_dir"] = final
            return run(out=path, **args)
    except BaseException:
        # A run refused or failed before writing any state leaves no empty --out behind.
        if created and final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        raise


__all__ = [
    "experiment_parser",
    "output_dir",
    "run_cli",
    "staged_output",
    "to_jsonable",
    "write_metrics",
]
