"""The report of ``jcausal design``: the summary of a front, its table and its figure."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .economy.design import DesignProblem, DesignResult, sector_table


@contextlib.contextmanager
def progress_bar(
    console: Any, label: str, total: int, show: bool
) -> Iterator[Callable[[int], None] | None]:
    """A ``rich`` progress bar over ``total`` steps; yields its advance function (or None)."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]designing[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = bar.add_task(label, total=total)
    bar.start()
    try:
        yield lambda k: bar.advance(task, k)
    finally:
        bar.stop()


def summarise(prob: DesignProblem, res: DesignResult, cfg: Any) -> dict[str, Any]:
    """The front of one region as plain numbers: points, marked λ, sector table, checks."""
    G, E = res.ghg_ref, res.employment_ref
    emp_change = res.employment / E - 1
    marked = int(np.argmin(np.abs(-emp_change - cfg.target)))
    points = []
    for i, lam in enumerate(res.lambdas):
        points.append(
            {
                "lambda": float(lam),
                "ghg": float(res.ghg[i]),
                "employment": float(res.employment[i]),
                "ghg_change_pct": float(100 * (res.ghg[i] / G - 1)),
                "employment_change_pct": float(100 * emp_change[i]),
                "employment_l1_deviation_pct": float(100 * res.deviation[i] / E),
                "analytic_ghg_change_pct": float(100 * (res.analytic_ghg[i] / G - 1)),
                "final_loss": float(res.final_loss[i]),
                "converged": bool(res.converged[i]),
                "marked": i == marked,
            }
        )
    # Monotone front: along increasing λ the employment deviation never grows (up to 1e-3 E*).
    dev = res.deviation / E
    monotone = bool(np.all(np.diff(dev) <= 1e-3))
    lam_pos = res.lambdas[res.lambdas > 0]
    return {
        "lambdas": res.lambdas,
        "ghg": res.ghg,
        "employment": res.employment,
        "G_ref": G,
        "E_ref": E,
        "analytic_ghg": res.analytic_ghg,
        "analytic_employment": res.analytic_employment,
        "excess_loss": res.max_excess_loss,
        "monotone": monotone,
        "converged": res.converged,
        "seconds": res.seconds,
        "marked": marked,
        "target": cfg.target,
        "lam_range": (float(lam_pos.min()), float(lam_pos.max())) if lam_pos.size else (1, 10),
        "points": points,
        "drops": bool(getattr(cfg, "drops", False)),
        "table": sector_table(prob, res, marked, cfg.top, drops=getattr(cfg, "drops", False)),
    }


def print_table(
    console: Any,
    region: str,
    rows: list[dict[str, Any]],
    lam: float,
    units: dict[str, str],
    point: dict[str, Any],
) -> None:
    """Print the sector table of one region (a ``rich`` table)."""
    ghg_unit, emp_unit = units["ghg"], units["employment"]
    from rich.table import Table

    table = Table(
        title=(
            f"{region}: sectors with the largest employment change at λ = {lam:.3g} "
            f"(emissions {point['ghg_change_pct']:+.1f} %, employment "
            f"{point['employment_change_pct']:+.1f} %)"
        ),
        title_justify="left",
    )
    table.add_column("sector")
    table.add_column("α", justify="right")
    table.add_column("output", justify="right")
    table.add_column(f"employment [{emp_unit}]", justify="right")
    table.add_column("employment", justify="right")
    table.add_column(f"GHG [{ghg_unit}]", justify="right")
    for row in rows:
        table.add_row(
            row["sector"],
            f"{row['factor']:.3g}",
            f"{row['output_change_pct']:+.1f} %",
            f"{row['employment_change']:+.4g}",
            f"{row['employment_change_pct']:+.1f} %",
            f"{row['ghg_change']:+.4g}",
        )
    console.print(table)


