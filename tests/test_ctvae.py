"""CT-VAE: the causal transition layer, its losses, and the transition as an SCM."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jcausal as jc
from jcausal.ctvae import (
    CTLayer,
    Weights,
    action_logliks,
    action_posterior,
    code_loglik,
    ct_loss,
    gumbel_bernoulli,
    intervene,
    mask_rate,
    mask_target_loss,
    repeat_action,
    scm,
)
from jcausal.data.transitions import Shapes
from jcausal.nn import MCQVAE

# Small networks built and called a few times: compilation is the time (tests/conftest.py,
# fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")

A = 6
VAE = MCQVAE(16, dim=4, num_codebooks=2, num_codes=5, width=4, key=jax.random.key(0))
SHAPES = Shapes(16, (3, 2, 2, 2, 3))  # 6 actions, tiny images


class BlockCodec(eqx.Module):
    """An exactly invertible codec for the tests: code c of a 2x2 block is channel c's level."""

    image_size: int = 8
    grid: tuple = (4, 4)
    num_codebooks: int = 2
    num_codes: int = 5

    def check_image(self, image):
        VAE.__class__.check_image(self, image)

    def codes(self, image):
        self.check_image(image)
        block = image.reshape(4, 2, 4, 2, 3).mean((1, 3))[..., :2]
        return jnp.round(block * (self.num_codes - 1)).astype(jnp.int32)

    def decode_codes(self, idx):
        level = idx.astype(jnp.float32) / (self.num_codes - 1)
        img = jnp.concatenate([level, jnp.zeros((4, 4, 1))], -1)
        return jnp.repeat(jnp.repeat(img, 2, 0), 2, 1)


CODEC = BlockCodec()


def _blocks(n, seed=0):
    idx = jax.random.randint(jax.random.key(seed), (n, 4, 4, 2), 0, 5)
    return jax.vmap(CODEC.decode_codes)(idx)


def _images(n, seed=0):
    return SHAPES.sample_scenes(jax.random.key(seed), n)["image"]


def test_gumbel_bernoulli_has_the_stated_probabilities():
    logits = jnp.array([-2.0, 0.0, 0.7, 2.5])
    n = 20_000
    draws = jax.vmap(lambda k: gumbel_bernoulli(k, logits))(jax.random.split(jax.random.key(1), n))
    d = np.asarray(draws)
    assert set(np.unique(d)) <= {0.0, 1.0}
    p = 1 / (1 + np.exp(-np.asarray(logits)))
    for j in range(4):
        assert stats.binomtest(int(d[:, j].sum()), n, p[j]).pvalue > 1e-3, j
    # The relaxed gradient flows (straight-through), and the mode is the threshold.
    g = jax.grad(lambda z: gumbel_bernoulli(jax.random.key(2), z).sum())(logits)
    assert np.all(np.asarray(g) > 0)
    np.testing.assert_array_equal(gumbel_bernoulli(None, logits), [0, 0, 1, 1])


def test_identity_initialisation_reproduces_the_input_codes():
    ct = CTLayer(VAE.grid, 2, 5, A, key=jax.random.key(3))
    codes = jax.random.randint(jax.random.key(4), (8, *VAE.grid, 2), 0, 5)
    for key in (None, jax.random.key(5)):  # graph mode and a sampled graph
        out = jax.vmap(lambda c, key=key: ct(c, A, key))(codes)  # standard mode: null action
        np.testing.assert_array_equal(jnp.argmax(out, -1), codes)
    # Standard-mode losses are then small, and every term is finite.
    x = _images(4)
    batch = {"x": x, "y": x, "a": jnp.zeros(4, jnp.int32)}
    loss, aux = ct_loss(2)({"vae": VAE, "ct": ct}, batch, jax.random.key(6))
    assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in aux.values())
    assert float(aux["identity_graph"]) / (64 * 2) < 1e-2


def _peaked_model(seed=7, grid=(4, 4)):
    ct = CTLayer(grid, 2, 5, A, identity=False, key=jax.random.key(seed))
    # Sharp, action-dependent logits: the readout scaled up, every node under the action.
    ct = eqx.tree_at(lambda c: c.mask_bias, ct, ct.mask_bias + 10.0)
    return eqx.tree_at(lambda c: c.head, ct, ct.head * 40.0)


