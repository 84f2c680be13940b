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
  (:func:`jcausal.metrics.train_digit_classifier`) on the module hybrids;
* the search for a single-attribute module (:mod:`jcausal.experiments.modularity_attributes`):
  the table at every NMF rank up to ``search_rank``, and channel groups formed by their
  single-channel transfers.

The procedural scenes (:mod:`jcausal.experiments.modularity_scenes`; ``--parts vae`` and
``mcqvae``): a small VAE and the CT-VAE's MCQ-VAE, each trained on :class:`jcausal.data.Shapes`;
per layer their influence maps and modules (``<model>_influence_<layer>.png``), module hybrids
(``<model>_hybrids_<layer>.png``) and each module's share of influence on the object pixels.

On request (``--parts unet``), the Diff-SCM ε-UNet at a fixed step
(:mod:`jcausal.experiments.modularity_unet`): influence maps, modules and module hybrids read
as one-step clean-image estimates (``unet_influence_<layer>.png``, ``unet_hybrids_<layer>.png``).
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
    influence_maps,
    measure_shape,
)
from ..train import fit
from . import ctvae as ctvae_experiment
from ._common import output_dir, run_cli, write_metrics
from .deepscm import load_splits
from .modularity_figures import plot_hybrids, plot_influence

NAME = "modularity"
LAYERS = ("reshape", "up1")
ATTRIBUTES = ("thickness", "intensity", "slant", "width")
# Steps per compiled call: None lets fit choose. It gives one bare step per call to networks
# whose convolution gradients XLA:CPU runs slowly inside a compiled loop (the scene VAE's
# flax layers: 0.39 vs 0.08 s/step, batch 64, measured in one run) and the loop to those
# built on jcausal.nn's channel-last convolutions (the Deep SCM networks).
STEPS_PER_CALL = None


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
    search_rank: int = 8  # largest NMF rank of the single-attribute search (modularity_attributes)
    classifier_steps: int = 1000
    grid_pairs: int = 6
    scene_steps: int = 6000  # at 3000 the object module reached 70 %, at 6000 81 % (README)
    scene_pairs: int = 128
    # The CT-VAE experiment's MCQ-VAE settings at the scenes' 32 px (vae_steps: its steps),
    # with the paper's encoder (kernel 3) the figures were measured with (modularity_scenes).
    mcqvae: ctvae_experiment.Config = dataclasses.field(
        default_factory=lambda: dataclasses.replace(
            ctvae_experiment.FULL, size=32, encoder_kernel=3
        )
    )
    # The ε-UNet part (modularity_unet): pairs, step as a fraction of T, layers; and the small
    # score model trained when no Diff-SCM run is given (--unet-state).
    unet_pairs: int = 64
    unet_t: float = 0.3
    unet_layers: tuple[str, ...] = ("mid", "u1.1")
    unet_steps: int = 400
    unet_width: int = 16
    unet_n_train: int | None = 2000


# The smoke sizes are the deepscm smoke's, so its cached Morpho-MNIST units are reused.
SMOKE = Config(
    n_train=256,
    n_test=64,
    val_units=32,
    steps=100,
    width=8,
    influence_pairs=32,
    table_pairs=16,
    search_rank=4,
    classifier_steps=50,
    grid_pairs=3,
    scene_steps=200,
    scene_pairs=32,
    mcqvae=dataclasses.replace(ctvae_experiment.SMOKE, vae_steps=200, encoder_kernel=3),
    unet_pairs=8,
    unet_steps=20,
    unet_width=8,
    unet_n_train=256,
)
FULL = Config()
#: the parts of the run (``--parts``) and those run by default
PARTS = ("digits", "vae", "mcqvae", "unet")
DEFAULT_PARTS = ("digits", "vae", "mcqvae")


