"""Modularity of the Deep SCM image decoder by counterfactuals on its channels (Besserve et al.).

A conditional Deep SCM (:func:`jcausal.deepscm.morpho.model`, ``kind="conditional"``, the
paper's ``condition="input"`` wiring, so the parents ``(t, i)`` are part of the decoder's input
and travel through its channels like the latent) is trained on Morpho-MNIST with
:func:`jcausal.train.fit`. Its decoder is cut at the reshape (``(7, 7, width)``) and the first
upsampling (``(14, 14, width)``) (:func:`jcausal.modularity.decoder_stages`), followed by the
image mechanism's ``P^{-1}`` so outputs are grey levels. Inputs are the encoder's posterior
means of held-out digits, concatenated with their parent features. Then, per layer:

* influence maps of every channel over random (receiver, donor) pairs (``influence_<layer>.png``);
* NMF modules (rank: smallest explaining 90 % of the influence matrix, at most 6; purity < 0.1
  unassigned) and their footprints, and module hybrids (``hybrids_<layer>.png``);
* the module x attribute table: thickness and intensity (:func:`jcausal.data.measure`), slant
  and width (:func:`jcausal.modularity.measure_shape`) of the hybrids against the receiver and
  donor, as a transfer coefficient ``T = sum (a_h - a_r)(a_d - a_r) / sum (a_d - a_r)^2``
  (0: keeps the receiver's attribute; 1: takes the donor's). The modularity score of a layer
  is the mean over attributes of the best module's share of the positive transfer; the ratio
  best/second-best module is reported per attribute;
* the classifier probe: entropy and source agreement of a digit classifier
  (:func:`jcausal.metrics.train_digit_classifier`) on the module hybrids.

With ``--scenes``, also the procedural scenes (:mod:`jcausal.experiments.modularity_scenes`):
a small VAE trained on :class:`jcausal.data.Shapes`, its modules and each module's share of
influence on the object pixels (``scenes_<layer>.png``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..data import measure
from ..deepscm import morpho
from ..metrics import train_digit_classifier
from ..metrics.digits import predict_proba
from ..modularity import (
    Stages,
    classifier_probe,
    decoder_stages,
    find_modules,
    hybrids,
    influence_maps,
    measure_shape,
)
from ..train import fit
from ._common import output_dir, run_cli, write_metrics
from .deepscm import load_splits

NAME = "modularity"
LAYERS = ("reshape", "up1")
ATTRIBUTES = ("thickness", "intensity", "slant", "width")
# One training step per compiled call: on XLA:CPU these conv nets ran slower inside fit's
# compiled loop (measured in one run: scene VAE 0.39 vs 0.08 s/step, batch 64; Deep SCM and
# MCQ-VAE likewise, compilation included).
STEPS_PER_CALL = 1


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the run (see the module docstring)."""

    n_train: int | None = 5000
    n_test: int | None = 1000
    val_units: int = 256  # unused here; the size of the deepscm validation split
    steps: int = 2000
    batch: int = 64
    width: int = 16
    latent: int = 16
    net_lr: float = 1e-3
    influence_pairs: int = 400
    table_pairs: int = 200
    max_rank: int = 6
    classifier_steps: int = 1000
    grid_pairs: int = 6
    scene_steps: int = 6000  # at 3000 the object module reached 70 %, at 6000 81 % (README)
    scene_pairs: int = 128


# The smoke sizes are the deepscm smoke's, so its cached Morpho-MNIST units are reused.
SMOKE = Config(
    n_train=256,
    n_test=64,
    val_units=32,
    steps=100,
    width=8,
    influence_pairs=32,
    table_pairs=16,
    classifier_steps=50,
    grid_pairs=3,
    scene_steps=200,
    scene_pairs=32,
)
FULL = Config()


