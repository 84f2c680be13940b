"""Regenerate ``notebooks/*.ipynb`` from their percent-format ``.py`` sources, with outputs.

The ``.py`` is the reviewed source; this script reads it with jupytext, executes it in a fresh
Jupyter kernel with nbclient (cwd: a scratch folder, so nothing lands in the repository) and
writes the paired ``.ipynb`` beside it. ``tests/test_notebooks.py`` checks that every ``.ipynb``
matches its ``.py`` and was executed without error.

    python docs/execute_notebooks.py                      # every notebook, full size
    python docs/execute_notebooks.py 03 08                # those whose name starts so
    python docs/execute_notebooks.py --smoke              # JCAUSAL_SMOKE=1 (seconds)

Needs the ``docs`` extra (jupytext, nbclient, ipykernel).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, timeout: int) -> Path:
    """Execute the notebook ``path`` (a ``.py``) and write its ``.ipynb``; return that path."""
    import jupytext
    import nbclient

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    with tempfile.TemporaryDirectory() as tmp:
        client = nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}}
        )
        client.execute()
    out = path.with_suffix(".ipynb")
    jupytext.write(nb, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--smoke", action="store_true", help="run in smoke size")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = sorted((ROOT / "notebooks").glob("[0-9]*.py"))
    if args.prefixes:
        paths = [p for p in paths if any(p.name.startswith(s) for s in args.prefixes)]
        if not paths:
            parser.error(f"no notebook starts with {args.prefixes}")
    # The kernel inherits this environment: the repository first on the path.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    if args.smoke:
        os.environ["JCAUSAL_SMOKE"] = "1"
    for path in paths:
        t0 = time.perf_counter()
        out = execute(path, args.timeout)
        print(f"{out.relative_to(ROOT)}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
