"""Modularity experiment, procedural scenes: does a module act on the object or the background?

A small VAE (flax NNX, below) is trained with :func:`jcausal.train.fit` on the scenes of
:class:`jcausal.data.Shapes` (a coloured shape on a plain background). Its decoder is cut into
stages (``"fc"``: ``(8, 8, 32)``, ``"up1"``: ``(16, 16, 16)``, ``"out"``: the RGB image), and
NMF modules are found from its channels' influence maps as for the digits. The renderer
knows where the object is: a scene is ``alpha * colour + (1 - alpha) * background``, so two
renders that differ only in the background give ``alpha`` exactly (:func:`object_alpha`).
For each module, its hybrids' absolute change (summed over RGB) is split between the object
pixels of the receiver or the donor (``alpha > 0.5`` in either) and the rest: the module's
object share of influence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..data import Shapes
from ..modularity import Stages, find_modules, hybrids, influence_maps, mcqvae_stages
from ..nn import MCQVAE, Pure, vq_loss
from ..train import fit


class SceneVAE(nnx.Module):
    """Conv VAE for ``(32, 32, 3)`` images in ``[0, 1]``: two stride-2 convs, latent, mirror."""

    def __init__(self, latent: int = 8, *, rngs: nnx.Rngs):
        self.c1 = nnx.Conv(3, 16, (4, 4), strides=(2, 2), rngs=rngs)
        self.c2 = nnx.Conv(16, 32, (4, 4), strides=(2, 2), rngs=rngs)
        self.head = nnx.Linear(8 * 8 * 32, 2 * latent, rngs=rngs)
        self.fc = nnx.Linear(latent, 8 * 8 * 32, rngs=rngs)
        self.up1 = nnx.ConvTranspose(32, 16, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
        self.up2 = nnx.ConvTranspose(16, 3, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
        self.latent = latent

    def encode(self, x: Array) -> tuple[Array, Array]:
        h = jax.nn.relu(self.c2(jax.nn.relu(self.c1(x))))
        mean, logvar = jnp.split(self.head(h.reshape(*h.shape[:-3], -1)), 2, -1)
        return mean, logvar

    def stage(self, part: str, h: Array) -> Array:
        if part == "fc":
            return jax.nn.relu(self.fc(h)).reshape(*h.shape[:-1], 8, 8, 32)
        if part == "up1":
            return jax.nn.relu(self.up1(h))
        return jax.nn.sigmoid(self.up2(h))

    def decode(self, z: Array) -> Array:
        for part in ("fc", "up1", "out"):
            z = self.stage(part, z)
        return z


def scene_stages(vae: Pure) -> Stages:
    """The VAE's decoder as :class:`jcausal.modularity.Stages` (one unit, no batch axis)."""
    return Stages(
        [(p, jax.tree_util.Partial(lambda v, h, p=p: v.module.stage(p, h), vae))
         for p in ("fc", "up1", "out")]
    )  # fmt: skip


def object_alpha(shapes: Shapes, factors: Int[Array, "n F"]) -> Float[Array, "n S S"]:
    """Coverage of each pixel by the object, from two renders with the extreme backgrounds."""
    f = jnp.asarray(factors)
    a = shapes.render(f.at[:, 2].set(0))
    b = shapes.render(f.at[:, 2].set(shapes.cardinalities[2] - 1))
    # image = alpha colour + (1 - alpha) bg: the background's contribution is (1 - alpha) dbg.
    bg_a, bg_b = a[:, 0, 0], b[:, 0, 0]  # corners are background at every scale and position
    dbg = jnp.linalg.norm(bg_a - bg_b, axis=-1)[:, None, None]
    return 1.0 - jnp.linalg.norm(a - b, axis=-1) / dbg


STEPS_PER_CALL = 1  # a bare compiled step: see jcausal.experiments.modularity.STEPS_PER_CALL


def train_scene_vae(
    shapes: Shapes,
    key: PRNGKeyArray,
    steps: int,
    latent: int = 8,
    steps_per_call: int | None = STEPS_PER_CALL,
) -> Pure:
    """Train :class:`SceneVAE` on random scenes (Gaussian likelihood, sigma 0.1) with ``fit``."""
    k0, k1 = jax.random.split(key)
    vae = Pure(SceneVAE(latent, rngs=nnx.Rngs(int(jax.random.randint(k0, (), 0, 2**30)))))

    def loss(v, batch, k):
        m = v.module
        x = batch["x"]
        mean, logvar = m.encode(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k, mean.shape)
        rec = jnp.sum((m.decode(z) - x) ** 2, (-3, -2, -1)) / (2 * 0.1**2)
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, -1)
        return jnp.mean(rec + kl), {"rec": jnp.mean(rec), "kl": jnp.mean(kl)}

    vae, _ = fit(
        loss,
        vae,
        lambda k: {"x": shapes.sample_scenes(k, 64)["image"]},
        optimizer=optax.adam(2e-3),
        steps=steps,
        key=k1,
        progress=False,
        steps_per_call=steps_per_call,
    )
    return vae


def train_scene_mcqvae(
    shapes: Shapes, key: PRNGKeyArray, steps: int, steps_per_call: int | None = STEPS_PER_CALL
) -> MCQVAE:
    """Train a CT-VAE MCQ-VAE (codebook loss) on random scenes with ``fit``."""
    k0, k1 = jax.random.split(key)
    vae = MCQVAE(shapes.size, dim=16, num_codebooks=2, num_codes=16, width=32, key=k0)
    vae, _ = fit(
        lambda p, b, k: vq_loss(p, b),
        vae,
        lambda k: shapes.sample_scenes(k, 32)["image"],
        optimizer=optax.adam(1e-3),
        steps=steps,
        key=k1,
        progress=False,
        steps_per_call=steps_per_call,
    )
    return vae