def train_model(
    cfg: Config, data: dict, key, steps_per_call: int | None = STEPS_PER_CALL
) -> object:
    """A conditional Morpho-MNIST Deep SCM with the paper's input wiring, trained with ``fit``."""
    kp, kf = jax.random.split(key)
    scm = morpho.model(
        "conditional", kp, data, latent=cfg.latent, width=cfg.width, condition="input"
    )
    scm, _ = fit(
        morpho.loss_fn(4),
        scm,
        {k: data[k] for k in ("t", "i", "x")},
        optimizer=morpho.optimizer(5e-3, cfg.net_lr),
        steps=cfg.steps,
        key=kf,
        batch_size=min(cfg.batch, len(data["t"])),
        progress=False,
        steps_per_call=steps_per_call,
    )
    return scm


def generator(scm) -> tuple[Stages, object]:
    """The image decoder as stages ending in grey levels, and the image mechanism."""
    image = scm.mechanisms["x"]
    st = decoder_stages(image.decoder)
    return Stages([*zip(st.names, st.fns, strict=True), ("pixels", image.postprocess)]), image


def inputs(image, units: dict) -> jax.Array:
    """Decoder inputs ``[posterior mean of z, parent features]`` of the given units, ``(n, d)``."""

    def one(x, t, i):
        pa = {"t": t, "i": i}
        z = image.posterior(jnp.asarray(x, jnp.float32), pa).mean()
        return jnp.concatenate([z, image.context(pa)])

    return jax.jit(jax.vmap(one))(units["x"], units["t"], units["i"])


def attributes(images: np.ndarray) -> dict[str, np.ndarray]:
    """Thickness, intensity, slant and width of ``(n, 28, 28)`` grey-level images."""
    images = np.clip(np.asarray(images, float), 0.0, 255.0)
    t, i = measure(images)
    s, w = measure_shape(images)
    return {"thickness": t, "intensity": i, "slant": s, "width": w}


def transfer(hybrid: np.ndarray, receiver: np.ndarray, donor: np.ndarray) -> float:
    """Least-squares slope through 0 of ``a_h - a_r`` on ``a_d - a_r``.

    1: the hybrids take the donor's attribute; 0: they keep the receiver's; NaN when donors
    and receivers never differ.
    """
    dd, dh = donor - receiver, hybrid - receiver
    return float(np.sum(dh * dd) / np.sum(dd**2)) if np.sum(dd**2) > 0 else float("nan")