def test_causal_mode_sums_to_one_and_picks_the_action():
    ct = _peaked_model()
    model = scm(CODEC, ct)
    x = _blocks(6, seed=8)
    a = jnp.arange(6) % A
    y = intervene(model, x, a)  # the most likely image under the true action
    cx = jax.vmap(CODEC.codes)(x)
    cy = jax.vmap(CODEC.codes)(y)
    np.testing.assert_array_equal(jax.vmap(CODEC.decode_codes)(cx), x)  # the codec is exact
    # The construction identifies the action where no other action gives the same code grid.
    modes = jax.vmap(lambda c: jax.vmap(lambda b: jnp.argmax(ct(c, b), -1))(jnp.arange(A)))(cx)
    clear = [
        i
        for i in range(6)
        if all(bool(jnp.any(modes[i, b] != modes[i, a[i]])) for b in range(A) if b != int(a[i]))
    ]
    assert len(clear) >= 4
    clear = np.array(clear)
    np.testing.assert_array_equal(cy, modes[jnp.arange(6), a])
    q = action_posterior(model, x, y)
    assert q.shape == (6, A)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(jnp.argmax(q, -1)[clear], a[clear])
    assert float(jnp.min(q[jnp.arange(6), a][clear])) > 0.99
    # The engine's posterior is eq. (10) computed directly on the codes.
    direct = jax.nn.softmax(jax.vmap(lambda u, v: action_logliks(ct, u, v))(cx, cy), -1)
    np.testing.assert_allclose(q, direct, atol=1e-6)
    # The Monte Carlo marginal over drawn graphs: log mean_s p(y | x, a, graph_s), the draw of
    # each key the same for every unit, computed directly (a layer whose mask and graph vary).
    ct2 = CTLayer(CODEC.grid, 2, 5, A, identity=False, key=jax.random.key(21))
    keys = jax.random.split(jax.random.key(22), 3)
    q2 = action_posterior(scm(CODEC, ct2, keys[0]), x, y, keys)

    def ll(k):
        return jax.vmap(lambda u, v: jax.vmap(lambda b: code_loglik(ct2(u, b, k), v))(
            jnp.arange(A)))(cx, cy)  # fmt: skip

    lls = jnp.stack([ll(k) for k in keys])
    assert float(jnp.max(jnp.std(lls, 0))) > 0.1  # the draws differ
    marg = jax.nn.logsumexp(lls, 0) - np.log(3)
    np.testing.assert_allclose(q2, jax.nn.softmax(marg, -1), atol=1e-5)
    with pytest.raises(ValueError, match="graph_key"):
        action_posterior(model, x, y, keys)


def test_counterfactual_through_the_engine_equals_the_model():
    ct = _peaked_model(9, VAE.grid)
    model = scm(VAE, ct)
    x = _images(5, seed=10)
    a = jnp.array([0, 1, 2, 3, 4])
    key = jax.random.key(11)
    y = jc.sample(key, jc.do(model, {"x": jc.Hard(x), "a": jc.Hard(a)}), 5)["y"]
    obs = {"x": x, "a": a, "y": y}
    a2 = jnp.array([5, 5, 0, 1, 2])
    cf = jc.counterfactual(model, obs, {"a": jc.Hard(a2)}, jax.random.key(12))
    # Direct: abducted Gumbel noise, CT logits under a2, argmax, decode.
    g = jc.abduct(model, obs, jax.random.key(12))["y"]
    cx = jax.vmap(VAE.codes)(x)
    direct = jax.vmap(lambda c, b, n: VAE.decode_codes(jnp.argmax(ct(c, b) + n, -1)))(cx, a2, g)
    np.testing.assert_allclose(cf["y"], direct, atol=1e-6)
    # The abducted noise reproduces the observed codes under the observed action.
    back = jax.vmap(lambda c, b, n: jnp.argmax(ct(c, b) + n, -1))(cx, a, g)
    np.testing.assert_array_equal(back, jax.vmap(VAE.codes)(y))
    # Repeated action (Fig. 5) is a scan of interventions.
    seq = repeat_action(model, x, a2, 3)
    np.testing.assert_allclose(seq[1], intervene(model, seq[0], a2), atol=1e-6)


