"""Diff-SCM experiment, training: the score model, the noisy guidance net and the oracle.

Every network is trained with :func:`jcausal.train.fit` into ``<state>/checkpoints/<name>``
(resumed by a second run into the same folder) with its training records in
``<state>/train_<name>.jsonl``. Used by :mod:`jcausal.experiments.diffscm` (digits, sec. 4)
and :mod:`jcausal.experiments.diffscm_morpho` (Morpho-MNIST, sec. 5).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from ..diffusion import Schedule, classifier_loss, eps_loss, regressor_loss
from ..nn import NoisyClassifier, Pure, UNet
from ..train import fit


def _schedule_opt(lr: float, steps: int, warmup: int = 100) -> optax.GradientTransformation:
    """Adam at a constant rate after a linear warm-up, gradients clipped at norm 1.

    Constant (no decay to a planned end) so that a run can be extended or cut short and still
    resume its checkpoints (a schedule tied to the step count would change the optimiser's
    settings); the EMA of the weights does the averaging.
    """
    warmup = max(1, min(warmup, steps // 4))
    sched = optax.linear_schedule(0.0, lr, warmup)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))


def _fit(loss, params, data, *, steps, key, batch, lr, state: Path, name: str, progress, **kw):
    return fit(
        loss,
        params,
        data,
        optimizer=_schedule_opt(lr, steps),
        steps=steps,
        key=key,
        batch_size=min(batch, len(jax.tree_util.tree_leaves(data)[0])),
        checkpoint_dir=(state / "checkpoints" / name).resolve(),
        checkpoint_every=max(1, steps // 5),
        metrics_path=state / f"train_{name}.jsonl",
        log_every=max(1, min(50, steps // 10)),
        progress=progress,
        # (steps per compiled call: fit's choice. The UNet's convolutions go through
        # jcausal.nn's channel-last ones, so it runs in fit's compiled loop: 0.50 against 0.58
        # CPU-s per batch-64 step at width 16 with one bare step per call, measured 2026-12-03.)
        **kw,
    )


def train_score(
    x01: np.ndarray,
    sched: Schedule,
    key,
    *,
    width: int,
    steps: int,
    batch: int,
    lr: float,
    ema: float,
    mults: tuple[int, ...] = (1, 2, 2),
    dropout: float,
    state: Path,
    name: str = "score",
    progress: bool = True,
) -> tuple[Pure, dict]:
    """Train the epsilon-UNet on images in ``[0, 1]`` (mapped to ``[-1, 1]``); EMA weights.

    Args:
        x01: ``(N, 28, 28, 1)`` float32 images in ``[0, 1]``.
        sched: the noise schedule.
        key: initialisation and training key.
        width: UNet base width.
        mults: UNet channel multipliers per level.
        steps: optimisation steps.
        batch: images per step.
        lr: peak learning rate.
        ema: EMA decay of the weights (the returned network is the EMA one).
        dropout: dropout rate of the residual blocks.
        state: folder of checkpoints and training records.
        name: checkpoint name.
        progress: tqdm bar.

    Returns:
        ``(net, info)``: the EMA network in inference mode (no dropout) as a :class:`Pure`, and
        ``{"final_loss": ..., "params": ...}``; ``final_loss`` is None when the run resumed a
        finished training (no step ran, so there is no loss to report).
    """
    ki, kf = jax.random.split(key)
    net = UNet(
        1,
        base=width,
        mults=mults,
        num_res=1,
        dropout=dropout,
        rngs=nnx.Rngs(params=ki, dropout=jax.random.fold_in(ki, 1)),
    )
    pure = Pure(net)

    def loss(p, b, k):
        return eps_loss(p, sched, b["x"] * 2.0 - 1.0, k)

    last, hist = _fit(
        loss,
        pure,
        {"x": x01},
        steps=steps,
        key=kf,
        batch=batch,
        lr=lr,
        state=state,
        name=name,
        progress=progress,
        ema=ema,
    )
    del last
    tail = [r["loss"] for r in hist.train[-5:]] if hist.train else []
    return hist.ema_params.eval(), {
        "final_loss": float(np.mean(tail)) if tail else None,
        "params": int(sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(net, nnx.Param)))),
    }


def train_guide(
    x01: np.ndarray,
    targets: np.ndarray,
    sched: Schedule,
    key,
    *,
    width: int,
    steps: int,
    batch: int,
    lr: float,
    state: Path,
    regression: bool = False,
    mults: tuple[int, ...] = (1, 2, 2),
    name: str = "guide",
    progress: bool = True,
) -> tuple[Pure, dict]:
    """Train the anti-causal guidance net on noised images ``x_t`` at uniform random ``t``.

    Classification (``regression=False``): ``targets`` are classes ``(N,)``, cross-entropy
    (:func:`jcausal.diffusion.classifier_loss`). Regression: ``targets`` ``(N, d)``
    standardised real parents, the net outputs their means, trained by the Gaussian negative
    log-likelihood with unit variance (:func:`jcausal.diffusion.regressor_loss`).

    Returns:
        ``(net, info)``: the trained net (inference mode) and ``{"final_loss", "accuracy"}``
        (accuracy over the last logged batches, classification only); ``final_loss`` is None
        when a finished training was resumed.
    """
    ki, kf = jax.random.split(key)
    targets = np.asarray(targets)
    out = {"out_dim": targets.shape[1]} if regression else {"num_classes": 10}
    net = NoisyClassifier(
        **out,
        base=width,
        mults=mults,
        rngs=nnx.Rngs(params=ki, dropout=jax.random.fold_in(ki, 1)),
    )
    pure = Pure(net)

    def loss(p, b, k):
        x0 = b["x"] * 2.0 - 1.0
        if regression:
            return regressor_loss(p, sched, x0, b["y"], k)
        return classifier_loss(p, sched, x0, b["y"], k)

    data = {"x": x01, "y": targets.astype(np.float32 if regression else np.int32)}
    params, hist = _fit(
        loss,
        pure,
        data,
        steps=steps,
        key=kf,
        batch=batch,
        lr=lr,
        state=state,
        name=name,
        progress=progress,
    )
    tail = hist.train[-5:]
    info = {"final_loss": float(np.mean([r["loss"] for r in tail])) if tail else None}
    if not regression and tail:
        info["train_accuracy_noised"] = float(np.mean([r["accuracy"] for r in tail]))
    return params.eval(), info


__all__ = ["train_guide", "train_score"]
