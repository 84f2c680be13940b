"""The ``jcausal`` command."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from ._version import __version__

DEMO_HELP = """\
Sample a few units from a built-in SCM, then ask a counterfactual question about each of them:
"what would this unit have looked like under the intervention, given everything we observed?"
(abduction -> action -> prediction, one compiled call for the whole batch).

Interventions (repeatable):  --do NODE=VALUE     replace the node by a constant
                             --shift NODE=DELTA  add DELTA to the node's mechanism
                             --scale NODE=ALPHA  multiply the node's mechanism by ALPHA
Categorical nodes accept a category name or index (health: exercise=none|some|lots).

examples:
  jcausal demo                                   # health model, do(exercise := lots)
  jcausal demo --shift age=-10 --samples 2000    # Monte Carlo through the Gumbel-max node
  jcausal demo --model morpho --do t=4 --n 6     # Morpho-MNIST attributes (Deep SCM eq. 7)
"""


def _parse_assignments(items: Sequence[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"{flag} expects NODE=VALUE, got {item!r}")
        node, value = item.split("=", 1)
        out.append((node.strip(), value.strip()))
    return out


def _value(node: str, text: str, labels: dict[str, Sequence[str]]) -> float | int:
    if node in labels and text in labels[node]:
        return labels[node].index(text)
    try:
        value = int(text) if node in labels else float(text)
    except ValueError:
        hint = f" (one of {list(labels[node])})" if node in labels else ""
        raise ValueError(f"cannot read a value for {node!r} from {text!r}{hint}") from None
    if not math.isfinite(value):
        raise ValueError(f"the value for {node!r} must be finite, got {text!r}")
    return value


def _demo(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from . import examples
    from .scm import Hard, Scale, Shift, counterfactual, sample

    console = Console()
    scm = examples.MODELS[args.model]()
    labels = {"exercise": examples.EXERCISE_LEVELS} if args.model == "health" else {}
    units = {"age": "y", "bp": "mmHg", "risk": "%", "t": "px", "i": "0-255"}

    ivs = {}
    for node, text in _parse_assignments(args.do, "--do"):
        ivs[node] = Hard(_value(node, text, labels))
    for node, text in _parse_assignments(args.shift, "--shift"):
        ivs[node] = Shift(_value(node, text, {}))
    for node, text in _parse_assignments(args.scale, "--scale"):
        ivs[node] = Scale(_value(node, text, {}))
    if not ivs:
        ivs = {"exercise": Hard(2)} if args.model == "health" else {"t": Hard(4.0)}

    try:
        obs = sample(jax.random.key(args.seed), scm, args.n)
        cf = counterfactual(scm, obs, ivs, jax.random.key(args.seed + 1), num_samples=args.samples)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2

    def describe(iv):
        name = type(iv).__name__
        v = np.asarray(next(iter(vars(iv).values())))
        return f"{name}({v.tolist()})"

    query = ", ".join(f"{k} := {describe(v)}" for k, v in ivs.items())
    mc = args.samples is not None
    title = f"Counterfactuals on the '{args.model}' model under do({query})"
    if mc:
        title += f" — {args.samples} posterior samples per unit"
    table = Table(title=title, title_justify="left")
    table.add_column("unit", justify="right")
    for node in scm.order:
        unit = escape(f" [{units[node]}]") if node in units else ""
        table.add_column(f"{node}{unit}\nobserved → counterfactual", justify="right")

    def fmt(node, v):
        if node in labels:
            return labels[node][int(v)]
        return f"{float(v):.1f}" if abs(float(v)) >= 10 else f"{float(v):.2f}"

    records = []
    for u in range(args.n):
        row, rec = [str(u)], {}
        for node in scm.order:
            o = np.asarray(obs[node][u])
            c = np.asarray(cf[node][:, u] if mc else cf[node][u])
            if node in labels:
                if mc:
                    freq = np.bincount(c, minlength=len(labels[node])) / c.size
                    k = int(np.argmax(freq))
                    txt = f"{fmt(node, o)} → {labels[node][k]} ({freq[k]:.0%})"
                    rec[node] = {"observed": int(o), "counterfactual_probs": freq.tolist()}
                else:
                    txt = f"{fmt(node, o)} → {fmt(node, c)}"
                    rec[node] = {"observed": int(o), "counterfactual": int(c)}
            elif mc:
                tiny = 1e-9 * (1.0 + abs(float(c.mean())))
                spread = f" ± {float(c.std()):.2f}" if c.std() > tiny else ""
                txt = f"{fmt(node, o)} → {fmt(node, c.mean())}{spread}"
                rec[node] = {
                    "observed": float(o),
                    "counterfactual_mean": float(c.mean()),
                    "counterfactual_std": float(c.std()),
                }
            else:
                same = np.array_equal(o, c)
                txt = fmt(node, o) if same else f"{fmt(node, o)} → {fmt(node, c)}"
                rec[node] = {"observed": float(o), "counterfactual": float(c)}
            row.append(txt)
        table.add_row(*row)
        records.append(rec)

    if args.json:
        print(json.dumps({"model": args.model, "query": query, "units": records}, indent=2))
        return 0
    console.print(table)
    console.print(
        "Nodes that do not descend from the intervention keep their observed values; the "
        "others keep each unit's own exogenous noise (abduction)."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``jcausal`` command line (``experiment`` and ``design`` parse their own)."""
    parser = argparse.ArgumentParser(
        prog="jcausal",
        description="jcausal: causal machine learning in JAX (structural causal models, "
        "interventions, counterfactuals).",
        epilog=CACHE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jcausal {__version__}")
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs on disk between runs (see below)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="counterfactual queries on a built-in SCM, printed as a table",
        description=DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--model", choices=["health", "morpho", "chain"], default="health")
    demo.add_argument("--n", type=int, default=8, help="number of units to sample (default 8)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--do", action="append", metavar="NODE=VALUE", help="hard intervention")
    demo.add_argument("--shift", action="append", metavar="NODE=DELTA", help="shift intervention")
    demo.add_argument("--scale", action="append", metavar="NODE=ALPHA", help="scale intervention")
    demo.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="S",
        help="Monte Carlo draws from the noise posterior (for Gumbel-max nodes downstream)",
    )
    demo.add_argument("--json", action="store_true", help="print JSON instead of a table")
    demo.set_defaults(func=_demo)

    # These two hand their arguments to their own parsers (see main); listed here for --help.
    sub.add_parser(
        "design",
        help="design multiplicative interventions on an input-output economy "
        "(emissions vs employment); `jcausal design --help` for options",
        add_help=False,
    )
    sub.add_parser(
        "experiment",
        help="run a paper reproduction: `jcausal experiment NAME [--smoke]`; "
        "`jcausal experiment --list` lists them",
        add_help=False,
    )
    return parser