def test_bad_input_is_named():
    model = scm(VAE, _peaked_model(7, VAE.grid))
    x = _images(2)
    obs = {"x": x, "a": jnp.array([0, 1]), "y": x}
    with pytest.raises(ValueError, match="'a'"):
        jc.counterfactual(model, obs, {"a": jc.Hard(A)}, jax.random.key(0))
    with pytest.raises(ValueError, match="'a'"):
        jc.abduct(model, {**obs, "a": jnp.array([0, A])}, jax.random.key(0))
    with pytest.raises(ValueError, match="node 'y'|shape"):
        jc.abduct(model, {**obs, "y": jnp.zeros((2, 32, 32, 3))}, jax.random.key(0))
    with pytest.raises(ValueError, match=r"\(16, 16, 3\)"):
        VAE.codes(jnp.zeros((16, 16, 4)))
    with pytest.raises(ValueError, match="code grid"):
        CTLayer(VAE.grid, 2, 5, A, key=jax.random.key(0))(jnp.zeros((4, 4, 2), jnp.int32), 0)
    with pytest.raises(ValueError, match="num_negatives"):
        ct_loss(0)


def test_actions_out_of_range_raise_inside_the_layer():
    ct = CTLayer(VAE.grid, 2, 5, A, key=jax.random.key(0))
    codes = jnp.zeros((*VAE.grid, 2), jnp.int32)
    with pytest.raises(Exception, match="action out of range"):
        jax.block_until_ready(ct(codes, A + 1))
    model = scm(VAE, ct)
    with pytest.raises(Exception, match="action out of range"):
        jax.block_until_ready(intervene(model, _images(2), jnp.array([0, -1])))


def test_mask_rate_and_changed_codes_terms_have_their_closed_forms():
    # The mask-sparsity penalty is the expected mask rate, mean sigmoid(rho).
    rho = jnp.array([0.0, np.log(3.0), -np.log(3.0), 20.0])
    assert float(mask_rate(rho)) == pytest.approx((0.5 + 0.75 + 0.25 + 1.0) / 4, rel=1e-6)
    # An identity-initialised layer outputs logits 8 * onehot(cx) whatever the action, so
    # every code of Y has log p = 8 [cy == cx] - log(e^8 + K - 1), K = 5.
    ct = CTLayer(CODEC.grid, 2, 5, A, key=jax.random.key(3))
    idx = jax.random.randint(jax.random.key(4), (3, 4, 4, 2), 0, 5)
    idy = idx.at[:, :2, 0, 1].set((idx[:, :2, 0, 1] + 1) % 5).at[2].set(idx[2])  # unit 2: copy
    x = jax.vmap(CODEC.decode_codes)(idx)
    y = jax.vmap(CODEC.decode_codes)(idy)
    batch = {"x": x, "y": y, "a": jnp.array([0, 3, 5])}
    params = {"vae": CODEC, "ct": ct}
    # Compiled (filter_jit: the codec's sizes stay static): one compile beats eager ops here.
    base, aux = eqx.filter_jit(ct_loss(2))(params, batch, jax.random.key(5))
    lse = np.log(np.exp(8.0) + 4)
    changed = np.array([2, 2, 0])  # changed codes per unit
    # ``changed`` is the mean over a unit's changed codes (0 for a unit without any).
    np.testing.assert_allclose(aux["changed"], np.mean([lse, lse, 0.0]), rtol=1e-5)
    np.testing.assert_allclose(aux["action"], np.mean(32 * lse - 8 * (32 - changed)), rtol=1e-5)
    # Both terms enter the total times their weights.
    more, _ = eqx.filter_jit(ct_loss(2, Weights(changed=3.0, mask=2.0)))(
        params, batch, jax.random.key(5)
    )
    want = 3 * np.mean([lse, lse, 0.0]) + 2 * float(aux["mask"])
    np.testing.assert_allclose(float(more - base), want, rtol=1e-4)
    # The fresh layer's mask logits are MLP outputs around 0: a rate strictly inside (0, 1).
    assert 0.0 < float(aux["mask"]) < 1.0