def scenes_modularity(
    key: PRNGKeyArray,
    steps: int,
    pairs: int,
    seed: int = 0,
    model: str = "vae",
    explained: float = 0.95,
    max_rank: int = 6,
) -> tuple:
    """Train a scene generator and measure each module's object share of influence, per layer.

    Args:
        key: training and scene key.
        steps: training steps of the generator.
        pairs: (receiver, donor) pairs of scenes.
        seed: seed of the NMF.
        model: ``"vae"`` (the small :class:`SceneVAE`, latent vector input, layers ``"fc"`` and
            ``"up1"``) or ``"mcqvae"`` (the CT-VAE's MCQ-VAE, quantised latent grid input,
            layers ``"res"`` and ``"up1"`` of :func:`jcausal.modularity.mcqvae_stages`).
        explained: the NMF rank criterion (:func:`jcausal.modularity.find_modules`). 0.95,
            not the digits' 0.9: at 0.9 the scene VAE's ``up1`` layer got rank 2, lumping its
            object channels (62-82 % of their change on the object) with background ones.
            Every rank ``2..max_rank`` is reported too (``object_share_by_rank``).
        max_rank: largest NMF rank.

    Returns:
        ``(metrics, figures)``: metrics per layer (rank, assignment, ``object_share`` per
        module, ``max_object_share``, ``max_background_share``) and, per layer, the arrays to
        draw ``(receivers, donors, hybrids, alpha)``.
    """
    if model not in ("vae", "mcqvae"):
        raise ValueError(f"scenes model must be 'vae' or 'mcqvae', got {model!r}")
    shapes = Shapes(size=32)
    k_train, k_scene = jax.random.split(key)
    scenes = shapes.sample_scenes(k_scene, 2 * pairs)
    if model == "vae":
        vae = train_scene_vae(shapes, k_train, steps)
        z = vae.module.encode(scenes["image"])[0]
        st, layers = scene_stages(vae), ("fc", "up1")
    else:
        mcq = train_scene_mcqvae(shapes, k_train, steps)
        z = jax.jit(jax.vmap(lambda x: mcq.quantizer.lookup(mcq.codes(x))))(scenes["image"])
        st, layers = mcqvae_stages(mcq), ("res", "up1")
    alpha = np.asarray(object_alpha(shapes, scenes["factors"]))
    z1, z2 = z[:pairs], z[pairs:]
    obj = np.maximum(alpha[:pairs], alpha[pairs:]) > 0.5  # receiver's or donor's object
    out, draw = {}, {}
    recon_err = float(jnp.mean(jnp.abs(jax.vmap(st)(z) - scenes["image"])))
    for layer in layers:
        maps = influence_maps(st, z1, z2, layer, chunk=32)
        mods = find_modules(maps.sum(-1), max_rank=max_rank, explained=explained, seed=seed)
        base = np.asarray(jax.vmap(st)(z1))

        def object_share(masks):
            """Share of the hybrids' absolute change (summed over RGB) on the object pixels."""
            hyb = np.asarray(hybrids(st, z1, z2, layer, masks))  # (n, M, S, S, 3)
            change = np.abs(hyb - base[:, None]).sum(-1)  # (n, M, S, S)
            inside = (change * obj[:, None]).sum((0, 2, 3))
            total = change.sum((0, 2, 3))
            return hyb, np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)

        hyb, share = object_share(mods.masks())
        # The same per channel: whether object-only channels exist, whatever the modules.
        _, channel_share = object_share(np.eye(len(maps), dtype=bool))
        by_rank = {
            r: object_share(find_modules(maps.sum(-1), rank=r, seed=seed).masks())[1].tolist()
            for r in range(2, min(max_rank, len(maps)) + 1)
        }
        out[layer] = {
            "rank": mods.rank,
            "assignment": mods.assignment.tolist(),
            "object_share": share.tolist(),
            "max_object_share": float(np.nanmax(share)),
            "max_background_share": float(1 - np.nanmin(share)),
            "object_pixel_fraction": float(obj.mean()),
            "channel_object_share": channel_share.tolist(),
            "object_share_by_rank": by_rank,
            "channel_influence": maps.reshape(len(maps), -1).sum(1).tolist(),
        }
        draw[layer] = (base, np.asarray(jax.vmap(st)(z2)), hyb, share)
    return {"model": model, "reconstruction_mae": recon_err, "layers": out}, draw


def plot_scene_hybrids(draw: tuple, layer: str, path, rows: int = 4) -> None:
    """Receivers, donors and module hybrids of the scenes, titled with object shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec, don, hyb, share = draw
    r = hyb.shape[1]
    fig, axes = plt.subplots(rows, r + 2, figsize=(1.3 * (r + 2), 1.4 * rows), squeeze=False)
    for p in range(rows):
        imgs = [(rec[p], "receiver"), (don[p], "donor")]
        imgs += [(hyb[p, k], f"M{k}: {100 * share[k]:.0f}% obj") for k in range(r)]
        for j, (img, title) in enumerate(imgs):
            axes[p, j].imshow(np.clip(img, 0, 1))
            axes[p, j].axis("off")
            if p == 0:
                axes[p, j].set_title(title, fontsize=7)
    fig.suptitle(f"scene generator, module hybrids at layer {layer} (share of change on objects)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "SceneVAE",
    "object_alpha",
    "plot_scene_hybrids",
    "scene_stages",
    "scenes_modularity",
    "train_scene_mcqvae",
]