def train_model(
    cfg: Config,
    data: dict,
    key,
    steps_per_call: int | None = STEPS_PER_CALL,
    checkpoint_dir: Path | None = None,
) -> object:
    """A conditional Morpho-MNIST Deep SCM with the paper's input wiring, trained with ``fit``.

    With ``checkpoint_dir``, ``fit`` checkpoints there and resumes (a finished run is reloaded).
    """
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
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir).resolve(),
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
    hyb: np.ndarray,
    rec: np.ndarray,
    don: np.ndarray,
    a_r: dict[str, np.ndarray] | None = None,
    a_d: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Transfer of each attribute by each module, the modularity score and best/second ratios.

    Args:
        hyb: ``(n, r, 28, 28)`` module hybrids (grey levels).
        rec: ``(n, 28, 28)`` receivers ``G(z1)``.
        don: ``(n, 28, 28)`` donors ``G(z2)``.
        a_r: the receivers' :func:`attributes`, when already measured (else measured here).
        a_d: the donors' :func:`attributes`, likewise.

    Returns:
        ``{attribute: [T per module]}`` and ``{"score", "ratio_<attribute>", ...}``.
    """
    r = hyb.shape[1]
    a_r = attributes(rec) if a_r is None else a_r
    a_d = attributes(don) if a_d is None else a_d
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


def _digits(
    cfg: Config, key, seed: int, path: Path, times: dict, state: Path | None
) -> tuple[dict, list[str]]:
    """The Morpho-MNIST part: train, then per layer maps, modules, table, probe, figures."""
    from .modularity_attributes import attribute_search, padded_hybrids  # they import this module

    t0 = time.time()
    train, _, test = load_splits(cfg.n_train, cfg.val_units, cfg.n_test)
    times["data"] = time.time() - t0
    ckpt = None if state is None else state / "checkpoints" / "deepscm"
    scm = train_model(cfg, train, jax.random.fold_in(key, 0), checkpoint_dir=ckpt)
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
        # padded to C channel sets: one compiled program with the search's hybrids
        hyb = padded_hybrids(stages, z1[:m], z2[:m], layer, mods.masks())
        rec = np.asarray(jax.vmap(stages)(z1[:m]))
        don = np.asarray(jax.vmap(stages)(z2[:m]))
        table, summary = module_table(hyb, rec, don)
        probe = classifier_probe(lambda x: predict_proba(classifier, x), hyb, rec, don)
        search = attribute_search(stages, maps, z1[:m], z2[:m], layer, rec, don,
                                  cfg.search_rank, seed)  # fmt: skip
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
            "search": search,
            "seconds": time.time() - t1,
        }
        plot_influence(
            maps, mods, f"layer {layer}: influence maps (grey levels, common scale) and NMF "
            "footprints", path / f"influence_{layer}.png",
        )  # fmt: skip
        g = cfg.grid_pairs
        plot_hybrids(rec[:g], don[:g], hyb[:g], f"module hybrids at layer {layer}",
                     path / f"hybrids_{layer}.png")  # fmt: skip
        figures += [f"influence_{layer}.png", f"hybrids_{layer}.png"]
    return metrics, figures


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {value!r}")
    return int(value)


def parse_parts(parts: str | Sequence[str] | None) -> tuple[str, ...]:
    """The parts to run, from ``"digits,vae"`` or a sequence; ``None`` gives the default.

    Raises:
        ValueError: an unknown or repeated part, or none.
    """
    if parts is None:
        return DEFAULT_PARTS
    names = [p.strip() for p in parts.split(",")] if isinstance(parts, str) else list(parts)
    bad = [p for p in names if p not in PARTS]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(
            f"--parts must name distinct parts among {PARTS} (comma-separated), got {parts!r}"
        )
    return tuple(names)


def _scenes(cfg: Config, model: str, key, seed: int, path: Path) -> tuple[dict, list[str]]:
    """A scene generator's part: train it, measure it, draw influence maps and hybrids."""
    from .modularity_scenes import scenes_part

    steps = cfg.scene_steps if model == "vae" else cfg.mcqvae.vae_steps
    metrics, draw = scenes_part(
        model, key, steps, cfg.scene_pairs, path / f"train_{model}", seed, cfg.mcqvae,
        max_rank=cfg.max_rank,
    )  # fmt: skip
    figures = []
    for layer, d in draw.items():
        name = f"{model}_influence_{layer}.png"
        plot_influence(
            d["maps"], d["modules"], f"{model} scenes, layer {layer}: influence maps (summed "
            "over RGB, common scale) and NMF footprints", path / name,
        )  # fmt: skip
        labels = [f"M{k}: {100 * s:.0f}% obj" for k, s in enumerate(d["share"])]
        plot_hybrids(
            d["receivers"], d["donors"], d["hybrids"], f"{model} scenes, module hybrids at "
            f"layer {layer} (share of change on objects)", path / f"{model}_hybrids_{layer}.png",
            labels=labels, grey=False,
        )  # fmt: skip
        figures += [name, f"{model}_hybrids_{layer}.png"]
    return metrics, figures


