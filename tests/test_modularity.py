"""Hybrids, influence maps, NMF modules and the classifier probe (jcausal.modularity)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.modularity import (
    Stages,
    channel_mask,
    classifier_probe,
    decoder_stages,
    find_modules,
    hybridise,
    hybrids,
    influence_maps,
    measure_slant,
    measure_width,
)
from jcausal.nn import MNISTDecoder, Pure

# Small networks built and called a few times: compilation is the time (tests/conftest.py,
# fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def decoder():
    return Pure(MNISTDecoder(4, 2, rngs=nnx.Rngs(0), width=8))


@pytest.fixture(scope="module")
def pairs():
    k1, k2 = jax.random.split(jax.random.key(1))
    return jax.random.normal(k1, (5, 6)), jax.random.normal(k2, (5, 6))


def test_stages_compose_to_the_decoder(decoder, pairs):
    st = decoder_stages(decoder)
    z = pairs[0][0]
    np.testing.assert_allclose(st(z), decoder(z[:4], z[4:]), rtol=1e-5, atol=1e-5)
    acts = st.activations(z)
    assert acts["reshape"].shape == (7, 7, 8) and acts["up1"].shape == (14, 14, 8)
    assert st.channels(z, "up1") == 8


def test_film_decoder_stages_with_fixed_context():
    net = Pure(MNISTDecoder(4, 2, rngs=nnx.Rngs(3), width=8, condition="film"))
    # FiLM starts as the identity; perturb it so the context matters.
    net = jax.tree_util.tree_map(lambda x: x + 0.1 if x.dtype == jnp.float32 else x, net)
    ctx = jnp.array([0.5, -1.0])
    st = decoder_stages(net, ctx)
    z = jnp.linspace(-1, 1, 4)
    np.testing.assert_allclose(st(z), net(z, ctx), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="condition='film'"):
        decoder_stages(net)


def test_empty_set_is_receiver_and_full_set_is_donor(decoder, pairs):
    st = decoder_stages(decoder)
    z1, z2 = pairs[0][0], pairs[1][0]
    np.testing.assert_array_equal(hybridise(st, z1, z2, "up1", []), st(z1))
    for layer in ("reshape", "up1"):
        full = hybridise(st, z1, z2, layer, np.ones(8, bool))
        np.testing.assert_allclose(full, st(z2), rtol=1e-6, atol=1e-6)
        # and at the layer itself: the activation is the donor's
        h = jnp.where(np.ones(8, bool), st.upto(z2, layer), st.upto(z1, layer))
        np.testing.assert_array_equal(h, st.upto(z2, layer))
    # A proper subset is neither.
    part = hybridise(st, z1, z2, "up1", [0, 1, 2])
    assert float(jnp.max(jnp.abs(part - st(z1)))) > 1e-3
    assert float(jnp.max(jnp.abs(part - st(z2)))) > 1e-3


def test_vmap_over_pairs_and_sets_equals_a_loop(decoder, pairs):
    st = decoder_stages(decoder)
    z1, z2 = pairs
    masks = np.array([channel_mask(c, 8) for c in ([0], [1, 5], [], list(range(8)))])
    out = hybrids(st, z1, z2, "reshape", masks)
    assert out.shape == (5, 4, 28, 28)
    for n in range(5):
        for m in range(4):
            one = hybridise(st, z1[n], z2[n], "reshape", masks[m])
            np.testing.assert_allclose(out[n, m], one, rtol=1e-5, atol=1e-5)


def test_bad_layer_and_channels_are_named(decoder, pairs):
    st = decoder_stages(decoder)
    z1, z2 = pairs[0][0], pairs[1][0]
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*reshape"):
        hybridise(st, z1, z2, "conv9", [0])
    with pytest.raises(ValueError, match=r"\[8\] out of range.*8 channels"):
        hybridise(st, z1, z2, "up1", [1, 8])
    with pytest.raises(ValueError, match=r"\[-1\] out of range"):
        hybrids(st, pairs[0], pairs[1], "up1", [-1])
    with pytest.raises(ValueError, match=r"shape \(8,\) or \(M, 8\)"):
        hybridise(st, z1, z2, "up1", np.ones(5, bool))
    with pytest.raises(ValueError, match="must be integers"):
        hybridise(st, z1, z2, "up1", [0.5])
    with pytest.raises(ValueError, match="distinct"):
        Stages([("a", jnp.sin), ("a", jnp.cos)])
    with pytest.raises(ValueError, match="MNISTDecoder"):
        decoder_stages(eqx.nn.Linear(2, 2, key=jax.random.key(0)))


class _DeadChannelNet(eqx.Module):
    """3 channels: channel 1 is multiplied by zero, channel 2 feeds only the right half."""

    w: jax.Array

    def hidden(self, z):
        return jnp.tanh(self.w @ z)  # (3,)

    def out(self, h):
        left = jnp.full(4, h[0])
        right = jnp.full(4, h[0] + h[2] ** 2)
        return jnp.concatenate([left, right]) + 0.0 * h[1]


def test_dead_channel_has_zero_influence_and_live_ones_do_not():
    net = _DeadChannelNet(jax.random.normal(jax.random.key(0), (3, 5)))
    st = Stages([("hidden", net.hidden), ("out", net.out)])
    k1, k2 = jax.random.split(jax.random.key(2))
    z1, z2 = jax.random.normal(k1, (40, 5)), jax.random.normal(k2, (40, 5))
    infl = influence_maps(st, z1, z2, "hidden", chunk=16)
    assert infl.shape == (3, 8)
    np.testing.assert_array_equal(infl[1], 0.0)
    assert np.all(infl[0] > 0.05)
    np.testing.assert_array_equal(infl[2, :4], 0.0)  # channel 2 never reaches the left half
    assert np.all(infl[2, 4:] > 0.01)
    # independent check of channel 0's map: direct numpy loop
    h1, h2 = (
        np.tanh(np.asarray(z1) @ np.asarray(net.w).T),
        np.tanh(np.asarray(z2) @ np.asarray(net.w).T),
    )
    np.testing.assert_allclose(infl[0, 0], np.mean(np.abs(h2[:, 0] - h1[:, 0])), rtol=1e-5)


def test_nmf_recovers_planted_blocks():
    rng = np.random.default_rng(0)
    pix = 60
    footprints = np.zeros((3, pix))
    footprints[0, :20] = 1.0
    footprints[1, 20:40] = 1.0
    footprints[2, 40:] = 1.0
    truth = np.repeat(np.arange(3), [4, 5, 3])
    infl = footprints[truth] * rng.uniform(0.5, 2.0, (12, 1)) + rng.uniform(0, 0.02, (12, pix))
    infl = np.concatenate([infl, np.zeros((1, pix))])  # a dead channel
    rng.shuffle(order := np.arange(13))
    mods = find_modules(infl[order], explained=0.95)
    assert mods.rank == 3
    assign = np.empty(13, int)
    assign[order] = mods.assignment
    assert assign[12] == -1  # the dead channel is unassigned
    # same partition as the truth, up to relabelling
    for k in range(3):
        labels = set(assign[:12][truth == k])
        assert len(labels) == 1 and -1 not in labels
    assert len(set(assign[:12])) == 3
    assert mods.masks().shape == (3, 13) and mods.masks().sum() == 12
    assert mods.explained[2] < 0.95 <= mods.explained[3]


def test_mixed_channel_is_unassigned_and_bad_input_refused():
    a = np.r_[np.ones(10), np.zeros(10)]
    b = np.r_[np.zeros(10), np.ones(10)]
    infl = np.stack([a, a * 2, b, b * 3, a + b])  # the last channel is an even mix
    mods = find_modules(infl, rank=2)
    assert mods.assignment[4] == -1 and mods.purity[4] < 0.1
    assert mods.assignment[0] == mods.assignment[1] != mods.assignment[2] == mods.assignment[3]
    with pytest.raises(ValueError, match="non-negative"):
        find_modules(-infl)
    with pytest.raises(ValueError, match="rank"):
        find_modules(infl, rank=6)
    with pytest.raises(ValueError, match="every influence map is zero"):
        find_modules(np.zeros((3, 4)))


def test_classifier_probe_counts_agreement_and_entropy():
    # a "classifier" that reads the class off the first pixel: 0 or 1, with certainty
    def classify(x):
        c = (x.reshape(len(x), -1)[:, 0] > 0.5).astype(int)
        return np.eye(2)[c]

    r = np.zeros((4, 2, 2))
    d = np.ones((4, 2, 2))
    h = np.stack([r, d, d], 1)  # per pair: one hybrid like the receiver, two like the donor
    out = classifier_probe(classify, h, r, d)
    assert out["entropy"] == 0.0
    assert out["receiver_agreement"] == pytest.approx(1 / 3)
    assert out["donor_agreement"] == pytest.approx(2 / 3)
    uniform = classifier_probe(lambda x: np.full((len(x), 2), 0.5), h, r, d)
    assert uniform["entropy"] == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match="probabilities"):
        classifier_probe(lambda x: np.ones((len(x), 2)), h, r, d)


def test_slant_and_width_of_drawn_shapes():
    img = np.zeros((28, 28))
    img[4:24, 10:14] = 255.0  # an upright bar 4 pixels wide
    assert measure_slant(img) == pytest.approx(0.0, abs=1e-12)
    assert measure_width(img) == pytest.approx(4.0)
    sheared = np.zeros((28, 28))
    for r in range(4, 24):  # moves right by 0.5 px per row going up: slant arctan(0.5)
        c = 8 + (23 - r) // 2
        sheared[r, c : c + 4] = 255.0
    assert measure_slant(sheared) == pytest.approx(np.arctan(0.5), abs=0.03)
    assert measure_width(sheared) == pytest.approx(4.0, abs=1.0)
    assert measure_slant(np.zeros((28, 28))) == 0.0 and measure_width(np.zeros((28, 28))) == 0.0


def test_transfer_and_module_table_of_known_hybrids():
    from jcausal.experiments.modularity import module_table, transfer

    rng = np.random.default_rng(0)
    r, d = rng.normal(size=50), rng.normal(size=50)
    assert transfer(d, r, d) == pytest.approx(1.0)
    assert transfer(r, r, d) == pytest.approx(0.0)
    assert transfer(0.3 * d + 0.7 * r, r, d) == pytest.approx(0.3)
    # module 0 swaps in the donor image, module 1 keeps the receiver: all transfer is module 0's
    rec = np.zeros((6, 28, 28))
    don = np.zeros((6, 28, 28))
    for k in range(6):
        rec[k, 6:22, 12 : 14 + k % 2] = 200.0
        don[k, 5:23, 10 : 15 + k % 3] = 120.0 + 20 * k
    table, summary = module_table(np.stack([don, rec], 1), rec, don)
    for a in ("thickness", "intensity", "width"):
        assert table[a][0] == pytest.approx(1.0) and table[a][1] == pytest.approx(0.0)
    assert summary["score"] == pytest.approx(1.0)


def test_object_alpha_recomposes_the_rendered_scene():
    from jcausal.data import Shapes
    from jcausal.experiments.modularity_scenes import object_alpha

    shapes = Shapes(size=32)
    f = jnp.array([[0, 3, 1, 2, 5], [2, 0, 4, 0, 11]])
    alpha = np.asarray(object_alpha(shapes, f))
    img = np.asarray(shapes.render(f))
    for k in range(2):
        bg = img[k, 0, 0]
        i, j = np.unravel_index(np.argmax(alpha[k]), alpha[k].shape)
        colour = (img[k, i, j] - (1 - alpha[k, i, j]) * bg) / alpha[k, i, j]
        assert alpha[k, i, j] > 0.9 and alpha[k, 0, 0] < 1e-3
        a = alpha[k][..., None]
        np.testing.assert_allclose(a * colour + (1 - a) * bg, img[k], atol=2e-3)
    assert alpha[0].mean() > alpha[1].mean()  # scale 3 vs scale 0


def test_mcqvae_decoder_stages_compose_and_hybridise():
    from jcausal.modularity import mcqvae_stages
    from jcausal.nn import MCQVAE

    vae = MCQVAE(32, dim=8, num_codebooks=2, num_codes=8, width=8, key=jax.random.key(0))
    imgs = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    zq = jax.vmap(lambda x: vae.quantizer.lookup(vae.codes(x)))(imgs)
    st = mcqvae_stages(vae)
    assert st.names == ("res", "up1", "out")  # 32 px: two upsamplings
    np.testing.assert_allclose(st(zq[0]), vae.decode(zq[0]), rtol=1e-5, atol=1e-6)
    assert st.upto(zq[0], "res").shape == (8, 8, 8) and st.upto(zq[0], "up1").shape[-1] == 8
    full = hybridise(st, zq[0], zq[1], "up1", np.ones(8, bool))
    np.testing.assert_allclose(full, vae.decode(zq[1]), rtol=1e-5, atol=1e-6)
    for layer in ("res", "up1"):  # the empty set is the receiver's own decoding
        empty = hybridise(st, zq[0], zq[1], layer, [])
        np.testing.assert_allclose(empty, vae.decode(zq[0]), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(full - vae.decode(zq[0]))).max() > 1e-3  # the sources differ
    with pytest.raises(ValueError, match="MCQVAE"):
        mcqvae_stages(Pure(MNISTDecoder(4, 2, rngs=nnx.Rngs(0), width=8)))


def test_object_shares_of_a_constructed_decoder():
    from jcausal.experiments.modularity_scenes import object_shares

    # Output RGB = (h0, h0, h1): channel 0 moves two colour planes, channel 1 one.
    st = Stages(
        [("l", lambda z: z), ("out", lambda h: jnp.stack([h[..., 0], h[..., 0], h[..., 1]], -1))]
    )
    rng = np.random.default_rng(0)
    n, s = 3, 5
    obj = rng.random((n, s, s)) < 0.3
    z1 = rng.normal(size=(n, s, s, 2)).astype(np.float32)
    d = rng.normal(size=(n, s, s, 2)).astype(np.float32)
    d[..., 0] *= obj  # channel 0 differs only on the object, channel 1 only off it
    d[..., 1] *= ~obj
    z2 = z1 + d
    masks = np.array([[True, False], [False, True], [True, True], [False, False]])
    share = object_shares(st, jnp.asarray(z1), jnp.asarray(z2), "l", masks, obj, chunk=2)
    assert share[0] == pytest.approx(1.0) and share[1] == pytest.approx(0.0)
    both = 2 * np.abs(d[..., 0]) + np.abs(d[..., 1])
    assert share[2] == pytest.approx((both * obj).sum() / both.sum(), rel=1e-5)
    assert 0.05 < share[2] < 0.95 and np.isnan(share[3])  # the empty set changes nothing
    # Random differences everywhere: the share is the pooled object fraction of the change.
    z3 = jnp.asarray(z1 + rng.normal(size=z1.shape).astype(np.float32))
    share = object_shares(st, jnp.asarray(z1), z3, "l", masks[:1], obj)
    change = 2 * np.abs(np.asarray(z3)[..., 0] - z1[..., 0])
    assert share[0] == pytest.approx((change * obj).sum() / change.sum(), rel=1e-5)
    _, kept = object_shares(st, jnp.asarray(z1), jnp.asarray(z2), "l", masks, obj, keep=2)
    assert kept.shape == (2, 4, s, s, 3)
    np.testing.assert_allclose(kept[1, 2], hybridise(st, z1[1], z2[1], "l", [0, 1]), atol=1e-6)
    np.testing.assert_allclose(kept[0, 0, ..., 2], z1[0, ..., 1], atol=1e-6)  # only ch 0 moved
    with pytest.raises(ValueError, match="obj must be"):
        object_shares(st, jnp.asarray(z1), z3, "l", masks, obj[:, :4])


def test_specificity_and_attribute_groups_of_known_tables():
    from jcausal.experiments.modularity_attributes import attribute_groups, specificity

    # Module 0 moves thickness only; module 1 all four alike; module 2 nothing (or backwards).
    table = {
        "thickness": [0.8, 0.5, -0.2],
        "intensity": [0.0, 0.5, 0.0],
        "slant": [-0.1, 0.5, float("nan")],
        "width": [0.0, 0.5, 0.0],
    }
    top, spec = specificity(table)
    assert top == ["thickness", "thickness", None]
    assert spec[0] == pytest.approx(1.0) and spec[1] == pytest.approx(0.25) and np.isnan(spec[2])
    # Channels 0-1 transfer slant far above the layer's mean, 2 width, 3 is below every mean.
    channels = {
        "thickness": [0.1, 0.1, 0.1, 0.0],
        "intensity": [0.1, 0.1, 0.1, 0.0],
        "slant": [0.9, 0.6, 0.1, 0.0],
        "width": [0.1, 0.1, 0.5, 0.05],
    }
    groups = attribute_groups(channels)
    assert groups.shape == (4, 4)
    assert groups[2].tolist() == [True, True, False, False]  # slant
    assert groups[3].tolist() == [False, False, True, False]  # width
    assert not groups[:2].any() and not groups[:, 3].any()
