"""The ``jcausal design`` command: emission cuts vs employment on an input-output table.

The optimisation is :mod:`jcausal.economy.design`; this module holds the command's
configuration (:class:`Config`), its checks, the report (tables, figure, files) and
:func:`main`. The paper's Fig. 3b-c (:mod:`jcausal.experiments.ghg_employment`) is this command
with two regions. (Longer than 500 lines because the command's help text, options, checks and
run belong together; the figure and tables are in :mod:`jcausal._design_report`.)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
A run whose loss ends more than --max-excess above the analytic optimum of the problem failed
(a too large --lr): it exits with status 1 and writes nothing.

--bounded uses the paper's factors alpha = 2 sigmoid(u) in (0, 2) instead of exp(u): a sector
can at most double its activity relative to its demand, so one that loses its customers cannot
be kept as it was; the optimum checked against is then a linear programme (scipy HiGHS).

Without options it runs on the pymrio test table shipped with pymrio (6 regions × 8 sectors,
no download). That table has no employment account, so value added stands in for employment
(the outputs say so). With --exiobase PATH it parses an Exiobase 3 archive and defaults to the
'impacts' rows "GHG emissions (GWP100) | ..." and "Employment". PATH may also be a folder of
archives (IOT_2012_pxp.zip ...) or be repeated: every year is designed and the fronts are
overlaid (--years 2012-2018 picks some). Archives holding pickled tables
or naming files outside themselves are refused (a pickle runs code when read).

Outputs in --out (default results/design): trade_off.png (the front and the sector bars),
front.csv / front.json (one row per λ), sectors.csv (the sector table), metrics.json (the run's
configuration and summary). They are written to a temporary folder and moved into --out when
the run succeeds; a folder already holding results is refused unless --overwrite is given.

Stressor rows are named, never numbered: --ghg "ROW=WEIGHT,ROW=WEIGHT" (e.g. GWP100 weights
"CO2 - combustion - air=1,CH4 - combustion - air=25,N2O - combustion - air=298"); repeat
--ghg for names containing commas. --list shows the regions and rows of the table.

examples:
  jcausal design                                    # pymrio test table, first region
  jcausal design --region reg3 --steps 2000
  jcausal design --ghg "emission_type1=1,emission_type2=25" --lambdas 0,0.5,2,8
  jcausal design --exiobase IOT_2011_pxp.zip --region FR
  jcausal design --exiobase exiobase/ --years 2016-2018 --region FR,DE --bounded
  jcausal design --list
"""

PROXY_NOTE = (
    "the pymrio test table has no employment account: employment is proxied by value added "
    "(factor_inputs row 'Value Added', Mill USD)"
)
FACTORS_EXP = "alpha = exp(u), unbounded"
#: What ``--devices`` can split (``--shard``); see :func:`sweep_grouped`.
SHARDS = ("auto", "lambdas", "rows", "cases")
FACTORS_BOUNDED = "alpha = 2 sigmoid(u), in (0, 2) (Besserve & Schölkopf 2022)"
#: exit status of a run whose optimisation did not reach the optimum (bad input is 2).
EXIT_DIVERGED = 1
#: exit status after Ctrl-C (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130

# Set by Ctrl-C (see `_interrupts`) and read between compiled chunks of the optimisation, so a
# KeyboardInterrupt that lands inside library code that swallows it still stops the run.
_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _interrupts():
    """Ctrl-C raises KeyboardInterrupt at once and also leaves a flag the chunk loop reads."""
    _INTERRUPTED.clear()

    def handler(signum, frame):
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _checked(tick):
    """Wrap a progress callback so that a pending Ctrl-C stops the run between chunks."""

    def check(k: int) -> None:
        if _INTERRUPTED.is_set():
            raise KeyboardInterrupt
        if tick is not None:
            tick(k)

    return check


