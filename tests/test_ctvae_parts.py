"""The CT-VAE experiment's auxiliary networks: the factor reader's channel-last path."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.experiments.ctvae_parts import FactorReader, factor_loss


def _equinox_reader(reader):
    # The reader as it ran before: equinox's channel-first Conv2d layers on one image.
    def call(image):
        h = jnp.transpose(image, (2, 0, 1))
        for conv in reader.convs:
            h = jax.nn.relu(conv(h))
        card = np.asarray(reader.cardinalities)
        valid = np.arange(card.max())[None] < card[:, None]
        out = reader.head(h.reshape(-1)).reshape(valid.shape)
        return jnp.where(valid, out, -jnp.inf)

    return call


@pytest.mark.parametrize("size", [16, 32])
def test_reader_channel_last_equals_the_equinox_layers(size):
    # Same parameters (checkpoints restore), same function: values and every gradient.
    was = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        reader = FactorReader(size, (3, 4, 5), key=jax.random.key(0))
        reader = jax.tree_util.tree_map(
            lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, reader
        )
        images = jax.random.uniform(jax.random.key(1), (4, size, size, 3), jnp.float64)
        factors = jnp.array([[0, 1, 2], [2, 3, 4], [1, 0, 0], [0, 2, 3]])
        ref = jax.vmap(_equinox_reader(reader))(images)
        got = reader.batch(images)
        assert got.shape == (4, 3, 5)
        finite = np.isfinite(np.asarray(ref))
        assert finite.sum() == 4 * (3 + 4 + 5)
        np.testing.assert_array_equal(np.isfinite(np.asarray(got)), finite)
        np.testing.assert_allclose(np.asarray(got)[finite], np.asarray(ref)[finite], rtol=1e-12)
        np.testing.assert_allclose(reader(images[1]), ref[1], rtol=1e-12)

        def reference_loss(r):
            lp = jax.nn.log_softmax(jax.vmap(_equinox_reader(r))(images), -1)
            lp = jnp.where(jnp.isfinite(lp), lp, 0.0)
            return -jnp.mean(jnp.take_along_axis(lp, factors[..., None], -1))

        def loss(r):
            return factor_loss(r, {"image": images, "factors": factors}, None)[0]

        want = eqx.filter_grad(reference_loss)(reader)
        got_g = eqx.filter_grad(loss)(reader)
        # factor_loss sums over factors: F times the reference's mean over them.
        pairs = zip(jax.tree_util.tree_leaves(got_g), jax.tree_util.tree_leaves(want), strict=True)
        for g, w in pairs:
            assert np.abs(np.asarray(w)).max() > 0
            np.testing.assert_allclose(g, 3 * w, rtol=1e-9, atol=1e-12)
    finally:
        jax.config.update("jax_enable_x64", was)


def test_batch_codes_equal_the_per_image_codes():
    from jcausal.ctvae import batch_codes
    from jcausal.nn import MCQVAE

    vae = MCQVAE(16, 8, 2, 4, width=6, key=jax.random.key(2))
    images = jax.random.uniform(jax.random.key(3), (5, 16, 16, 3))
    want = jax.vmap(vae.codes)(images)
    got = batch_codes(vae, images)
    assert got.shape == (5, 8, 8, 2)
    assert len(np.unique(np.asarray(want))) > 1
    np.testing.assert_array_equal(got, want)


def test_reader_takes_an_empty_batch_and_names_bad_shapes():
    reader = FactorReader(16, (3, 4, 5), key=jax.random.key(0))
    assert reader.batch(jnp.zeros((0, 16, 16, 3))).shape == (0, 3, 5)
    for shape in [(2, 16, 16, 1), (2, 32, 32, 3), (16, 16, 3)]:
        with pytest.raises(ValueError, match=r"FactorReader reads images of shape \(batch, 16"):
            reader.batch(jnp.zeros(shape))
    with pytest.raises(ValueError, match="FactorReader"):
        reader(jnp.zeros((16, 16, 4)))
