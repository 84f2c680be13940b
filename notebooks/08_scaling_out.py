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
# # Scaling out: one counterfactual on a mesh of devices
#
# Every jcausal computation is batched along a leading *unit* axis, and units never interact. So
# spreading `sample`, `counterfactual` or `log_prob` over a machine's accelerators needs one step:
# put the observations on a device mesh, split along that axis. `jit` partitions the computation
# to match and the answers come back sharded the same way. Nothing here uses `pmap`.
#
# Without accelerators we ask XLA for 8 *fake* CPU devices. The flag must be set before jax is
# imported (restart the kernel if jax is already loaded); on a GPU or TPU machine, drop it.
#
# Set `JCAUSAL_SMOKE=1` to run it in seconds (the test suite does).

# %%
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jcausal as jc  # noqa: E402
from jcausal import examples, parallel  # noqa: E402

jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("JCAUSAL_SMOKE") == "1"
print(len(jax.devices()), "devices:", jax.devices())
assert len(jax.devices()) == 8

# %% [markdown]
# ## The model and its units
# The `health` model (age → blood pressure, a categorical exercise node with Gumbel-max noise,
# risk). We draw a population and ask: what if everyone were ten years younger?

# %%
scm = examples.health()
n = 8 * (1_000 if SMOKE else 100_000)
obs = jc.sample(jax.random.key(0), scm, n)
what_if = {"age": jc.Shift(-10.0)}

# %% [markdown]
# ## On one device

# %%
one = jc.counterfactual(scm, obs, what_if, jax.random.key(1))
print(
    "mean risk: observed", float(obs["risk"].mean()), "| counterfactual", float(one["risk"].mean())
)

# %% [markdown]
# ## On a mesh of 8 devices
# `parallel.unit_mesh()` builds a one-dimensional mesh named `"units"`;
# `parallel.shard_units` places every array split along its leading axis. The call is unchanged.
# (On fake CPU devices XLA may log an "Involuntary full rematerialization" warning for one
# conditional of the engine: a performance note of the SPMD partitioner; the answers are checked
# against the single-device ones below.)

# %%
mesh = parallel.unit_mesh()
sharded = parallel.shard_units(obs, mesh)
print("observations live on", len(sharded["risk"].sharding.device_set), "devices")
jax.debug.visualize_array_sharding(sharded["risk"])

many = jc.counterfactual(scm, sharded, what_if, jax.random.key(1))
print("counterfactual risk is sharded as", many["risk"].sharding.spec)
for k in one:
    np.testing.assert_allclose(np.asarray(many[k]), np.asarray(one[k]), rtol=1e-12)
print("every node agrees with the single-device answer")

# %% [markdown]
# The same holds for likelihoods and for Monte Carlo counterfactuals (the exact posterior of the
# Gumbel noise, `num_samples` draws per unit): the sample axis comes first, the units stay split.

# %%
lp = jc.log_prob(scm, sharded)
np.testing.assert_allclose(np.asarray(lp), np.asarray(jc.log_prob(scm, obs)), rtol=1e-12)
few = parallel.shard_units({k: v[:64] for k, v in obs.items()}, mesh)
draws = jc.counterfactual(scm, few, what_if, jax.random.key(2), num_samples=200)
print("Monte Carlo draws:", draws["exercise"].shape, "sharded as", draws["exercise"].sharding.spec)

# %% [markdown]
# A batch whose size does not divide over the devices is refused with a message that names it:

# %%
try:
    parallel.shard_units({"x": np.zeros(10)}, mesh)
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# ## Training data-parallel
# `jcausal.train.fit(..., sharding=mesh)` splits every batch over the same mesh inside the
# compiled step; parameters are replicated. Several hosts: call `jax.distributed.initialize()`
# first, then build the mesh over `jax.devices()` as above.
