"""Benchmark the Deep SCM flows: ELBO training speed and flow log-prob + gradient throughput.

1. ELBO training steps per second of the full Morpho-MNIST model
   (:mod:`jcausal.deepscm.morpho`, ``-[log p(t) + log p(i | t) + ELBO(x | t, i)]``, 4
   particles) at batch 256, for encoder/decoder width 16 (our experiment) and 64 (the paper's
   appendix A), with the parents fed to every layer (FiLM, our experiment) and to the first
   layer only (the paper), float32: one jitted step (loss, gradient and the optax update).
2. Log-prob + gradient (w.r.t. the flow parameters) throughput, in samples per second, of the
   attribute mechanisms built with the SAME architecture in jcausal (:mod:`jcausal.flows`), in
   flowjax and in zuko (PyTorch), each optional:

   * ``thickness``: ``t = exp(loc + scale * RQS(u))``, an unconditional rational-quadratic
     spline (8 bins on [-3, 3], identity tails) with a fixed normalisation;
     ``thickness_lrs`` is jcausal's linear-rational spline of the paper (no peer has one; its
     ratio is against the peers' quadratic spline);
   * ``intensity_affine``: ``i = 64 + 191 sigmoid(shift(c) + exp(log_scale(c)) u)`` with a
     linear context map of ``c = (log t - loc) / scale`` (eq. A.2, the full model);
   * ``intensity_spline``: the same with a conditional spline whose 8-bin parameters come from
     an MLP ``1 -> 16 -> params`` (leaky ReLU 0.1) of ``c``.

   flowjax's conditional flows use its ``MaskedAutoregressive`` bijection (for one variable its
   masked MLP depends on the condition only); zuko's use its ``MonotonicRQSTransform`` and
   ``zuko.nn.MLP`` inside a ``zuko.distributions.NormalizingFlow``. Before timing, the
   implementations are checked: with the spline knots / affine weights copied across, their
   log-probs agree (max abs difference reported), and every density integrates to 1 on a grid.

Compile time (first call) is reported separately and excluded; each timing blocks on its
result; the libraries are timed in turn within each repeat so they share the machine's load,
and the best of the repeats is reported (the median too). Torch runs eagerly with its own
thread pool (``torch.get_num_threads()`` is recorded).

    python benchmarks/flows.py --out benchmarks/results/flows.json
    python benchmarks/flows.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _machine import machine_info, version  # benchmarks/ is on sys.path
from scipy import integrate

from jcausal import flows
from jcausal.data import sample_attributes
from jcausal.deepscm import morpho

NUM_BINS = 8
BOUND = 3.0
WIDTH = 16  # context network of the conditional spline
I_LOW, I_RANGE = 64.0, 191.0  # intensity = 64 + 191 sigmoid(.), Morpho-MNIST's [64, 255]
PERTURB = 0.3  # std of the random parameters (zero parameters are the identity spline)
MECHANISMS = ("thickness", "thickness_lrs", "intensity_affine", "intensity_spline")


# ----------------------------------------------------------------------------------------------
# timing


def block(tree: Any) -> Any:
    """Wait for every JAX array in ``tree``."""
    return jax.tree_util.tree_map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree
    )


def first_call(call: Callable[[], Any]) -> float:
    """Seconds of the first (compiling) call; ``call`` must block on its result."""
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


def calibrate(call: Callable[[], Any], target: float = 0.25) -> int:
    """Calls per timed repeat so that one repeat lasts about ``target`` seconds."""
    t = time.perf_counter()
    call()
    dt = max(time.perf_counter() - t, 1e-6)
    return max(1, min(1000, round(target / dt)))


def time_calls(call: Callable[[], Any], number: int) -> float:
    """Seconds per call, averaged over ``number`` back-to-back blocking calls."""
    t = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - t) / number


# ----------------------------------------------------------------------------------------------
# data and normalisations


def attribute_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Morpho-MNIST (thickness, intensity) pairs of eq. (7), float32."""
    a = sample_attributes(n, seed=seed)
    return a["thickness"].astype(np.float32), a["intensity"].astype(np.float32)