@dataclasses.dataclass(frozen=True)
class Config:
    """A design configuration (also written to ``metrics.json``).

    Attributes:
        regions: regions to design for (``None``: the first region of the table).
        ghg: ``{row: weight}`` of the GHG indicator (``None``: the data source's default).
        employment: ``{row: weight}`` of the employment indicator (``None``: default).
        lambdas: explicit λ values (``None``: ``n_lambdas`` log-spaced values around the
            sectors' emission-per-employment ratios, plus 0 when ``include_zero``).
        n_lambdas: size of the automatic log grid.
        include_zero: prepend λ = 0 (pure emission minimisation).
        steps: Adam steps per λ.
        lr: initial Adam step (cosine-decayed to ``lr / 1000``), a log-factor.
        dtype: ``"float64"`` or ``"float32"``.
        exiobase: an Exiobase 3 archive, a folder of archives (one per year) or several
            paths (``None``: the pymrio test system); see
            :func:`jcausal.economy.archive.find_archives`. Several years are overlaid.
        allow_negative_demand: accept negative final demand in the table.
        target: employment reduction (fraction in (0, 1)) whose closest λ is tabulated.
        top: number of sectors in the table.
        max_excess: largest accepted excess loss over the analytic optimum (else the run
            fails, see :meth:`jcausal.economy.design.DesignResult.check`).
        years: which of the archives to use, by year (``None``: all).
        bounded: the paper's factors ``α = 2·sigmoid(u)`` in ``(0, 2)`` instead of
            ``α = exp(u)`` (see :class:`jcausal.economy.design.DesignProblem`).
        drops: tabulate the largest employment *drops* (the paper's table) instead of the
            largest changes of either sign.
        mrio: design each region on the whole multi-regional table, trade included, and
            count GHG where it happens (leakage); see :mod:`jcausal._design_mrio`.
        synthetic_mrio: ``"RxS"``: the same on a synthetic Exiobase-shaped table of ``R``
            regions × ``S`` sectors (:func:`jcausal.economy.synthetic_mrio`; implies ``mrio``).
        devices: split the sweep over this many devices (``None``: one).
        shard: what ``devices`` split: ``"auto"`` (default: the λ, or ``A``'s rows when the
            table is large on CPU devices; :func:`jcausal.economy.sharding.auto_layout`),
            ``"lambdas"`` (the λ of every case; tables replicated), ``"rows"`` (``A``'s rows;
            every device runs every λ) or ``"cases"`` (the regions × years × weightings; each
            device holds its cases).
        weightings: ``((label, {row: weight}), ...)``: several GHG indicators (e.g. GWP100
            and GWP20 weights), each a case of the sweep next to the regions and years
            (instead of ``ghg``).
    """

    regions: tuple[str, ...] | None = None
    ghg: dict[str, float] | None = None
    employment: dict[str, float] | None = None
    lambdas: tuple[float, ...] | None = None
    n_lambdas: int = 24
    include_zero: bool = True
    steps: int = 1000
    lr: float = 0.05
    dtype: str = "float64"
    exiobase: str | tuple[str, ...] | None = None
    allow_negative_demand: bool = False
    target: float = 0.05
    top: int = 8
    max_excess: float = 0.01
    years: tuple[str, ...] | None = None
    bounded: bool = False
    drops: bool = False
    mrio: bool = False
    synthetic_mrio: str | None = None
    devices: int | None = None
    shard: str = "auto"
    weightings: tuple[tuple[str, dict[str, float]], ...] | None = None


#: The default of ``jcausal design``: one region, meaningful and fast.
DESIGN = Config()
#: ``--smoke``: a few λ, a few hundred steps (used by the tests).
SMOKE = Config(n_lambdas=5, steps=300, lr=0.1)


# ----------------------------------------------------------------------------------------------
# options


def parse_rows(text: str | Sequence[str] | Mapping[str, float] | None) -> dict[str, float] | None:
    """Parse ``"row=w,row2=w2"`` (or a list of such strings) into ``{row: weight}``.

    A row without ``=w`` gets weight 1. Row names may contain commas when every row carries a
    weight (``"GHG emissions (GWP100) | ... (CML, 2001) | ...=1"``); a list of strings (one per
    repeated command-line option) avoids the question altogether.

    Raises:
        ValueError: unreadable text, no row, or a weight that is not a finite number.
    """
    if text is None:
        return None
    if isinstance(text, Mapping):
        out = {str(k): float(v) for k, v in text.items()}
    else:
        items = [text] if isinstance(text, str) else list(text)
        out = {}
        number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
        for item in items:
            item = item.strip()
            if not item:
                continue
            if "=" in item:
                pairs = re.findall(rf"\s*(.+?)\s*=\s*({number})\s*(?:,|$)", item)
                rebuilt = ",".join(f"{n}={w}" for n, w in pairs)
                if not pairs or rebuilt.replace(" ", "") != item.replace(" ", ""):
                    raise ValueError(
                        f"cannot read rows and weights from {item!r}; write "
                        "NAME=WEIGHT[,NAME=WEIGHT]"
                    )
                for name, w in pairs:
                    out[name] = out.get(name, 0.0) + float(w)
            else:
                for name in item.split(","):
                    if name.strip():
                        out[name.strip()] = out.get(name.strip(), 0.0) + 1.0
    if not out:
        raise ValueError(f"no stressor rows named in {text!r}")
    bad = {k: v for k, v in out.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"weights must be finite numbers, got {bad}; write e.g. CH4=25")
    return out