def plot(path: Path, fronts: dict[str, dict[str, Any]], emp_label: str, ghg_label: str) -> None:
    """The figure: fronts of every region (left) and each region's sector bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regs = list(fronts)
    # Long sector names (Exiobase's run to 40 characters here) take room from the bars: widen
    # the figure by it (nothing changes for names up to 14 characters, as in pymrio's table).
    longest = max(
        (len(_cut(r["sector"], 40)) for f in fronts.values() for r in f["table"]), default=0
    )
    extra = max(0.0, 0.05 * (longest - 14))
    grow = 1.0 + extra / 4.4
    fig, axes = plt.subplots(
        1,
        1 + len(regs),
        figsize=(6.0 * grow + (4.4 + extra) * len(regs), 4.8),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.35 * grow] + [grow] * len(regs)},
    )
    ax = axes[0, 0]
    markers = "osD^v<>p"
    lo = min(f["lam_range"][0] for f in fronts.values())
    hi = max(f["lam_range"][1] for f in fronts.values())
    norm = matplotlib.colors.LogNorm(lo, hi)
    sc = None
    for j, reg in enumerate(regs):
        f = fronts[reg]
        emp = 100 * f["employment"] / f["E_ref"]
        ghg = 100 * f["ghg"] / f["G_ref"]
        order = np.argsort(emp)
        ax.plot(emp[order], ghg[order], "-", color="0.55", lw=1, zorder=2)
        # λ = 0 has no place on a log colour scale: clip it to the smallest positive λ.
        sc = ax.scatter(
            emp,
            ghg,
            c=np.clip(f["lambdas"], lo, hi),
            norm=norm,
            cmap="viridis",
            marker=markers[j % len(markers)],
            s=46,
            edgecolors="k",
            linewidths=0.4,
            zorder=3,
            label=f"{reg} (optimised, one point per λ)",
        )
        ax.scatter(
            100 * f["analytic_employment"] / f["E_ref"],
            100 * f["analytic_ghg"] / f["G_ref"],
            marker="x",
            color="r",
            s=14,
            lw=0.9,
            zorder=4,
            label="analytic optimum of eq. 5" if j == 0 else None,
        )
        k = f["marked"]
        ax.scatter(
            [emp[k]],
            [ghg[k]],
            s=240,
            facecolors="none",
            edgecolors="red",
            lw=1.6,
            zorder=5,
            label=(
                f"{reg}: λ = {f['lambdas'][k]:.3g}: employment {emp[k] - 100:+.1f} %, "
                f"GHG {ghg[k] - 100:+.1f} %\n(closest to a {100 * f['target']:.0f} % "
                "employment cut)"
            ),
        )
    ax.scatter([100], [100], marker="*", s=160, color="k", zorder=6, label="unintervened")
    ax.set_xlabel(f"total employment (% of reference)\n{emp_label}")
    ax.set_ylabel(f"total emissions (% of reference)\nGHG = {ghg_label}")
    ax.set_title("Emission cuts vs employment")
    ax.set_xlim(-4, 108)
    ax.set_ylim(-4, 108)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    cb = fig.colorbar(sc, ax=ax, pad=0.01)
    cb.set_label("λ (weight of employment preservation)")
    for j, reg in enumerate(regs):
        ax = axes[0, 1 + j]
        f = fronts[reg]
        rows = f["table"]
        names = [_cut(r["sector"], 40) for r in rows][::-1]  # Exiobase names run to 70 chars
        vals = np.array([r["employment_change_pct"] for r in rows][::-1])
        ax.barh(names, vals, color=np.where(vals < 0, "tab:red", "tab:green"))
        span = max(10.0, float(np.abs(vals).max()) * 1.35)
        for i, v in enumerate(vals):
            inside = abs(v) > 0.5 * span  # long bars carry their label inside
            ax.annotate(
                f"{v:+.3g} %",
                (v, i),
                xytext=(-3 if (v >= 0) == inside else 3, 0),
                textcoords="offset points",
                ha="right" if (v >= 0) == inside else "left",
                va="center",
                fontsize=7,
                color="w" if inside else "k",
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlim(-span, span)
        ax.set_xlabel("employment change of the sector (%)")
        k = f["marked"]
        ax.set_title(f"{reg}: sectors moving most at λ = {f['lambdas'][k]:.3g}")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def short_label(rows: dict[str, float], label: str) -> str:
    """An axis label for an indicator: ``label``, or ``"<common prefix>… (k rows)"`` for many."""
    if len(rows) <= 2:
        return label
    names = list(rows)
    n = 0  # the longest common prefix of the names (not of paths: no os.path here)
    while n < min(map(len, names)) and len({name[n] for name in names}) == 1:
        n += 1
    prefix = names[0][:n].strip(" :-|")
    return f"{prefix or 'sum'}: sum of {len(rows)} rows"


def weighted_label(rows: dict[str, float]) -> str:
    """``"CO2 + 25·CH4 + 298·N2O (combustion - air)"``: a weighted sum, common suffix once."""
    names = list(rows)
    n = 0
    if len(names) > 1:
        while n < min(map(len, names)) and len({name[-1 - n] for name in names}) == 1:
            n += 1
    suffix = names[0][len(names[0]) - n :] if n else ""
    cut = suffix.find(" - ") if suffix else -1  # whole words only: from a separator on
    suffix = suffix[cut:] if cut >= 0 else ""
    terms = []
    for name, w in rows.items():
        short = name[: len(name) - len(suffix)] if suffix else name
        terms.append(short if w == 1 else f"{w:g}·{short}")
    text = " + ".join(terms)
    return f"{text} ({suffix.strip(' -')})" if suffix else text


def _cut(text: str, width: int = 44) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_years(
    path: Path,
    fronts: dict[str, dict[str, Any]],
    cases: dict[str, tuple[str, str | None]],
    emp_label: str,
    ghg_label: str,
    units: dict[str, str],
) -> None:
    """The paper's Fig. 3b-c: per region, one front per year and the latest year's table.

    Top row: total emissions against total employment (% of each year's reference), one curve
    per year; for the latest year a dashed line at the target employment cut and a cross at
    the λ closest to it. Bottom row: that point's sectors (largest employment drops).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = list(dict.fromkeys(r for r, _ in cases.values()))
    years = sorted({y for _, y in cases.values() if y is not None})
    latest = years[-1]
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(years)))
    fig, axes = plt.subplots(
        2,
        len(regions),
        figsize=(6.4 * len(regions), 9.6),
        squeeze=False,
        gridspec_kw={"height_ratios": [3.0, 1.35]},
    )
    for j, reg in enumerate(regions):
        ax = axes[0, j]
        for year, colour in zip(years, colours, strict=True):
            key = next((k for k, c in cases.items() if c == (reg, year)), None)
            if key is None:
                continue
            f = fronts[key]
            emp = 100 * f["employment"] / f["E_ref"]
            ghg = 100 * f["ghg"] / f["G_ref"]
            order = np.argsort(emp)
            ax.plot(
                emp[order],
                ghg[order],
                "-o",
                color=colour,
                ms=3,
                lw=1.6 if year == latest else 1.0,
                label=str(year),
                zorder=3 if year == latest else 2,
            )
            if year == latest:
                k = f["marked"]
                target = 100 * (1 - f["target"])
                ax.axvline(target, color="k", ls="--", lw=1)
                ax.axhline(ghg[k], color="k", ls="--", lw=1)
                ax.plot(
                    [emp[k]],
                    [ghg[k]],
                    "x",
                    color="red",
                    ms=13,
                    mew=2.5,
                    zorder=5,
                    label=(
                        f"{year}: λ = {f['lambdas'][k]:.3g}: employment {emp[k] - 100:+.1f} %, "
                        f"GHG {ghg[k] - 100:+.1f} %"
                    ),
                )
        ax.set_xlabel(f"total employment (% of the year's reference)\n{emp_label}")
        ax.set_ylabel(f"total GHG emissions (% of the year's reference)\n{_cut(ghg_label, 60)}")
        ax.set_title(f"{reg}: Lie-intervention fronts, one per year")
        ax.set_xlim(-4, 104)
        ax.set_ylim(-4, 104)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)

        ax = axes[1, j]
        ax.axis("off")
        key = next(k for k, c in cases.items() if c == (reg, latest))
        f = fronts[key]
        rows = f["table"]
        emp_unit = units.get("employment", "")
        cells = [
            [
                _cut(r["sector"]),
                f"{r['factor']:.4g}",  # 4 digits: a factor capped just under 2 is not "2"
                f"{r['employment_change']:+.4g}",
                f"{r['employment_change_pct']:+.1f} %",
            ]
            for r in rows
        ] or [["(no sector loses employment)", "", "", ""]]
        table = ax.table(
            cellText=cells,
            colLabels=["sector", "α", f"Δ jobs [{emp_unit}]", "Δ jobs"],
            colWidths=[0.56, 0.12, 0.18, 0.14],
            loc="upper center",
            cellLoc="right",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.25)
        for (r, c), cell in table.get_celld().items():
            if c == 0 and r > 0:
                cell.set_text_props(ha="left")
        kind = "drops" if f["drops"] else "changes"
        lam = f["lambdas"][f["marked"]]
        ax.set_title(f"{reg} {latest}: largest employment {kind} at λ = {lam:.3g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