def test_causal_mode_over_every_action_is_the_evaluated_posterior():
    # A layer whose mask and graph are certain (logits +30): training's samples are the modes,
    # so causal mode over every action (num_negatives=None, eq. 10) is the cross-entropy of the
    # posterior evaluation ranks, -log softmax_a(action_logliks)[a_true] per unit.
    ct = CTLayer(CODEC.grid, 2, 5, A, identity=False, key=jax.random.key(6))
    ct = eqx.tree_at(lambda c: (c.mask_bias, c.adj_c), ct, (ct.mask_bias + 30, ct.adj_c + 30))
    idx = jax.random.randint(jax.random.key(7), (3, 4, 4, 2), 0, 5)
    idy = jax.random.randint(jax.random.key(8), (3, 4, 4, 2), 0, 5)
    a = jnp.array([0, 3, 5])
    batch = {"x": jax.vmap(CODEC.decode_codes)(idx), "y": jax.vmap(CODEC.decode_codes)(idy), "a": a}
    ll = jax.vmap(lambda x, y: action_logliks(ct, x, y))(idx, idy)
    ce = -np.asarray(jnp.take_along_axis(jax.nn.log_softmax(ll, -1), a[:, None], -1)[:, 0])
    assert np.ptp(ce) > 1e-3  # the units differ, so the weighting below is visible
    params = {"vae": CODEC, "ct": ct}
    _, aux = eqx.filter_jit(ct_loss(None))(params, batch, jax.random.key(9))
    np.testing.assert_allclose(float(aux["causal"]), ce.mean(), rtol=1e-5)
    # Class weights per true action: the batch mean becomes the weighted mean.
    w = np.arange(1.0, A + 1)
    _, aux = eqx.filter_jit(ct_loss(None, action_weights=w))(params, batch, jax.random.key(9))
    np.testing.assert_allclose(float(aux["causal"]), np.sum(w[a] * ce) / np.sum(w[a]), rtol=1e-5)
    with pytest.raises(ValueError, match="action_weights"):
        ct_loss(None, action_weights=-w)


def test_keep_gate_readout_is_the_stated_mixture():
    # gate=True: p(k) = g 1[k = x] + (1 - g) softmax(head h)_k with g = sigmoid(w.h + b). The
    # gate-less layer of the same key has the same mask, graph, GNN and head (the gate's
    # weights come from a key nothing else uses): with its skip at 0 it gives head h alone.
    kw = dict(identity=False, key=jax.random.key(13))
    gated = CTLayer(CODEC.grid, 2, 5, A, gate=True, **kw)
    b = jnp.array([np.log(3.0), -1.0])
    gated = eqx.tree_at(lambda c: (c.gate_w, c.gate_b), gated, (0.0 * gated.gate_w, b))
    plain = eqx.tree_at(lambda c: c.skip, CTLayer(CODEC.grid, 2, 5, A, **kw), jnp.asarray(0.0))
    codes = jax.random.randint(jax.random.key(14), (4, 4, 2), 0, 5)
    for a in (0, A):  # an action and the null action
        p = np.exp(np.asarray(gated(codes, a), np.float64))
        new = np.asarray(jax.nn.softmax(plain(codes, a), -1), np.float64)
        g = 1 / (1 + np.exp(-np.asarray(b, np.float64)))[:, None]
        want = g * np.eye(5)[np.asarray(codes)] + (1 - g) * new
        np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    # Identity initialisation with the gate: standard mode reproduces the input codes.
    ident = CTLayer(CODEC.grid, 2, 5, A, gate=True, key=jax.random.key(15))
    np.testing.assert_array_equal(jnp.argmax(ident(codes, A, jax.random.key(16)), -1), codes)


def test_neighbourhood_features_are_the_neighbours_codes():
    ct = CTLayer((3, 4), 2, 5, A, neighbours=True, key=jax.random.key(30))
    codes = jax.random.randint(jax.random.key(31), (3, 4, 2), 0, 5)
    f = np.asarray(ct.features(codes))
    assert f.shape == (12, ct.base_dims + 8 * 10)
    onehot = np.eye(5)[np.asarray(codes)].reshape(3, 4, 10)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    for i in range(3):
        for j in range(4):
            for n, (dy, dx) in enumerate(offsets):
                block = f[i * 4 + j, ct.base_dims + 10 * n : ct.base_dims + 10 * (n + 1)]
                inside = 0 <= i + dy < 3 and 0 <= j + dx < 4
                np.testing.assert_array_equal(block, onehot[i + dy, j + dx] if inside else 0)
    # The pair MLPs see the base features only; the identity initialisation still holds.
    plain = CTLayer((3, 4), 2, 5, A, key=jax.random.key(30))
    assert ct.adj_u.shape == plain.adj_u.shape and ct.embed.shape[0] == plain.embed.shape[0] + 80
    np.testing.assert_array_equal(jnp.argmax(ct(codes, 2, jax.random.key(32)), -1), codes)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_weights_refuse_negative_or_non_finite_values(bad):
    with pytest.raises(ValueError, match="Weights.changed must be a finite number >= 0"):
        Weights(changed=bad)
    assert Weights(changed=np.float32(2.0)).changed == 2.0


