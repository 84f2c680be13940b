"""Multi-codebook quantiser and MCQ-VAE: slices, straight-through, perplexity, restarts, EMA."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jcausal.nn import (
    MCQVAE,
    MultiCodebook,
    ema_buffers,
    perplexity,
    restart_dead_codes,
    slices,
    vq_loss,
)
from jcausal.train import fit, unfreeze


def test_slices_are_disjoint_and_cover():
    for dim, c in [(32, 4), (12, 3), (8, 8), (5, 1)]:
        s = slices(dim, c)
        covered = np.concatenate([np.arange(a, b) for a, b in s])
        np.testing.assert_array_equal(np.sort(covered), np.arange(dim))
        assert len(covered) == dim  # no channel twice
        assert all(b - a == dim // c for a, b in s)
    with pytest.raises(ValueError, match="must divide"):
        slices(32, 5)
    with pytest.raises(ValueError, match="must divide"):
        MultiCodebook(10, 4, 8, key=jax.random.key(0))


def test_codebook_c_reads_only_its_own_slice():
    q = MultiCodebook(12, 3, 5, key=jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (200, 12)) * 0.2
    idx = np.asarray(q.indices(z))
    # Independent reference: brute-force nearest code per slice in numpy.
    cb = np.asarray(q.codebooks)
    for c, (a, b) in enumerate(slices(12, 3)):
        d = ((np.asarray(z)[:, None, a:b] - cb[c][None]) ** 2).sum(-1)
        np.testing.assert_array_equal(idx[:, c], d.argmin(1))
    # Changing channels of slice 1 moves only codebook 1's choice.
    z2 = z.at[:, 4:8].add(jax.random.normal(jax.random.key(2), (200, 4)))
    idx2 = np.asarray(q.indices(z2))
    np.testing.assert_array_equal(idx2[:, [0, 2]], idx[:, [0, 2]])
    assert np.any(idx2[:, 1] != idx[:, 1])


def test_lookup_and_indices_are_inverse():
    q = MultiCodebook(8, 2, 6, key=jax.random.key(3))
    idx = jax.random.randint(jax.random.key(4), (7, 5, 2), 0, 6)
    np.testing.assert_array_equal(q.indices(q.lookup(idx)), idx)
    np.testing.assert_allclose(q.lookup(idx)[0, 0, 4:], q.codebooks[1, idx[0, 0, 1]])
    with pytest.raises(ValueError, match="last axis of C=2"):
        q.lookup(jnp.zeros((3, 3), jnp.int32))


def test_straight_through_gradient_reaches_the_encoder():
    q = MultiCodebook(4, 2, 3, key=jax.random.key(5))
    z = jax.random.normal(jax.random.key(6), (4,))
    # d z_st / d z is the identity, although z_st's value is the code.
    jac = jax.jacobian(lambda v: q(v)[0])(z)
    np.testing.assert_allclose(jac, np.eye(4))
    np.testing.assert_allclose(q(z)[0], q.lookup(q.indices(z)), rtol=1e-6)
    vae = MCQVAE(16, dim=4, num_codebooks=2, num_codes=4, width=4, key=jax.random.key(7))
    images = jax.random.uniform(jax.random.key(8), (3, 16, 16, 3))
    grads = eqx.filter_grad(lambda v: vq_loss(v, images)[0])(vae)
    for conv in grads.down:
        assert float(jnp.abs(conv.weight).sum()) > 0
    assert float(jnp.abs(grads.quantizer.codebooks).sum()) > 0
    loss, aux = vq_loss(vae, images, beta=0.25)
    np.testing.assert_allclose(loss, aux["mse"] + aux["codebook"] + 0.25 * aux["commitment"])


def test_perplexity_against_numpy():
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, 8, 5000), np.zeros(5000, int)], -1)
    p = np.asarray(perplexity(jnp.asarray(idx), 8))
    freq = np.bincount(idx[:, 0], minlength=8) / 5000
    np.testing.assert_allclose(p[0], np.exp(-(freq * np.log(freq)).sum()), rtol=1e-5)
    np.testing.assert_allclose(p[1], 1.0)
    assert 7.9 < p[0] <= 8.0


def test_restart_moves_only_dead_codes():
    vae = MCQVAE(16, dim=4, num_codebooks=2, num_codes=6, width=4, key=jax.random.key(9))
    # Make code 5 of each codebook far from everything: it is dead.
    vae = eqx.tree_at(
        lambda v: v.quantizer.codebooks, vae, vae.quantizer.codebooks.at[:, 5].set(1e3)
    )
    images = jax.random.uniform(jax.random.key(10), (4, 16, 16, 3))
    new, n = restart_dead_codes(vae, images, jax.random.key(11))
    assert np.all(np.asarray(n) >= 1)
    old_cb, new_cb = np.asarray(vae.quantizer.codebooks), np.asarray(new.quantizer.codebooks)
    used = np.zeros((2, 6), bool)
    idx = np.asarray(jax.vmap(vae.codes)(images)).reshape(-1, 2)
    for c in range(2):
        used[c, np.unique(idx[:, c])] = True
    np.testing.assert_array_equal(new_cb[used], old_cb[used])
    z = np.asarray(jax.vmap(vae.encode)(images)).reshape(-1, 2, 2)
    for c in range(2):
        for k in np.nonzero(~used[c])[0]:
            assert np.min(np.abs(z[:, c] - new_cb[c, k]).sum(-1)) < 1e-6


def test_bad_images_are_named():
    vae = MCQVAE(16, dim=4, num_codebooks=2, num_codes=4, width=4, key=jax.random.key(0))
    assert vae.grid == (8, 8)
    with pytest.raises(ValueError, match=r"shape \(16, 16, 3\)"):
        vae.codes(jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match=r"shape \(16, 16, 3\)"):
        vae.codes(jnp.zeros((16, 16, 1)))
    with pytest.raises(ValueError, match="power of two"):
        MCQVAE(24, key=jax.random.key(0))
    with pytest.raises(ValueError, match="must divide"):
        MCQVAE(16, dim=6, num_codebooks=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="code grid"):
        vae.decode_codes(jnp.zeros((8, 8, 3), jnp.int32))


def test_ema_update_against_numpy():
    q = MultiCodebook(4, 2, 3, key=jax.random.key(1), ema=True)
    z = jax.random.normal(jax.random.key(2), (5, 7, 4))
    idx = q.indices(z)
    new = q.ema_update(z, idx, decay=0.8, eps=1e-3)
    zs, ii = np.asarray(z).reshape(-1, 2, 2), np.asarray(idx).reshape(-1, 2)
    for c in range(2):
        n = np.array([(ii[:, c] == k).sum() for k in range(3)], float)
        s = np.stack([zs[ii[:, c] == k, c].sum(0) for k in range(3)])
        counts = 0.8 * 1.0 + 0.2 * n
        sums = 0.8 * np.asarray(q.codebooks[c]) + 0.2 * s
        smooth = (counts + 1e-3) / (counts.sum() + 3e-3) * counts.sum()
        np.testing.assert_allclose(new.ema_counts[c], counts, rtol=1e-6)
        np.testing.assert_allclose(new.codebooks[c], sums / smooth[:, None], rtol=1e-5)
    with pytest.raises(ValueError, match="ema=True"):
        MultiCodebook(4, 2, 3, key=jax.random.key(1)).ema_update(z, idx)


def test_ema_codebooks_train_through_fit_and_resume(tmp_path):
    vae = MCQVAE(16, dim=8, num_codebooks=2, num_codes=8, width=8, key=jax.random.key(0), ema=True)
    colours = jax.random.uniform(jax.random.key(3), (32, 1, 1, 3))
    images = jnp.broadcast_to(colours, (32, 16, 16, 3))  # flat colours: learnable in 30 steps
    kw = dict(optimizer=optax.adam(3e-3), batch_size=16, key=jax.random.key(4), progress=False)
    params = ema_buffers(vae)
    out, h = fit(lambda p, b, k: vq_loss(p, b, ema_decay=0.9), params, images, steps=30, **kw)
    trained = unfreeze(out)
    assert h.train[-1]["mse"] < h.train[0]["mse"]
    # The codes moved by EMA (not by gradient): each equals its averages' ratio.
    qz = trained.quantizer
    total = qz.ema_counts.sum(-1, keepdims=True)
    smooth = (qz.ema_counts + 1e-5) / (total + 8e-5) * total
    np.testing.assert_allclose(qz.codebooks, qz.ema_sums / smooth[..., None], rtol=1e-4)
    assert not np.allclose(qz.codebooks, vae.quantizer.codebooks)
    fit(lambda p, b, k: vq_loss(p, b, ema_decay=0.9), params, images, steps=10,
        checkpoint_dir=tmp_path, **kw)  # fmt: skip
    resumed, _ = fit(lambda p, b, k: vq_loss(p, b, ema_decay=0.9), params, images, steps=30,
                     checkpoint_dir=tmp_path, **kw)  # fmt: skip
    np.testing.assert_array_equal(unfreeze(resumed).quantizer.codebooks, qz.codebooks)


def _equinox_reference(vae):
    """The MCQ-VAE run through its equinox layers themselves (channel-first, one image)."""

    def leaky(x):
        return jax.nn.leaky_relu(x, 0.2)

    def encode(img):
        h = jnp.transpose(2.0 * img - 1.0, (2, 0, 1))
        for conv in vae.down:
            h = leaky(conv(h))
        h = vae.enc_mid(h)
        for block in vae.enc_res:
            h = block(h)
        return jnp.transpose(vae.enc_out(jax.nn.relu(h)), (1, 2, 0))

    def decode(z):
        h = vae.dec_in(jnp.transpose(z, (2, 0, 1)))
        for block in vae.dec_res:
            h = block(h)
        h = jax.nn.relu(h)
        for i, conv in enumerate(vae.up):
            h = conv(h)
            if i < len(vae.up) - 1:
                h = leaky(h)
        return 0.5 * (jnp.tanh(jnp.transpose(h, (1, 2, 0))) + 1.0)

    return encode, decode


@pytest.mark.parametrize("size,res_blocks", [(16, 1), (32, 2)])
def test_channel_last_network_equals_the_equinox_layers(size, res_blocks):
    # The layers hold equinox parameters but run channel-last through jcausal.nn's
    # convolutions: values and every parameter's gradient equal equinox's own layers.
    was = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        _check_channel_last(size, res_blocks)
    finally:
        jax.config.update("jax_enable_x64", was)


def _check_channel_last(size, res_blocks):
    vae = MCQVAE(size, 8, 2, 4, width=6, res_blocks=res_blocks, key=jax.random.key(3))
    vae = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, vae
    )
    x = jax.random.uniform(jax.random.key(4), (3, size, size, 3), jnp.float64)
    encode, decode = _equinox_reference(vae)
    z = jax.vmap(encode)(x)
    np.testing.assert_allclose(vae.encode_batch(x), z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(vae.encode)(x), z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(vae.decode_batch(z), jax.vmap(decode)(z), atol=1e-12)
    np.testing.assert_allclose(vae.decode(z[0]), decode(z[0]), atol=1e-12)

    def reference_loss(v):
        enc, dec = _equinox_reference(v)
        return jnp.mean((jax.vmap(dec)(jax.vmap(enc)(x)) - x) ** 2)

    def loss(v):
        return jnp.mean((v.decode_batch(v.encode_batch(x)) - x) ** 2)

    want = eqx.filter_grad(reference_loss)(vae)
    got = eqx.filter_grad(loss)(vae)
    pairs = zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True)
    for g, w in pairs:
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def test_batched_calls_refuse_wrong_shapes():
    vae = MCQVAE(16, 8, 2, 4, width=6, key=jax.random.key(0))
    with pytest.raises(ValueError, match="encode_batch"):
        vae.encode_batch(jnp.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="expected one RGB image"):
        vae.encode_batch(jnp.zeros((2, 16, 16, 1)))
    with pytest.raises(ValueError, match="decode_batch"):
        vae.decode_batch(jnp.zeros((2, 2, 2, 8)))
    # an empty batch is a batch
    assert vae.encode_batch(jnp.zeros((0, 16, 16, 3))).shape == (0, 8, 8, 8)
    assert vae.decode_batch(jnp.zeros((0, 8, 8, 8))).shape == (0, 16, 16, 3)


def _receptive_field(vae, cell=(4, 4)):
    """Pixels (rows) whose value changes the encoder's output at ``cell``: its side in pixels."""
    s = vae.image_size
    image = jax.random.uniform(jax.random.key(1), (s, s, 3))
    grad = jax.grad(lambda img: jnp.sum(vae.encode(img)[cell] ** 2))(image)
    rows = np.nonzero(np.abs(np.asarray(grad)).sum((1, 2)) > 0)[0]
    return rows.min(), rows.max()


def test_encoder_kernel_sets_the_receptive_field():
    # 64x64, three 4x4 stride-2 convolutions: 22 pixels; with the 3x3 middle convolution and
    # a residual block's 3x3, 22 + 16 + 16 = 54 (cell 4 covers rows 32..39).
    kw = dict(dim=8, num_codebooks=2, num_codes=4, width=8, key=jax.random.key(0))
    lo, hi = _receptive_field(MCQVAE(64, encoder_kernel=1, **kw))
    assert (lo, hi) == (32 - 7, 39 + 7)
    lo, hi = _receptive_field(MCQVAE(64, **kw))
    assert (lo, hi) == (32 - 23, min(63, 39 + 23))
    for bad in (2, 5, True, "1"):
        with pytest.raises(ValueError, match="encoder_kernel"):
            MCQVAE(16, encoder_kernel=bad, **kw)