def _experiment(argv: Sequence[str]) -> int:
    from . import experiments

    if not argv or argv[0] in ("-h", "--help", "--list"):
        names = experiments.available()
        print("usage: jcausal experiment NAME [--smoke] [--out DIR] [--overwrite] [options]")
        print("experiments: " + (", ".join(names) if names else "(none installed)"))
        print("`jcausal experiment NAME --help` shows an experiment's options.")
        return 0
    try:
        module = experiments.load(argv[0])
    except ValueError as err:
        print(f"jcausal experiment: {err}", file=sys.stderr)
        return 2
    try:
        module.main(list(argv[1:]))
    except KeyboardInterrupt:
        # The staged output folder is removed on the way out: --out is left as it was.
        print(f"jcausal experiment {argv[0]}: interrupted; --out left as it was", file=sys.stderr)
        return 130
    except ValueError as err:  # bad options or data, refused before (or instead of) writing
        print(f"jcausal experiment {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk: the staged output was removed, --out is intact
        print(f"jcausal experiment {argv[0]}: cannot write results: {err}", file=sys.stderr)
        return 1
    return 0


CACHE_ENV = "JCAUSAL_COMPILE_CACHE"
CACHE_HELP = f"""\
compiled programs are kept on disk between runs (JAX's persistent compilation cache), so a
second run of the same command skips most compilation. Folder: ${CACHE_ENV} if set to a
path, else $XDG_CACHE_HOME/jcausal/xla (~/.cache/jcausal/xla). Turn it off with
--no-compile-cache (before the command) or {CACHE_ENV}=0."""


def compile_cache_dir(env: dict[str, str] | None = None) -> str | None:
    """The folder of the persistent compilation cache, or ``None`` when it is turned off.

    Args:
        env: the environment to read (default ``os.environ``).

    Returns:
        ``$JCAUSAL_COMPILE_CACHE`` when it names a folder, ``None`` when it is ``0``, ``off``,
        ``false`` or ``no``, else ``$XDG_CACHE_HOME/jcausal/xla`` (default ``~/.cache``).
    """
    env = os.environ if env is None else env
    value = env.get(CACHE_ENV, "").strip()
    if value.lower() in ("0", "off", "false", "no"):
        return None
    if value:
        return os.path.abspath(os.path.expanduser(value))
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jcausal", "xla")


def _enable_compile_cache(folder: str | None) -> None:
    if folder is None:
        return
    try:
        os.makedirs(folder, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
    except OSError as err:  # a read-only home, a full disk: run without the cache
        print(f"jcausal: compilation cache off ({folder}: {err.strerror})", file=sys.stderr)
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", folder)
    # Every program, not only those that compile in over 1 s (JAX's default): on an idle
    # machine a design run's programs each compile in less, and none was cached.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jcausal`` command.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cache = compile_cache_dir()
    if argv and argv[0] == "--no-compile-cache":
        argv, cache = argv[1:], None
    if argv and argv[0] in ("experiment", "design", "demo"):
        _enable_compile_cache(cache)
    if argv and argv[0] == "experiment":
        return _experiment(argv[1:])
    if argv and argv[0] == "design":
        from .design import main as design_main

        return design_main(argv[1:]) or 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "n", 1) < 1:
        parser.error("--n must be at least 1")
    try:
        return args.func(args)
    except ValueError as err:  # a value the demo cannot use: one line, exit 2
        print(f"jcausal {args.command}: error: {err}", file=sys.stderr)
        return 2


def run() -> None:
    """The console entry point: :func:`main`, then exit with its code.

    After Ctrl-C (code 130) the process leaves with ``os._exit`` once the output streams are
    flushed (the run's staged output is already removed by then): an interrupt that lands
    while XLA is still compiling in its own threads would otherwise crash the interpreter's
    shutdown (a segmentation fault instead of exit status 130).
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    run()
