"""Diff-SCM experiment, section 5: Morpho-MNIST counterfactuals scored against the truth.

The paper cannot check a counterfactual against the true one; Morpho-MNIST can: its image is
``x := SetIntensity(SetThickness(e_X; t); i)`` with the digit ``e_X`` as the exogenous noise
(:mod:`jcausal.data.morphomnist`), so the true counterfactual of a unit under ``do(t)`` or
``do(i)`` is its own digit re-rendered. Model: the true attribute mechanisms of eq. (7) for
``t`` and ``i`` (exact abduction, :func:`jcausal.examples.morpho`) and a
:class:`jcausal.image.DiffusionImage` for ``x`` with the continuous parents ``(t, i)``:
an unconditional epsilon-UNet on Morpho-MNIST images, guided by a noise-conditioned
regressor of the standardised ``(t, i)`` (``kind="gaussian"``, target
:class:`jcausal.diffusion.morpho.Standardise`); abduction is DDIM inversion. The
attributes being exact isolates the image mechanism.

Scored exactly as the Deep SCM's VAE mechanism (:func:`jcausal.experiments.deepscm_eval.
counterfactual_fidelity`): thickness and intensity measured on the counterfactual images
against the targets, pixel error against the true counterfactual image; plus "identity kept",
the fraction of counterfactuals a digit classifier trained on Morpho-MNIST still reads as the
factual digit. The same table for the Deep SCM ``full`` model (conditional VAE mechanism,
:mod:`jcausal.deepscm.morpho`, trained by :func:`jcausal.experiments.deepscm.train` with its
own full config, resumed from ``<state>/checkpoints/full``) on the same test units: one
table, two model families, one engine. The guidance scale is chosen on validation units by the
pixel error against the true counterfactuals (never on the test units).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import scm as jscm
from ..data import morphomnist as mm
from ..diffusion import Schedule
from ..diffusion.morpho import Standardise
from ..examples import morpho as true_attributes
from ..image import DiffusionImage
from ..metrics import oracle_predict, train_digit_classifier
from . import deepscm
from .deepscm_eval import I_GRID, T_GRID, counterfactual_fidelity
from .deepscm_eval import counterfactuals as vae_counterfactuals
from .diffscm_figures import _img, plt
from .diffscm_train import train_guide, train_score

GRID = [("t", v) for v in T_GRID] + [("i", v) for v in I_GRID]


def _x01(u8) -> np.ndarray:
    return (np.asarray(u8, np.float32) / 255.0)[..., None]


def make_scm(models: dict, cfg, scale: float) -> jscm.SCM:
    """``t -> i``, ``(t, i) -> x``: true attribute mechanisms, diffusion image."""
    attrs = true_attributes("t", "i")
    image = DiffusionImage(
        models["score"],
        models["guide"],
        models["schedule"],
        parents=("t", "i"),
        kind="gaussian",
        target=models["standardise"],
        scale=scale,
        fraction=cfg.fraction,
        steps=cfg.ddim_steps,
    )
    return jscm.SCM({"t": attrs.mechanisms["t"], "i": attrs.mechanisms["i"], "x": image})


def diffusion_counterfactuals(scm, units: dict, chunk: int, bar=None) -> dict:
    """``{label: {"x" (n, 28, 28) grey levels, "t", "i"}}`` under the grid interventions."""
    n, out = len(units["t"]), {}
    for node, v in GRID:
        xs, ts, is_ = [], [], []
        for a in range(0, n, chunk):
            sl = slice(a, a + chunk)
            obs = {
                "t": jnp.asarray(units["t"][sl]),
                "i": jnp.asarray(units["i"][sl]),
                "x": jnp.asarray(_x01(units["x"][sl])),
            }
            cf = jscm.counterfactual(scm, obs, {node: jscm.Hard(jnp.float32(v))})
            xs.append(np.clip(np.asarray(cf["x"])[..., 0], 0, 1) * 255.0)
            ts.append(np.asarray(cf["t"]))
            is_.append(np.asarray(cf["i"]))
            if bar is not None:
                bar.update(len(obs["t"]))
        out[f"do({node}={v:g})"] = {
            "x": np.concatenate(xs),
            "t": np.concatenate(ts),
            "i": np.concatenate(is_),
        }
    return out


def identity_kept(oracle, cfs: dict, labels: np.ndarray) -> dict:
    """Fraction of counterfactuals the Morpho-MNIST digit classifier reads as the factual digit."""
    out = {}
    for label, cf in cfs.items():
        x = jnp.asarray(np.clip(cf["x"], 0, 255)[..., None] / 255.0, jnp.float32)
        out[label] = float(np.mean(np.asarray(oracle_predict(oracle, x)) == labels[: len(x)]))
    out["mean"] = float(np.mean(list(out.values())))
    return out


def _table(fid: dict) -> dict:
    per = fid["per_intervention"]
    return {
        "mae_vs_true": float(np.mean([p["mae_vs_true"] for p in per.values()])),
        "corr_thickness_do_t": fid["corr_thickness_do_t"],
        "corr_intensity_do_i": fid["corr_intensity_do_i"],
        "mae_thickness": fid["mae_thickness"],
        "mae_intensity": fid["mae_intensity"],
    }


def table_markdown(m: dict) -> str:
    """One row per (model, intervention): target, measured on model and true CF, pixel MAE."""
    lines = [
        "| model | intervention | target t / i | model t / i | true CF t / i | pixel MAE vs "
        "true CF | identity kept |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("diffusion", "vae"):
        if name not in m:
            continue
        r = m[name]
        for lab, p in r["fidelity"]["per_intervention"].items():
            lines.append(
                f"| {name} | {lab} | {p['target_t']:.2f} / {p['target_i']:.0f} | "
                f"{p['model_t']:.2f} / {p['model_i']:.0f} | {p['true_t']:.2f} / "
                f"{p['true_i']:.0f} | {p['mae_vs_true']:.1f} | {r['identity'][lab]:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot_grid(units: dict, cfs: dict, vae_cfs: dict | None, k: int, path: Path) -> None:
    """For ``k`` test units: factual, then per intervention true / diffusion / VAE CF."""
    rows = []
    for j in range(k):
        rows.append(
            (
                "true",
                [
                    mm.counterfactual_image(units["digit"][j], c["t"][j], c["i"][j])
                    for c in cfs.values()
                ],
            )
        )
        rows.append(("diffusion", [c["x"][j] for c in cfs.values()]))
        if vae_cfs is not None:
            rows.append(("VAE", [vae_cfs[lab]["x"][j] for lab in cfs]))
    per = len(rows) // k
    fig, axes = plt.subplots(
        len(rows),
        len(cfs) + 1,
        figsize=(1.0 * (len(cfs) + 1), 1.0 * len(rows) + 0.4),
        squeeze=False,
    )
    for r, (name, imgs) in enumerate(rows):
        j = r // per
        if r % per == 0:
            _img(axes[r, 0], units["x"][j] / 255.0, "factual" if r == 0 else None)
        else:
            axes[r, 0].axis("off")
        for c, (lab, im) in enumerate(zip(cfs, imgs, strict=True)):
            _img(axes[r, c + 1], np.clip(im, 0, 255) / 255.0, lab if r == 0 else None)
        axes[r, 1].set_ylabel(name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_morpho(cfg, key, path: Path, state: Path, progress: bool) -> dict:
    """Train (or resume) and score the Morpho-MNIST counterfactuals; returns the metrics."""
    t_all, times = time.time(), {}
    full = cfg.morpho_train >= deepscm.FULL.n_train
    # The Deep SCM's own full config (its checkpoints resume), or a tiny one for the smoke.
    dcfg = deepscm.FULL if full else dataclasses.replace(deepscm.SMOKE, steps=10, cf_samples=2)
    train, val, test = deepscm.load_splits(
        cfg.morpho_train, dcfg.val_units, dcfg.n_test, cfg.data, cfg.data_dir
    )
    x = _x01(train["x"])
    sched = Schedule.linear(cfg.T)
    models = {"schedule": sched}
    t0 = time.time()
    models["score"], info_s = train_score(
        x,
        sched,
        jax.random.fold_in(key, 11),
        width=cfg.width,
        mults=cfg.mults,
        steps=cfg.morpho_score_steps,
        batch=cfg.batch,
        lr=cfg.lr,
        ema=cfg.ema,
        dropout=cfg.dropout,
        state=state,
        name="morpho_score",
        progress=progress,
    )
    times["score"] = time.time() - t0
    std = Standardise.fit(("t", "i"), train)
    models["standardise"] = std
    t0 = time.time()
    z = np.asarray(std(train))
    models["guide"], info_g = train_guide(
        x,
        z,
        sched,
        jax.random.fold_in(key, 12),
        width=cfg.guide_width,
        mults=cfg.mults,
        steps=cfg.morpho_guide_steps,
        batch=cfg.batch,
        lr=cfg.guide_lr,
        state=state,
        regression=True,
        name="morpho_guide",
        progress=progress,
    )
    times["guide"] = time.time() - t0
    t0 = time.time()
    oracle = train_digit_classifier(
        train["x"],
        train["label"],
        jax.random.fold_in(key, 13),
        steps=dict(cfg.evaluator_steps)["oracle"],
        checkpoint_dir=(
            str((state / "checkpoints" / "morpho_oracle").resolve())
            if cfg.evaluator_checkpoints
            else None
        ),
    )
    times["oracle"] = time.time() - t0

    n = min(cfg.morpho_units, len(test["t"]))
    chunk = min(32, n)
    units = {k: v[:n] for k, v in test.items()}
    vunits = {k: v[:chunk] for k, v in val.items()}
    m: dict = {"units": n, "train_units": len(x), "score": info_s, "guide": info_g}
    t0 = time.time()
    scales = tuple(float(s) for s in cfg.morpho_scales)
    bar = tqdm(
        total=len(GRID) * (len(scales) * chunk + n), desc="Morpho-MNIST CFs", disable=not progress
    )
    sel = {}
    for s in scales:
        scm = make_scm(models, cfg, s)
        cfs = diffusion_counterfactuals(scm, vunits, chunk, bar)
        sel[s] = _table(counterfactual_fidelity(cfs, vunits))["mae_vs_true"]
    best = min(sel, key=sel.get)
    m["scale_selection_val_mae"] = {f"{s:g}": v for s, v in sel.items()}
    m["scale"] = best
    cfs = diffusion_counterfactuals(make_scm(models, cfg, best), units, chunk, bar)
    bar.close()
    fid = counterfactual_fidelity(cfs, units)
    m["diffusion"] = {
        "fidelity": fid,
        "summary": _table(fid),
        "identity": identity_kept(oracle, cfs, units["label"]),
    }
    factual = {"factual": {"x": units["x"].astype(np.float32)}}
    m["identity_factual"] = identity_kept(oracle, factual, units["label"])["factual"]
    times["diffusion_counterfactuals"] = time.time() - t0

    t0 = time.time()
    kinds_key = jax.random.fold_in(key, deepscm.morpho.KINDS.index("full"))
    vae, hist = deepscm.train("full", dcfg, train, val, kinds_key, state, progress)
    vae_cfs = vae_counterfactuals(vae, units, jax.random.fold_in(key, 14), n, dcfg.cf_samples)
    vfid = counterfactual_fidelity(vae_cfs, units)
    m["vae"] = {
        "fidelity": vfid,
        "summary": _table(vfid),
        "selected_step": hist.best_step,
        "steps": dcfg.steps,
        "identity": identity_kept(oracle, vae_cfs, units["label"]),
    }
    times["vae"] = time.time() - t0
    (path / "morpho_table.md").write_text(table_markdown(m))
    plot_grid(units, cfs, vae_cfs, min(3, n), path / "morpho_counterfactuals.png")
    m["figures"] = ["morpho_counterfactuals.png"]
    times["total_morpho"] = time.time() - t_all
    m["seconds"] = times
    m["deepscm_config"] = dataclasses.asdict(dcfg)
    return m


__all__ = [
    "GRID",
    "diffusion_counterfactuals",
    "identity_kept",
    "make_scm",
    "run_morpho",
    "table_markdown",
]