def normalisations(seed: int = 0) -> tuple[float, float]:
    """Fixed ``(loc, scale)`` of ``log t`` (log-space whitening, as in the model)."""
    t, _ = attribute_data(10_000, seed)
    loc, scale = flows.normalisation(t, "exp")
    return float(loc), float(scale)


def _perturb(tree, key, std=PERTURB):
    """Add ``std`` N(0, 1) noise to every trainable leaf (the Normalise layers stay fixed)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    out = [
        leaf + std * jax.random.normal(k, leaf.shape, leaf.dtype)
        if eqx.is_inexact_array(leaf)
        else leaf
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def _perturb_flow(flow: flows.Flow, key) -> flows.Flow:
    """Random parameters for the trainable layers of ``flow``.

    Not Normalise, not the context normalisation, so the splines are far from the identity.
    """
    keys = jax.random.split(key, len(flow.layers))
    layers = tuple(
        eqx.tree_at(lambda m: m.params, layer, _perturb(layer.params, k))
        if hasattr(layer, "params")
        else layer
        for layer, k in zip(flow.layers, keys, strict=True)
    )
    return eqx.tree_at(lambda f: f.layers, flow, layers)


# ----------------------------------------------------------------------------------------------
# jcausal


def jcausal_flow(mechanism: str, key, t_norm: tuple[float, float]) -> flows.Flow:
    """The flow (parameters of a ``jc.Invertible``) of one attribute mechanism."""
    kinit, kpert = jax.random.split(key)
    if mechanism in ("thickness", "thickness_lrs"):
        order = "quadratic" if mechanism == "thickness" else "linear"
        mech = flows.spline_mechanism(
            kinit, num_bins=NUM_BINS, bound=BOUND, order=order, constraint="exp", normalise=t_norm
        )
    elif mechanism == "intensity_affine":
        mech = flows.affine_mechanism(
            kinit, ["t"], depth=0, constraint="sigmoid", normalise=(I_LOW, I_RANGE),
            log_parents=["t"], context_normalise=t_norm,
        )  # fmt: skip
    elif mechanism == "intensity_spline":
        mech = flows.spline_mechanism(
            kinit, ["t"], num_bins=NUM_BINS, bound=BOUND, order="quadratic", width=WIDTH,
            depth=1, constraint="sigmoid", normalise=(I_LOW, I_RANGE), log_parents=["t"],
            context_normalise=t_norm,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown mechanism {mechanism!r}; choose from {MECHANISMS}")
    return _perturb_flow(mech.params, kpert)


def jcausal_log_prob(flow: flows.Flow, x, t=None):
    """Per-unit log-density of ``x`` (``t``: the parent, for the intensity flows)."""
    mech = flows.flow_mechanism(flow)
    if t is None:
        return jax.vmap(lambda xi: mech.log_prob(xi, {}))(x)
    return jax.vmap(lambda xi, ti: mech.log_prob(xi, {"t": ti}))(x, t)


class JcausalCase:
    """jit-compiled ``-mean log p`` and its gradient w.r.t. the flow parameters."""

    name = "jcausal"

    def __init__(self, flow: flows.Flow, conditional: bool):
        self.flow = flow
        self.conditional = conditional

        def loss(f, x, t):
            return -jnp.mean(jcausal_log_prob(f, x, t if conditional else None))

        self._vg = eqx.filter_jit(eqx.filter_value_and_grad(loss))
        self._lp = eqx.filter_jit(
            lambda f, x, t: jcausal_log_prob(f, x, t if conditional else None)
        )

    def log_prob(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.asarray(self._lp(self.flow, jnp.asarray(x), jnp.asarray(t)), np.float64)

    def prepare(self, x: np.ndarray, t: np.ndarray) -> Callable[[], Any]:
        x, t = jnp.asarray(x), jnp.asarray(t)
        return lambda: block(self._vg(self.flow, x, t))


# ----------------------------------------------------------------------------------------------
# flowjax


def _flowjax():
    try:
        import flowjax
        import paramax

        return flowjax, paramax
    except ImportError:
        return None


class FlowjaxCase:
    """The same flow in flowjax: ``Transformed(StandardNormal, Chain([...]))``.

    The fixed normalisations are wrapped in ``paramax.NonTrainable`` (no gradient), like
    jcausal's ``Normalise``; conditional flows use ``MaskedAutoregressive`` with ``dim=1``.
    """

    name = "flowjax"

    def __init__(self, mechanism: str, ref: flows.Flow, t_norm, key):
        import flowjax.bijections as fb
        import flowjax.distributions as fd
        import paramax

        self.conditional = mechanism.startswith("intensity")
        self.t_norm = t_norm
        if mechanism in ("thickness", "thickness_lrs"):
            spline = ref.layers[-1](jnp.zeros((0,)))
            rqs = fb.RationalQuadraticSpline(knots=NUM_BINS - 1, interval=BOUND)
            # Copy the knots of jcausal's (distrax) spline: identical function.
            rqs = eqx.tree_at(
                lambda b: (b.x_pos, b.y_pos, b.derivatives),
                rqs,
                (spline.x_pos, spline.y_pos, spline.knot_slopes),
            )
            norm = paramax.non_trainable(fb.Affine(t_norm[0], t_norm[1]))
            self.dist = fd.Transformed(fd.StandardNormal(()), fb.Chain([rqs, norm, fb.Exp()]))
        else:
            if mechanism == "intensity_affine":
                # exp-parameterised scale, as jcausal's (and Deep SCM's) conditional affine.
                transformer = eqx.tree_at(
                    lambda a: a.scale, fb.Affine(), paramax.Parameterize(jnp.exp, jnp.zeros(()))
                )
                depth = 0
            else:
                transformer = fb.RationalQuadraticSpline(knots=NUM_BINS - 1, interval=BOUND)
                depth = 1
            maf = fb.MaskedAutoregressive(
                key, transformer=transformer, dim=1, cond_dim=1, nn_width=WIDTH,
                nn_depth=depth, nn_activation=lambda x: jax.nn.leaky_relu(x, 0.1),
            )  # fmt: skip
            if mechanism == "intensity_affine":
                maf = self._copy_affine(maf, ref)
            else:
                maf = _perturb(maf, jax.random.fold_in(key, 1))
            norm = paramax.non_trainable(fb.Affine(jnp.full(1, I_LOW), jnp.full(1, I_RANGE)))
            chain = fb.Chain([maf, fb.Sigmoid((1,)), norm])
            self.dist = fd.Transformed(fd.StandardNormal((1,)), chain)

        def log_prob(dist, x, t):
            if not self.conditional:
                return dist.log_prob(x)
            c = (jnp.log(t) - t_norm[0]) / t_norm[1]
            return dist.log_prob(x[:, None], c[:, None])

        self._log_prob = log_prob
        self._vg = eqx.filter_jit(
            eqx.filter_value_and_grad(lambda d, x, t: -jnp.mean(log_prob(d, x, t)))
        )
        self._lp = eqx.filter_jit(log_prob)

    @staticmethod
    def _copy_affine(maf, ref: flows.Flow):
        """Weights of jcausal's linear context map ``theta = bias + W c + b`` in the masked layer.

        The masked linear layer's inputs are ``[x, c]``; the ``x`` column is masked out.
        """
        cond = ref.layers[-1].params
        lin = cond.net.layers[0]
        layer = maf.masked_autoregressive_mlp.layers[0]
        weight = layer.weight.args[1].at[:, 1].set(lin.weight[:, 0])
        return eqx.tree_at(
            lambda m: (
                m.masked_autoregressive_mlp.layers[0].weight.args[1],
                m.masked_autoregressive_mlp.layers[0].bias,
            ),
            maf,
            (weight, cond.bias + lin.bias),
        )

    def log_prob(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.asarray(self._lp(self.dist, jnp.asarray(x), jnp.asarray(t)), np.float64)

    def prepare(self, x: np.ndarray, t: np.ndarray) -> Callable[[], Any]:
        x, t = jnp.asarray(x), jnp.asarray(t)
        return lambda: block(self._vg(self.dist, x, t))


# ----------------------------------------------------------------------------------------------
# zuko (PyTorch)


def _torch():
    try:
        import torch
        import zuko

        return torch, zuko
    except ImportError:
        return None


def _zuko_raw(values: np.ndarray, slope: float, factor: float) -> np.ndarray:
    """Invert zuko's soft clipping ``r / (1 + |factor r / log slope|)``."""
    c = factor / abs(math.log(slope))
    if np.any(c * np.abs(values) >= 1):
        raise ValueError("spline parameters too extreme to copy into zuko's parameterisation")
    return values / (1 - c * np.abs(values))


