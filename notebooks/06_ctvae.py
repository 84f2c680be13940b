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
# # CT-VAE: which action turned this image into that one?
#
# A CT-VAE models an image transition `X -> Y` caused by an action `a` that changes one factor
# of variation by one step (the seed `ct_vae_disentanglement.txt`). Images are encoded into a
# grid of discrete codes by a multi-codebook quantised VAE (MCQ-VAE); a *causal transition
# layer* maps the codes of `X` and the action to a distribution over the codes of `Y` through
# an action-dependent mask and graph. In jcausal the transition is an SCM with nodes `x`, `a`
# and `y`, so the three questions one asks of it are the engine's verbs:
#
# - *action retrieval* (the paper's causal mode): the posterior `P(a | x, y)`, from
#   `jc.log_prob` over the actions;
# - *intervention*: `Y` under `do(a = a2)`;
# - *counterfactual*: given the observed `(x, a, y)`, what would `Y` have been under `a2`?
#
# Set `JCAUSAL_SMOKE=1` to run it in seconds (the test suite does; the models are then barely
# trained and the accuracies near chance). The full reproduction at 64x64 (Table 1 analog with
# a discriminative baseline, Figs. 5-6) is `jcausal experiment ctvae`.

# %%
import dataclasses
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jcausal as jc
from jcausal import ctvae
from jcausal.data import Shapes
from jcausal.experiments.ctvae import SMOKE as SMALL
from jcausal.experiments.ctvae import train_ct, train_vae

SMOKE = os.environ.get("JCAUSAL_SMOKE") == "1"
# (the smoke run skips the CT layer's second stage: one compiled loop fewer)
small = dataclasses.replace(SMALL, ct_tune_steps=0)
cfg = small if SMOKE else dataclasses.replace(SMALL, vae_steps=1200, ct_steps=1500, ct_batch=32)
work = Path(tempfile.mkdtemp(prefix="jcausal-ctvae-"))

# %% [markdown]
# ## Transitions rendered in JAX
# `jcausal.data.Shapes` renders 32x32 scenes with five factors of imbalanced cardinality
# (shape 3, scale 4, background 5, colour 6, x position 12). A transition changes one factor by
# one step, up or down: 10 actions. Batches are rendered inside the compiled training step,
# so no data set is stored.

# %%
shapes = Shapes(cfg.size)
test = shapes.sampler("test", 200)(jax.random.key(0))
print("factors:", dict(zip(shapes.names, shapes.cardinalities, strict=True)))
print("actions:", shapes.num_actions, " batch:", {k: v.shape for k, v in test.items()})
fig, axes = plt.subplots(2, 6, figsize=(7, 2.6))
for j in range(6):
    a = int(test["a"][j])
    axes[0, j].imshow(test["x"][j])
    axes[0, j].set_title(f"{shapes.names[a // 2]} {'+-'[a % 2]}", fontsize=7)
    axes[1, j].imshow(test["y"][j])
for ax in axes.ravel():
    ax.axis("off")
plt.suptitle("X (top) and Y (bottom) of test transitions", fontsize=8)
plt.show()

# %% [markdown]
# ## The MCQ-VAE: images as grids of codes
# `C` codebooks of `K` codes each quantise disjoint slices of the latent channels; training
# runs in rounds with restarts of dead codes in between. `codes(image)` (abduction) and
# `decode_codes(indices)` (prediction) are the pair the SCM uses.

# %%
vae, info = train_vae(cfg, shapes, jax.random.key(1), work, progress=False)
codes = jax.jit(jax.vmap(vae.codes))
cx = codes(test["x"])
recon = jax.jit(jax.vmap(vae.decode_codes))(cx)
print("code grid per image:", cx.shape[1:], " restarted codes per round:", info["restarted_codes"])
print(f"reconstruction MSE: {float(jnp.mean((recon - test['x']) ** 2)):.5f}")
fig, axes = plt.subplots(2, 6, figsize=(7, 2.6))
for j in range(6):
    axes[0, j].imshow(test["x"][j])
    axes[1, j].imshow(np.clip(recon[j], 0, 1))
for ax in axes.ravel():
    ax.axis("off")
plt.show()

# %% [markdown]
# ## The causal transition layer
# Trained with the VAE frozen (`jc.frozen`), in all three modes at every step: standard
# (identity transition), action (predict `Y`'s codes under the true action) and causal
# (cross-entropy of `P(a | x, y)` over every action).

