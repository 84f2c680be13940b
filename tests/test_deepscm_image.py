"""The conditional-VAE image mechanism: exact low-level abduction (eq. 5), ELBO (eqs. 3-4)."""

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats
from scipy.special import expit, logit

import jcausal as jc
from jcausal.deepscm import VAEImage, dequantise
from jcausal.nn import MNISTDecoder, MNISTEncoder, Pure

# Untrained or barely trained small networks, called a few times: compilation is the time
# (tests/conftest.py, fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def scm():
    enc = Pure(MNISTEncoder(4, 1, rngs=nnx.Rngs(0), width=8))
    dec = Pure(MNISTDecoder(4, 1, rngs=nnx.Rngs(1), width=8))
    img = VAEImage(enc, dec, lambda pa: pa["t"][None] / 3.0, ["t"], latent=4)
    return jc.SCM(t=jc.Root(distrax.Normal(2.5, 0.6)), x=img)


def test_sample_abduct_predict_roundtrip(scm):
    obs, noise = jc.sample(jax.random.key(0), scm, 3, return_noise=True)
    assert obs["x"].shape == (3, 28, 28) and noise["x"]["z"].shape == (3, 4)
    # Eq. 5: whatever z the encoder proposes, u is solved for, so x is reproduced exactly.
    u = jc.abduct(scm, obs, jax.random.key(1))
    mech = scm.mechanisms["x"]
    back = jax.vmap(lambda t, n: mech.forward({"t": t}, n))(obs["t"], u["x"])
    np.testing.assert_allclose(back, obs["x"], rtol=1e-4, atol=1e-3)
    cf = jc.counterfactual(scm, obs, {"t": jc.Shift(0.0)}, jax.random.key(2))
    np.testing.assert_allclose(cf["x"], obs["x"], rtol=1e-4, atol=1e-3)
    cf = jc.counterfactual(scm, obs, {"t": jc.Hard(5.0)}, jax.random.key(2), num_samples=2)
    assert cf["x"].shape == (2, 3, 28, 28)
    assert float(jnp.abs(cf["x"][0] - obs["x"]).max()) > 1e-3


def test_log_likelihood_and_elbo_match_numpy(scm):
    mech = scm.mechanisms["x"]
    rng = np.random.default_rng(0)
    x = dequantise(jax.random.key(3), rng.integers(0, 256, size=(28, 28)))
    pa = {"t": jnp.asarray(2.0)}
    z = jnp.asarray(rng.normal(size=4))
    mu = np.asarray(eqx.filter_jit(lambda m, z: m.mean(z, pa))(mech, z), float)
    xn = np.asarray(x, float)
    scale = 256 / 0.9
    y = logit(xn / scale + 0.05)
    # d y / d x for y = logit(x / scale + alpha)
    p = expit(y)
    log_jac = -np.log(scale * p * (1 - p))
    want = stats.norm(mu, np.exp(-2.5)).logpdf(y).sum() + log_jac.sum()
    ll = eqx.filter_jit(lambda m, x, z: m.log_likelihood(x, z, pa))
    np.testing.assert_allclose(ll(mech, x, z), want, rtol=1e-6)

    # ELBO = E_q[log p(x|z)] - KL(q || N(0, I)); check the KL in closed form and the MC part
    # against a direct average with the same reparametrised samples.
    loc, scale_diag = eqx.filter_jit(
        lambda m: (m.posterior(x, pa).loc, m.posterior(x, pa).scale_diag)
    )(mech)
    q = distrax.MultivariateNormalDiag(loc, scale_diag)
    m, s = np.asarray(loc, float), np.asarray(scale_diag, float)
    kl = 0.5 * np.sum(s**2 + m**2 - 1 - 2 * np.log(s))
    key = jax.random.key(4)
    zs = q.sample(seed=key, sample_shape=(4,))
    rec = np.mean([float(ll(mech, x, zi)) for zi in zs])
    elbo = eqx.filter_jit(lambda m: m.elbo(x, pa, key, particles=4))(mech)
    np.testing.assert_allclose(elbo, rec - kl, rtol=1e-5)
    # beta-VAE weighting of the KL term (same samples: same key).
    beta = eqx.filter_jit(lambda m: m.elbo(x, pa, key, particles=4, kl_weight=3.0))(mech)
    np.testing.assert_allclose(beta, rec - 3.0 * kl, rtol=1e-5)


def test_elbo_gradient_reaches_both_networks(scm):
    mech = scm.mechanisms["x"]
    x = jnp.full((28, 28), 100.0)

    def loss(m):
        return -m.elbo(x, {"t": jnp.asarray(2.0)}, jax.random.key(5))

    g = eqx.filter_jit(eqx.filter_grad(loss))(mech)
    enc = jax.tree_util.tree_leaves(g.encoder)
    dec = jax.tree_util.tree_leaves(g.decoder)
    assert all(np.all(np.isfinite(a)) for a in enc + dec)
    assert max(float(jnp.abs(a).max()) for a in enc) > 0
    assert max(float(jnp.abs(a).max()) for a in dec) > 0