class ZukoCase:
    """The same flow in zuko: a ``NormalizingFlow`` of a ``ComposedTransform`` (data -> noise).

    Parameters are ``torch.nn.Parameter`` (float32); each call builds the transforms from them
    (as zuko's lazy flows do), evaluates ``-mean log p`` and ``torch.autograd.grad``.
    """

    name = "zuko"

    def __init__(self, mechanism: str, ref: flows.Flow, t_norm, seed: int):
        torch, zuko = _torch()
        self.torch, self.zuko = torch, zuko
        self.mechanism = mechanism
        self.t_norm = t_norm
        self.conditional = mechanism.startswith("intensity")
        gen = torch.Generator().manual_seed(seed)
        p = torch.nn.Parameter
        if mechanism in ("thickness", "thickness_lrs"):
            spline = ref.layers[-1](jnp.zeros((0,)))
            w = np.diff(np.asarray(spline.x_pos, np.float64)) / (2 * BOUND)
            h = np.diff(np.asarray(spline.y_pos, np.float64)) / (2 * BOUND)
            d = np.log(np.asarray(spline.knot_slopes, np.float64)[1:-1])
            lw, lh = np.log(w) - np.log(w).mean(), np.log(h) - np.log(h).mean()
            self.params = [
                p(torch.tensor(_zuko_raw(v, 1e-3, f), dtype=torch.float32))
                for v, f in ((lw, 2.0), (lh, 2.0), (d, 1.0))
            ]
        elif mechanism == "intensity_affine":
            cond = ref.layers[-1].params
            lin = cond.net.layers[0]
            self.net = torch.nn.Linear(1, 2)
            with torch.no_grad():
                self.net.weight.copy_(torch.tensor(np.asarray(lin.weight)))
                self.net.bias.copy_(torch.tensor(np.asarray(cond.bias + lin.bias)))
            self.params = list(self.net.parameters())
        else:
            torch.manual_seed(seed)
            self.net = zuko.nn.MLP(
                1, 3 * NUM_BINS - 1, [WIDTH], activation=lambda: torch.nn.LeakyReLU(0.1)
            )
            with torch.no_grad():
                for q in self.net.parameters():
                    q.add_(PERTURB * torch.randn(q.shape, generator=gen))
            self.params = list(self.net.parameters())

    def dist(self, t=None):
        """The ``NormalizingFlow`` (batched over the contexts of ``t`` when conditional)."""
        torch, zuko = self.torch, self.zuko
        T = torch.distributions.transforms
        zt = zuko.transforms
        base = torch.distributions.Normal(torch.tensor(0.0), torch.tensor(1.0))
        if not self.conditional:
            rqs = zt.MonotonicRQSTransform(*self.params, bound=BOUND)
            norm = T.AffineTransform(self.t_norm[0], self.t_norm[1])
            forward = zt.ComposedTransform(rqs, norm, T.ExpTransform())
            return zuko.distributions.NormalizingFlow(forward.inv, base)
        c = ((torch.log(t) - self.t_norm[0]) / self.t_norm[1])[:, None]
        theta = self.net(c)
        if self.mechanism == "intensity_affine":
            core = T.AffineTransform(theta[:, 0], torch.exp(theta[:, 1]))
        else:
            k = NUM_BINS
            core = zt.MonotonicRQSTransform(
                theta[:, :k], theta[:, k : 2 * k], theta[:, 2 * k :], bound=BOUND
            )
        forward = zt.ComposedTransform(
            core, T.SigmoidTransform(), T.AffineTransform(I_LOW, I_RANGE)
        )
        return zuko.distributions.NormalizingFlow(forward.inv, base)

    def _log_prob(self, x, t):
        return self.dist(t if self.conditional else None).log_prob(x)

    def log_prob(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            lp = self._log_prob(torch.tensor(x), torch.tensor(t))
        return lp.double().numpy()

    def prepare(self, x: np.ndarray, t: np.ndarray) -> Callable[[], Any]:
        torch = self.torch
        x, t = torch.tensor(x), torch.tensor(t)

        def call():
            loss = -self._log_prob(x, t).mean()
            return torch.autograd.grad(loss, self.params)

        return call


# ----------------------------------------------------------------------------------------------
# checks


def normaliser(case, mechanism: str, t_norm, contexts: np.ndarray) -> list[float]:
    """``∫ p(x | t) dx`` for each context ``t`` (one value for thickness), by the trapezoid rule.

    The rule runs in the unconstrained variable ``v`` (``log t``, or the logit of the intensity
    rescaled to (0, 1)) with the constraint's Jacobian. ``v`` is recomputed in float64 from the
    float32 points actually evaluated, so float32 rounding of ``x`` does not bias the integral.
    """
    if mechanism.startswith("thickness"):
        grid = t_norm[0] + t_norm[1] * np.linspace(-14.0, 14.0, 200_001)  # +-14 sd of log t
        x = np.unique(np.exp(grid).astype(np.float32))
        v = np.log(x.astype(np.float64))
        lp = case.log_prob(x, np.ones_like(x))
        return [float(integrate.trapezoid(np.exp(lp) * x, x=v))]  # dt = t dv
    grid = np.linspace(-25.0, 25.0, 200_001)
    x = np.unique((I_LOW + I_RANGE / (1.0 + np.exp(-grid))).astype(np.float32))
    s = (x.astype(np.float64) - I_LOW) / I_RANGE
    x, s = x[(s > 0) & (s < 1)], s[(s > 0) & (s < 1)]  # float32 rounding onto the ends
    v = np.log(s) - np.log1p(-s)
    jac = I_RANGE * s * (1 - s)  # di/dv
    out = []
    for tc in contexts:
        lp = case.log_prob(x, np.full(x.shape, tc, np.float32))
        out.append(float(integrate.trapezoid(np.exp(lp) * jac, x=v)))
    return out


def check(cases: dict, mechanism: str, t_norm, seed: int) -> dict[str, Any]:
    """Agreement of the peers' log-probs with jcausal's, and the normalisation of every density.

    Log-probs are compared where parameters are matched.
    """
    t, i = attribute_data(10_000, seed + 7)
    x = t if mechanism.startswith("thickness") else i
    ctx = np.asarray([1.2, 2.5, 4.5], np.float32)
    out: dict[str, Any] = {"matched_parameters": mechanism in ("thickness", "intensity_affine")}
    ref = cases["jcausal"].log_prob(x, t)
    out["jcausal_finite"] = bool(np.all(np.isfinite(ref)))
    out["normaliser"] = {}
    for name, case in cases.items():
        out["normaliser"][name] = normaliser(case, mechanism, t_norm, ctx)
        if name != "jcausal" and out["matched_parameters"]:
            lp = case.log_prob(x, t)
            err = np.abs(lp - ref)
            out[f"max_abs_diff_{name}"] = float(np.max(err))
            out[f"median_abs_diff_{name}"] = float(np.median(err))
            out[f"x_at_max_abs_diff_{name}"] = float(x[np.argmax(err)])
            out[f"mean_log_prob_{name}"] = float(np.mean(lp))
    out["mean_log_prob_jcausal"] = float(np.mean(ref))
    out["normaliser_contexts_t"] = None if mechanism.startswith("thickness") else ctx.tolist()
    return out


# ----------------------------------------------------------------------------------------------
# part 2: flow throughput


def build_cases(mechanism: str, t_norm, seed: int, peers: dict) -> dict:
    key = jax.random.key(seed)
    ref = jcausal_flow(mechanism, key, t_norm)
    cases = {"jcausal": JcausalCase(ref, mechanism.startswith("intensity"))}
    if peers["flowjax"]["available"]:
        cases["flowjax"] = FlowjaxCase(mechanism, ref, t_norm, jax.random.fold_in(key, 1))
    if peers["zuko"]["available"]:
        cases["zuko"] = ZukoCase(mechanism, ref, t_norm, seed)
    return cases


def flow_throughput(mechanism, batches, repeats, t_norm, seed, peers) -> tuple[dict, list]:
    """Checks and per-batch timings of one mechanism in every available library."""
    cases = build_cases(mechanism, t_norm, seed, peers)
    checks = check(cases, mechanism, t_norm, seed)
    rows = []
    for n in batches:
        t, i = attribute_data(n, seed + 1)
        x = t if mechanism.startswith("thickness") else i
        calls = {name: c.prepare(x, t) for name, c in cases.items()}
        compile_s = {name: first_call(call) for name, call in calls.items()}
        number = {name: calibrate(call) for name, call in calls.items()}
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, call in calls.items():  # interleaved: the libraries share the load
                times[name].append(time_calls(call, number[name]))
        row: dict[str, Any] = {"mechanism": mechanism, "batch": n}
        for name in calls:
            best, med = min(times[name]), float(np.median(times[name]))
            row[name] = {
                "best_s": best,
                "median_s": med,
                "samples_per_s": n / best,
                "samples_per_s_median": n / med,
                "first_call_s": compile_s[name],
                "calls_per_repeat": number[name],
            }
        for peer in ("flowjax", "zuko"):
            if peer in row:
                # > 1: jcausal is faster.
                row[f"speedup_vs_{peer}"] = (
                    row["jcausal"]["samples_per_s"] / (row[peer]["samples_per_s"])
                )
        rows.append(row)
        print(_flow_line(row), flush=True)
    return checks, rows


def _flow_line(row: dict) -> str:
    parts = [f"{row['mechanism']:17s} n={row['batch']:>7,d}"]
    for name in ("jcausal", "flowjax", "zuko"):
        if name in row:
            parts.append(f"{name} {row[name]['samples_per_s']:>12,.0f}/s")
        else:
            parts.append(f"{name} {'-':>14s}")
    for peer in ("flowjax", "zuko"):
        r = row.get(f"speedup_vs_{peer}")
        parts.append(f"jc/{peer[:2]} {'-' if r is None else f'{r:5.2f}x':>6s}")
    return " | ".join(parts)


# ----------------------------------------------------------------------------------------------
# part 1: ELBO training


def elbo_batch(source: str, batch: int, seed: int) -> dict[str, np.ndarray]:
    """``{"t", "i", "x"}`` of ``batch`` units.

    Morpho-MNIST from the experiment's embedded digits, or random uint8 images with attributes of
    eq. (7).
    """
    if source == "morpho":
        from jcausal.experiments.deepscm import load_data

        data, _ = load_data(batch, 16)
        return {k: data[k][:batch] for k in ("t", "i", "x")}
    t, i = attribute_data(batch, seed)
    x = np.random.default_rng(seed).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
    return {"t": t, "i": i, "x": x}


def elbo_training(
    width: int, data: dict, steps: int, repeats: int, seed: int, condition: str = "film"
) -> dict[str, Any]:
    """Steps per second of the jitted train step of the full model.

    At this width and wiring of the parents into the encoder and decoder (``"film"`` or
    ``"input"``).
    """
    kind = "full"
    key = jax.random.key(seed)
    scm = morpho.model(
        kind, key, data, latent=16, width=width, condition=condition, encoder_condition=condition
    )
    dyn, static = eqx.partition(scm, eqx.is_inexact_array)
    loss_fn = morpho.loss_fn(particles=4)
    opt = morpho.optimizer(5e-3, 1e-4)
    state = opt.init(dyn)
    batch = jax.tree_util.tree_map(jnp.asarray, data)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(dyn))

    @eqx.filter_jit
    def step(d, s, b, k):
        (loss, _), grads = eqx.filter_value_and_grad(
            lambda d_: loss_fn(eqx.combine(d_, static), b, k), has_aux=True
        )(d)
        updates, s = opt.update(grads, s, d)
        return optax.apply_updates(d, updates), s, loss

    carry = {"d": dyn, "s": state}

    def run(j):
        d, s, loss = step(carry["d"], carry["s"], batch, jax.random.fold_in(key, j))
        block(loss)
        carry["d"], carry["s"] = d, s
        return float(loss)

    compile_s = first_call(lambda: run(0))
    run(1)  # a second warm-up call: buffers and thread pools settle
    times = []
    losses = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for j in range(steps):
            losses.append(run(2 + r * steps + j))
        times.append((time.perf_counter() - t0) / steps)
    best, med = min(times), float(np.median(times))
    row = {
        "model": kind,
        "width": width,
        "condition": condition,
        "batch": len(data["t"]),
        "particles": 4,
        "dtype": "float32",
        "parameters": n_params,
        "compile_s": compile_s,
        "step_s_best": best,
        "step_s_median": med,
        "steps_per_s": 1.0 / best,
        "steps_per_s_median": 1.0 / med,
        "images_per_s": len(data["t"]) / best,
        "steps_per_repeat": steps,
        "repeats": repeats,
        "loss_first_last": [losses[0], losses[-1]],
        "loss_finite": bool(np.all(np.isfinite(losses))),
    }
    print(
        f"ELBO full width={width:3d} {condition:5s} batch={row['batch']} particles=4: "
        f"{row['steps_per_s']:.2f} steps/s (median {row['steps_per_s_median']:.2f}), "
        f"{row['images_per_s']:,.0f} images/s, compile {compile_s:.1f} s, "
        f"{n_params:,} parameters",
        flush=True,
    )
    return row


