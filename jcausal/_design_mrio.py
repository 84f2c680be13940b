"""``jcausal design --mrio`` / ``--synthetic-mrio RxS``: the design on the whole table, with trade.

Each region is designed on the whole multi-regional table (:mod:`jcausal.economy.mrio`) and,
for comparison, on its domestic block (the paper's model, :func:`jcausal.economy.mrio.
domestic_block`) with the same λ. The outputs are those of ``jcausal design`` plus the
leakage: ``front.csv`` / ``front.json`` gain the GHG change abroad (``leakage``), the global
change and the domestic-block front's changes; ``leakage.png`` shows, at the marked λ, the GHG
change of every region (the designed one and abroad) next to the domestic-block design's cut.
``--devices N`` splits the λ sweep over ``N`` devices (:func:`jcausal.parallel.sweep_mesh`).
``--bounded`` bounds the region's factors by 2 (the paper's parameterisation) on both designs;
the whole-table optimum is then the linear programme of :func:`jcausal.economy.mrio.
bounded_front`. Several archives (years) are refused: ``--mrio`` designs on one table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

SYNTHETIC_GHG = {"GHG": 1.0}
SYNTHETIC_EMPLOYMENT = {"Employment": 1.0}


def load_table(cfg: Any) -> tuple[Any, Any, bool]:
    """``(whole table, pymrio system or None, value-added proxy?)`` of a configuration.

    Raises:
        ValueError: several archives (``--mrio`` takes one), or a bad ``--synthetic-mrio``.
    """
    from .design import archives
    from .economy import io as eio
    from .economy.synthetic import parse_shape, synthetic_mrio

    if cfg.synthetic_mrio is not None:
        R, S = parse_shape(cfg.synthetic_mrio)
        return synthetic_mrio(R, S, dtype=cfg.dtype), None, False
    sources = archives(cfg)
    if len(sources) != 1:
        raise ValueError(
            f"--mrio designs on one table; {len(sources)} archives were given "
            f"({', '.join(map(str, sources))}): choose one with --years"
        )
    path = next(iter(sources.values()))
    system = eio.load_test() if path is None else eio.load_exiobase(path)
    model = eio.from_pymrio(
        system, None, dtype=cfg.dtype, allow_negative_demand=cfg.allow_negative_demand
    )
    return model, system, path is None


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
    model, system, test_table = load_table(cfg)
    if cfg.synthetic_mrio is not None:
        ghg, employment = cfg.ghg or SYNTHETIC_GHG, cfg.employment or SYNTHETIC_EMPLOYMENT
    else:
        ghg_default, emp_default = default_rows(cfg.exiobase)
        ghg, employment = cfg.ghg or ghg_default, cfg.employment or emp_default
    proxy = test_table and set(employment) == {eio.TEST_EMPLOYMENT}
    regs = cfg.regions or (mrio.region_names(model)[0],)
    problems = {r: mrio.MRIOProblem(model, r, ghg, employment, bounded=cfg.bounded) for r in regs}
    if proxy:
        console.print(f"[yellow]note:[/yellow] {PROXY_NOTE}")

    def block(reg: str) -> edesign.DesignProblem:
        table = (
            eio.from_pymrio(system, reg, dtype=cfg.dtype,
                            allow_negative_demand=cfg.allow_negative_demand)
            if system is not None else mrio.domestic_block(model, reg)
        )  # fmt: skip
        return edesign.DesignProblem(table, ghg, employment, bounded=cfg.bounded)

    blocks = {reg: block(reg) for reg in regs}
    # Every region in one compiled sweep on the whole table, then every domestic block in
    # one, on the same λ (jcausal design --devices N --shard lambdas|cases places the grid).
    with report.progress_bar(console, ", ".join(regs), 2 * len(regs) * cfg.steps, progress) as t:
        results = sweep_grouped(problems, cfg, mrio.sweep_cases, t)
        for res in results.values():
            res.design.check(cfg.max_excess)
        lams = {reg: res.design.lambdas for reg, res in results.items()}
        blocks = sweep_grouped(blocks, cfg, sweeps.sweep_cases, t, lambdas=lams)
    blocks = {reg: res.check(cfg.max_excess) for reg, res in blocks.items()}
    fronts = {reg: report.summarise(problems[reg], results[reg].design, cfg) for reg in regs}

    units = {"ghg": model.unit(ghg), "employment": model.unit(employment)}
    metrics: dict[str, Any] = {"regions": {}}
    front_rows, table_rows = [], []
    for reg, f in fronts.items():
        res, blk = results[reg], blocks[reg]
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
        report.print_table(console, reg, f["table"], f["lambdas"][k], units, f["points"][k])
        front_rows += [{"region": reg, **p} for p in f["points"]]
        for rank, row in enumerate(f["table"], 1):
            table_rows.append({"region": reg, "rank": rank, "lambda": f["lambdas"][k], **row})
        point = f["points"][k]
        console.print(
            f"{reg} at λ = {f['lambdas'][k]:.3g}: domestic GHG {point['ghg_change_pct']:+.2f} %, "
            f"abroad {res.leakage[k]:+.4g} {units['ghg']} "
            f"({point['leakage_pct_of_region_ghg']:+.2f} % of {reg}'s GHG), world "
            f"{point['global_ghg_change_pct']:+.2f} %; domestic-block design: GHG "
            f"{point['domestic_block_ghg_change_pct']:+.2f} %"
        )
        metrics["regions"][reg] = {
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
            "model_note": model.note,
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
                r: {
                    "marked_lambda": fronts[r]["lambdas"][fronts[r]["marked"]],
                    "points": fronts[r]["points"],
                }
                for r in fronts
            },
        },
    )
    emp_label = report.short_label(employment, ", ".join(employment))
    ghg_label = " + ".join(n if w == 1 else f"{w:g}·{n}" for n, w in ghg.items())
    report.plot(path / "trade_off.png", fronts, emp_label, ghg_label)
    plot_leakage(path / "leakage.png", results, blocks, fronts, units["ghg"])
    metrics.update(
        {
            "units": units,
            "table": model.note,
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
    write_metrics(path, metrics, {**dataclasses.asdict(cfg), "regions": list(regs),
                                  "ghg": ghg, "employment": employment})  # fmt: skip
    console.print("wrote trade_off.png, leakage.png, front.csv, front.json, sectors.csv, "
                  "metrics.json")  # fmt: skip
    return metrics


def plot_leakage(path: Path, results: dict, blocks: dict, fronts: dict, unit: str) -> None:
    """Per-region bars at each region's marked λ: GHG change where it happens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regs = list(results)
    fig, axes = plt.subplots(1, len(regs), figsize=(1.2 + 0.55 * (len(results[regs[0]].regions)
                             + 1) * len(regs) + 2, 4.2), squeeze=False)  # fmt: skip
    for ax, reg in zip(axes[0], regs, strict=True):
        res, blk, k = results[reg], blocks[reg], fronts[reg]["marked"]
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
            f"{reg}, λ = {res.design.lambdas[k]:.3g}: abroad {res.leakage[k]:+.3g}"
            + (f" ({100 * share:+.1f} % of the cut)" if np.isfinite(share) else ""),
            fontsize=9,
        )
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("GHG change by region (blue: designed region, orange: abroad, grey: the "
                 "domestic-block design's cut)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["load_table", "plot_leakage", "run"]
