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
# # Equilibrium SCMs and Lie interventions
#
# Models with feedback loops have no topological order: a value is defined as the *equilibrium*
# of its mechanisms. This notebook solves such a model with `jc.fixed_point`'s solver objects,
# differentiates the equilibrium implicitly (checked against a finite difference), intervenes
# with a Lie group, learns an *invariant* intervention, and measures the rebound effect
# (Besserve & Schölkopf, *Learning soft interventions in complex equilibrium systems*,
# UAI 2022).
#
# Set `JCAUSAL_SMOKE=1` to run it in seconds (the test suite does).

# %%
import os

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import jcausal as jc
from jcausal.economy import Logistic, efficiency, rebound_model

jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("JCAUSAL_SMOKE") == "1"

# %% [markdown]
# ## A Leontief economy is one node with a self-loop
# Output `x` of `n` sectors satisfies `x = A x + y` (intermediate consumption plus final demand
# `y`). Written as an `EquilibriumSCM`, the node `x` is its own parent; the demand enters as the
# node's (deterministic) noise. The solver object is the configuration.

# %%
n = 8
rng = np.random.default_rng(0)
A = rng.uniform(size=(n, n))
A = jnp.asarray(A / A.sum(0) * 0.6)  # column sums 0.6: every sector adds value


def intermediate(A, pa):  # module level: compiled once
    return A @ pa["x"]


economy = jc.EquilibriumSCM(
    x=jc.Additive(intermediate, A, distrax.Deterministic(jnp.ones(n)), ["x"]),
    solver=jc.Anderson(rtol=1e-12, max_steps=500),
)
demand = {"x": jnp.ones((1, n))}
eq, report = jc.solve(economy, demand)
leontief = np.linalg.solve(np.eye(n) - np.asarray(A), np.ones(n))  # (I - A)^-1 y
print("solve:", report.message())
print("max |x* - (I - A)^-1 y| =", float(np.abs(eq["x"][0] - leontief).max()))
assert np.allclose(eq["x"][0], leontief, rtol=1e-9)

# %% [markdown]
# Any map can be solved the same way with `jc.fixed_point`. A map without a fixed point is
# reported, not returned as a number: with `throw=False` the report says why.

# %%
x, rep = jc.fixed_point(
    lambda x, a: 1.05 * x + a, jnp.zeros(3), jnp.ones(3), solver=jc.Forward(), throw=False
)
print("1.05 x + 1:", rep.message())
assert not bool(rep.converged)

# %% [markdown]
# ## Lie interventions and implicit gradients
# A multiplicative Lie intervention scales each sector's assignment, `x_i := exp(u_i) (A x + y)_i`.
# Its gradient goes through the equilibrium by implicit differentiation: the backward pass
# solves the adjoint fixed point instead of unrolling the solver. We check it against a central
# finite difference of the forward solve.

# %%
emissions = jnp.linspace(0.1, 1.0, n)  # a stressor row: emissions per unit output


def total_emissions(u):
    x, _ = jc.solve(jc.do(economy, {"x": jc.Lie(jc.Multiplicative(n), u)}), demand)
    return emissions @ x["x"][0]


u0 = jnp.zeros(n)
grad = jax.grad(total_emissions)(u0)
eps = 1e-6
fd = np.array(
    [
        (total_emissions(u0.at[i].add(eps)) - total_emissions(u0.at[i].add(-eps))) / (2 * eps)
        for i in range(n)
    ]
)
print("implicit gradient:", np.round(np.asarray(grad), 4))
print("max |implicit - finite difference| =", float(np.abs(grad - fd).max()))
assert np.allclose(grad, fd, rtol=1e-6, atol=1e-9)

# %% [markdown]
# The intervention is a group element: `u = 0` is the identity, and the Lie algebra coordinate
# adds. Other groups (`jc.Translation`, `jc.SO(n)` for rotations) plug into the same `jc.Lie`.

# %%
x_half = jc.solve(jc.do(economy, {"x": jc.Lie(jc.Multiplicative(n), u0 - 0.1)}), demand)[0]
print(
    "output change from shrinking every sector by exp(-0.1):",
    float(x_half["x"].sum() - leontief.sum()),
)

# %% [markdown]
# ## The rebound effect and an invariant intervention
# A three-sector economy with prices and demand curves (Fig. 1b of the paper): sector 1 produces
# energy, sector 0 is the target. Making the target sector more energy-efficient
# (`intensity := α · A[1, 0]`) lowers its price, demand for it rises, and total energy use can
# *increase* — the rebound effect, or backfire when the savings are more than eaten up.

# %%
A3 = jnp.array([[0.0, 0.1, 0.0], [0.5, 0.0, 0.0], [0.1, 0.2, 0.0]])
scm, noise = rebound_model(A3, Logistic.paper(), energy=1, target=0)
ref, _ = jc.solve(scm, noise)
alpha = 0.6  # 40 % less energy per unit of the target's output
lie, _ = jc.solve(jc.do(scm, efficiency(jnp.log(alpha))), noise)
print("energy use: reference", float(ref["energy"][0]), "| more efficient", float(lie["energy"][0]))
assert lie["energy"][0] > ref["energy"][0]  # backfire: the efficiency gain raises energy use
print(
    "consumer price of the target good:",
    float(ref["consumer_price"][0]),
    "->",
    float(lie["consumer_price"][0]),
)

# %% [markdown]
# An *invariant* intervention (Definition 4) pairs the efficiency gain with a learned
# compensating mechanism — here a tax on the target good, an MLP of prices and `u` — trained
# with `jc.learn_invariant` so the consumer price, hence the demand, stays where it was. The loss
# flows through two equilibrium solves per sample with implicit gradients; training uses the one
# loop, `jc.fit`.


# %%
def model(theta):
    return rebound_model(A3.at[0, 1].set(theta[0]), Logistic.paper(), energy=1, target=0)


inv = jc.learn_invariant(
    model,
    lambda u: efficiency(u[0]),
    invariant="consumer_price",
    auxiliary="consumer_price",
    sample_theta=lambda k, b: jax.random.uniform(k, (b, 1), minval=0.05, maxval=0.15),
    sample_u=lambda k, b: jax.random.uniform(k, (b, 1), minval=np.log(0.4), maxval=np.log(0.8)),
    key=jax.random.key(0),
    steps=60 if SMOKE else 600,
    batch=16,
)
thetas = jnp.full((1, 1), 0.1)
us = jnp.full((1, 1), jnp.log(alpha))
before = float(inv.deviation(model, thetas, us, compensated=False)[0])
after = float(inv.deviation(model, thetas, us)[0])
print(f"relative change of the consumer price: Lie alone {before:.3f}, invariant {after:.4f}")
assert after < before
inv_eq, _ = jc.solve(jc.do(scm, inv(scm, us[0])), noise)
print(
    "energy use under the invariant intervention:",
    float(inv_eq["energy"][0]),
    "(reference",
    float(ref["energy"][0]),
    ")",
)
