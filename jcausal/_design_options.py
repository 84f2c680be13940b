"""The ``jcausal design`` command's configuration: help text, :class:`Config`, options, checks.

Split from :mod:`jcausal.design` (which runs the command and re-exports these names) so that
each module has one job: this one turns a command line or a mapping into a checked
:class:`Config` without importing JAX.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
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