# %%
ct, history = train_ct(cfg, shapes, vae, jax.random.key(2), work, progress=False)
last = history.train[-1]
print("last training record:", {k: round(v, 3) for k, v in last.items() if isinstance(v, float)})
scm = ctvae.scm(vae, ct)
print("SCM nodes:", list(scm.mechanisms))

# %% [markdown]
# ## Action retrieval: `P(a | x, y)` through the engine
# For every held-out transition, the posterior over the 10 actions. The *factor* is right when
# the action's factor is, whatever the direction. `scm(vae, ct)` transitions under the modes of
# the mask and graph; eq. 10 of the paper samples them, so the likelihood of `y` is a Monte
# Carlo marginal over drawn graphs: `scm(vae, ct, graph_key=...)` with `graph_keys` (16 draws).

# %%
a_true = np.asarray(test["a"])
chance = (1 / shapes.num_actions, 1 / shapes.num_factors)
print(f"chance: action {chance[0]:.2f}, factor {chance[1]:.2f}")
sampled = ctvae.scm(vae, ct, graph_key=jax.random.key(4))
graphs = jax.random.split(jax.random.key(5), 16)
for name, q in [
    ("modes of the graph", ctvae.action_posterior(scm, test["x"], test["y"])),
    ("marginal over 16 graphs", ctvae.action_posterior(sampled, test["x"], test["y"], graphs)),
]:
    assert np.allclose(q.sum(-1), 1.0, atol=1e-5)
    pred = np.asarray(q.argmax(-1))
    acc = np.mean(pred == a_true), np.mean(pred // 2 == a_true // 2)
    print(f"{name:24}: action accuracy {acc[0]:.2f}, factor accuracy {acc[1]:.2f}")
confusion = np.zeros((shapes.num_factors, shapes.num_factors), int)
np.add.at(confusion, (a_true // 2, pred // 2), 1)
plt.figure(figsize=(3, 3))
plt.imshow(confusion, cmap="Blues")
plt.xticks(range(shapes.num_factors), shapes.names, rotation=45, fontsize=7)
plt.yticks(range(shapes.num_factors), shapes.names, fontsize=7)
plt.xlabel("retrieved factor")
plt.ylabel("true factor")
plt.show()

# %% [markdown]
# ## Counterfactual: what would `Y` have been under another action?
# Abduction reads the Gumbel noise of every code position that is consistent with the observed
# `Y` (the exact posterior of the Gumbel-max trick, per position); prediction reruns the layer
# under the new action with that noise. Here each unit's action is replaced by "background +".

# %%
n = 6
obs = {k: test[k][:n] for k in ("x", "a", "y")}
a2 = jnp.full((n,), shapes.names.index("background") * 2, jnp.int32)
cf = jc.counterfactual(scm, obs, {"a": jc.Hard(a2)}, jax.random.key(3))
fig, axes = plt.subplots(3, n, figsize=(7, 3.6))
for j in range(n):
    rows = [(obs["x"][j], "X"), (obs["y"][j], "Y"), (cf["y"][j], "Y cf")]
    for r, (img, title) in enumerate(rows):
        axes[r, j].imshow(np.clip(img, 0, 1))
        axes[r, j].axis("off")
        if j == 0:
            axes[r, j].set_title(title, fontsize=7, loc="left")
plt.show()

# %% [markdown]
# ## Repeated interventions (Fig. 5)
# The same action applied again and again, each output the next input: a `lax.scan`.

# %%
x0 = jnp.repeat(test["x"][:1], shapes.num_actions, axis=0)
seq = ctvae.repeat_action(scm, x0, jnp.arange(shapes.num_actions), 4)  # (4, A, S, S, 3)
fig, axes = plt.subplots(shapes.num_actions, 5, figsize=(4, 8))
for a in range(shapes.num_actions):
    axes[a, 0].set_ylabel(f"{shapes.names[a // 2]} {'+-'[a % 2]}", fontsize=6)
    for t in range(5):
        axes[a, t].imshow(np.clip(x0[a] if t == 0 else seq[t - 1, a], 0, 1))
        axes[a, t].set_xticks([])
        axes[a, t].set_yticks([])
plt.show()
