"""CT-VAE on the embedded factors-of-variation transitions: Table 1, Fig. 5 and Fig. 6 analogs.

(Over 500 lines: the run's configuration, with the measurements behind each setting, and its
stages with their checkpoints belong together; the evaluation is in
:mod:`jcausal.experiments.ctvae_eval`, the auxiliary networks and figures in
:mod:`jcausal.experiments.ctvae_parts`.)

Data: :class:`jcausal.data.Shapes` (5 factors, cardinalities 3/4/5/6/12, 10 actions), rendered
per batch inside the compiled step; the 70/15/15 split is by transition (edges of the grid).
Training, all with :func:`jcausal.train.fit`:

1. the MCQ-VAE on random scenes (``vq_loss``), in rounds with dead-code restarts between them;
2. the CT layer with the VAE frozen (``jc.frozen``): standard, action and causal modes every
   step (:func:`jcausal.ctvae.ct_loss`; causal mode scores every action), ``ct_steps`` steps,
   then ``ct_tune_steps`` more from a fresh optimiser (a checkpointed stage of its own);
3. two baselines the paper lacks: chance, and a discriminative classifier of the action from
   the pair of quantised code grids (an MLP, same steps and batch as the CT layer);
4. a factor classifier (a small CNN trained on the generator's labels) that reads the factors
   back from generated images, to measure that an intervention changes only its factor.

Reported (``metrics.json``): per model, action and factor accuracy of causal mode on held-out
transitions (the posterior of ``a`` from the engine's ``log_prob``; ``log p(y | x, a)`` the
Monte Carlo marginal over ``eval_graphs`` drawn graphs, ``ct_vae_graph_modes`` under the
modes), per-factor accuracy next to the factor's frequency, reconstruction MSE, codebook
perplexity, and for interventions (``do(a)`` through the SCM, most likely image) the rate at
which the intervened factor reads back right and the rate at which the other factors stay
unchanged.
The MCQ-VAE, the factor reader, the baseline and the CT layer are checkpointed under a hash of
their settings (``--out/checkpoints``), so a rerun with ``--overwrite`` into the same folder
retrains only what a changed setting touches.
Figures: ``interventions.png`` (Fig. 5: one row per factor, the same action applied i times),
``graphs.png`` (Fig. 6: masks and adjacencies averaged over test units, a few actions),
``factor_accuracy.png`` (accuracy against frequency per factor), ``reconstructions.png``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
import optax

from .. import ctvae
from ..data.factorial import FactorialSet, cars3d_mat, dsprites_npz, tfds_factorial
from ..data.transitions import Shapes, check_balance
from ..nn import MCQVAE, ema_buffers, restart_dead_codes, vq_loss
from ..train import fit, frozen, unfreeze
from ._common import output_dir, run_cli, write_metrics
from .ctvae_eval import evaluate
from .ctvae_parts import (
    FactorReader,
    PairClassifier,
    factor_loss,
    pair_loss,
    plot_accuracy,
    plot_graphs,
    plot_interventions,
    plot_reconstructions,
)

NAME = "ctvae"
#: ``--data`` choices: the embedded procedural set, or a real factorial set read from disk
DATASETS = ("embedded", "dsprites", "shapes3d", "smallnorb", "cars3d")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of a run (sizes, steps); see the module docstring."""

    size: int = 64
    dim: int = 32
    codebooks: int = 2
    codes: int = 32
    width: int = 32
    vae_steps: int = 2400
    vae_rounds: int = 4
    vae_batch: int = 32
    # 2,000 (from 1,600): the layer was still learning at 1,600 (action mode's NLL falling,
    # interventions right 42% at 500 steps, 61% at 1,600); the full config took 23.2 min wall
    # at 1,600, of which the CT layer 678 s. 3,000 (from 2,000) with ``ct_lr`` 2e-3: the
    # channel-last MCQ-VAE freed ~500 s of the 40-min budget (VAE stage 927 -> 422 s).
    ct_steps: int = 3000
    ct_batch: int = 32
    hidden: int = 32
    layers: int = 2
    # Causal mode's actions in training: sampled negatives per unit, or None: every action
    # (eq. 10 as evaluated). Measured at 500 steps (300 test units): 3 negatives 0.677 / 0.703
    # action / factor accuracy, every action 0.757 / 0.790, every action + balance 0.797 / 0.820.
    negatives: int | None = None
    # Weight of action mode's per-code likelihood (eq. 9): at 1 the CT layer learns to tell
    # actions apart but copies its input (0 of the changed codes right after 300 steps at
    # 32x32); at 20 it predicts 32% of them, with the same causal-mode accuracy.
    action_weight: float = 20.0
    # Causal mode's cross-entropy (eq. 10, over the raw sums of ``log p(y | x, a)`` over the
    # 128 codes, against the action term's per-code mean x 20). 5 from
    # 2026-12-02 (with 3 sampled negatives it lifted causal mode 0.843 -> 0.872, README); 1
    # (the paper's) since 2026-12-04 02:00: with the local readout that term made the layer
    # copy shape's changed codes. Diagnosis of the 5-weight full run (3,000 held-out units,
    # 605 of shape): shape read right 32.2% (Y's own codes: 84.0%); under the mask 23.7% of
    # shape's changed codes right, 53.1% copied; Y's codes put on the masked cells -> 82.3%,
    # on the unmasked changed cells -> 36.4%. Trained without the causal term (3,500 steps):
    # 60.1%. Full config at 1 (VAE, reader, baseline restored; 1,000 held-out transitions):
    # causal mode 0.998 / 1.000 (from 0.997 / 0.999; baseline 0.986 / 0.994), intervened
    # factor right 97.6% (95.3%), others kept 95.2% (94.2%), shape 68.8% (39.0%; 77 units;
    # on the 605: 56.2% from 32.2%), changed codes right 72.7% (66.7%; README).
    causal_weight: float = 1.0
    # Off: with the mask-rate penalty (weight 1, with ffn and changed 2) x and colour fell to
    # 0% factor accuracy after 500 steps: a cell's mask sees only that cell's codes, so the
    # background cells an object moves into cannot be marked.
    mask_weight: float = 0.0
    # Off: ffn with changed 1 and causal 5 (1,200 steps) lowered colour to 0.38 and the factor
    # accuracy to 0.817 (README). At 20 with ffn (500 steps, 300 test units) the intervened
    # factor read right rose 0.15 -> 0.27 but causal mode fell to 0.43 / 0.50 action / factor
    # accuracy (from 0.83 / 0.85): the object's cells change alike under every action.
    changed_weight: float = 0.0
    # On, with action_heads (see there). Alone (500 steps, 300 test units) it lifted the
    # intervened factor 0.15 -> 0.21, causal mode level within noise (0.81 / 0.82).
    ffn: bool = True
    # Class balance: the action, changed and causal terms weighted by the inverse frequency of
    # the true action's factor in the training transitions. Off with action_heads: it lowered
    # x to 0.82 (full config; README).
    balance: bool = False
    # The keep gate of the CT layer's readout (``CTLayer(gate=True)``). Off: in the full
    # config it lowered action mode's NLL after 350 steps (239 vs 342) but causal mode trailed
    # (training batches' accuracy 0.29 against 0.52, cross-entropy 1.77 against 1.22, means
    # over steps 150-350), so that run was stopped (README).
    gate: bool = False
    # The CT layer's nodes also see their 8 neighbours' codes (``CTLayer(neighbours=True)``).
    # On (with ``skip`` 4): where an atomic action changes codes is not a function of a cell's
    # own codes (a majority lookup (action, codebook, code) -> Y's code over all cells gets
    # 0.7-12% of the changed codes right for shape, scale, colour and x: locally the copy is
    # the likeliest answer); the neighbours tell a cell that the object is next to it.
    # Measured at 500 steps (300 test units, 16 graphs), against the previous default
    # (action_heads, ffn, no balance): 0.940 / 0.950 action / factor accuracy (from 0.893 /
    # 0.910), intervened factor right 34.7% (from 29.3%); with skip 4, 0.940 / 0.957 and
    # 42.3% (others kept 91.2%, x 19% from 0%). Before action_heads it lowered causal mode
    # (0.793 / 0.807 against 0.830 / 0.850; README). Full config, from scratch: 0.980 / 0.991
    # (baseline 0.930 / 0.950), intervened factor right 60.8% (from 43.0%; README).
    neighbours: bool = True
    # One readout per action plus the null one, picked per node by the mask as eq. (4) picks
    # the pair MLP (``CTLayer(action_heads=True)``): with one shared readout the action reaches
    # a node's logits as an additive embedding only, so "code c under action a becomes c'" has
    # no direct path. Off: with ffn, full config, the intervened factor reads right in 37.4%
    # (from 21.4%; colour 0% -> 76%) and shape / colour accuracy rise (0.77 -> 0.84, 0.93 ->
    # 1.00), but with class balance x falls (0.94 -> 0.82); without it (the default, with ffn)
    # the full config reaches 0.941 / 0.957 action / factor accuracy (baseline 0.930 / 0.950)
    # and the intervened factor reads right in 43.0% (README).
    action_heads: bool = True
    # Initial weight of the input's codes in the CT layer's logits (``CTLayer(skip=...)``,
    # the copy prior). 4 (from 8): Adam moves the scalar by ~lr per step (8 -> 7.57 in 500
    # steps), and at 8 the changed codes were copied with probability 0.87-0.97, worse than a
    # uniform guess (6.2 nats each against log 32 = 3.5, step 300). At 4 (500 steps, 300 test
    # units): the changed codes' NLL 3.7 nats at step 300, 16 graphs 0.897 / 0.913 (the modes
    # fell to 0.787 / 0.827), intervened right 33.0% (from 29.3%; the argmax still copies
    # 69%); with neighbours both gain (see there).
    skip: float = 4.0
    # The CT layer's learning rate decays as a cosine from ``lr`` to ``lr_floor x lr`` over
    # its steps (optax.cosine_decay_schedule); None: constant. Off: with 0.05 the full config
    # fell to 0.807 / 0.820 action / factor accuracy (from 0.866 / 0.877; README).
    lr_floor: float | None = None
    # The mask supervised by where the codes changed (``Weights.mask_target``; ours). On at 10:
    # 500 steps, 300 test units, against the previous default: 0.960 / 0.983 action / factor
    # accuracy (from 0.940 / 0.957), intervened factor right 52.3% (from 42.3%; x 45% from
    # 19%), others kept 88.2% (from 91.2%). With acted_skip 1 the intervened factor rose to
    # 58.7% but others kept fell to 65.8% and causal mode to 0.847 / 0.870; with skip 2,
    # 56.7% / 84.9%; with lr 2e-3, 57.3% / 87.6%. Full config with 2,000 steps, from scratch:
    # 0.982 / 0.994 (baseline 0.948 / 0.965), intervened factor right 74.5% (from 60.8%),
    # others kept 90.5% (from 91.4%; README).
    mask_target_weight: float = 10.0
    # The copy prior of the nodes under the mask (``CTLayer(acted_skip=...)``; None: ``skip``).
    acted_skip: float | None = None
    # Widths of the CT layer's local readout's hidden layers (``CTLayer(local=W)`` or
    # ``local=(W1, W2)``; None: none). One layer of 128 since 2026-12-03 18:50 with
    # ``encoder_kernel=1`` and ``sample_balance=1`` (all three, full config from scratch,
    # 1,000 held-out transitions, against kernel 3, no local readout, natural stream): causal
    # mode 0.995 / 0.998 (0.994 / 0.999; the baseline 0.986 / 0.994), intervened factor right
    # 93.8% (90.0%), others kept 93.1% (93.4%), shape 32.5% (14.3%; 77 units). Two layers of
    # 256 since 2026-12-03 22:30: per-cell probes on the balanced stream with this readout's
    # shape (copy prior 4, lr 2e-3, 3,500 steps; 400 held-out shape units) read shape right
    # 23.7% with 128, 36.5% with 256, 49.0% with 512, 49.5% with 128 x 2, 62.5% with
    # 256 x 2, 64.0% with 256 x 3: depth, not width. Full config from scratch: causal mode
    # 0.997 / 0.999, intervened factor right 95.3%, others kept 94.2%, shape 39.0%, scale /
    # colour / x 100%; 31.7 min wall (0.46 s per CT step against 0.39 with 128; README).
    local: int | tuple[int, ...] | None = (256, 256)
    # The CT layer's training transitions: the factor drawn from (1 - b) x its natural
    # frequency (prop. to card - 1: shape 8%, x 44%) + b x uniform (the samplers' ``balance``,
    # real sets too). The baseline keeps the natural stream. On (1) with the local readout
    # and local codes: shape's share 8% -> 20% doubled its intervention rate (15.6% -> 32.5%,
    # above); a per-cell MLP on a cell's 3x3 codes (the CT layer's budget) read shape right
    # 34% on the natural stream and 53% balanced, 59% on training pairs: shape is short of
    # data, not overfitted. With the previous CT layer, balance alone at 500 steps slowed
    # every factor (intervened factor right 47.0% against 57.3%; README).
    sample_balance: float = 1.0
    # A second stage of the CT layer's training: ``ct_tune_steps`` more steps from a fresh
    # Adam (a warm restart: the moment estimates of 3,000 steps dropped) at ``ct_lr``, on a
    # stream mixed towards balanced factors by ``tune_balance`` (0: the first stage's stream,
    # itself balanced by ``sample_balance``; with both 1 the two draw the very same batches,
    # checked: a full run's metrics identical), checkpointed in its own folder
    # (``ct_tune``); the baseline gets the same total steps.
    # 500 at balance 0: continuing the full run's CT layer (300 test units, 204 shape and 302
    # scale transitions held out): intervened factor right 82.7% -> 89.7%, others kept 93.3%
    # -> 94.1%, shape 11.8% -> 18.6%, scale 73.8% -> 83.8%, causal mode unchanged (0.997 /
    # 1.000); at balance 1: 89.3%, 93.7%, shape 15.2%, scale 86.4%. Full config (1,000 units):
    # 90.0% (from 82.8%), others kept 93.4% (92.5%), causal mode 0.994 / 0.999; shape 14.3%
    # (18.2%; 77 units), scale / colour / x 89.9 / 96.5 / 96.5% (76.1 / 90.5 / 86.0; README).
    ct_tune_steps: int = 500
    tune_balance: float = 0.0
    lr: float = 1e-3
    # The CT layer's learning rate (None: ``lr``; the MCQ-VAE, reader and baseline use
    # ``lr``). 2e-3: 500-step probes (300 test units, restored full-config VAE): intervened
    # factor right 57.3% against 52.3% at 1e-3 (shape / scale / colour / x 13 / 8 / 83 / 52%
    # against 13 / 3 / 75 / 45%), others kept 87.6% against 88.2%, causal mode 0.953 / 0.973
    # against 0.960 / 0.983. Also 2e-3 with hidden 64: 55.3% (1.6x the CPU); with
    # changed_weight 2: 56.7% (README).
    ct_lr: float | None = 2e-3
    # Causal mode's log p(y | x, a) at evaluation: 0: under the modes of the mask and graph;
    # S > 0: the Monte Carlo marginal over S drawn graphs (eq. 10 samples the graph), the
    # modes' figures reported next to it.
    # Measured at 500 steps (300 test units): modes 0.797 / 0.820 action / factor accuracy,
    # 16 drawn graphs 0.830 / 0.850 (with neighbours: 0.757 / 0.777 and 0.793 / 0.807); full
    # config (1,000 units, the same CT layer): modes 0.866 / 0.877, 16 graphs 0.923 / 0.930.
    eval_graphs: int = 16
    reader_steps: int = 3000
    eval_units: int = 1000
    chunk: int = 50
    repeats: int = 5
    codebook: str = "loss"  # "loss": codebook loss; "ema": EMA codebook updates
    # The MCQ-VAE encoder's convolutions after the downsampling (``MCQVAE(encoder_kernel=)``;
    # ``--encoder-kernel``). 3 (the paper's): a code sees 54 of the 64 pixels of a side, so a
    # shape action changed the codes of 27 cells, of which only ~13 had changed pixels. At 1
    # a code sees its cell and 7 pixels around: 14 cells (reconstruction MSE 0.00044 against
    # 0.00043). Full config, 1,000 held-out transitions, against 3: intervened factor right
    # 92.6% (90.0%; scale 100% from 89.9%, colour 99.0, x 98.0), others kept 93.1% (93.4%),
    # action mode's changed codes right 58.8% (36.3%), copied 23.2% (40.0%); but causal mode
    # 0.987 / 1.000 against the baseline's 0.986 / 0.994 (3: 0.994 / 0.999 against 0.983 /
    # 0.994: shape+ and shape- confused, action accuracy 0.83 on shape) and shape still 18.2%
    # (77 units; 14.2% of 487). Alone it shrank causal mode's lead over the baseline (a
    # target) to 1 transition of 1,000; with the local readout and balanced factors (the
    # default, see ``local``) the lead is 9 transitions and shape 32.5% (README).
    encoder_kernel: int = 1