def test_out_of_range_images_are_named(scm):
    obs = jc.sample(jax.random.key(6), scm, 2)
    bad = {"t": obs["t"], "x": obs["x"].at[0, 0, 0].set(300.0)}
    with pytest.raises(ValueError, match="node 'x'.*logit preprocessing"):
        jc.counterfactual(scm, bad, {"t": jc.Hard(1.0)}, jax.random.key(0))


def test_film_decoder_starts_as_the_paper_decoder_and_learns_gains():
    dec = MNISTDecoder(4, 2, rngs=nnx.Rngs(1), width=8, condition="film")
    z = jnp.linspace(-1.0, 1.0, 4)
    c = jnp.asarray([0.3, -1.2])
    # FiLM layers start at the identity: the output equals the concat-at-input decoder's.
    film = dec(z, c)
    dec.condition = "input"
    np.testing.assert_allclose(film, dec(z, c), rtol=1e-6, atol=1e-6)
    dec.condition = "film"
    # ... and, once trained, the parents act on every layer: a gain on the output alone
    # scales the image's mean around the shift, exactly.
    # Kernel (context, [gamma, beta]): gamma = 0.5 c_0, beta = 0.
    dec.film_out.linear.kernel.value = jnp.asarray([[0.5, 0.0], [0.0, 0.0]], jnp.float32)
    gain = 1.0 + 0.5 * c[0]
    dec.condition = "input"
    base = dec(z, c)
    dec.condition = "film"
    np.testing.assert_allclose(dec(z, c), gain * base, rtol=1e-5, atol=1e-5)
    # Batched and single calls agree; gradients reach every FiLM layer.
    zs = jnp.stack([z, -z])
    cs = jnp.stack([c, 2 * c])
    np.testing.assert_allclose(dec(zs, cs)[1], dec(-z, 2 * c), rtol=1e-5, atol=1e-5)
    pure = Pure(dec)
    grads = jax.grad(lambda p: jnp.sum(p(z, c) ** 2))(pure)
    for name in ("film1", "film2", "film3", "film_out"):
        g = getattr(grads.module, name).linear.kernel.value
        assert float(jnp.abs(g).max()) > 0, name
    with pytest.raises(ValueError, match="condition"):
        MNISTDecoder(4, 2, rngs=nnx.Rngs(1), width=8, condition="every")


def test_film_encoder_starts_as_the_paper_encoder():
    enc = MNISTEncoder(4, 2, rngs=nnx.Rngs(0), width=8, condition="film")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 28, 28)), jnp.float32)
    c = jnp.asarray([[0.3, -1.2], [0.0, 1.0], [2.0, 0.5]])
    film = enc(x, c)
    enc.condition = "input"
    for a, b in zip(film, enc(x, c), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    enc.condition = "film"
    # Single image == its row of the batch; gradients reach every FiLM layer.
    for a, b in zip(enc(x[1], c[1]), film, strict=True):
        np.testing.assert_allclose(a, b[1], rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(p(x, c)[0] ** 2))(Pure(enc))
    for name in ("film1", "film2", "film3"):
        assert float(jnp.abs(getattr(grads.module, name).linear.kernel.value).max()) > 0, name
    with pytest.raises(ValueError, match="condition"):
        MNISTEncoder(4, 2, rngs=nnx.Rngs(1), width=8, condition="all")


def test_constant_variance_shortcut_equals_eq6(scm):
    obs = jc.sample(jax.random.key(7), scm, 5)
    mech = scm.mechanisms["x"]
    key = jax.random.key(8)
    # The engine's eq. (6) (abduct z and u, predict under do(t := 4.5)) and the shortcut
    # x' = P^-1(P(x) + mu(z, pa') - mu(z, pa)) with the same z (abduct uses the same key).
    cf = jc.counterfactual(scm, obs, {"t": jc.Hard(4.5)}, key)
    z = jc.abduct(scm, obs, key)["x"]["z"]
    new_t = jnp.full_like(obs["t"], 4.5)
    short = jax.vmap(lambda x, t, t2, zi: mech.shortcut(x, {"t": t}, {"t": t2}, zi))(
        obs["x"], obs["t"], new_t, z
    )
    assert float(jnp.abs(cf["x"] - obs["x"]).max()) > 1.0  # the intervention moves the image
    np.testing.assert_allclose(short, cf["x"], rtol=1e-4, atol=1e-3)
    # Unchanged parents give the observation back; the Monte Carlo version stacks draws.
    same = mech.shortcut(obs["x"][0], {"t": obs["t"][0]}, {"t": obs["t"][0]}, z[0])
    np.testing.assert_allclose(same, obs["x"][0], rtol=1e-4, atol=1e-3)
    many = mech.counterfactual_images(
        obs["x"][0], {"t": obs["t"][0]}, {"t": jnp.asarray(4.5)}, key, 3
    )
    assert many.shape == (3, 28, 28) and bool(jnp.all(jnp.isfinite(many)))
    assert float(jnp.abs(many[0] - many[1]).max()) > 0  # different draws of z