def module_table(
    hyb: np.ndarray, rec: np.ndarray, don: np.ndarray
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Transfer of each attribute by each module, the modularity score and best/second ratios.

    Args:
        hyb: ``(n, r, 28, 28)`` module hybrids (grey levels).
        rec: ``(n, 28, 28)`` receivers ``G(z1)``.
        don: ``(n, 28, 28)`` donors ``G(z2)``.

    Returns:
        ``{attribute: [T per module]}`` and ``{"score", "ratio_<attribute>", ...}``.
    """
    r = hyb.shape[1]
    a_r, a_d = attributes(rec), attributes(don)
    a_h = [attributes(hyb[:, k]) for k in range(r)]
    table = {a: [transfer(a_h[k][a], a_r[a], a_d[a]) for k in range(r)] for a in ATTRIBUTES}
    summary, shares = {}, []
    for a, ts in table.items():
        pos = np.clip(np.nan_to_num(ts), 0.0, None)
        order = np.sort(pos)[::-1]
        if pos.sum() > 0:
            shares.append(order[0] / pos.sum())
        second = order[1] if r > 1 else 0.0
        summary[f"best_module_{a}"] = int(np.argmax(pos))
        summary[f"ratio_{a}"] = float(order[0] / second) if second > 0 else float("inf")
    summary["score"] = float(np.mean(shares)) if shares else float("nan")
    return table, summary


def _plot_influence(maps: np.ndarray, mods, layer: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, r = len(maps), mods.rank
    cols = max(8, r)
    rows = -(-c // cols) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    vmax = maps.max()
    for j in range(c):
        ax = axes[j // cols, j % cols]
        ax.imshow(maps[j], cmap="magma", vmin=0, vmax=vmax)
        m = mods.assignment[j]
        ax.set_title(f"ch{j} → {'–' if m < 0 else f'M{m}'}", fontsize=7)
    for k in range(r):
        ax = axes[-1, k]
        ax.imshow(mods.footprints[k].reshape(maps.shape[1:]), cmap="viridis")
        ax.set_title(f"module M{k} ({int((mods.assignment == k).sum())} ch)", fontsize=7)
    fig.suptitle(
        f"layer {layer}: influence maps (grey levels, common scale) and NMF footprints", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_hybrids(rec, don, hyb, layer: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, r = hyb.shape[:2]
    fig, axes = plt.subplots(n, r + 2, figsize=(1.3 * (r + 2), 1.4 * n), squeeze=False)
    for p in range(n):
        for j, (img, title) in enumerate(
            [(rec[p], "receiver"), (don[p], "donor")]
            + [(hyb[p, k], f"M{k} from donor") for k in range(r)]
        ):
            ax = axes[p, j]
            ax.imshow(np.clip(img, 0, 255), cmap="gray", vmin=0, vmax=255)
            ax.axis("off")
            if p == 0:
                ax.set_title(title, fontsize=7)
    fig.suptitle(f"module hybrids at layer {layer}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _digits(cfg: Config, key, seed: int, path: Path, times: dict) -> tuple[dict, list[str]]:
    """The Morpho-MNIST part: train, then per layer maps, modules, table, probe, figures."""
    t0 = time.time()
    train, _, test = load_splits(cfg.n_train, cfg.val_units, cfg.n_test)
    times["data"] = time.time() - t0
    scm = train_model(cfg, train, jax.random.fold_in(key, 0))
    times["train"] = time.time() - t0 - times["data"]
    stages, image = generator(scm)
    z = inputs(image, test)
    n = len(z)
    kp = jax.random.fold_in(key, 1)
    recv = jax.random.randint(kp, (cfg.influence_pairs,), 0, n)
    dono = (recv + jax.random.randint(jax.random.fold_in(kp, 1), recv.shape, 1, n)) % n
    z1, z2 = z[recv], z[dono]
    classifier = train_digit_classifier(
        train["x"], train["label"], jax.random.fold_in(key, 2), steps=cfg.classifier_steps
    )

    metrics: dict = {"layers": {}}
    figures: list[str] = []
    for layer in LAYERS:
        t1 = time.time()
        maps = influence_maps(stages, z1, z2, layer)
        mods = find_modules(maps, max_rank=cfg.max_rank, seed=seed)
        m = cfg.table_pairs
        hyb = np.asarray(hybrids(stages, z1[:m], z2[:m], layer, mods.masks()))
        rec = np.asarray(jax.vmap(stages)(z1[:m]))
        don = np.asarray(jax.vmap(stages)(z2[:m]))
        table, summary = module_table(hyb, rec, don)
        probe = classifier_probe(lambda x: predict_proba(classifier, x), hyb, rec, don)
        # Share of all influence carried by each module's channels.
        mass = maps.reshape(len(maps), -1).sum(1)
        metrics["layers"][layer] = {
            "channels": len(maps),
            "rank": mods.rank,
            "explained": mods.explained,
            "assignment": mods.assignment.tolist(),
            "purity": mods.purity.tolist(),
            "unassigned": int((mods.assignment < 0).sum()),
            "module_influence_share": [
                float(mass[mods.assignment == k].sum() / mass.sum()) for k in range(mods.rank)
            ],
            "transfer": table,
            "summary": summary,
            "probe": probe,
            "seconds": time.time() - t1,
        }
        _plot_influence(maps, mods, layer, path / f"influence_{layer}.png")
        g = cfg.grid_pairs
        _plot_hybrids(rec[:g], don[:g], hyb[:g], layer, path / f"hybrids_{layer}.png")
        figures += [f"influence_{layer}.png", f"hybrids_{layer}.png"]
    return metrics, figures


def run(
    smoke: bool = False,
    out: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    scenes: bool = False,
    scenes_model: str = "vae",
    config: Config | None = None,
    digits: bool = True,
    scene_steps: int | None = None,
) -> dict:
    """Train a small Deep SCM and measure the modularity of its image decoder.

    Args:
        smoke: small fast configuration.
        config: a :class:`Config` to use instead of ``FULL``/``SMOKE`` (tests).
        out: output folder (default ``results/modularity``).
        seed: seed of the model, the pairs and the classifier (the data are fixed).
        steps: training steps of the Deep SCM (default: the config's).
        scenes: also run the procedural-scenes part (a scene generator is trained first).
        scenes_model: the scene generator, ``"vae"`` (a small VAE) or ``"mcqvae"`` (the
            CT-VAE's MCQ-VAE decoder).
        digits: run the Morpho-MNIST part; ``False`` (``--scenes-only``) runs the scenes only.
        scene_steps: training steps of the scene generator (default: the config's).

    Returns:
        The metrics written to ``metrics.json``.
    """
    cfg = config if config is not None else SMOKE if smoke else FULL
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a modularity Config, got {type(cfg).__name__}")
    if steps is not None:
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"--steps must be a positive integer, got {steps!r}")
        cfg = dataclasses.replace(cfg, steps=int(steps))
    scenes = scenes or not digits  # --scenes-only
    if scene_steps is not None:
        if isinstance(scene_steps, bool) or int(scene_steps) != scene_steps or scene_steps < 1:
            raise ValueError(f"--scene-steps must be a positive integer, got {scene_steps!r}")
        cfg = dataclasses.replace(cfg, scene_steps=int(scene_steps))
    path = output_dir(NAME, out)
    t0 = time.time()
    key = jax.random.key(seed)
    times: dict = {}
    metrics, figures = _digits(cfg, key, seed, path, times) if digits else ({}, [])
    if scenes:
        from .modularity_scenes import plot_scene_hybrids, scenes_modularity

        t1 = time.time()
        metrics["scenes"], draw = scenes_modularity(
            jax.random.fold_in(key, 3), cfg.scene_steps, cfg.scene_pairs, seed, scenes_model
        )
        for layer, arrays in draw.items():
            plot_scene_hybrids(arrays, layer, path / f"scenes_{layer}.png")
            figures.append(f"scenes_{layer}.png")
        times["scenes"] = time.time() - t1
    times["total"] = time.time() - t0
    metrics["seconds"] = times
    metrics["figures"] = figures
    config = dataclasses.asdict(cfg) | {"smoke": smoke, "seed": seed, "scenes": scenes,
                                        "scenes_model": scenes_model, "digits": digits}  # fmt: skip
    write_metrics(path, metrics, config)
    return metrics


def _extra(parser) -> None:
    parser.add_argument("--steps", type=int, default=None, help="training steps of the Deep SCM")
    parser.add_argument(
        "--scenes", action="store_true", help="also the procedural scenes (trains a scene VAE)"
    )
    parser.add_argument(
        "--scenes-only", dest="digits", action="store_false",
        help="only the procedural scenes (implies --scenes; skips Morpho-MNIST)",
    )  # fmt: skip
    parser.add_argument(
        "--scene-steps", type=int, default=None, help="training steps of the scene generator"
    )
    parser.add_argument(
        "--scenes-model",
        choices=("vae", "mcqvae"),
        default="vae",
        help="scene generator: a small VAE, or the CT-VAE's MCQ-VAE decoder",
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``jcausal experiment modularity [--smoke] [--steps N]``."""
    return run_cli(
        NAME, "Modularity of the Deep SCM decoder: hybrids, influence maps, NMF modules", run,
        argv, _extra,
    )  # fmt: skip


__all__ = ["FULL", "SMOKE", "Config", "main", "module_table", "run", "transfer"]
