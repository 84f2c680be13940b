"""Gumbel-max discrete mechanisms: exact posterior abduction (Deep SCM eq. C.3) and C.4."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import jcausal as jc

LAM0 = np.array([0.3, -1.2, 1.5, 0.0])
V = np.array([1.0, 2.5, -1.0, 0.5])


def gumbel_scm(dtype=jnp.float64):
    lam0, v = jnp.asarray(LAM0, dtype), jnp.asarray(V, dtype)
    return jc.SCM(
        x=jc.Root(distrax.Normal(jnp.asarray(0.0, dtype), 1.0)),
        y=jc.GumbelMax(lambda p, pa: p[0] + p[1] * pa["x"], (lam0, v), 4, ["x"]),
    )


def test_sampling_matches_softmax():
    scm = gumbel_scm()
    n = 40_000
    obs = jc.sample(jax.random.key(0), jc.do(scm, {"x": jc.Hard(0.0)}), n)
    counts = np.bincount(np.asarray(obs["y"]), minlength=4)
    p = np.exp(LAM0) / np.exp(LAM0).sum()
    assert stats.chisquare(counts, p * n).pvalue > 0.01


def test_posterior_matches_rejection_sampling():
    """The abducted noise has the law of prior noise conditioned on the observed category."""
    scm = gumbel_scm()
    k, n = 1, 20_000  # category 1 is the least likely one (p ~ 0.03)
    obs = {"x": np.zeros(n), "y": np.full(n, k, dtype=np.int32)}
    g_post = np.asarray(jc.abduct(scm, obs, jax.random.key(1))["y"])

    rng = np.random.default_rng(2)
    g = rng.gumbel(size=(1_500_000, 4))
    g_rej = g[np.argmax(LAM0 + g, axis=1) == k][:n]
    assert g_rej.shape[0] > 10_000

    for coord in range(4):
        assert stats.ks_2samp(g_post[:, coord], g_rej[:, coord]).pvalue > 0.001, coord
    # Counterfactual outcomes under several new logit vectors: chi-square on the contingency
    # table of (method, category).
    for new_x in [1.0, -0.7, 2.0]:
        lam = LAM0 + V * new_x
        a = np.bincount(np.argmax(lam + g_post, axis=1), minlength=4)
        b = np.bincount(np.argmax(lam + g_rej, axis=1), minlength=4)
        table = np.stack([a, b])
        table = table[:, table.sum(0) > 0]
        if table.shape[1] > 1:
            assert stats.chi2_contingency(table).pvalue > 0.001, new_x
        # And the engine's counterfactual agrees with eq. C.4 on the abducted noise.
    cf = jc.counterfactual(scm, obs, {"x": jc.Hard(1.0)}, jax.random.key(1))
    np.testing.assert_array_equal(cf["y"], np.argmax(LAM0 + V * 1.0 + g_post, axis=1))


def test_wrong_posterior_would_be_detected():
    """Guard on the test above: prior noise (no conditioning) fails the same KS test."""
    rng = np.random.default_rng(3)
    g = rng.gumbel(size=(1_500_000, 4))
    g_rej = g[np.argmax(LAM0 + g, axis=1) == 1][:20_000]
    g_prior = rng.gumbel(size=(20_000, 4))
    assert stats.ks_2samp(g_prior[:, 1], g_rej[:, 1]).pvalue < 1e-6


def _constant_logits(p, pa):
    # Module level, so every hypothesis example reuses one compiled program.
    return p + 0.0 * pa["x"]


@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([jnp.float32, jnp.float64]),
    st.floats(0.1, 40.0),
)
def test_abduction_always_reproduces_the_category(seed, dtype, spread):
    rng = np.random.default_rng(seed)
    K, n = 5, 64
    lam = jnp.asarray(rng.normal(scale=spread, size=K), dtype)
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(jnp.asarray(0.0, dtype), 1.0)),
        y=jc.GumbelMax(_constant_logits, lam, K, ["x"]),
    )
    # Every category, including ones with probability ~ 0 under these logits.
    y = rng.integers(0, K, size=n).astype(np.int32)
    obs = {"x": np.zeros(n, dtype), "y": y}
    g = jc.abduct(scm, obs, jax.random.key(seed))["y"]
    assert g.dtype == dtype
    assert np.all(np.isfinite(np.asarray(g)))
    back = jax.vmap(lambda gi: scm.mechanisms["y"].forward({"x": 0.0}, gi))(g)
    np.testing.assert_array_equal(back, y)
    # Unchanged logits: the counterfactual gives back the observed category.
    cf = jc.counterfactual(scm, obs, {"x": jc.Shift(0.0)}, jax.random.key(seed + 1))
    np.testing.assert_array_equal(cf["y"], y)


def test_counterfactual_stability():
    """Raising only the observed category's logit never changes the outcome (Oberst & Sontag)."""
    n = 5_000
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        y=jc.GumbelMax(
            lambda p, pa: p + jnp.array([0.0, 0.0, 1.0]) * jax.nn.relu(pa["x"]),
            jnp.array([0.5, 0.1, -0.3]),
            3,
            ["x"],
        ),
    )
    obs = {"x": np.zeros(n), "y": np.full(n, 2, dtype=np.int32)}
    cf = jc.counterfactual(scm, obs, {"x": jc.Hard(3.0)}, jax.random.key(4))
    np.testing.assert_array_equal(cf["y"], 2)
    # Sanity of the setup: lowering that logit does change some outcomes.
    obs = {"x": np.zeros(n), "y": np.full(n, 0, dtype=np.int32)}
    cf = jc.counterfactual(scm, obs, {"x": jc.Hard(3.0)}, jax.random.key(4))
    assert 0 < np.mean(np.asarray(cf["y"]) == 2) < 1