SMOKE = Config(
    size=32,
    dim=16,
    codes=16,
    width=16,
    vae_steps=60,
    vae_rounds=2,
    vae_batch=16,
    ct_steps=30,
    ct_tune_steps=10,
    ct_batch=8,
    hidden=16,
    reader_steps=30,
    eval_units=40,
    chunk=20,
    repeats=3,
    eval_graphs=4,
)
FULL = Config()


def _fingerprint(cfg: Config, fields: Sequence[str], seed: int, data: str) -> str:
    """A short hash of the settings a training depends on: its checkpoints' folder name."""
    spec = {f: getattr(cfg, f) for f in fields} | {"seed": seed, "data": data}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


#: The settings each checkpointed training depends on (its checkpoint folder is their hash).
VAE_FIELDS = ("size", "dim", "codebooks", "codes", "width", "vae_steps", "vae_rounds",
              "vae_batch", "lr", "codebook", "encoder_kernel")  # fmt: skip
READER_FIELDS = ("size", "reader_steps", "vae_batch", "lr")
BASELINE_FIELDS = (*VAE_FIELDS, "ct_steps", "ct_tune_steps", "ct_batch", "hidden")
#: Settings that do not change the CT layer's training (evaluation, the factor reader).
_NOT_CT = ("reader_steps", "eval_units", "chunk", "repeats", "eval_graphs")
#: The CT layer depends on every other setting (a new field joins it by default).
CT_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if f.name not in _NOT_CT)