def default_rows(exiobase: str | None) -> tuple[dict[str, float], dict[str, float]]:
    """``(ghg, employment)`` defaults for the data source."""
    from .economy import io as eio

    if exiobase is None:
        return {eio.TEST_GHG: 1.0}, {eio.TEST_EMPLOYMENT: 1.0}
    return {eio.EXIOBASE_GHG: 1.0}, {eio.EXIOBASE_EMPLOYMENT: 1.0}


def normalise_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Config fields from loosely typed options (command line strings); ``None`` dropped.

    ``regions`` may be ``"reg1,reg2"``; ``ghg`` / ``employment`` ``"row=w,..."`` or a list of
    such strings; ``lambdas`` ``"0,0.1,1"``.

    Raises:
        ValueError: an unreadable value (the message says what to write).
    """
    given = {k: v for k, v in opts.items() if v is not None}
    if isinstance(given.get("regions"), str):
        parts = [r.strip() for r in given["regions"].split(",")]
        regs = tuple(r for r in parts if r)
        if regs and len(regs) != len(parts):
            raise ValueError(
                f"--region {given['regions']!r} has an empty name; write names separated by "
                "single commas, e.g. reg1,reg2"
            )
        if not regs:
            raise ValueError(
                f"--region {given['regions']!r} names no region; give a name (see --list) or "
                "leave the option out for the table's first region"
            )
        given["regions"] = regs
    elif "regions" in given:
        given["regions"] = tuple(str(r) for r in given["regions"])
    for key in ("ghg", "employment"):
        if key in given:
            given[key] = parse_rows(given[key])
    if "lambdas" in given:
        lams = given["lambdas"]
        if isinstance(lams, str):
            try:
                lams = [float(v) for v in lams.split(",") if v.strip()]
            except ValueError:
                raise ValueError(
                    f"cannot read λ values from {given['lambdas']!r}; write e.g. 0,0.1,1,10"
                ) from None
        given["lambdas"] = tuple(float(v) for v in lams)
    if isinstance(given.get("exiobase"), list | tuple):
        given["exiobase"] = tuple(str(p) for p in given["exiobase"])
    if "years" in given:
        given["years"] = parse_years(given["years"])
    if "weightings" in given:
        given["weightings"] = parse_weightings(given["weightings"])
    return given


def parse_weightings(items: str | Sequence[Any]) -> tuple[tuple[str, dict[str, float]], ...]:
    """``["GWP100:CO2=1,CH4=28", "GWP20:CO2=1,CH4=84"]`` as ``(("GWP100", {...}), ...)``.

    A label, a colon, then rows as for ``--ghg`` (:func:`parse_rows`); the first colon ends
    the label (row names may hold colons). Pairs already parsed are kept.

    Raises:
        ValueError: no label, a repeated label, or unreadable rows.
    """
    out: dict[str, dict[str, float]] = {}
    for item in [items] if isinstance(items, str) else list(items):
        if isinstance(item, tuple | list) and len(item) == 2:
            label, rows = str(item[0]), parse_rows(item[1])
        else:
            label, sep, text = str(item).partition(":")
            label = label.strip()
            if not sep or not label or not text.strip():
                raise ValueError(
                    f"--weighting {item!r} needs a label, a colon and rows, e.g. "
                    "'GWP20:CO2=1,CH4=84,N2O=264'"
                )
            rows = parse_rows(text)
        if label in out:
            raise ValueError(f"--weighting label {label!r} is given twice; labels name cases")
        out[label] = rows
    return tuple(out.items())


def parse_years(text: str | Sequence[Any]) -> tuple[str, ...]:
    """``"2012-2018"``, ``"2016,2018"`` (or a list) as year labels ``("2012", ...)``.

    Raises:
        ValueError: unreadable text or an empty range.
    """
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    out: list[str] = []
    for item in (i.strip() for i in items):
        m = re.fullmatch(r"(\d{4})\s*-\s*(\d{4})", item)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ValueError(f"--years {item!r} is an empty range; write e.g. 2012-2018")
            out += [str(y) for y in range(a, b + 1)]
        elif re.fullmatch(r"\d{4}", item):
            out.append(item)
        elif item:
            raise ValueError(f"cannot read years from {text!r}; write e.g. 2012-2018 or 2016,2018")
    if not out:
        raise ValueError(f"--years {text!r} names no year; write e.g. 2012-2018")
    return tuple(dict.fromkeys(out))


def check_config(cfg: Config) -> None:
    """Refuse a configuration that cannot run, before any work.

    Raises:
        ValueError: naming the option at fault and the values it accepts.
    """
    if isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise ValueError(f"--steps must be a positive whole number, got {cfg.steps}")
    if cfg.lambdas is None and cfg.n_lambdas < 1:
        raise ValueError(f"--n-lambdas must be at least 1, got {cfg.n_lambdas}")
    if cfg.lambdas is not None:
        bad = [v for v in cfg.lambdas if not (math.isfinite(v) and v >= 0)]
        if not cfg.lambdas or bad:
            raise ValueError(
                f"--lambdas must be finite values >= 0, got {list(cfg.lambdas)}; write e.g. "
                "0,0.1,1,10"
            )
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"--lr must be a positive finite number (e.g. 0.05), got {cfg.lr}")
    if cfg.dtype not in ("float32", "float64"):
        raise ValueError(f"--dtype must be 'float32' or 'float64', got {cfg.dtype!r}")
    if not 0 < cfg.target < 1:
        raise ValueError(
            f"--target is an employment cut as a fraction in (0, 1) (0.05 = 5 %), got {cfg.target}"
        )
    if cfg.top < 1:
        raise ValueError(f"--top must be at least 1 (sectors in the table), got {cfg.top}")
    if not (cfg.max_excess > 0):
        raise ValueError(f"--max-excess must be positive (default 0.01), got {cfg.max_excess}")
    if cfg.regions is not None and (not cfg.regions or not all(cfg.regions)):
        raise ValueError(f"--region names no region: {cfg.regions}; see --list")
    if cfg.years is not None and cfg.exiobase is None:
        raise ValueError(
            "--years selects Exiobase archives by year; give them with --exiobase (an archive "
            "or a folder of archives)"
        )
    if cfg.devices is not None and (
        isinstance(cfg.devices, bool) or not isinstance(cfg.devices, int) or cfg.devices < 1
    ):
        raise ValueError(f"--devices must be a positive whole number, got {cfg.devices!r}")
    if cfg.weightings is not None:
        if cfg.ghg is not None:
            raise ValueError(
                "--weighting gives the GHG indicators (one case each); it cannot go with --ghg"
            )
        if cfg.mrio or cfg.synthetic_mrio is not None:
            raise ValueError(
                "--weighting is not available with --mrio / --synthetic-mrio (sweep the "
                "weightings from Python: jcausal.economy.mrio.sweep_cases)"
            )
    if cfg.shard not in SHARDS:
        raise ValueError(f"--shard must be one of {', '.join(SHARDS)}, got {cfg.shard!r}")
    if cfg.synthetic_mrio is not None and cfg.exiobase is not None:
        raise ValueError("--synthetic-mrio builds its own table; it cannot go with --exiobase")
    for flag in ("bounded", "drops", "mrio"):
        if not isinstance(getattr(cfg, flag), bool):
            raise ValueError(f"{flag} must be True or False, got {getattr(cfg, flag)!r}")


def add_options(parser: argparse.ArgumentParser, *, defaults: Config) -> None:
    """The design options (shared by ``jcausal design`` and the ghg_employment experiment)."""
    parser.add_argument(
        "--region",
        dest="regions",
        default=None,
        help="region(s), comma-separated (default: the table's first region)",
    )
    parser.add_argument(
        "--ghg",
        action="append",
        default=None,
        metavar="ROW=W[,ROW=W]",
        help="GHG indicator: stressor rows and weights (repeatable)",
    )
    parser.add_argument(
        "--employment",
        action="append",
        default=None,
        metavar="ROW[=W]",
        help="employment indicator rows (repeatable)",
    )
    parser.add_argument(
        "--lambdas",
        default=None,
        metavar="L1,L2,...",
        help=f"explicit λ values (default: 0 and {defaults.n_lambdas} log-spaced)",
    )
    parser.add_argument("--n-lambdas", type=int, default=None, help="size of the automatic λ grid")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"Adam steps (default {defaults.steps})"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"initial Adam step, a log-factor (default {defaults.lr})",
    )
    parser.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default=None,
        help=f"precision (default {defaults.dtype})",
    )
    parser.add_argument(
        "--exiobase",
        action="append",
        default=None,
        metavar="PATH",
        help="Exiobase 3 archive to parse with pymrio, or a folder of archives (one per year: "
        "the years are overlaid); repeatable (default: pymrio test table)",
    )
    parser.add_argument(
        "--years",
        default=None,
        metavar="Y1-Y2|Y1,Y2",
        help="use only the archives of these years (e.g. 2012-2018)",
    )
    parser.add_argument(
        "--bounded",
        action="store_true",
        default=None,
        help="the paper's factors alpha = 2 sigmoid(u) in (0, 2) (default: exp(u), unbounded)",
    )
    parser.add_argument(
        "--drops",
        action="store_true",
        default=None,
        help="tabulate the largest employment drops (the paper's table), not the largest changes",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help=f"employment cut (fraction) to mark on the front (default {defaults.target})",
    )
    parser.add_argument(
        "--top", type=int, default=None, help=f"sectors in the table (default {defaults.top})"
    )
    parser.add_argument(
        "--max-excess",
        type=float,
        default=None,
        help="fail when the loss ends further than this above the analytic optimum "
        f"(dimensionless; default {defaults.max_excess}, a good run is of order 1e-3)",
    )
    parser.add_argument(
        "--allow-negative-demand",
        action="store_true",
        default=None,
        help="accept negative final demand (inventory draw-downs in real tables)",
    )


OPTION_FIELDS = (
    "regions",
    "ghg",
    "employment",
    "lambdas",
    "n_lambdas",
    "steps",
    "lr",
    "dtype",
    "exiobase",
    "target",
    "top",
    "max_excess",
    "allow_negative_demand",
    "years",
    "bounded",
    "drops",
    "mrio",
    "synthetic_mrio",
    "devices",
    "shard",
    "weightings",
)


def config_from_args(base: Config, args: Mapping[str, Any]) -> Config:
    """``base`` with the given options (``None`` = not given) applied and checked.

    Raises:
        ValueError: an unreadable or out-of-range option.
    """
    opts = {k: args.get(k) for k in OPTION_FIELDS}
    cfg = dataclasses.replace(base, **normalise_options(opts))
    check_config(cfg)
    return cfg


def build_parser() -> argparse.ArgumentParser:
    """The ``jcausal design`` argument parser."""
    p = argparse.ArgumentParser(
        prog="jcausal design",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, defaults=DESIGN)
    p.add_argument("--out", default="results/design", help="output folder (default %(default)s)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results already in --out (without it, a folder holding results is "
        "refused)",
    )
    p.add_argument(
        "--mrio",
        action="store_true",
        default=None,
        help="design on the whole multi-regional table (trade included); report the GHG "
        "that moves abroad (leakage) next to the domestic-block design",
    )
    p.add_argument(
        "--synthetic-mrio",
        default=None,
        metavar="RxS",
        help="--mrio on a synthetic Exiobase-shaped table of R regions x S sectors (seeded; "
        "49x200 is Exiobase's size)",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="split the sweep over N devices (must divide the number of λ, or of cases "
        "with --shard cases, or of sectors with --shard rows)",
    )
    p.add_argument(
        "--weighting",
        dest="weightings",
        action="append",
        default=None,
        metavar="LABEL:ROW=W[,ROW=W]",
        help="a GHG weighting as a case of the sweep (repeat for several: every region and "
        "year is designed under each; replaces --ghg)",
    )
    p.add_argument(
        "--shard",
        choices=list(SHARDS),
        default=None,
        help="what --devices splits: auto (default: the λ, or the rows of a large table on CPU "
        "devices), the λ of every case (tables replicated), the rows of A, or the cases, "
        "i.e. regions × years (each device holds its cases' tables)",
    )
    p.add_argument("--smoke", action="store_true", help="small, fast configuration (tests, CI)")
    p.add_argument("--list", action="store_true", help="list the table's regions and rows, exit")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


# ----------------------------------------------------------------------------------------------
# the run


def archives(cfg: Config) -> dict[str | None, Any]:
    """The data sources of ``cfg``: ``{year label: archive path}``, or ``{None: None}``.

    ``None`` is the pymrio test table. The archives are found (not opened) by
    :func:`jcausal.economy.archive.find_archives` and filtered by ``cfg.years``.

    Raises:
        ValueError: no archive where a path points, or a year of ``cfg.years`` without one.
    """
    from .economy.archive import find_archives

    if cfg.exiobase is None:
        return {None: None}
    found = find_archives(cfg.exiobase)
    if cfg.years is None:
        return dict(found)
    missing = [y for y in cfg.years if y not in found]
    if missing:
        raise ValueError(
            f"no Exiobase archive for {', '.join(missing)} in {cfg.exiobase!r} (found: "
            f"{', '.join(found) or 'none'}); download them (pymrio.download_exiobase3) or "
            "choose other --years"
        )
    return {y: found[y] for y in cfg.years}


def _list(cfg: Config) -> int:
    from rich.console import Console
    from rich.markup import escape

    from .economy import io as eio

    sources = archives(cfg)
    first = next(iter(sources.values()))
    system = eio.load_test() if first is None else eio.load_exiobase(first)
    regs = eio.regions(system)
    model = eio.from_pymrio(system, regs[0], check=False, allow_negative_demand=True)
    console = Console()
    if first is not None:
        console.print(f"[bold]archives[/bold] ({len(sources)}): " + ", ".join(map(str, sources)))
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


def _times(tick: Any, cases: int) -> Any:
    # A step of a grid advances every case: the bar counts steps × cases.
    return None if tick is None else (lambda k: tick(k * cases))


def sweep_grouped(
    problems: Mapping[str, Any],
    cfg: Config,
    sweep_cases: Any,
    tick: Any = None,
    lambdas: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Sweep every case (region, year) of ``problems`` in one compiled program per sector count.

    The cases × λ grid is placed on ``cfg.devices`` devices: by
    :func:`jcausal.economy.sharding.auto_mesh` for each group (``cfg.shard == "auto"``), or
    the λ of every case split over them (``"lambdas"``), ``A``'s rows (``"rows"``) or the
    cases (``"cases"``); see :func:`jcausal.economy.sweeps.sweep_cases`.

    Args:
        problems: ``{key: problem}``.
        cfg: the configuration (λ grid, steps, lr, devices, shard).
        sweep_cases: :func:`jcausal.economy.sweeps.sweep_cases` or
            :func:`jcausal.economy.mrio.sweep_cases`.
        tick: progress callback, advanced by steps × cases.
        lambdas: ``{key: (L,) λ}`` (default: ``cfg``'s grid for each problem).

    Returns:
        ``{key: result}`` in the order of ``problems``.

    Raises:
        ValueError: a device count that does not divide the λ (or the cases).
    """
    import numpy as np

    from . import parallel
    from .economy import design as edesign

    if cfg.devices is None or cfg.shard == "auto":
        mesh = cfg.devices  # (a count: each group's placement is chosen for its table size)
    else:
        split = {cfg.shard: cfg.devices}
        mesh = parallel.sweep_mesh(cfg.devices, rows=split.get("rows", 1),
                                   cases=split.get("cases", 1))  # fmt: skip
    groups: dict[tuple, list[str]] = {}
    for key, prob in problems.items():
        groups.setdefault(tuple(prob.x_ref.shape), []).append(key)
    out = {}
    for keys in groups.values():
        lams = np.stack(
            [
                np.asarray(lambdas[k], float)
                if lambdas is not None
                else np.asarray(cfg.lambdas, float)
                if cfg.lambdas is not None
                else edesign.auto_lambdas(problems[k], cfg.n_lambdas, cfg.include_zero)
                for k in keys
            ]
        )
        step = _checked(_times(tick, len(keys)))
        res = sweep_cases([problems[k] for k in keys], lams, steps=cfg.steps, lr=cfg.lr,
                          mesh=mesh, progress=step)  # fmt: skip
        out.update(zip(keys, res, strict=True))
    return {key: out[key] for key in problems}