def test_monte_carlo_counterfactual_probabilities():
    scm = gumbel_scm()
    obs = {"x": np.zeros(3), "y": np.array([0, 1, 2], dtype=np.int32)}
    cf = jc.counterfactual(scm, obs, {"x": jc.Hard(1.0)}, jax.random.key(5), num_samples=4000)
    assert cf["y"].shape == (4000, 3)
    assert cf["x"].shape == (4000, 3)
    np.testing.assert_array_equal(cf["x"], 1.0)
    # Unit-level counterfactual probabilities sum to one and are consistent with the
    # observational model: averaging P(y' | y, x) over y ~ P(y | x) gives P(y' | do(x')).
    probs = np.stack([np.bincount(np.asarray(cf["y"][:, i]), minlength=4) / 4000 for i in range(3)])
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert probs.shape == (3, 4)


def test_log_prob_categorical():
    scm = gumbel_scm()
    obs = {"x": np.array([0.0, 1.0, -1.0]), "y": np.array([0, 3, 2], dtype=np.int32)}
    lp = jc.log_prob(scm, obs, per_node=True)
    lam = LAM0[None] + V[None] * obs["x"][:, None]
    want = lam[np.arange(3), obs["y"]] - np.log(np.exp(lam).sum(1))
    np.testing.assert_allclose(lp["y"], want, rtol=1e-12)


LAM_GRID = np.array([[0.3, -1.2, 1.5, 0.0], [2.0, 0.0, -0.5, -3.0], [0.0, 0.0, 0.0, 0.0]])


def _grid_logits(p, pa):
    return p + 0.0 * pa["x"]


def test_vector_posterior_is_exact_per_position():
    """Vector form (logits (N, K)): each position's noise is its own eq. C.3 posterior."""
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        y=jc.GumbelMax(_grid_logits, jnp.asarray(LAM_GRID), 4, ["x"], shape=(3,)),
    )
    n = 20_000
    value = np.array([1, 3, 2], dtype=np.int32)  # an unlikely category at positions 0 and 1
    obs = {"x": np.zeros(n), "y": np.tile(value, (n, 1))}
    g = np.asarray(jc.abduct(scm, obs, jax.random.key(7))["y"])
    assert g.shape == (n, 3, 4)
    np.testing.assert_array_equal(np.argmax(LAM_GRID + g, -1), obs["y"])
    rng = np.random.default_rng(8)
    for pos in range(3):
        prior = rng.gumbel(size=(2_000_000, 4))
        rej = prior[np.argmax(LAM_GRID[pos] + prior, 1) == value[pos]][:n]
        assert rej.shape[0] > 5_000
        for coord in range(4):
            assert stats.ks_2samp(g[:, pos, coord], rej[:, coord]).pvalue > 1e-3, (pos, coord)
    # Positions are independent given the observation (no shared noise across positions).
    assert abs(np.corrcoef(g[:, 0, 0], g[:, 1, 0])[0, 1]) < 0.03
    lp = jc.log_prob(scm, obs, per_node=True)["y"][:1]
    want = sum(LAM_GRID[p, value[p]] - np.log(np.exp(LAM_GRID[p]).sum()) for p in range(3))
    np.testing.assert_allclose(lp, want, rtol=1e-10)
