"""One contract for every mechanism class, the way flowjax tests every bijection.

Each registry entry is a small SCM whose node ``"y"`` uses the mechanism under test (its parents
are roots). Every entry goes through the same checks: sampling shapes, abduction followed by the
mechanism's forward map (exact round trip where the mechanism claims it), the counterfactual
shortcut against eq. (6), the likelihood (exact or bounded), jit / vmap / grad through the
engine, training-style filtering (``eqx.partition``), and bad input named by node. The last
test asserts that the registry covers every ``Mechanism`` subclass defined in ``jcausal``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal
import jcausal as jc
from jcausal import flows
from jcausal.ctvae import CTLayer
from jcausal.diffusion import Schedule
from jcausal.image import VAEImage, VQTransition
from jcausal.nn import MCQVAE
from jcausal.scm import Mechanism

KEY = jax.random.key(0)
N = 6


# ----------------------------------------------------------------------------------------------
# registry


def _linear(p, pa):
    return p * pa["x"]


def _logits(p, pa):
    return p["a"] * pa["x"] + p["b"]


def _vector_logits(p, pa):
    return p["a"][:, None] * pa["x"] + p["b"]


def _affine_bijector(p, pa):
    return distrax.ScalarAffine(shift=p["s"] * pa["x"], scale=jnp.exp(p["log_scale"]))


def _amortized_fn(p, pa, u):
    return jnp.tanh(p * pa["x"]) + u


def _amortized_encoder_exact(p, value, pa):
    return value - jnp.tanh(p * pa["x"])


def _amortized_encoder_q(p, value, pa):
    return distrax.Normal(value - jnp.tanh(p * pa["x"]), 0.1)


class _TinyEncoder(eqx.Module):
    w: jax.Array

    def __call__(self, y, ctx):
        h = jnp.concatenate([y.ravel(), ctx])
        out = self.w @ h
        return out[:2], out[2:] - 2.0


class _TinyDecoder(eqx.Module):
    w: jax.Array

    def __call__(self, z, ctx):
        return (self.w @ jnp.concatenate([z, ctx])).reshape(3, 3)


def _ctx(pa):
    return (pa["x"] - 1.0)[None]


def _vq_logits(ct, codec, pa):
    return ct(codec.codes(pa["x"]), jnp.asarray(pa["a"], jnp.int32))


def _vq_transition_scm(key):
    k1, k2 = jax.random.split(key)
    codec = MCQVAE(16, dim=4, num_codebooks=2, num_codes=3, width=4, key=k1)
    ct = CTLayer(codec.grid, 2, 3, 3, hidden=8, layers=1, identity=False, key=k2)
    box = distrax.Uniform(jnp.zeros((16, 16, 3)), jnp.ones((16, 16, 3)))
    return jc.SCM(
        x=jc.Root(distrax.Independent(box, 3)),
        a=jc.Root(distrax.Categorical(logits=jnp.zeros(3))),
        y=VQTransition(codec, _vq_logits, ct, ["x", "a"]),
    )


class _TinyEps(eqx.Module):
    w: jax.Array

    def __call__(self, x, t):
        return jnp.tanh(self.w[0] * x + self.w[1] * jnp.mean(x) + 0.001 * t)


class _TinyRegressor(eqx.Module):
    w: jax.Array

    def __call__(self, x, t):
        return self.w @ x.reshape(-1)


def _diffusion(key):
    # Guided abduction with exact inversion: forward(pa, abduct(x, pa)) == x for any scale.
    return jc.DiffusionImage(
        _TinyEps(jnp.array([1.5, 0.5])),
        _TinyRegressor(0.5 * jax.random.normal(key, (1, 9))),
        Schedule.linear(20),
        ["x"],
        kind="gaussian",
        scale=0.5,
        steps=5,
        exact=True,
        abduct_guided=True,
        image_shape=(3, 3, 1),
    )


def _root_x():
    return jc.Root(distrax.Normal(1.0, 0.5))


@dataclass
class Entry:
    name: str
    scm: jc.SCM
    roundtrip: bool  # forward(parents, abduct(value, parents)) reproduces the value
    likelihood: str  # "exact", "bound" or "none"
    bad_value: object | None = None  # an out-of-support value of y, if it has a support check

    @property
    def mech(self) -> Mechanism:
        return self.scm.mechanisms["y"]


def registry() -> list[Entry]:
    k = jax.random.split(KEY, 4)
    vae = VAEImage(
        _TinyEncoder(0.05 * jax.random.normal(k[0], (4, 10))),
        _TinyDecoder(0.5 * jax.random.normal(k[1], (9, 3))),
        _ctx,
        ["x"],
        latent=2,
        image_shape=(3, 3),
    )
    return [
        Entry("Root", jc.SCM(y=jc.Root(distrax.Normal(0.0, 2.0))), True, "exact"),
        Entry(
            "Root-categorical",
            jc.SCM(y=jc.Root(distrax.Categorical(logits=jnp.array([0.1, 0.2, -0.3])))),
            True,
            "exact",
            bad_value=3,
        ),
        Entry(
            "Additive",
            jc.SCM(x=_root_x(), y=jc.Additive(_linear, 2.0, distrax.Normal(0.0, 0.3), ["x"])),
            True,
            "exact",
        ),
        Entry(
            "Invertible",
            jc.SCM(
                x=_root_x(),
                y=jc.Invertible(
                    _affine_bijector,
                    {"s": 0.7, "log_scale": -0.2},
                    distrax.Normal(0.0, 1.0),
                    ["x"],
                ),
            ),
            True,
            "exact",
        ),
        Entry(
            "Invertible-flow",
            jc.SCM(
                x=_root_x(),
                y=flows.spline_mechanism(k[2], ["x"], num_bins=4, order="linear"),
            ),
            True,
            "exact",
        ),
        Entry(
            "GumbelMax",
            jc.SCM(
                x=_root_x(),
                y=jc.GumbelMax(
                    _logits, {"a": jnp.array([0.0, 1.0, -1.0]), "b": jnp.zeros(3)}, 3, ["x"]
                ),
            ),
            True,
            "exact",
            bad_value=3,
        ),
        Entry(
            "GumbelMax-vector",
            jc.SCM(
                x=_root_x(),
                y=jc.GumbelMax(
                    _vector_logits,
                    {"a": jnp.array([1.0, -1.0]), "b": jnp.array([[0.0, 0.5, 1.0], [1.0, 0, 0]])},
                    3,
                    ["x"],
                    shape=(2,),
                ),
            ),
            True,
            "exact",
            bad_value=-1,
        ),
        Entry(
            "Amortized-deterministic",
            jc.SCM(
                x=_root_x(),
                y=jc.Amortized(
                    _amortized_fn,
                    _amortized_encoder_exact,
                    1.5,
                    distrax.Normal(0.0, 0.2),
                    ["x"],
                    deterministic=True,
                ),
            ),
            True,
            "none",
        ),
        Entry(
            "Amortized-variational",
            jc.SCM(
                x=_root_x(),
                y=jc.Amortized(
                    _amortized_fn, _amortized_encoder_q, 1.5, distrax.Normal(0.0, 0.2), ["x"]
                ),
            ),
            False,
            "none",
        ),
        Entry("VAEImage", jc.SCM(x=_root_x(), y=vae), True, "bound", bad_value=300.0),
        Entry(
            "DiffusionImage",
            jc.SCM(x=_root_x(), y=_diffusion(k[3])),
            True,
            "none",
            bad_value=300.0,
        ),
        # Not a round trip: an untrained codec need not re-encode its decoded codes exactly.
        Entry("VQTransition", _vq_transition_scm(k[2]), False, "exact", bad_value=300.0),
    ]


ENTRIES = registry()
IDS = [e.name for e in ENTRIES]

# Engine-internal mechanisms that a counterfactual swaps in for one call; they are never part
# of a user's model (they have no noise to sample and no likelihood).
INTERNAL = {"Given", "Shortcut"}


def _obs(entry: Entry, key=KEY) -> dict:
    return jc.sample(key, entry.scm, N)


def _parents(entry: Entry, obs: dict) -> dict:
    return {p: obs[p] for p in entry.mech.parents}


# ----------------------------------------------------------------------------------------------
# the contract


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_sample_shapes_match_node_shapes(entry):
    obs, noise = jc.sample(KEY, entry.scm, N, return_noise=True)
    spec = entry.scm.node_shapes()["y"]
    assert obs["y"].shape == (N, *spec.shape) and obs["y"].dtype == spec.dtype
    # The mechanism's noise distribution describes all of its noise (VAE: latent and pixels).
    want = jax.tree_util.tree_map(jnp.shape, entry.mech.noise.sample(seed=KEY))
    got = jax.tree_util.tree_map(lambda a: a.shape[1:], noise["y"])
    assert got == want
    # ... and the forward map of that noise is the sampled value.
    again = jax.vmap(entry.mech.forward)(_parents(entry, obs), noise["y"])
    np.testing.assert_allclose(again, obs["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_abduct_then_forward_round_trip(entry):
    obs = _obs(entry)
    noise = jc.abduct(entry.scm, obs, jax.random.key(1))
    back = jax.vmap(entry.mech.forward)(_parents(entry, obs), noise["y"])
    if entry.roundtrip:
        np.testing.assert_allclose(back, obs["y"], rtol=1e-4, atol=1e-4)
    else:
        assert back.shape == obs["y"].shape
    # num_samples stacks posterior draws, like counterfactual.
    many = jc.abduct(entry.scm, obs, jax.random.key(1), num_samples=3)
    for a, b in zip(jax.tree_util.tree_leaves(many), jax.tree_util.tree_leaves(noise), strict=True):
        assert a.shape == (3, *b.shape)


WITH_PARENTS = [e for e in ENTRIES if e.mech.parents]  # a root has no parents to change


@pytest.mark.parametrize("entry", WITH_PARENTS, ids=[e.name for e in WITH_PARENTS])
def test_counterfactual_value_is_eq6(entry):
    """A mechanism's one-step counterfactual equals abduct-then-forward for the same key."""
    obs = _obs(entry)
    pa = _parents(entry, obs)
    new = {p: v + 0.5 for p, v in pa.items()}
    keys = jax.random.split(jax.random.key(2), N)
    mech = entry.mech
    key_or_none = keys if mech.stochastic_abduction else [None] * N
    eq6 = [
        mech.forward(jax.tree_util.tree_map(lambda a: a[j], new), mech.abduct(
            obs["y"][j], jax.tree_util.tree_map(lambda a: a[j], pa), key_or_none[j]
        ))
        for j in range(N)
    ]  # fmt: skip
    one = [
        mech.counterfactual_value(
            obs["y"][j],
            jax.tree_util.tree_map(lambda a: a[j], pa),
            jax.tree_util.tree_map(lambda a: a[j], new),
            key_or_none[j],
        )
        for j in range(N)
    ]
    np.testing.assert_allclose(np.stack(one), np.stack(eq6), rtol=1e-4, atol=1e-4)
    # The engine's counterfactual moves y when its parent moves (and keeps shapes).
    cf = jc.counterfactual(entry.scm, obs, {"x": jc.Shift(0.5)}, jax.random.key(3))
    assert cf["y"].shape == obs["y"].shape


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_likelihood_exact_or_bound(entry):
    obs = _obs(entry)
    mech = entry.mech
    pa = _parents(entry, obs)
    if entry.likelihood == "none":
        with pytest.raises(ValueError, match="no tractable likelihood"):
            jc.log_prob(entry.scm, obs)
        return
    if entry.likelihood == "exact":
        lp = jc.log_prob(entry.scm, obs, per_node=True)["y"]
        assert lp.shape == (N,) and bool(jnp.all(jnp.isfinite(lp)))
        # The bound of an exact mechanism is its exact log-likelihood.
        bound = jax.vmap(lambda v, p: mech.log_prob_bound(v, p, None))(obs["y"], pa)
        np.testing.assert_allclose(bound, lp, rtol=1e-6)
        again = jc.log_prob(entry.scm, obs, jax.random.key(0), per_node=True, bound=True)["y"]
        np.testing.assert_allclose(again, lp, rtol=1e-6)
        return
    with pytest.raises(ValueError, match="node 'y'.*bound=True"):
        jc.log_prob(entry.scm, obs)
    with pytest.raises(ValueError, match="node 'y'.*key"):
        jc.log_prob(entry.scm, obs, bound=True)
    lb = jc.log_prob(entry.scm, obs, jax.random.key(0), per_node=True, bound=True)
    assert lb["y"].shape == (N,) and bool(jnp.all(jnp.isfinite(lb["y"])))


