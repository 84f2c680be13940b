"""Regenerate the documentation's gallery (``docs/gallery/``) from the smoke configurations.

Each entry runs a command of the ``jcausal`` CLI with ``--smoke`` in a scratch folder (the same
code path a user runs, in the configuration the test suite runs), then copies its PNG figures to
``docs/gallery/<name>/``, shrunk to at most ``--width`` pixels wide, and its ``metrics.json``
(the numbers behind the figures). The docs pages show these images, so rerunning this script
after a change to an experiment keeps them current.

    python docs/gallery.py                    # every entry (a few minutes on a laptop)
    python docs/gallery.py rebound deepscm    # some entries
    python docs/gallery.py --list

The smoke figures show what each experiment draws and that it runs; their numbers come from
tiny trainings. The reproduction numbers in the docs come from the full configurations
(``jcausal experiment NAME`` without ``--smoke``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "docs" / "gallery"

#: gallery entry -> jcausal CLI arguments (``--smoke --out DIR`` are appended).
ENTRIES: dict[str, list[str]] = {
    "design": ["design"],
    "equilibrium_accuracy": ["experiment", "equilibrium_accuracy"],
    "ghg_employment": ["experiment", "ghg_employment"],
    "rebound": ["experiment", "rebound"],
    "compartments": ["experiment", "compartments"],
    "deepscm": ["experiment", "deepscm"],
    "diffscm": ["experiment", "diffscm", "--parts", "cf", "morpho", "--no-progress"],
    "ctvae": ["experiment", "ctvae", "--no-progress"],
    "modularity": ["experiment", "modularity"],
    "policy": ["experiment", "policy"],
}

#: entries whose figures are many: only these are copied (the docs show them), to keep the
#: committed gallery small; every other entry keeps all its figures.
KEEP: dict[str, tuple[str, ...]] = {
    "modularity": ("influence_up1.png", "hybrids_up1.png", "vae_influence_up1.png",
                   "vae_hybrids_up1.png"),
}  # fmt: skip


def shrink(src: Path, dst: Path, width: int) -> tuple[int, int]:
    """Copy the PNG ``src`` to ``dst``, at most ``width`` pixels wide, in 256 colours (Pillow).

    Plots and grey digits lose nothing visible in a 256-colour palette, and the files are about
    a third of the size: the gallery is committed, so it is kept small.
    """
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im = im.quantize(colors=256)
        im.save(dst, optimize=True)
        return im.size


def build(name: str, width: int) -> list[Path]:
    """Run entry ``name`` in smoke size and copy its figures to ``docs/gallery/<name>/``."""
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / name
        cmd = [sys.executable, "-m", "jcausal.cli", *ENTRIES[name], "--smoke", "--out", str(out)]
        res = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{res.stderr[-3000:]}")
        pngs = sorted(out.glob("*.png"))
        if name in KEEP:
            missing = sorted(set(KEEP[name]) - {p.name for p in pngs})
            if missing:
                raise RuntimeError(f"{name} did not write {missing}")
            pngs = [p for p in pngs if p.name in KEEP[name]]
        if not pngs:
            raise RuntimeError(f"{name} wrote no figure in {out}")
        dest = GALLERY / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        written = []
        for png in pngs:
            shrink(png, dest / png.name, width)
            written.append(dest / png.name)
        metrics = out / "metrics.json"
        if metrics.exists():
            shutil.copy(metrics, dest / "metrics.json")
        (dest / "command.json").write_text(
            json.dumps({"command": ["jcausal", *ENTRIES[name], "--smoke"]}) + "\n"
        )
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"entries (default all): {', '.join(ENTRIES)}")
    parser.add_argument("--width", type=int, default=900, help="largest width in pixels")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(ENTRIES))
        return 0
    unknown = [n for n in args.names if n not in ENTRIES]
    if unknown:
        parser.error(f"unknown entries {unknown}; known: {', '.join(ENTRIES)}")
    for name in args.names or list(ENTRIES):
        t0 = time.perf_counter()
        files = build(name, args.width)
        size = sum(f.stat().st_size for f in files) / 1024
        print(f"{name}: {len(files)} figures, {size:.0f} KiB, {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
