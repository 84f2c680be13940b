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
# # Policy search: learning interventions as functions of units and trade-offs
#
# `jcausal.policy` learns *policies*: small networks that map what is known of a unit (its
# pre-treatment covariates) and, optionally, a trade-off weight λ to the parameters of an
# intervention, with bounds built into the output. The objective is written on outcomes —
# here each unit's counterfactual outcome (abduct once, predict under the policy) — and the
# policy is trained with the library's one training loop, `jcausal.train.fit`.
#
# 1. Personalised doses under a budget, against the oracle from the true mechanisms.
# 2. The whole GHG–employment front of `jcausal design` in one λ-conditioned policy.
# 3. A gradient-free peer (evosax) on the same objective.
#
# Set `JCAUSAL_SMOKE=1` to run it in seconds (the test suite does).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jcausal as jc
from jcausal import examples
from jcausal import policy as jp
from jcausal.economy import design
from jcausal.economy import io as eio
from jcausal.policy import front

jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("JCAUSAL_SMOKE") == "1"

# %% [markdown]
# ## 1. Personalised doses
# `examples.treatment()`: covariates `x` (2-d) → dose `t` → outcome `y`, with
# `y = b·x + τ(x) t − κ t² + u_y`. How much a dose helps, `τ(x)`, differs from unit to unit
# (some are harmed). We may give each unit a dose in `[0, 2]` (`Hard` on the continuous node,
# bounds by `Box`) as long as the mean dose stays within a budget of 0.5.

# %%
scm = examples.treatment()
obs = jc.sample(jax.random.key(0), scm, 300 if SMOKE else 2000)
test = jc.sample(jax.random.key(1), scm, 2000)
budget = 0.5

problem = jp.Problem(
    scm,
    outcome=lambda v, theta, lam: -v["y"],  # per unit, minimised: maximise the outcome
    covariates=["x"],  # what the policy reads (pre-treatment only: checked)
    constraint=lambda v, theta, lam: v["t"] - budget,  # mean over units <= 0
)
data = problem.prepare(obs)  # abduction, once
policy = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], num_features=2,
                   key=jax.random.key(2), width=16)  # fmt: skip
policy, info = jp.train(problem, policy, data, steps=400 if SMOKE else 3000,
                        key=jax.random.key(3), lr=2e-2,
                        constraint=jp.AugmentedLagrangian(rho=10.0, tol=5e-3))  # fmt: skip
print(f"augmented Lagrangian: {len(info.histories)} rounds, multiplier {info.multiplier:.3f}, "
      f"mean dose - budget on the training units {info.violation:+.4f}")  # fmt: skip

# %% [markdown]
# The oracle knows the mechanisms: each unit gets `clip((τ(x) − ν)/2κ, 0, 2)` with the budget's
# multiplier `ν`. Regret is measured on held-out units, at equal spend.


# %%
def value(dose):
    dose = jnp.broadcast_to(jnp.asarray(dose, test["t"].dtype), test["t"].shape)
    return float(jc.counterfactual(scm, test, {"t": jc.Hard(dose)})["y"].mean())


d_policy = policy.parameters(problem.features(test))["t"][:, 0]
spend = float(d_policy.mean())
oracle = examples.treatment_oracle(scm, test["x"], spend)
print(f"mean dose {spend:.3f}; outcome: untreated {value(0.0):.3f}, constant 0.5 "
      f"{value(0.5):.3f}, policy {value(d_policy):.3f}, oracle {value(oracle):.3f}")  # fmt: skip
print(
    f"regret: policy {value(oracle) - value(d_policy):.4f}, "
    f"best constant {value(examples.treatment_oracle(scm, test['x'], 0.5)) - value(0.5):.4f}"
)