def test_action_heads_pick_the_readout_by_the_mask():
    # action_heads=True: node i reads out with head[a] where the mask is on, head[A] (null)
    # elsewhere. The same key gives the same mask, graph and GNN as the shared readout, so
    # putting head[b] into the shared layer must give exactly its logits on the nodes b covers.
    kw = dict(identity=False, key=jax.random.key(40))
    multi = CTLayer(CODEC.grid, 2, 5, A, action_heads=True, **kw)
    assert multi.head.shape == (A + 1, *CTLayer(CODEC.grid, 2, 5, A, **kw).head.shape)
    codes = jax.random.randint(jax.random.key(41), (4, 4, 2), 0, 5)
    feats = multi.features(codes)
    mask = (jnp.arange(16) % 3 == 0).astype(jnp.float32)  # some nodes under the action
    adj = jax.random.bernoulli(jax.random.key(42), 0.5, (16, 16)).astype(jnp.float32)
    for a in (0, 3, A):
        m = mask if a < A else jnp.zeros(16)
        out = np.asarray(multi.propagate(feats, a, m, adj)).reshape(16, -1)
        for b, rows in ((a, np.asarray(m) > 0), (A, np.asarray(m) == 0)):
            shared = eqx.tree_at(lambda c: c.head, multi, multi.head[b])
            want = np.asarray(shared.propagate(feats, a, m, adj)).reshape(16, -1)
            np.testing.assert_allclose(out[rows], want[rows], rtol=1e-5, atol=1e-5)
        # Other actions' readouts do not enter: zeroing them changes nothing.
        others = jnp.array([c for c in range(A + 1) if c not in (a, A)])
        cut = eqx.tree_at(lambda c: c.head, multi, multi.head.at[others].set(0.0))
        np.testing.assert_allclose(np.asarray(cut.propagate(feats, a, m, adj)).reshape(16, -1), out)
    # The identity initialisation still reproduces the input codes under every action.
    ident = CTLayer(CODEC.grid, 2, 5, A, action_heads=True, key=jax.random.key(43))
    for a in (0, A):
        np.testing.assert_array_equal(jnp.argmax(ident(codes, a, jax.random.key(44)), -1), codes)


def test_skip_sets_the_copy_prior_and_the_identity_still_holds():
    # skip is the initial weight of the input's one-hot codes: with the identity initialisation
    # (zero readout) the input code's probability is e^s / (e^s + K - 1) whatever the graph.
    codes = jax.random.randint(jax.random.key(50), (4, 4, 2), 0, 5)
    for s in (0.5, 3.0):
        ct = CTLayer(CODEC.grid, 2, 5, A, action_heads=True, skip=s, key=jax.random.key(51))
        assert float(ct.skip) == s
        for a in (0, A):
            p = jax.nn.softmax(ct(codes, a, jax.random.key(52)), -1)
            own = np.asarray(jnp.take_along_axis(p, codes[..., None], -1))
            np.testing.assert_allclose(own, np.exp(s) / (np.exp(s) + 4), rtol=1e-5)
            np.testing.assert_array_equal(jnp.argmax(p, -1), codes)
    assert float(CTLayer(CODEC.grid, 2, 5, A, key=jax.random.key(51)).skip) == 8.0
    assert float(CTLayer(CODEC.grid, 2, 5, A, identity=False, key=jax.random.key(51)).skip) == 1.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="skip"):
            CTLayer(CODEC.grid, 2, 5, A, skip=bad, key=jax.random.key(51))


