"""``jcausal design --mrio`` / ``--synthetic-mrio RxS``: the design on the whole table, with trade.

Each region is designed on the whole multi-regional table (:mod:`jcausal.economy.mrio`) and,
for comparison, on its domestic block (the paper's model, :func:`jcausal.economy.mrio.
domestic_block`) with the same λ. The outputs are those of ``jcausal design`` plus the
leakage: ``front.csv`` / ``front.json`` gain the GHG change abroad (``leakage``), the global
change and the domestic-block front's changes; ``leakage.png`` shows, at the marked λ, the GHG
change of every region (the designed one and abroad) next to the domestic-block design's cut.
``--devices N`` splits the sweep over ``N`` devices (``--shard``, see
:func:`jcausal.design.sweep_grouped`). ``--bounded`` bounds the region's factors by 2 (the
paper's parameterisation) on both designs; the whole-table optimum is then the linear
programme of :func:`jcausal.economy.mrio.bounded_front`.

Several archives (``--exiobase`` folder, ``--years``): every region × year is a case of one
compiled sweep, each year's whole table stacked along the case axis (tables of one shape, as
Exiobase's years are); the results are keyed ``"<region> <year>"`` and the fronts overlaid,
as ``jcausal design`` does on the domestic blocks. Every year's whole table is held at once
(the grid needs them all; 768 MB each at Exiobase's size), the pymrio systems one at a time.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

SYNTHETIC_GHG = {"GHG": 1.0}
SYNTHETIC_EMPLOYMENT = {"Employment": 1.0}


def load_tables(cfg: Any) -> tuple[list[tuple[str | None, Any, Any]], bool]:
    """``([(year label, whole table, pymrio system or None), ...], pymrio test table?)``.

    One entry per archive (year), or one labelled ``None`` (the pymrio test table, a
    synthetic table). Every archive is checked (no pickles, no names outside it) before any
    is read. The systems are returned lazily: each is parsed when its entry is reached.

    Raises:
        ValueError: a bad ``--synthetic-mrio``, a missing or unsafe archive.
    """
    from .design import archives
    from .economy import io as eio
    from .economy.archive import check_archive
    from .economy.synthetic import parse_shape, synthetic_mrio

    if cfg.synthetic_mrio is not None:
        R, S = parse_shape(cfg.synthetic_mrio)
        return [(None, synthetic_mrio(R, S, dtype=cfg.dtype), None)], False
    sources = archives(cfg)
    for path in sources.values():
        if path is not None:
            check_archive(path)

    def entries():
        for label, path in sources.items():
            system = eio.load_test() if path is None else eio.load_exiobase(path)
            model = eio.from_pymrio(
                system, None, dtype=cfg.dtype, allow_negative_demand=cfg.allow_negative_demand
            )
            yield label, model, system

    return entries(), None in sources


def run(
    cfg: Any, out: str | Path, *, progress: bool = False, console: Any = None
) -> dict[str, Any]:
    """Design every region of ``cfg`` on the whole table and on its block; write the outputs.

    Args:
        cfg: a :class:`jcausal.design.Config` with ``mrio`` or ``synthetic_mrio`` set.
        out: output folder.
        progress: show a progress bar.
        console: a ``rich`` console.

    Returns:
        The metrics (also in ``metrics.json``).

    Raises:
        ValueError: bad configuration or data (an unknown region, a device count that does not
            divide the number of λ, ...).
        DesignDiverged: an optimisation ended above ``cfg.max_excess`` from the optimum.
    """
    from rich.console import Console

    from . import _design_report as report
    from .design import FACTORS_BOUNDED, FACTORS_EXP, PROXY_NOTE, default_rows, sweep_grouped
    from .economy import design as edesign
    from .economy import io as eio
    from .economy import mrio, sweeps
    from .results import output_dir, write_csv, write_json, write_metrics

    console = console or Console()
    tables, test_table = load_tables(cfg)
    if cfg.synthetic_mrio is not None:
        ghg, employment = cfg.ghg or SYNTHETIC_GHG, cfg.employment or SYNTHETIC_EMPLOYMENT
    else:
        ghg_default, emp_default = default_rows(cfg.exiobase)
        ghg, employment = cfg.ghg or ghg_default, cfg.employment or emp_default
    proxy = test_table and set(employment) == {eio.TEST_EMPLOYMENT}
    # key -> (region, year label or None): the bare region name, "<region> <year>" with years
    problems, blocks, cases, notes = {}, {}, {}, {}
    for label, model, system in tables:
        regs = cfg.regions or (mrio.region_names(model)[0],)
        notes[label] = model.note
        for reg in regs:
            key = reg if label is None else f"{reg} {label}"
            cases[key] = (reg, label)
            problems[key] = mrio.MRIOProblem(model, reg, ghg, employment, bounded=cfg.bounded)
            block = (
                eio.from_pymrio(system, reg, dtype=cfg.dtype,
                                allow_negative_demand=cfg.allow_negative_demand)
                if system is not None else mrio.domestic_block(model, reg)
            )  # fmt: skip
            blocks[key] = edesign.DesignProblem(block, ghg, employment, bounded=cfg.bounded)
        del system  # (one pymrio system in memory at a time; the tables are kept)
    if proxy:
        console.print(f"[yellow]note:[/yellow] {PROXY_NOTE}")
    labels = [lab for lab in notes if lab is not None]
    latest = labels[-1] if labels else None
    title = ", ".join(dict.fromkeys(r for r, _ in cases.values()))
    if len(labels) > 1:
        title += f" × {len(labels)} years"

    # Every region (× year) in one compiled sweep on the whole tables, then every domestic
    # block in one, on the same λ (jcausal design --devices N --shard ... places the grid).
    with report.progress_bar(console, title, 2 * len(cases) * cfg.steps, progress) as t:
        results = sweep_grouped(problems, cfg, mrio.sweep_cases, t)
        for res in results.values():
            res.design.check(cfg.max_excess)
        lams = {key: res.design.lambdas for key, res in results.items()}
        blocks = sweep_grouped(blocks, cfg, sweeps.sweep_cases, t, lambdas=lams)
    blocks = {key: res.check(cfg.max_excess) for key, res in blocks.items()}
    fronts = {key: report.summarise(problems[key], results[key].design, cfg) for key in cases}

    model = next(iter(problems.values())).model
    units = {"ghg": model.unit(ghg), "employment": model.unit(employment)}
    metrics: dict[str, Any] = {"regions": {}}
    front_rows, table_rows = [], []
    for key, f in fronts.items():
        res, blk = results[key], blocks[key]
        reg, label = cases[key]
        where = {"region": reg} if label is None else {"region": reg, "year": label}
        G = res.design.ghg_ref
        for i, p in enumerate(f["points"]):
            p.update(
                {
                    "leakage": float(res.leakage[i]),
                    "leakage_pct_of_region_ghg": float(100 * res.leakage[i] / G),
                    "leakage_share_of_cut": float(res.leakage_share[i]),
                    "global_ghg_change_pct": float(
                        100 * res.global_change[i] / res.ghg_ref_by_region.sum()
                    ),
                    "domestic_block_ghg_change_pct": float(100 * (blk.ghg[i] / blk.ghg_ref - 1)),
                    "domestic_block_employment_change_pct": float(
                        100 * (blk.employment[i] / blk.employment_ref - 1)
                    ),
                }
            )
        k = f["marked"]
        if label == latest:  # several years: the tables of the latest one are printed
            report.print_table(console, key, f["table"], f["lambdas"][k], units, f["points"][k])
        front_rows += [{**where, **p} for p in f["points"]]
        for rank, row in enumerate(f["table"], 1):
            table_rows.append({**where, "rank": rank, "lambda": f["lambdas"][k], **row})
        point = f["points"][k]
        console.print(
            f"{key} at λ = {f['lambdas'][k]:.3g}: domestic GHG {point['ghg_change_pct']:+.2f} %, "
            f"abroad {res.leakage[k]:+.4g} {units['ghg']} "
            f"({point['leakage_pct_of_region_ghg']:+.2f} % of {reg}'s GHG), world "
            f"{point['global_ghg_change_pct']:+.2f} %; domestic-block design: GHG "
            f"{point['domestic_block_ghg_change_pct']:+.2f} %"
        )
        metrics["regions"][key] = {
            **({} if label is None else where),
            "reference_ghg": G,
            "reference_employment": res.design.employment_ref,
            "marked_lambda": float(f["lambdas"][k]),
            "marked_ghg_change_pct": point["ghg_change_pct"],
            "marked_employment_change_pct": point["employment_change_pct"],
            "marked_leakage": point["leakage"],
            "marked_leakage_share_of_cut": point["leakage_share_of_cut"],
            "marked_global_ghg_change_pct": point["global_ghg_change_pct"],
            "marked_domestic_block_ghg_change_pct": point["domestic_block_ghg_change_pct"],
            "ghg_change_by_region_at_marked": dict(
                zip(
                    res.regions,
                    (res.ghg_by_region[k] - res.ghg_ref_by_region).tolist(),
                    strict=True,
                )
            ),
            "max_excess_loss": f["excess_loss"],
            "domestic_block_max_excess_loss": blk.max_excess_loss,
            "all_solves_converged": bool(np.all(res.converged)),
            "sweep_seconds": f["seconds"],
            "model_note": notes[label],
        }
    path = output_dir("design", out)
    write_csv(path / "front.csv", front_rows)
    write_csv(path / "sectors.csv", table_rows)
    write_json(
        path / "front.json",
        {
            "units": units,
            "ghg": ghg,
            "employment": employment,
            "employment_note": PROXY_NOTE if proxy else "",
            "loss": "GHG_r(x)/GHG_r* + lambda * ||e_r(x) - e_r*||_1 / E_r*, x of the whole table",
            "regions": {
                key: {
                    **(
                        {}
                        if cases[key][1] is None
                        else {"region": cases[key][0], "year": cases[key][1]}
                    ),
                    "marked_lambda": fronts[key]["lambdas"][fronts[key]["marked"]],
                    "points": fronts[key]["points"],
                }
                for key in fronts
            },
        },
    )
    emp_label = report.short_label(employment, ", ".join(employment))
    ghg_label = " + ".join(n if w == 1 else f"{w:g}·{n}" for n, w in ghg.items())
    if len(labels) > 1:  # one panel per region, one front per year
        report.plot_years(path / "trade_off.png", fronts, cases, emp_label, ghg_label, units)
    else:
        report.plot(path / "trade_off.png", fronts, emp_label, ghg_label)
    plot_leakage(path / "leakage.png", results, blocks, fronts, units["ghg"],
                 {key: reg for key, (reg, _) in cases.items()})  # fmt: skip
    metrics.update(
        {
            "units": units,
            "table": notes[None] if None in notes else notes,
            "sectors_in_table": model.n,
            "factors": FACTORS_BOUNDED if cfg.bounded else FACTORS_EXP,
            "devices": cfg.devices or 1,
            "leakage_meaning": "GHG change in every other region (positive: emissions moved "
            "abroad); Leontief supply chains only, no substitution between suppliers",
            "files": [
                "trade_off.png",
                "leakage.png",
                "front.csv",
                "front.json",
                "sectors.csv",
                "metrics.json",
            ],
        }
    )
    regions_done = list(dict.fromkeys(r for r, _ in cases.values()))
    write_metrics(path, metrics, {**dataclasses.asdict(cfg), "regions": regions_done,
                                  "ghg": ghg, "employment": employment})  # fmt: skip
    console.print("wrote trade_off.png, leakage.png, front.csv, front.json, sectors.csv, "
                  "metrics.json")  # fmt: skip
    return metrics


def plot_leakage(
    path: Path, results: dict, blocks: dict, fronts: dict, unit: str, regions: dict | None = None
) -> None:
    """Per-case bars at each case's marked λ: GHG change where it happens.

    ``regions`` maps a case's key (``"<region> <year>"``) to its region (default: the key).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regs = list(results)
    fig, axes = plt.subplots(1, len(regs), figsize=(1.2 + 0.55 * (len(results[regs[0]].regions)
                             + 1) * len(regs) + 2, 4.2), squeeze=False)  # fmt: skip
    for ax, key in zip(axes[0], regs, strict=True):
        res, blk, k = results[key], blocks[key], fronts[key]["marked"]
        reg = (regions or {}).get(key, key)
        change = res.ghg_by_region[k] - res.ghg_ref_by_region
        names = [*res.regions, f"{reg}\n(block)"]
        vals = np.append(change, blk.ghg[k] - blk.ghg_ref)
        colours = ["tab:blue" if r == reg else "tab:orange" for r in res.regions] + ["0.6"]
        ax.bar(range(len(vals)), vals, color=colours)
        for i, v in enumerate(vals):  # foreign changes are often too small to see as bars
            ax.annotate(f"{v:+.2g}", (i, v), xytext=(0, -8 if v < 0 else 2),
                        textcoords="offset points", ha="center", fontsize=6)  # fmt: skip
        ax.set_xticks(range(len(vals)), names, rotation=60, fontsize=7)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel(f"GHG change [{unit}]")
        share = res.leakage_share[k]
        ax.set_title(
            f"{key}, λ = {res.design.lambdas[k]:.3g}: abroad {res.leakage[k]:+.3g}"
            + (f" ({100 * share:+.1f} % of the cut)" if np.isfinite(share) else ""),
            fontsize=9,
        )
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("GHG change by region (blue: designed region, orange: abroad, grey: the "
                 "domestic-block design's cut)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["load_tables", "plot_leakage", "run"]