p = scm.mechanisms["y"].params
tau = jax.vmap(lambda x: examples.treatment_effect(p, x))(test["x"])
order = np.argsort(tau)
plt.figure(figsize=(5, 3.5))
plt.plot(tau[order], oracle[order], "k-", label="oracle")
plt.plot(tau, d_policy, ".", ms=2, alpha=0.5, label="learned policy (reads x)")
plt.axhline(0.5, ls="--", color="C2", label="best constant")
plt.xlabel("τ(x)")
plt.ylabel("dose")
plt.legend()
plt.show()

# %% [markdown]
# ## 2. The whole front in one model
# `jcausal design` optimises one intervention per λ of a grid. A policy conditioned on λ
# learns them all at once: `front.front_problem` writes eq. 5 (emissions + λ × lost employment)
# as a unit-level problem on the region's equilibrium SCM, and `front.front_policy` sets the
# paper's bounded factors `α = 2·sigmoid(z)` on every sector (`Scale` with `Box(0, 2)`).

# %%
dp = design.DesignProblem(eio.load("reg1"), eio.TEST_GHG, eio.TEST_EMPLOYMENT, bounded=True)
grid = design.auto_lambdas(dp, 6 if SMOKE else 24)
fproblem, fdata = front.front_problem(dp)
fpolicy = front.front_policy(dp, grid, key=jax.random.key(4), width=32 if SMOKE else 64)
steps = 600 if SMOKE else 6000
lo, hi = fpolicy.lambda_range
fpolicy, _ = jp.train(fproblem, fpolicy, fdata, steps=steps, key=jax.random.key(5),
                      lambdas=jp.LogUniform(lo / 3, hi * 3, zero=0.1), num_lambdas=32,
                      optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, steps, 1e-2),
                                           b2=0.9))  # fmt: skip
excess = front.front_excess(dp, fpolicy, fproblem, fdata, grid)
between = np.sqrt(grid[1:-1] * grid[2:])
excess_between = front.front_excess(dp, fpolicy, fproblem, fdata, between)
sweep = design.sweep(dp, grid, steps=300 if SMOKE else 1000, lr=0.05)
print("excess loss over the exact front (HiGHS):")
print(f"  amortised, grid λ: max {excess.max():.4f}, mean {excess.mean():.4f}")
print(f"  amortised, λ between grid points: max {excess_between.max():.4f}")
print(f"  per-λ optimisation: max {sweep.excess_loss.max():.2e}")

plt.figure(figsize=(5, 3.5))
plt.loglog(grid[1:], np.maximum(excess[1:], 1e-6), "o-", label="amortised, grid λ")
plt.loglog(between, np.maximum(excess_between, 1e-6), "x", label="amortised, between")
plt.loglog(grid[1:], np.maximum(sweep.excess_loss[1:], 1e-6), "s", mfc="none", label="per-λ")
plt.xlabel("λ")
plt.ylabel("excess loss")
plt.legend()
plt.show()

# %% [markdown]
# The amortised policy answers a new λ with one forward pass and one equilibrium solve; the
# per-λ optimisation is closer to the optimum at the λ it was run for. The experiment
# `jcausal experiment policy` measures both, and trains one policy for all six regions of the
# table at once (`jp.Stacked`, each region read through its sector shares).
#
# ## 3. A gradient-free peer
# `jp.evolve` searches the same network's weights with an evolution strategy from evosax (SNES
# by default), on the same objective (the budget as a penalty). No gradients are needed.

# %%
es_policy, res = jp.evolve(problem, jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], 2,
                                              key=jax.random.key(2), width=16),
                           data, generations=100 if SMOKE else 1000, key=jax.random.key(6),
                           population=32, penalty=1000.0)  # fmt: skip
d_es = es_policy.parameters(problem.features(test))["t"][:, 0]
oracle_es = examples.treatment_oracle(scm, test["x"], float(d_es.mean()))
print(
    f"SNES, {res.evaluations} evaluations: regret {value(oracle_es) - value(d_es):.4f} "
    f"(mean dose {float(d_es.mean()):.3f})"
)