def _scalar_objective(entry: Entry):
    """A differentiable function of the SCM through the engine.

    A log-likelihood or a counterfactual.
    """
    obs = _obs(entry)
    if entry.likelihood == "none":
        return lambda scm: jnp.sum(
            jc.counterfactual(scm, obs, {"x": jc.Shift(0.3)}, jax.random.key(4))["y"]
        )
    return lambda scm: jnp.sum(jc.log_prob(scm, obs, jax.random.key(4), bound=True))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_jit_vmap_grad_and_partition(entry):
    f = _scalar_objective(entry)
    eager = f(entry.scm)
    np.testing.assert_allclose(eqx.filter_jit(f)(entry.scm), eager, rtol=1e-5)
    # Training filters the SCM itself (jcausal.train.fit does this); grads are finite.
    dyn, static = eqx.partition(entry.scm, eqx.is_inexact_array)
    grads = jax.grad(lambda d: f(eqx.combine(d, static)))(dyn)
    leaves = jax.tree_util.tree_leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    # vmap over two observation batches.
    o1, o2 = _obs(entry, jax.random.key(5)), _obs(entry, jax.random.key(6))
    both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), o1, o2)
    cf = jax.vmap(lambda o: jc.counterfactual(entry.scm, o, {"y": jc.Hard(o["y"])})["y"])(both)
    np.testing.assert_allclose(cf[0], o1["y"], rtol=1e-6)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_bad_input_is_named(entry):
    obs = _obs(entry)
    bad_shape = {**obs, "y": jnp.concatenate([obs["y"], obs["y"]], axis=-1)[..., None]}
    with pytest.raises(ValueError, match="node 'y'"):
        jc.abduct(entry.scm, bad_shape, KEY)
    if entry.bad_value is None:
        return
    y = jnp.asarray(obs["y"])
    bad = {**obs, "y": y.at[0].set(jnp.full(y.shape[1:], entry.bad_value, y.dtype))}
    with pytest.raises(ValueError, match="node 'y'"):
        jc.abduct(entry.scm, bad, KEY)
    # The same check holds inside a user's jit (no host copy of the observations).
    with pytest.raises(Exception, match="node 'y'"):
        jax.block_until_ready(eqx.filter_jit(lambda o: jc.abduct(entry.scm, o, KEY))(bad))


def _all_subclasses(cls):
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_registry_covers_every_mechanism_class():
    for mod in pkgutil.walk_packages(jcausal.__path__, "jcausal."):
        importlib.import_module(mod.name)
    found = {
        c.__name__
        for c in _all_subclasses(Mechanism)
        if c.__module__.startswith("jcausal") and not c.__name__.startswith("_")
    }
    covered = {type(e.mech).__name__ for e in ENTRIES}
    missing = found - covered - INTERNAL
    assert not missing, f"mechanism classes without a contract entry: {sorted(missing)}"
