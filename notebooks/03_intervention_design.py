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
# # Designing interventions on an input-output economy
#
# The main job of `jcausal design`, step by step: load an input-output table with pymrio, turn it
# into an equilibrium SCM, and search, by gradient descent *through the equilibrium*, for the
# multiplicative interventions on every sector that best trade emission cuts against preserved
# employment (eq. 5 of Besserve & Schölkopf, UAI 2022). The optimiser's front is checked against
# the problem's analytic optimum.
#
# Set `JCAUSAL_SMOKE=1` to run it in seconds (the test suite does).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pymrio

from jcausal.economy import design
from jcausal.economy import io as eio

jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("JCAUSAL_SMOKE") == "1"

# %% [markdown]
# ## 1. The table
# pymrio ships a small multi-regional test system (6 regions × 8 sectors). `eio.load(region)`
# takes the domestic block of one region as an `IOModel`: technical coefficients `A`, final
# demand `y` and the stressor rows (emissions, value added, ...).

# %%
mrio = pymrio.load_test()
print("regions:", eio.regions(mrio))
model = eio.load("reg1")
print(model.n, "sectors:", model.labels)

# %% [markdown]
# The model's equilibrium `x = A x + y`, solved by the fixed-point layer from zero, reproduces the
# table's observed output:

# %%
err = eio.reproduction_error(model)
print(f"relative error of the solved output against the table: {err:.2e}")
assert err < 1e-8

# %% [markdown]
# ## 2. The problem
# The intervention is a multiplicative Lie intervention on every sector,
# `x_i := exp(u_i) (A x + y)_i`. The loss for a weight `λ` is
# `L(u; λ) = c·x(u) / G* + λ ||e(u) - e*||_1 / E*`: emissions plus `λ` times the change of
# employment, both as fractions of the unintervened totals. Here the emission indicator is the
# test system's `emission_type1` row and value added stands in for employment.

# %%
problem = design.DesignProblem(model, eio.TEST_GHG, eio.TEST_EMPLOYMENT)
print("reference GHG", float(problem.G), "| reference employment", float(problem.E))
u0 = jnp.zeros(model.n)
loss, _ = problem.loss(u0, jnp.asarray(1.0))
g = jax.grad(lambda u: problem.loss(u, jnp.asarray(1.0))[0])(u0)
print("loss at u = 0:", float(loss), "(= 1: all emissions, no employment change)")
print("gradient through the equilibrium:", np.round(np.asarray(g), 3))

# %% [markdown]
# ## 3. The sweep
# One compiled program optimises every `λ` at once (`jax.vmap` of an optax Adam loop).
# `design.design` runs it and checks the result against the analytic optimum: the problem is
# linear and separable in the output `x`, so the best front closes sectors in decreasing order of
# their emission share per employment share (`design.analytic_front`).

# %%
lambdas = design.auto_lambdas(problem, 6 if SMOKE else 24)
result = design.design(
    model,
    eio.TEST_GHG,
    eio.TEST_EMPLOYMENT,
    lambdas,
    steps=300 if SMOKE else 1000,
    lr=0.1 if SMOKE else 0.05,
)
print(f"{len(result.lambdas)} values of λ, {result.steps} steps each, {result.seconds:.1f} s")
print("largest excess over the analytic optimum:", f"{result.max_excess_loss:.2e}")

# %% [markdown]
# ## 4. The Pareto front
# Each optimised `λ` is one point (employment kept, emissions left). The line is the analytic
# front, computed without the optimiser: the optimum closes sectors in decreasing order of
# emission share per employment share, and partly closing the next sector moves along a segment.

# %%
dense = design.analytic_front(problem, np.geomspace(lambdas[1] / 10, lambdas[-1] * 10, 400))
fig, ax = plt.subplots(figsize=(5, 3.6))
order = np.argsort(dense["employment"])
ax.plot(
    100 * dense["employment"][order] / result.employment_ref,
    100 * dense["ghg"][order] / result.ghg_ref,
    "-",
    color="0.6",
    label="analytic optimum (closing sectors one by one)",
)
ax.plot(
    100 * result.employment / result.employment_ref,
    100 * result.ghg / result.ghg_ref,
    "o",
    color="C3",
    label="gradient descent (one point per λ)",
)
ax.set_xlabel("employment kept (% of reference)")
ax.set_ylabel("GHG emitted (% of reference)")
ax.legend(frameon=False)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Which sectors move
# For the point of the front closest to a 5 % loss of employment, the sectors that lose the most
# employment, with the intervention factor `α = exp(u)` that does it:

# %%
kept = result.employment / result.employment_ref
i = int(np.argmin(np.abs(kept - 0.95)))
print(
    f"λ = {result.lambdas[i]:.3g}: employment {100 * kept[i]:.1f} %,",
    f"GHG {100 * result.ghg[i] / result.ghg_ref:.1f} % of reference",
)
for row in design.sector_table(problem, result, i, top=3, drops=True):
    print(
        f"  {row['sector']:<28} α = {row['factor']:9.3g}  output {row['output_change_pct']:+7.1f} %"
    )

# %% [markdown]
# The same run from the command line is `jcausal design` (it writes the front as CSV/JSON, the
# plot and the configuration to `results/design/`); `jcausal design --exiobase IOT_2019_pxp.zip
# --region FR` runs it on a real Exiobase 3 archive.