def _fit(
    loss, params, data, steps, key, lr, path: Path, name: str, progress: bool,
    ckpt: Path | None = None, schedule=None,
):  # fmt: skip
    # With ``ckpt`` (a folder of the run's state), the training is checkpointed there and a
    # rerun resumes it (a finished one is restored without a step); its log goes there too.
    # Steps per compiled call: fit's choice. Every network here runs channel-last through
    # jcausal.nn's convolutions, so all keep fit's compiled loop (wall per step, beside
    # another job: factor reader 97 -> 12 ms, baseline 138 -> 28 ms, against equinox's
    # channel-first layers run as bare steps; the MCQ-VAE 302 -> 70 ms).
    return fit(
        loss,
        params,
        data,
        optimizer=optax.adam(lr if schedule is None else schedule),
        steps=steps,
        key=key,
        log_every=max(1, min(50, steps // 4)),
        metrics_path=(path if ckpt is None else ckpt) / f"train_{name}.jsonl",
        checkpoint_dir=None if ckpt is None else (ckpt / name).resolve(),
        checkpoint_every=max(1, steps // 4),
        progress=progress,
        steps_per_call=None,
    )


def train_vae(
    cfg: Config, shapes: Shapes, key, path: Path, progress: bool, ckpt: Path | None = None
):
    """Pretrain the MCQ-VAE in rounds, restarting dead codes between rounds.

    With ``ckpt`` each round is checkpointed in ``ckpt / "vae_<round>"`` and resumed from there
    (the restarts between rounds are deterministic, so a resumed round starts where it did).
    """
    if cfg.codebook not in ("loss", "ema"):
        raise ValueError(f"codebook must be 'loss' or 'ema', got {cfg.codebook!r}")
    ema = cfg.codebook == "ema"
    vae = MCQVAE(cfg.size, cfg.dim, cfg.codebooks, cfg.codes, cfg.width,
                 key=jax.random.fold_in(key, 0), ema=ema,
                 encoder_kernel=cfg.encoder_kernel)  # fmt: skip

    def data(k):
        return shapes.sample_scenes(k, cfg.vae_batch)["image"]

    restarted = []
    per_round = max(1, cfg.vae_steps // cfg.vae_rounds)
    for r in range(cfg.vae_rounds):
        # EMA codes are buffers: `fit` stores the loss's update of them at every step.
        trained, hist = _fit(
            lambda p, b, k: vq_loss(p, b),
            ema_buffers(vae) if ema else vae,
            data,
            per_round,
            jax.random.fold_in(key, 10 + r),
            cfg.lr,
            path,
            f"vae_{r}",
            progress,
            ckpt=ckpt,
        )
        vae = unfreeze(trained)
        if r < cfg.vae_rounds - 1:
            probe = shapes.sample_scenes(jax.random.fold_in(key, 100 + r), 256)["image"]
            vae, n = restart_dead_codes(vae, probe, jax.random.fold_in(key, 200 + r))
            restarted.append([int(v) for v in n])
    last = _last_logged(hist, ckpt, f"train_vae_{cfg.vae_rounds - 1}.jsonl")
    return vae, {"restarted_codes": restarted, "last": last}


def _last_logged(hist, ckpt: Path | None, log: str) -> dict:
    # The last logged training metrics; restored without a step: the log of the first run.
    if hist.train or ckpt is None or not (ckpt / log).exists():
        return hist.train[-1] if hist.train else {}
    lines = (ckpt / log).read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def transition_set(data: str, path: str | Path | None, size: int) -> Shapes | FactorialSet:
    """The transitions of ``--data`` at ``size x size`` (see the README for obtaining the sets).

    Args:
        data: one of :data:`DATASETS`.
        path: ``dsprites``: the ``.npz`` file (or a TFDS data directory); ``cars3d``: the folder
            of ``car_*_mesh.mat`` files (required); ``shapes3d`` / ``smallnorb``: the TFDS data
            directory (default ``~/tensorflow_datasets``); ``embedded``: must be ``None``.
        size: image side handed to the model.

    Raises:
        ValueError: an unknown set, or a path where none is read.
        FileNotFoundError: the set is not where ``path`` says (the message says how to get it).
    """
    if data not in DATASETS:
        raise ValueError(f"--data must be one of {DATASETS}, got {data!r}")
    if data == "embedded":
        if path is not None:
            raise ValueError("--data-path is for the real sets; the embedded set is rendered")
        return Shapes(size)
    if data == "cars3d":
        if path is None:
            raise ValueError(
                "--data cars3d needs --data-path: the folder of Cars3D's car_*_mesh.mat files"
            )
        return FactorialSet(cars3d_mat(path, size=size if 128 % size == 0 else None), size)
    if data == "dsprites" and path is not None and Path(path).suffix == ".npz":
        return FactorialSet(dsprites_npz(path), size)
    return FactorialSet(tfds_factorial(data, "train", None if path is None else str(path)), size)


def _check_sample_balance(cfg: Config) -> None:
    n = cfg.ct_tune_steps
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"Config.ct_tune_steps must be an integer >= 0, got {n!r}")
    for name in ("sample_balance", "tune_balance"):
        check_balance(getattr(cfg, name), f"Config.{name}")


def _weights(cfg: Config) -> ctvae.Weights:
    """The CT loss's weights from ``Config.<term>_weight``; a bad one named as the field."""
    values = {t: getattr(cfg, f"{t}_weight") for t in ("action", "causal", "mask", "changed",
                                                        "mask_target")}  # fmt: skip
    for term, value in values.items():
        try:
            ctvae.Weights(**{term: value})  # (Weights refuses negative and non-finite ones)
        except ValueError:
            raise ValueError(
                f"Config.{term}_weight must be a finite number >= 0, got {value!r}"
            ) from None
    return ctvae.Weights(**values)


def train_ct(cfg: Config, shapes, vae, key, path: Path, progress: bool, ckpt: Path | None = None):
    """Train the CT layer on the frozen MCQ-VAE's codes (all three modes every step).

    With ``ckpt`` the training is checkpointed there and a rerun resumes (or restores) it.

    Returns:
        ``(ct, history)``: the trained :class:`jcausal.ctvae.CTLayer` and ``fit``'s history
        of its last stage (the second one when ``cfg.ct_tune_steps > 0``; its records count
        the second stage's steps, the first stage's log is ``train_ct.jsonl``).
    """
    ct = ctvae.CTLayer(
        vae.grid, cfg.codebooks, cfg.codes, shapes.num_actions, cfg.hidden, cfg.layers,
        ffn=cfg.ffn, gate=cfg.gate, neighbours=cfg.neighbours, action_heads=cfg.action_heads,
        skip=cfg.skip, acted_skip=cfg.acted_skip, local=cfg.local, key=jax.random.fold_in(key, 2),
    )  # fmt: skip
    weights = _weights(cfg)
    _check_sample_balance(cfg)
    if cfg.sample_balance:
        sampler = shapes.sampler("train", cfg.ct_batch, balance=cfg.sample_balance)
    else:
        sampler = shapes.sampler("train", cfg.ct_batch)
    balance = None
    if cfg.balance:
        probs = np.repeat(np.asarray(sampler.factor_probs, np.float64), 2)[: shapes.num_actions]
        # A factor with one value (dSprites' colour) has no transitions: its weight is unused.
        balance = np.where(probs > 0, 1.0 / np.maximum(probs, 1e-12), 1.0)
    lr = cfg.lr if cfg.ct_lr is None else cfg.ct_lr
    schedule = None
    if cfg.lr_floor is not None:
        if not 0 <= cfg.lr_floor <= 1:
            raise ValueError(f"lr_floor must be in [0, 1] or None, got {cfg.lr_floor}")
        schedule = optax.cosine_decay_schedule(lr, cfg.ct_steps, alpha=cfg.lr_floor)
    loss = ctvae.ct_loss(cfg.negatives, weights, balance)
    params, hist = _fit(
        loss, {"vae": frozen(vae), "ct": ct}, sampler, cfg.ct_steps, jax.random.fold_in(key, 3),
        lr, path, "ct", progress, ckpt=ckpt, schedule=schedule,
    )  # fmt: skip
    if cfg.ct_tune_steps:
        # A second stage, its own checkpoints: the same loss from a fresh Adam at a constant
        # rate (a warm restart), on the same stream or one where rare factors come more often.
        tune = sampler
        if cfg.tune_balance:
            tune = shapes.sampler("train", cfg.ct_batch, balance=cfg.tune_balance)
        params, hist = _fit(
            loss, {"vae": frozen(vae), "ct": params["ct"]}, tune, cfg.ct_tune_steps,
            jax.random.fold_in(key, 33), lr, path, "ct_tune", progress, ckpt=ckpt,
        )  # fmt: skip
    return params["ct"], hist


def run(
    smoke: bool = False,
    out: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    size: int | None = None,
    steps: int | None = None,
    vae_steps: int | None = None,
    config: Config | None = None,
    codebook: str | None = None,
    eval_graphs: int | None = None,
    data: str = "embedded",
    encoder_kernel: int | None = None,
    data_path: str | Path | None = None,
    state_dir: str | Path | None = None,
) -> dict:
    """Train the MCQ-VAE, the CT layer and the baselines; write metrics and figures.

    Args:
        smoke: the small configuration (32x32 images, a few dozen steps).
        out: output folder (default ``results/ctvae``).
        seed: seed of initialisation and training (the data split is fixed).
        progress: show progress bars.
        size: image side (overrides the config; a power of two >= 16).
        steps: the CT layer's first-stage steps (overrides ``ct_steps``; the second stage
            adds ``ct_tune_steps``, and the baseline trains their sum).
        vae_steps: MCQ-VAE pretraining steps (overrides the config).
        codebook: ``"loss"`` (codebook loss) or ``"ema"`` (EMA codebook updates, van den Oord
            et al. 2017 App. A.1); overrides the config.
        eval_graphs: graphs drawn for causal mode's Monte Carlo likelihood (0: the modes);
            overrides the config.
        encoder_kernel: the MCQ-VAE encoder's kernel after the downsampling, 3 or 1
            (``MCQVAE(encoder_kernel=)``); overrides the config.
        config: a whole :class:`Config` (scripts), instead of ``SMOKE`` / ``FULL``.
        data: ``"embedded"`` (the procedural set) or a real set of :data:`DATASETS`.
        data_path: where the real set is (:func:`transition_set`).
        state_dir: folder of the training state (default ``out``; the command line passes the
            final ``--out``). The MCQ-VAE, the factor reader and the discriminative baseline
            are checkpointed in ``state_dir/checkpoints/<stage>-<hash of its settings>`` and a
            rerun resumes them; so is the CT layer, under a hash of every setting but the
            evaluation's (:data:`CT_FIELDS`), so a rerun that changes only the evaluation
            restores it. The hashes cover settings, not code: after changing a loss or a
            network in the source, start from a fresh ``--out``.

    Returns:
        The metrics written to ``metrics.json``.
    """
    cfg = config if config is not None else (SMOKE if smoke else FULL)
    if size is not None:
        cfg = dataclasses.replace(cfg, size=int(size))
    for name, value in (("steps", steps), ("vae-steps", vae_steps)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"--{name} must be a positive integer, got {value!r}")
    if steps is not None:
        cfg = dataclasses.replace(cfg, ct_steps=int(steps))
    if vae_steps is not None:
        cfg = dataclasses.replace(cfg, vae_steps=int(vae_steps))
    if codebook is not None:
        cfg = dataclasses.replace(cfg, codebook=str(codebook))
    if eval_graphs is not None:
        cfg = dataclasses.replace(cfg, eval_graphs=eval_graphs)
    if encoder_kernel is not None:
        cfg = dataclasses.replace(cfg, encoder_kernel=encoder_kernel)
    k = cfg.encoder_kernel
    if isinstance(k, bool) or k not in (1, 3):  # before any training or folder
        raise ValueError(f"Config.encoder_kernel must be 3 or 1, got {k!r}")
    for name in ("lr", "ct_lr"):  # before any training: a negative rate climbs the loss
        rate = getattr(cfg, name)
        if (rate is not None or name == "lr") and not (
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate < math.inf
        ):
            raise ValueError(f"Config.{name} must be a finite number > 0, got {rate!r}")
    if cfg.lr_floor is not None and not 0 <= cfg.lr_floor <= 1:  # before any training
        raise ValueError(f"lr_floor must be in [0, 1] or None, got {cfg.lr_floor}")
    if (
        isinstance(cfg.eval_graphs, bool)
        or int(cfg.eval_graphs) != cfg.eval_graphs
        or cfg.eval_graphs < 0
    ):
        raise ValueError(f"eval_graphs must be an integer >= 0, got {cfg.eval_graphs!r}")
    shapes = transition_set(data, data_path, cfg.size)
    _check_sample_balance(cfg)  # before any training
    _weights(cfg)  # before any training: the CT layer's loss is built after the MCQ-VAE's
    try:  # before any training: the CT layer is built after the MCQ-VAE's minutes
        ctvae.local_widths(cfg.local)
    except ValueError as err:
        raise ValueError(f"Config.local: {err}") from None
    path = output_dir(NAME, out)
    state = (Path(state_dir) if state_dir is not None else path) / "checkpoints"
    key = jax.random.key(seed)

    def ckpt(stage: str, fields: Sequence[str]) -> Path:
        return state / f"{stage}-{_fingerprint(cfg, fields, seed, f'{data}:{data_path}')}"

    t0 = time.time()
    times = {}
    vae, vae_info = train_vae(
        cfg, shapes, jax.random.fold_in(key, 1), path, progress, ckpt("vae", VAE_FIELDS)
    )
    times["vae"] = time.time() - t0

    t1 = time.time()
    train = shapes.sampler("train", cfg.ct_batch)
    ct_ckpt = ckpt("ct", CT_FIELDS)
    ct, hist = train_ct(cfg, shapes, vae, key, path, progress, ct_ckpt)
    times["ct"] = time.time() - t1

    t1 = time.time()
    baseline = PairClassifier(vae.grid, cfg.codebooks, cfg.codes, shapes.num_actions,
                              4 * cfg.hidden, key=jax.random.fold_in(key, 4))  # fmt: skip
    bparams, _ = _fit(
        pair_loss, {"vae": frozen(vae), "net": baseline}, train, cfg.ct_steps + cfg.ct_tune_steps,
        jax.random.fold_in(key, 5), cfg.lr, path, "discriminative", progress,
        ckpt=ckpt("discriminative", BASELINE_FIELDS),
    )  # fmt: skip
    baseline = bparams["net"]
    reader = FactorReader(cfg.size, shapes.cardinalities, key=jax.random.fold_in(key, 6))
    reader, _ = _fit(
        factor_loss, reader, lambda k: shapes.sample_scenes(k, cfg.vae_batch), cfg.reader_steps,
        jax.random.fold_in(key, 7), cfg.lr, path, "reader", progress,
        ckpt=ckpt("reader", READER_FIELDS),
    )  # fmt: skip
    times["baselines"] = time.time() - t1

    t1 = time.time()
    test = jax.tree_util.tree_map(
        np.asarray, shapes.sampler("test", 1).draw(jax.random.key(12345), cfg.eval_units)
    )
    metrics = {"table1": evaluate(cfg, shapes, vae, ct, baseline, reader, test)}
    metrics["data"] = data
    metrics["vae"] = vae_info
    log = "train_ct_tune.jsonl" if cfg.ct_tune_steps else "train_ct.jsonl"
    metrics["ct_last"] = _last_logged(hist, ct_ckpt, log)
    metrics["train_factor_probs"] = dict(
        zip(shapes.names, [float(p) for p in train.factor_probs], strict=True)
    )
    if cfg.sample_balance:  # the CT layer's stream (the baseline's is the natural one above)
        probs = shapes.sampler("train", 1, balance=cfg.sample_balance).factor_probs
        metrics["ct_train_factor_probs"] = dict(
            zip(shapes.names, [float(p) for p in probs], strict=True)
        )
    model = ctvae.scm(vae, ct)
    plot_interventions(model, shapes, test, cfg.repeats, path / "interventions.png")
    plot_graphs(ct, vae, shapes, test, path / "graphs.png")
    plot_accuracy(metrics["table1"], path / "factor_accuracy.png")
    plot_reconstructions(vae, test, path / "reconstructions.png")
    times["evaluation"] = time.time() - t1
    times["total"] = time.time() - t0
    metrics["seconds"] = times
    metrics["figures"] = [
        "interventions.png",
        "graphs.png",
        "factor_accuracy.png",
        "reconstructions.png",
    ]
    settings = {"smoke": smoke, "seed": seed, "data": data, "data_path": str(data_path)}
    write_metrics(path, metrics, dataclasses.asdict(cfg) | settings)
    return metrics


def _extra(parser) -> None:
    parser.add_argument("--size", type=int, default=None, help="image side (default: config)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="CT-layer steps of the first stage (the second adds the config's ct_tune_steps)",
    )
    parser.add_argument("--vae-steps", type=int, default=None, help="MCQ-VAE training steps")
    parser.add_argument(
        "--codebook",
        choices=("loss", "ema"),
        default=None,
        help="how the codes move: codebook loss (default) or EMA updates",
    )
    parser.add_argument(
        "--encoder-kernel",
        type=int,
        choices=(3, 1),
        default=None,
        help="MCQ-VAE encoder's convolutions after the downsampling: 1 (the default; a code "
        "sees its cell and 7 pixels around it) or 3 (the paper's; a code sees most of a 64x64 "
        "image)",
    )
    parser.add_argument(
        "--eval-graphs",
        type=int,
        default=None,
        help="graphs drawn for causal mode's likelihood (0: modes of mask and graph)",
    )
    parser.add_argument(
        "--data", choices=DATASETS, default="embedded", help="transition set (default: embedded)"
    )
    parser.add_argument(
        "--data-path",
        default=None,
        help="dsprites: the .npz (or a TFDS data dir); cars3d: folder of .mat files; "
        "shapes3d/smallnorb: TFDS data dir",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``jcausal experiment ctvae [--smoke] [--out DIR] [--steps N]``."""
    return run_cli(
        NAME, "CT-VAE on procedural transitions (Table 1, Figs. 5-6)", run, argv, _extra, STATE
    )


#: The training state a rerun into the same ``--out`` resumes from (kept in place, not staged).
STATE = ("checkpoints",)


__all__ = [
    "DATASETS",
    "FULL",
    "SMOKE",
    "Config",
    "evaluate",
    "main",
    "run",
    "train_vae",
    "transition_set",
]
