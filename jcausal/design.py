"""The ``jcausal design`` command: emission cuts vs employment on an input-output table.

The optimisation is :mod:`jcausal.economy.design`; this module runs the command (:func:`run`,
:func:`main`: data, sweep, checks of the result, files). Its configuration (:class:`Config`,
the options and their checks) is in :mod:`jcausal._design_options` and re-exported here; the
figure and tables are in :mod:`jcausal._design_report`, the multi-regional variant in
:mod:`jcausal._design_mrio`. The paper's Fig. 3b-c (:mod:`jcausal.experiments.ghg_employment`)
is this command with two regions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._design_options import (
    DESIGN,
    FACTORS_BOUNDED,
    FACTORS_EXP,
    PROXY_NOTE,
    SMOKE,
    Config,
    add_options,
    build_parser,
    check_config,
    config_from_args,
    default_rows,
    normalise_options,
    parse_rows,
    parse_years,
)

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