def test_acted_skip_is_the_copy_prior_of_the_nodes_under_the_mask():
    # With the identity initialisation (zero readouts) the logits are the copy prior times the
    # input's one-hot codes: acted_skip on the nodes the mask covers, skip on the others.
    codes = jax.random.randint(jax.random.key(60), (4, 4, 2), 0, 5)
    ct = CTLayer(CODEC.grid, 2, 5, A, action_heads=True, skip=3.0, acted_skip=0.5,
                 key=jax.random.key(61))  # fmt: skip
    feats = ct.features(codes)
    mask = (jnp.arange(16) % 4 == 1).astype(jnp.float32)
    adj = jax.random.bernoulli(jax.random.key(62), 0.5, (16, 16)).astype(jnp.float32)
    out = np.asarray(ct.propagate(feats, 2, mask, adj)).reshape(16, 2, 5)
    onehot = np.eye(5)[np.asarray(codes).reshape(16, 2)]
    prior = np.where(np.asarray(mask)[:, None, None] > 0, 0.5, 3.0)
    np.testing.assert_allclose(out, prior * onehot, atol=1e-6)
    # The null action covers no node: standard mode still reproduces the input codes.
    np.testing.assert_array_equal(jnp.argmax(ct(codes, A, jax.random.key(63)), -1), codes)
    # acted_skip=None is one prior for every node, as before.
    plain = CTLayer(CODEC.grid, 2, 5, A, action_heads=True, skip=3.0, key=jax.random.key(61))
    assert plain.acted_skip is None
    np.testing.assert_allclose(
        np.asarray(plain.propagate(feats, 2, mask, adj)).reshape(16, 2, 5), 3.0 * onehot, atol=1e-6
    )
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="acted_skip"):
            CTLayer(CODEC.grid, 2, 5, A, acted_skip=bad, key=jax.random.key(61))


def test_mask_target_is_the_cross_entropy_of_the_mask_against_the_changed_cells():
    # Closed form: a cell is a target 1 if any codebook changed.
    cx = jnp.zeros((2, 2, 2), jnp.int32)
    cy = cx.at[0, 0, 1].set(3).at[1, 1].set(2)  # cells 0 and 3 changed
    rho = jnp.array([np.log(3.0), 0.0, 2.0, -1.0])
    p = 1 / (1 + np.exp(-np.asarray(rho, np.float64)))
    t = np.array([1.0, 0.0, 0.0, 1.0])
    want = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert float(mask_target_loss(rho, cx, cy)) == pytest.approx(want, rel=1e-5)
    # In ct_loss: the true action's mask logits (the mask network's output, no noise) against
    # the cells of each unit that changed, averaged over the batch, times its weight.
    ct = CTLayer(CODEC.grid, 2, 5, A, identity=False, key=jax.random.key(64))
    idx = jax.random.randint(jax.random.key(65), (3, 4, 4, 2), 0, 5)
    idy = idx.at[:, 1:3, 2, 0].set((idx[:, 1:3, 2, 0] + 2) % 5).at[1, 0, 0, 1].add(1) % 5
    a = jnp.array([1, 4, 0])
    batch = {"x": jax.vmap(CODEC.decode_codes)(idx), "y": jax.vmap(CODEC.decode_codes)(idy), "a": a}
    params = {"vae": CODEC, "ct": ct}
    base, aux = eqx.filter_jit(ct_loss(2))(params, batch, jax.random.key(66))
    each = []
    for u in range(3):
        r = np.asarray(ct.mask_logits(ct.features(idx[u]))[a[u]], np.float64)
        t = np.asarray(jnp.any(idx[u] != idy[u], -1)).reshape(-1).astype(float)
        assert 0 < t.sum() < 16
        pu = 1 / (1 + np.exp(-r))
        each.append(-np.mean(t * np.log(pu) + (1 - t) * np.log(1 - pu)))
    np.testing.assert_allclose(float(aux["mask_target"]), np.mean(each), rtol=1e-5)
    more, _ = eqx.filter_jit(ct_loss(2, Weights(mask_target=4.0)))(
        params, batch, jax.random.key(66)
    )
    np.testing.assert_allclose(float(more - base), 4 * np.mean(each), rtol=1e-4)
    with pytest.raises(ValueError, match="Weights.mask_target"):
        Weights(mask_target=-1.0)