def run(
    smoke: bool = False,
    out: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    parts: str | Sequence[str] | None = None,
    config: Config | None = None,
    scene_steps: int | None = None,
    mcqvae_steps: int | None = None,
    state_dir: str | Path | None = None,
    unet_state: str | Path | None = None,
) -> dict:
    """Measure the modularity of the Deep SCM decoder and of the scene generators.

    Args:
        smoke: small fast configuration.
        out: output folder (default ``results/modularity``).
        seed: seed of the models, the pairs and the classifier (the data are fixed).
        steps: training steps of the Deep SCM (default: the config's).
        parts: which of :data:`PARTS` to run (a sequence or ``"digits,vae"``); default
            :data:`DEFAULT_PARTS`. ``"digits"``: the Deep SCM on Morpho-MNIST; ``"vae"``: the
            small scene VAE; ``"mcqvae"``: the CT-VAE's MCQ-VAE decoder on the same scenes;
            ``"unet"``: the Diff-SCM ε-UNet at a fixed step (not run by default).
        config: a :class:`Config` to use instead of ``FULL``/``SMOKE`` (tests).
        scene_steps: training steps of the scene VAE (default: the config's).
        mcqvae_steps: training steps of the MCQ-VAE (default: the config's ``mcqvae``).
        state_dir: folder of the training state (the command line's ``--out``): the Deep
            SCM's and the ε-UNet's checkpoints (``checkpoints/deepscm``,
            ``checkpoints/unet_score``) and the UNet's ``train_unet_score.jsonl``; a rerun with
            ``--overwrite`` reloads the trained models.
        unet_state: the ``--out`` folder of a Diff-SCM run whose score model the ``"unet"``
            part reloads (:mod:`jcausal.experiments.modularity_unet`); else it trains one.

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        ValueError: a config that is not a :class:`Config`, a step count that is not a
            positive integer, unknown parts, or ``unet_state`` without the ``"unet"`` part.
    """
    cfg = config if config is not None else SMOKE if smoke else FULL
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a modularity Config, got {type(cfg).__name__}")
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=_positive("steps", steps))
    if scene_steps is not None:
        cfg = dataclasses.replace(cfg, scene_steps=_positive("scene-steps", scene_steps))
    if mcqvae_steps is not None:
        n = _positive("mcqvae-steps", mcqvae_steps)
        cfg = dataclasses.replace(cfg, mcqvae=dataclasses.replace(cfg.mcqvae, vae_steps=n))
    parts = parse_parts(parts)
    if unet_state is not None and "unet" not in parts:
        raise ValueError("--unet-state is read by the unet part: add it to --parts")
    path = output_dir(NAME, out)
    t0 = time.time()
    key = jax.random.key(seed)
    times: dict = {}
    state = None if state_dir is None else Path(state_dir)
    metrics, figures = (
        _digits(cfg, key, seed, path, times, state) if "digits" in parts else ({}, [])
    )
    for model in (m for m in ("vae", "mcqvae") if m in parts):
        t1 = time.time()
        # The VAE keeps the key of the runs reported before the MCQ-VAE was added.
        k = jax.random.fold_in(key, 3 if model == "vae" else 4)
        metrics.setdefault("scenes", {})[model], more = _scenes(cfg, model, k, seed, path)
        figures += more
        times[model] = time.time() - t1
    if "unet" in parts:
        from .modularity_unet import unet_part

        t1 = time.time()
        metrics["unet"], more = unet_part(
            cfg, jax.random.fold_in(key, 5), seed, path, path if state is None else state,
            unet_state,
        )  # fmt: skip
        figures += more
        times["unet"] = time.time() - t1
    times["total"] = time.time() - t0
    metrics["seconds"] = times
    metrics["figures"] = figures
    settings = {"smoke": smoke, "seed": seed, "parts": list(parts), "unet_state": unet_state}
    write_metrics(path, metrics, dataclasses.asdict(cfg) | settings)
    return metrics


def _extra(parser) -> None:
    parser.add_argument("--steps", type=int, default=None, help="training steps of the Deep SCM")
    parser.add_argument(
        "--parts",
        default=None,
        help=f"comma-separated parts among {', '.join(PARTS)} (default: "
        f"{','.join(DEFAULT_PARTS)}): digits = Deep SCM on Morpho-MNIST, vae = a small VAE on "
        "the procedural scenes, mcqvae = the CT-VAE's MCQ-VAE decoder on the same scenes, "
        "unet = the Diff-SCM ε-UNet at a fixed step",
    )
    parser.add_argument(
        "--scene-steps", type=int, default=None, help="training steps of the scene VAE"
    )
    parser.add_argument(
        "--mcqvae-steps", type=int, default=None, help="training steps of the MCQ-VAE"
    )
    parser.add_argument(
        "--unet-state",
        default=None,
        help="the --out folder of a `jcausal experiment diffscm` run: the unet part reloads its "
        "score model (checkpoints/score) instead of training a small one",
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``jcausal experiment modularity [--smoke] [--parts P,...] [--steps N]``."""
    return run_cli(
        NAME, "Modularity of the Deep SCM decoder and the scene generators: hybrids, influence "
        "maps, NMF modules", run, argv, _extra, state=("checkpoints", "train_*.jsonl"),
    )  # fmt: skip


__all__ = [
    "DEFAULT_PARTS",
    "FULL",
    "PARTS",
    "SMOKE",
    "Config",
    "main",
    "module_table",
    "parse_parts",
    "run",
    "transfer",
]