# ----------------------------------------------------------------------------------------------
# environment


def peer_status(skip: set[str]) -> dict[str, dict[str, Any]]:
    """Which peer libraries are importable (and their versions)."""
    out: dict[str, dict[str, Any]] = {}
    fj = None if "flowjax" in skip else _flowjax()
    if fj is None:
        why = "skipped (--skip)" if "flowjax" in skip else "not installed: pip install flowjax"
        out["flowjax"] = {"available": False, "reason": why}
    else:
        out["flowjax"] = {
            "available": True,
            "flowjax": version("flowjax"),
            "paramax": version("paramax"),
        }
    tz = None if "zuko" in skip else _torch()
    if tz is None:
        why = (
            "skipped (--skip)"
            if "zuko" in skip
            else "not installed: pip install torch (CPU wheel) zuko"
        )
        out["zuko"] = {"available": False, "reason": why}
    else:
        torch, zuko = tz
        out["zuko"] = {
            "available": True,
            "torch": torch.__version__,
            "zuko": zuko.__version__,
            "torch_threads": torch.get_num_threads(),
        }
    return out


# ----------------------------------------------------------------------------------------------
# report


def print_table(elbo: list[dict], rows: list[dict], checks: dict) -> None:
    print("\nELBO training, full model, float32, 4 particles")
    print(f"{'width':>5s} {'cond':>5s} {'batch':>5s} {'steps/s':>8s} {'median':>8s} "
          f"{'images/s':>9s} {'compile s':>9s}")  # fmt: skip
    for r in elbo:
        print(
            f"{r['width']:5d} {r['condition']:>5s} {r['batch']:5d} {r['steps_per_s']:8.2f} "
            f"{r['steps_per_s_median']:8.2f} {r['images_per_s']:9,.0f} {r['compile_s']:9.1f}"
        )
    print("\nFlow log-prob + gradient throughput (samples/s, best of repeats; ratio > 1: "
          "jcausal faster)")  # fmt: skip
    head = f"{'mechanism':17s} {'batch':>7s} {'jcausal':>12s} {'flowjax':>12s} {'zuko':>12s}"
    print(head + f" {'jc/flowjax':>10s} {'jc/zuko':>8s}")
    for r in rows:
        cells = [
            f"{r[name]['samples_per_s']:12,.0f}" if name in r else f"{'-':>12s}"
            for name in ("jcausal", "flowjax", "zuko")
        ]
        ratios = [
            f"{r[k]:{w}.2f}" if k in r else f"{'-':>{w}s}"
            for k, w in (("speedup_vs_flowjax", 10), ("speedup_vs_zuko", 8))
        ]
        print(f"{r['mechanism']:17s} {r['batch']:7d} {' '.join(cells)} {' '.join(ratios)}")
    print("\nAgreement (max |log p - log p_jcausal| with copied parameters; ∫ p = 1)")
    for mech, c in checks.items():
        diffs = {k[len("max_abs_diff_") :]: v for k, v in c.items() if k.startswith("max_abs")}
        diff_txt = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) or (
            "no peer" if c["matched_parameters"] else "not matched"
        )
        norm_txt = ", ".join(
            f"{k} [{', '.join(f'{z:.6f}' for z in v)}]" for k, v in c["normaliser"].items()
        )
        print(f"  {mech:17s} diff: {diff_txt} | normaliser: {norm_txt}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS), choices=MECHANISMS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--widths", type=int, nargs="*", default=[16, 64])
    parser.add_argument(
        "--conditions", nargs="+", default=["film", "input"], choices=["film", "input"],
        help="wiring of (t, i) into the encoder/decoder for the ELBO timing",
    )  # fmt: skip
    parser.add_argument("--elbo-batch", type=int, default=256)
    parser.add_argument("--elbo-steps", type=int, default=5, help="train steps per repeat")
    parser.add_argument("--elbo-repeats", type=int, default=3)
    parser.add_argument(
        "--data",
        choices=["morpho", "random"],
        default="morpho",
        help="ELBO batch: the experiment's Morpho-MNIST data or random uint8 images",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["flowjax", "zuko"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/flows.json")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="batches 256 and 4096, 2 repeats; ELBO at width 16, batch 64, 2 steps",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batches = [256, 4096]
        args.repeats = 2
        args.widths = [16]
        args.conditions = ["film"]
        args.elbo_batch = 64
        args.elbo_steps = 2
        args.elbo_repeats = 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    env = machine_info("equinox", "distrax", "optax", "flowjax", "torch", "zuko")
    peers = peer_status(set(args.skip))
    print(json.dumps({k: env[k] for k in ("platform", "cpu_count", "load_average_1min")}))
    print("peers:", json.dumps(peers))

    t_norm = normalisations(args.seed)
    checks, rows = {}, []
    for mech in args.mechanisms:
        checks[mech], r = flow_throughput(
            mech, args.batches, args.repeats, t_norm, args.seed, peers
        )
        rows += r

    elbo = []
    if args.widths:
        data = elbo_batch(args.data, args.elbo_batch, args.seed)
        for w in args.widths:
            for c in args.conditions:
                elbo.append(
                    elbo_training(w, data, args.elbo_steps, args.elbo_repeats, args.seed, c)
                )

    print_table(elbo, rows, checks)
    result = {
        "env": env,
        "peers": peers,
        "config": vars(args) | {"num_bins": NUM_BINS, "bound": BOUND, "context_width": WIDTH,
                                "thickness_normalisation": t_norm,
                                "intensity_affine": [I_LOW, I_RANGE]},
        "elbo_training": elbo,
        "flow_checks": checks,
        "flow_throughput": rows,
    }  # fmt: skip
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
