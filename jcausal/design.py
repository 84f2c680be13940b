"""The ``jcausal design`` command: emission cuts vs employment on an input-output table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

HELP = """\
Design interventions on an economy: which sectors should shrink (or grow) to cut greenhouse-gas
emissions while keeping employment where it is?

The economy is one region of an input-output table, as a Leontief equilibrium x = A x + y
(cross-country flows neglected, as in Besserve & Schölkopf, UAI 2022). Every sector's activity
is scaled by a multiplicative Lie intervention, x_i := exp(u_i) (A x + y)_i, and u minimises

    GHG(x(u)) / GHG*  +  λ · || employment(x(u)) - employment* ||_1 / employment*

by gradient descent through the equilibrium (implicit gradients, optax Adam). The whole sweep
over λ is one vectorised, compiled program. λ = 0 only cuts emissions; large λ keeps every
sector's employment. The result is the Pareto front of total emissions vs total employment
(one point per λ) and, at the λ closest to a 5 % employment cut, the sectors that move most.

Without options it runs on the pymrio test table shipped with pymrio (6 regions × 8 sectors,
no download). That table has no employment account, so value added stands in for employment
(the outputs say so). With --exiobase PATH it parses an Exiobase 3 archive and defaults to the
'impacts' rows "GHG emissions (GWP100) | ..." and "Employment".

Outputs in --out (default results/design): trade_off.png (the front and the sector bars),
front.csv / front.json (one row per λ), sectors.csv (the sector table), metrics.json (the run's
configuration and summary).

Stressor rows are named, never numbered: --ghg "ROW=WEIGHT,ROW=WEIGHT" (e.g. GWP100 weights
"CO2 - combustion - air=1,CH4 - combustion - air=25,N2O - combustion - air=298"); repeat
--ghg for names containing commas. --list shows the regions and rows of the table.

examples:
  jcausal design                                    # pymrio test table, first region
  jcausal design --region reg3 --steps 2000
  jcausal design --ghg "emission_type1=1,emission_type2=25" --lambdas 0,0.5,2,8
  jcausal design --exiobase IOT_2011_pxp.zip --region FR
  jcausal design --list
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``jcausal design`` argument parser."""
    from .experiments.ghg_employment import DESIGN, add_options

    p = argparse.ArgumentParser(
        prog="jcausal design",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, defaults=DESIGN)
    p.add_argument("--out", default="results/design", help="output folder (default %(default)s)")
    p.add_argument("--smoke", action="store_true", help="small, fast configuration (tests, CI)")
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help=f"employment cut (fraction) to mark on the front (default {DESIGN.target})",
    )
    p.add_argument(
        "--top", type=int, default=None, help=f"sectors in the table (default {DESIGN.top})"
    )
    p.add_argument(
        "--allow-negative-demand",
        action="store_true",
        default=None,
        help="accept negative final demand (inventory draw-downs in real tables)",
    )
    p.add_argument("--list", action="store_true", help="list the table's regions and rows, exit")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def _list(exiobase: str | None) -> int:
    from rich.console import Console
    from rich.markup import escape

    from .economy import io as eio

    system = eio.load_test() if exiobase is None else eio.load_exiobase(exiobase)
    regs = eio.regions(system)
    model = eio.from_pymrio(system, regs[0], check=False, allow_negative_demand=True)
    console = Console()
    console.print(f"[bold]regions[/bold] ({len(regs)}): " + ", ".join(regs))
    console.print(f"[bold]sectors[/bold] ({model.n}): " + ", ".join(model.sectors))
    console.print(f"[bold]stressor rows[/bold] ({len(model.stressors)}):")
    for name, unit, ext in zip(
        model.stressors, model.stressor_units, model.extensions, strict=True
    ):
        console.print(
            f"  {escape(name)}  [dim]({escape(ext)}, {escape(unit)})[/dim]", highlight=False
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jcausal design``; returns the exit status (2 for bad input)."""
    import dataclasses

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from rich.console import Console

    from .experiments import ghg_employment as ge

    try:
        if args.list:
            return _list(args.exiobase)
        base = ge.SMOKE if args.smoke else ge.DESIGN
        opts = {
            "regions": args.regions,
            "ghg": args.ghg,
            "employment": args.employment,
            "lambdas": args.lambdas,
            "n_lambdas": args.n_lambdas,
            "steps": args.steps,
            "lr": args.lr,
            "dtype": args.dtype,
            "exiobase": args.exiobase,
            "target": args.target,
            "top": args.top,
            "allow_negative_demand": args.allow_negative_demand,
        }
        cfg = dataclasses.replace(base, **ge.normalise_options(opts))
        ge.run(config=cfg, out=args.out, progress=not args.quiet, console=Console(quiet=args.quiet))
    except ValueError as err:
        print(f"jcausal design: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
