# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Counterfactuals with jcausal
#
# A short tour: write a structural causal model as pure functions, sample it, intervene, and ask
# unit-level counterfactual questions, then differentiate and batch them. This file uses the
# "percent" notebook format: open it in Jupyter (with jupytext) or VS Code, or run it as a script;
# the `.ipynb` beside it is generated from it with its outputs. The test suite executes it.
#
# The engine follows Pearl's three steps for a counterfactual — *abduction* of each unit's
# exogenous noise from its observations, *action* (swap the intervened mechanisms), *prediction*
# (rerun the model with the unit's own noise) — for every unit at once, in one compiled call.

# %%
import distrax
import jax
import jax.numpy as jnp
import numpy as np

import jcausal as jc

jax.config.update("jax_enable_x64", True)

# %% [markdown]
# ## Your own SCM: mechanisms are pure functions
# Each mechanism is written for ONE unit and takes `(params, parents)`; jcausal batches it. An
# `Additive` mechanism is `x := f(params, parents) + u`, so its noise is recovered exactly:
# `u = x - f(parents)`. Define the functions once, at module level, so they compile once.


# %%
def slope(p, pa):
    return p * pa["x"]


def bend(p, pa):
    return p[0] * jnp.tanh(pa["x"]) + p[1] * pa["y"]


toy = jc.SCM(
    x=jc.Root(distrax.Normal(0.0, 1.0)),
    y=jc.Additive(slope, 2.0, distrax.Normal(0.0, 0.5), ["x"]),
    z=jc.Additive(bend, jnp.array([1.0, -0.5]), distrax.Normal(0.0, 0.1), ["x", "y"]),
)
units = jc.sample(jax.random.key(0), toy, 4)
noise = jc.abduct(toy, units)  # abduction: each unit's exogenous noise
print("observed y:", np.round(units["y"], 3))
print("abducted u_y = y - 2 x:", np.round(noise["y"], 3))
assert np.allclose(noise["y"], units["y"] - 2.0 * units["x"])
# Acting with no intervention and predicting with the abducted noise returns the observations:
same = jc.counterfactual(toy, units, {})
assert all(np.allclose(same[k], units[k]) for k in units)
# Had y been one higher, z moves by -0.5 (its coefficient on y); x is not a descendant of y.
cf_toy = jc.counterfactual(toy, units, {"y": jc.Shift(1.0)})
print("z' - z under do(y := y + 1):", np.round(cf_toy["z"] - units["z"], 6))
assert np.allclose(cf_toy["z"] - units["z"], -0.5)
print("log-likelihood of each unit:", np.round(jc.log_prob(toy, units), 2))

# %% [markdown]
# ## The model: Morpho-MNIST attributes (Deep SCM, eq. 7)
# Stroke thickness `t` causes digit intensity `i`. Both mechanisms are invertible, so the noise of
# each digit can be recovered exactly and counterfactuals are deterministic.

# %%
scm = jc.examples.morpho()
obs = jc.sample(jax.random.key(0), scm, 10_000)
print({k: (float(v.mean()), float(v.std())) for k, v in obs.items()})

# %% [markdown]
# ## Interventional vs counterfactual
# `do(t := 4)` on the population gives the interventional distribution of `i`; the counterfactual
# keeps each digit's own intensity noise.

# %%
intv = jc.sample(jax.random.key(1), jc.do(scm, {"t": jc.Hard(4.0)}), 10_000)
cf = jc.counterfactual(scm, obs, {"t": jc.Hard(4.0)})
print("E[i | do(t=4)]        =", float(intv["i"].mean()))
print("mean counterfactual i =", float(cf["i"].mean()))
# Both estimate the same population quantity; the counterfactual is per digit:
assert abs(float(intv["i"].mean()) - float(cf["i"].mean())) < 1.0
print(
    "first digits: observed",
    np.round(obs["i"][:3], 1),
    "-> counterfactual",
    np.round(cf["i"][:3], 1),
)

# %% [markdown]
# ## Gradients and batches of interventions
# How much brighter would the digits be, on average, for a little more thickness? The gradient of
# the counterfactual with respect to a `Shift` is exact and cheap.


# %%
def mean_intensity(delta):
    return jc.counterfactual(scm, obs, {"t": jc.Shift(delta)})["i"].mean()


g = float(jax.grad(mean_intensity)(0.0))
fd = float(mean_intensity(1e-4) - mean_intensity(-1e-4)) / 2e-4
print("d mean(i') / d delta at 0:", g, "(finite difference:", fd, ")")
assert abs(g - fd) < 1e-5 * abs(g)
deltas = jnp.linspace(-1.0, 1.0, 5)
print(
    "mean(i') for shifts", np.asarray(deltas), "->", np.round(jax.vmap(mean_intensity)(deltas), 1)
)

# %% [markdown]
# ## A discrete node: Gumbel-max counterfactuals
# The `health` model has a categorical `exercise` node. Counterfactuals downstream of an
# intervention on `age` sample the exact posterior of its Gumbel noise.

# %%
health = jc.examples.health()
people = jc.sample(jax.random.key(2), health, 5)
draws = jc.counterfactual(
    health, people, {"age": jc.Shift(-15.0)}, key=jax.random.key(3), num_samples=2000
)
p_lots = (draws["exercise"] == 2).mean(0)
print("observed exercise:", np.asarray(people["exercise"]))
print("P(exercise = lots | 15 years younger):", np.round(p_lots, 2))