def test_local_readout_adds_a_masked_mlp_and_starts_at_zero():
    kw = dict(neighbours=True, action_heads=True, key=jax.random.key(50))
    base = CTLayer(CODEC.grid, 2, 5, A, **kw)
    ct = CTLayer(CODEC.grid, 2, 5, A, local=16, **kw)
    codes = jax.random.randint(jax.random.key(51), (*CODEC.grid, 2), 0, 5)
    # Its output layer starts at zero: the same logits as without it, for every action.
    for a in range(A + 1):
        np.testing.assert_allclose(ct(codes, a), base(codes, a), atol=1e-5)
    # With a non-zero output layer: the logits move by relu(f W1 + act W1a + b) W2 exactly
    # where the mask is on, computed here by hand in numpy.
    w2 = jax.random.normal(jax.random.key(52), ct.local_w2.shape)
    ct = eqx.tree_at(lambda c: c.local_w2, ct, w2)
    feats = np.asarray(ct.features(codes))
    for a in (0, 3):
        g = ct.graph(ct.features(codes), a, None)
        mask = np.asarray(g["mask"])
        act = mask[:, None] * np.eye(A)[a]
        h = np.maximum(np.concatenate([feats, act], -1) @ np.asarray(ct.local_w1) + 0.0, 0)
        want = np.asarray(base(codes, a)).reshape(len(mask), -1)
        want = want + mask[:, None] * (h @ np.asarray(w2))
        got = np.asarray(ct(codes, a)).reshape(len(mask), -1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The null action has no mask: no local term.
    np.testing.assert_allclose(ct(codes, A), base(codes, A), atol=1e-5)
    for bad in (0, -3, 2.5, True, (), (8, 0), (8, 2.5), [True], "8"):
        with pytest.raises(ValueError, match="local"):
            CTLayer(CODEC.grid, 2, 5, A, local=bad, key=jax.random.key(0))
    with pytest.raises(ValueError, match="local and gate"):
        CTLayer(CODEC.grid, 2, 5, A, local=8, gate=True, key=jax.random.key(0))


def test_deeper_local_readout_is_the_mlp_of_its_widths():
    kw = dict(neighbours=True, action_heads=True, key=jax.random.key(50))
    base = CTLayer(CODEC.grid, 2, 5, A, **kw)
    one = CTLayer(CODEC.grid, 2, 5, A, local=16, **kw)
    ct = CTLayer(CODEC.grid, 2, 5, A, local=(16, 12, 8), **kw)
    # The first layer is the single-layer readout's (same key); two hidden-to-hidden layers.
    np.testing.assert_array_equal(ct.local_w1, one.local_w1)
    assert [w.shape for w, _ in ct.local_mid] == [(16, 12), (12, 8)]
    assert ct.local_w2.shape == (8, 2 * 5) and one.local_mid == ()
    codes = jax.random.randint(jax.random.key(51), (*CODEC.grid, 2), 0, 5)
    for a in range(A + 1):  # the output layer starts at zero
        np.testing.assert_allclose(ct(codes, a), base(codes, a), atol=1e-5)
    ks = jax.random.split(jax.random.key(54), 3)
    ct = eqx.tree_at(
        lambda c: (c.local_w2, c.local_b, c.local_mid[1][1]),
        ct,
        (
            jax.random.normal(ks[0], ct.local_w2.shape),
            0.1 * jax.random.normal(ks[1], (16,)),
            0.1 * jax.random.normal(ks[2], (8,)),
        ),
    )
    feats = np.asarray(ct.features(codes))
    for a in (1, 4):
        mask = np.asarray(ct.graph(ct.features(codes), a, None)["mask"])
        act = mask[:, None] * np.eye(A)[a]
        h = np.concatenate([feats, act], -1) @ np.asarray(ct.local_w1) + np.asarray(ct.local_b)
        h = np.maximum(h, 0)
        for w, b in ct.local_mid:
            h = np.maximum(h @ np.asarray(w) + np.asarray(b), 0)
        want = np.asarray(base(codes, a)).reshape(len(mask), -1)
        want = want + mask[:, None] * (h @ np.asarray(ct.local_w2))
        got = np.asarray(ct(codes, a)).reshape(len(mask), -1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_local_readout_gets_gradients():
    ct = CTLayer(VAE.grid, 2, 5, A, neighbours=True, action_heads=True, local=(8, 6),
                 key=jax.random.key(53))  # fmt: skip
    x, y = _images(4), _images(4, seed=9)
    batch = {"x": x, "y": y, "a": jnp.arange(4, dtype=jnp.int32) % A}

    def grads(c):
        loss = ct_loss(None)
        return jax.grad(lambda c: loss({"vae": VAE, "ct": c}, batch, jax.random.key(1))[0])(c)

    assert float(jnp.abs(grads(ct).local_w2).sum()) > 0
    # Once the output layer is off zero, every hidden layer learns too.
    w2 = jax.random.normal(jax.random.key(55), ct.local_w2.shape)
    g = grads(eqx.tree_at(lambda c: c.local_w2, ct, w2))
    for leaf in (g.local_w1, g.local_b, *g.local_mid[0]):
        assert float(jnp.abs(leaf).sum()) > 0