def run(
    config: Config,
    out: str | Path,
    *,
    progress: bool = False,
    console: Any = None,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Design for every region (and year) of ``config``; write figure, front, table, metrics.

    Writes directly into ``out`` (the command stages it, see :func:`main`). A float64
    configuration needs ``jax_enable_x64`` (the command line sets it). With several archives
    (one per year), every region is designed on every year and the fronts are overlaid; the
    results are keyed ``"<region> <year>"``.

    Args:
        config: the configuration (checked here too).
        out: output folder (created).
        progress: show a progress bar.
        console: a ``rich.console.Console`` for tables and notes (default: a new one).
        record: extra entries for the config record in ``metrics.json``.

    Returns:
        The metrics (also in ``metrics.json``).

    Raises:
        ValueError: bad configuration or data.
        DesignDiverged: an optimisation ended above ``config.max_excess`` from the optimum.
    """
    import numpy as np
    from rich.console import Console

    from . import _design_report as report
    from .economy import design as edesign
    from .economy import io as eio
    from .economy import sweeps
    from .economy.archive import check_archive
    from .results import output_dir, write_csv, write_json, write_metrics

    cfg = config
    check_config(cfg)
    console = console or Console()
    if cfg.mrio or cfg.synthetic_mrio is not None:
        from . import _design_mrio

        return _design_mrio.run(cfg, out, progress=progress, console=console)
    sources = archives(cfg)
    for source in sources.values():  # every archive before any is read (no code from data)
        if source is not None:
            check_archive(source)
    ghg_default, emp_default = default_rows(cfg.exiobase)
    ghg = cfg.ghg or ghg_default
    employment = cfg.employment or emp_default
    proxy = cfg.exiobase is None and set(employment) == {eio.TEST_EMPLOYMENT}
    indicators = dict(cfg.weightings) if cfg.weightings else {None: ghg}
    ghg = next(iter(indicators.values()))

    # key -> (region, year label or None); the test table's keys are the bare region names,
    # followed by the year and the weighting's label when there are such.
    problems, cases, weighting = {}, {}, {}
    for label, path in sources.items():
        io_system = eio.load_test() if path is None else eio.load_exiobase(path)
        regs = cfg.regions or (eio.regions(io_system)[0],)
        for reg in regs:
            model = eio.from_pymrio(
                io_system, reg, dtype=cfg.dtype, allow_negative_demand=cfg.allow_negative_demand
            )
            for wlabel, rows in indicators.items():
                key = " ".join(str(p) for p in (reg, label, wlabel) if p is not None)
                problems[key] = edesign.DesignProblem(model, rows, employment, bounded=cfg.bounded)
                cases[key], weighting[key] = (reg, label), wlabel
        del io_system  # one archive in memory at a time
    if proxy:
        console.print(f"[yellow]note:[/yellow] {PROXY_NOTE}")
    labels = [lab for lab in sources if lab is not None]
    latest = labels[-1] if labels else None

    title = ", ".join(dict.fromkeys(r for r, _ in cases.values()))
    if len(labels) > 1:
        title += f" × {len(labels)} years"
    if cfg.weightings:
        title += f" × {len(indicators)} weightings"
    with report.progress_bar(console, title, len(problems) * cfg.steps, progress) as tick:
        results = sweep_grouped(problems, cfg, sweeps.sweep_cases, tick)
    results = {key: res.check(cfg.max_excess) for key, res in results.items()}

    fronts = {key: report.summarise(problems[key], res, cfg) for key, res in results.items()}
    model0 = next(iter(problems.values())).model
    units = {"ghg": model0.unit(ghg), "employment": model0.unit(employment)}
    other = {w: model0.unit(rows) for w, rows in indicators.items()}
    if len(set(other.values())) > 1:
        raise ValueError(
            f"the --weighting indicators are in different units ({other}); weight rows of "
            "one unit so that the fronts compare"
        )
    metrics: dict[str, Any] = {"regions": {}}
    table_rows, front_rows = [], []
    for key, f in fronts.items():
        prob, k = problems[key], f["marked"]
        reg, label = cases[key]
        where = {"region": reg} if label is None else {"region": reg, "year": label}
        if weighting[key] is not None:
            where["weighting"] = weighting[key]
        point = f["points"][k]
        if label == latest:  # several years: the tables of the latest one are printed
            report.print_table(console, key, f["table"], f["lambdas"][k], units, point)
        front_rows += [{**where, **p} for p in f["points"]]
        for rank, row in enumerate(f["table"], 1):
            table_rows.append({**where, "rank": rank, "lambda": f["lambdas"][k], **row})
        metrics["regions"][key] = {
            **({} if label is None else {**where, "archive": str(sources[label])}),
            **({} if weighting[key] is None else {**where, "ghg": indicators[weighting[key]]}),
            "reference_ghg": f["G_ref"],
            "reference_employment": f["E_ref"],
            "reproduction_error": prob.model.reproduction_error,
            "max_ghg_cut_pct": float(-min(p["ghg_change_pct"] for p in f["points"])),
            "marked_lambda": float(f["lambdas"][k]),
            "marked_ghg_change_pct": point["ghg_change_pct"],
            "marked_employment_change_pct": point["employment_change_pct"],
            "max_excess_loss": f["excess_loss"],
            "front_monotone": f["monotone"],
            "all_solves_converged": bool(np.all(f["converged"])),
            "sweep_seconds": f["seconds"],
            "sectors_moving_most": [r["sector"] for r in f["table"][:3]],
            "model_note": prob.model.note,
        }

    path = output_dir("design", out)
    write_csv(path / "front.csv", front_rows)
    write_csv(path / "sectors.csv", table_rows)
    note = PROXY_NOTE if proxy else ""
    front_doc = {
        "units": units,
        "ghg": ghg if not cfg.weightings else indicators,
        "employment": employment,
        "employment_note": note,
        "loss": "GHG(x)/GHG* + lambda * ||e(x) - e*||_1 / E*",
        "regions": {
            key: {
                **(
                    {}
                    if cases[key][1] is None
                    else {"region": cases[key][0], "year": cases[key][1]}
                ),
                "reference": {"ghg": f["G_ref"], "employment": f["E_ref"]},
                "marked_lambda": f["lambdas"][f["marked"]],
                "points": f["points"],
            }
            for key, f in fronts.items()
        },
    }
    if cfg.bounded:  # (the unbounded default's file is unchanged)
        front_doc["factors"] = FACTORS_BOUNDED
    write_json(path / "front.json", front_doc)
    emp_label = ", ".join(employment) + (" — value-added labour proxy" if proxy else "")
    emp_label = report.short_label(employment, emp_label)
    ghg_label = " + ".join(n if w == 1 else f"{w:g}·{n}" for n, w in ghg.items())
    if len(ghg_label) > 60:  # e.g. three Exiobase rows: their common suffix once
        ghg_label = report.weighted_label(ghg)
    if cfg.weightings:
        ghg_label = "GHG, weighted as the legend says"
    if len(labels) > 1:  # (one panel per region and weighting)
        panels = {k: (" · ".join(str(p) for p in (r, weighting[k]) if p is not None), y)
                  for k, (r, y) in cases.items()}  # fmt: skip
        report.plot_years(path / "trade_off.png", fronts, panels, emp_label, ghg_label, units)
    else:
        report.plot(path / "trade_off.png", fronts, emp_label, ghg_label)
    metrics.update(
        {
            "units": units,
            "employment_note": note,
            "normalisation": "loss = GHG/GHG* + lambda * L1(employment - reference)/E*",
            "factors": FACTORS_BOUNDED if cfg.bounded else FACTORS_EXP,
            "excess_loss_meaning": "max over lambda of loss(u) minus the infimum of eq. 5 "
            "(closed form; a linear programme when bounded; dimensionless, 0 is optimal)",
            "files": ["trade_off.png", "front.csv", "front.json", "sectors.csv", "metrics.json"],
        }
    )
    regions_done = list(dict.fromkeys(r for r, _ in cases.values()))
    cfg_record = {
        **dataclasses.asdict(cfg),
        "regions": regions_done,
        "ghg": ghg,
        "employment": employment,
        **({"archives": {k: str(v) for k, v in sources.items()}} if labels else {}),
        **(record or {}),
    }
    write_metrics(path, metrics, cfg_record)
    files = "trade_off.png, front.csv, front.json, sectors.csv, metrics.json"
    console.print(f"wrote {files}")
    return metrics


def _cpu_devices(n: int) -> None:
    # Before JAX starts its backends: let a CPU-only machine show n devices (the flag only
    # concerns the host platform; accelerators are unaffected). A count set by the user wins.
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jcausal design``; return the exit status.

    Returns:
        0 on success, 2 for bad input (found before any work; one line on stderr saying what
        to do), 1 when the optimisation did not reach the optimum, 130 after Ctrl-C. Only a
        successful run writes ``--out``.
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from .economy.design import DesignDiverged

    try:
        cfg = config_from_args(SMOKE if args.smoke else DESIGN, vars(args))
        if cfg.exiobase is not None:
            from .economy.archive import check_archive

            for source in archives(cfg).values():
                check_archive(source)
        if args.list:
            return _list(cfg)
        if cfg.devices is not None:
            _cpu_devices(cfg.devices)
        import jax
        from rich.console import Console

        from .results import staged_output

        if cfg.dtype == "float64":
            jax.config.update("jax_enable_x64", True)  # an entry point: this process's choice
        console = Console(quiet=args.quiet)
        with _interrupts(), staged_output(args.out, overwrite=args.overwrite) as stage:
            run(cfg, stage, progress=not args.quiet, console=console)
        if not args.quiet:
            console.print(f"results in {args.out}/")
    except KeyboardInterrupt:
        print(f"jcausal design: interrupted; {args.out} left as it was", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DesignDiverged as err:
        print(f"jcausal design: failed: {err}; nothing written", file=sys.stderr)
        return EXIT_DIVERGED
    except ValueError as err:
        print(f"jcausal design: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk while writing: --out was left as it was
        print(
            f"jcausal design: cannot write results: {err}; {args.out} left as it was",
            file=sys.stderr,
        )
        return 1
    return 0


__all__ = [
    "DESIGN",
    "SMOKE",
    "Config",
    "add_options",
    "archives",
    "build_parser",
    "check_config",
    "config_from_args",
    "default_rows",
    "main",
    "normalise_options",
    "parse_rows",
    "parse_years",
    "run",
]
