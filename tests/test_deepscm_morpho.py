"""Morpho-MNIST deep SCMs: graphs, exact abduction, change of variables, and a smoke experiment."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import jcausal as jc
from jcausal import flows
from jcausal.data import load_mnist_5k, sample_attributes
from jcausal.deepscm import morpho
from jcausal.experiments import deepscm as experiment
from jcausal.image import dequantise

EXPECTED_PARENTS = {
    "independent": {"t": (), "i": (), "x": ()},
    "conditional": {"t": (), "i": (), "x": ("t", "i")},
    "full": {"t": (), "i": ("t",), "x": ("t", "i")},
}


@pytest.fixture(scope="module")
def attrs():
    a = sample_attributes(400, seed=7)
    return {"t": a["thickness"], "i": a["intensity"]}


@pytest.fixture(scope="module")
def models(attrs):
    return {
        kind: morpho.model(kind, jax.random.key(3), attrs, latent=4, width=8)
        for kind in morpho.KINDS
    }


def _perturb(flow, key, scale=0.5):
    """Random conditioner biases, so the flow is far from its identity initialisation."""
    leaves, tree = jax.tree_util.tree_flatten(flow, is_leaf=lambda x: x is None)
    keys = jax.random.split(key, len(leaves))
    new = []
    for leaf, k in zip(leaves, keys, strict=True):
        is_bias = hasattr(leaf, "shape") and leaf.ndim == 1 and leaf.shape[0] > 2
        new.append(leaf + scale * jax.random.normal(k, leaf.shape) if is_bias else leaf)
    return jax.tree_util.tree_unflatten(tree, new)


@pytest.mark.parametrize("kind", morpho.KINDS)
def test_graphs_have_the_papers_parents(kind, models, attrs):
    scm = models[kind]
    assert dict(scm.parents) == EXPECTED_PARENTS[kind]
    with pytest.raises(ValueError, match="model kind"):
        morpho.model("causal", jax.random.key(3), attrs)


@pytest.mark.parametrize("kind", morpho.KINDS)
def test_abduction_then_prediction_reproduces_observations(kind, models, attrs):
    scm = models[kind]
    digits, _ = load_mnist_5k("test")
    obs = {
        "t": jnp.asarray(attrs["t"][:4]),
        "i": jnp.asarray(attrs["i"][:4]),
        "x": jnp.asarray(digits[:4], jnp.float32),
    }
    # Abduction (exact flows, eq. 5 for the image) then prediction with every node shifted by
    # zero recomputes every node from its abducted noise: the observation comes back.
    zero = {node: jc.Shift(0.0) for node in ("t", "i", "x")}
    cf = jc.counterfactual(scm, obs, zero, jax.random.key(1))
    np.testing.assert_allclose(cf["t"], obs["t"], rtol=1e-9)
    np.testing.assert_allclose(cf["i"], obs["i"], rtol=1e-9)
    np.testing.assert_allclose(cf["x"], obs["x"], rtol=1e-4, atol=1e-3)
    noise = jc.abduct(scm, obs, jax.random.key(0))
    assert noise["x"]["z"].shape == (4, 4) and noise["x"]["u"].shape == (4, 28, 28)
    # The engine reuses observed t and i above (exact abduction); push their noise back too.
    for node in ("t", "i"):
        mech = scm.mechanisms[node]
        back = jax.vmap(mech.forward)({p: obs[p] for p in mech.parents}, noise[node])
        np.testing.assert_allclose(back, obs[node], rtol=1e-9, err_msg=node)
    # A real intervention on t moves the image exactly when x depends on t.
    cf = jc.counterfactual(scm, obs, {"t": jc.Hard(5.0)}, jax.random.key(1))
    moved = float(jnp.abs(cf["x"] - obs["x"]).max())
    assert (moved > 1e-2) == ("t" in EXPECTED_PARENTS[kind]["x"])
    assert bool(jnp.any(jnp.abs(cf["i"] - obs["i"]) > 1e-3)) == (kind == "full")


def _finite_difference_log_density(mech, values, parents, h=1e-6):
    """Log N(u(v)) + log du/dv with u = the mechanism's inverse and du/dv by central differences.

    Independent of the flows' log-det code.
    """
    inv = jax.jit(jax.vmap(lambda v, pa: mech.abduct(v, pa, None)))
    u = np.asarray(inv(values, parents))
    du = (np.asarray(inv(values + h, parents)) - np.asarray(inv(values - h, parents))) / (2 * h)
    return st.norm.logpdf(u) + np.log(du)


@pytest.mark.parametrize("perturbed", [False, True], ids=["untrained", "perturbed"])
def test_log_densities_are_changes_of_variables(models, attrs, perturbed):
    scm = models["full"]
    if perturbed:
        mt, mi = scm.mechanisms["t"], scm.mechanisms["i"]
        scm = scm.with_mechanisms(
            {
                "t": flows.flow_mechanism(_perturb(mt.params, jax.random.key(5)), mt.noise),
                "i": flows.flow_mechanism(_perturb(mi.params, jax.random.key(6)), mi.noise),
            }
        )
    t = jnp.asarray(attrs["t"][:50])
    i = jnp.asarray(attrs["i"][:50])
    dens = jc.log_prob(morpho.attributes(scm), {"t": t, "i": i}, per_node=True)
    ref_t = _finite_difference_log_density(scm.mechanisms["t"], t, {})
    ref_i = _finite_difference_log_density(scm.mechanisms["i"], i, {"t": t})
    np.testing.assert_allclose(dens["t"], ref_t, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dens["i"], ref_i, rtol=1e-6, atol=1e-6)
    # At initialisation the spline is the identity: t is log-normal with the data's log moments.
    if not perturbed:
        loc, scale = flows.normalisation(attrs["t"], "exp")
        want = st.lognorm(s=float(scale), scale=float(np.exp(loc))).logpdf(np.asarray(t))
        np.testing.assert_allclose(dens["t"], want, rtol=1e-9)


def test_smoke_experiment_meets_loose_targets(tmp_path):
    m = experiment.run(smoke=True, out=tmp_path, progress=False)
    # The smoke compiles unoptimised (SMOKE.fast_compile) and leaves XLA's optimisations as
    # they were for what runs after it.
    assert experiment.SMOKE.fast_compile and experiment.SMOKE.parallel_models
    assert not jax.config.read("jax_disable_most_optimizations")
    assoc, true = m["association"], m["association"]["true"]
    # The true density of eq. (7), from scipy, on the same held-out units.
    assert abs(assoc["full"]["log_p_t"] - true["log_p_t"]) < 0.2
    assert abs(m["expected"]["full"]["gap_log_p_t"]) < 0.2
    # Modelling i | t beats modelling i alone (Table 1), and only the full model responds to
    # do(t) (Fig. 3).
    assert assoc["full"]["log_p_i_given_t"] > assoc["independent"]["log_p_i_given_t"] + 0.3
    err = {k: m["intervention"][k]["abs_err_mean_i"]["plus1"] for k in ("full", "independent")}
    assert err["full"] < 0.5 * err["independent"]
    # Counterfactual images carry their targets (full config: >= 0.9; a decoder that ignored
    # its parents would leave the factual image, uncorrelated with the grid's targets).
    cf = m["counterfactual"]["full"]
    assert cf["corr_thickness_do_t"] > 0.5 and cf["corr_intensity_do_i"] > 0.4, cf
    assert cf["shortcut_max_abs_diff"] < 0.1  # grey levels: eq. (6) == the shortcut
    # Fig. A.6: conditioning on i moves t, intervening on i does not; do(t) == conditioning on t.
    a6 = m["conditioning"]
    assert a6["spread_mean_t_given_i"] > 0.5 and a6["spread_mean_t_do_i"] < 0.1, a6
    assert a6["max_abs_i_do_t_minus_i_given_t"] < 3.0, a6
    # The ELBO is a bound: log p(x, t, i) >= ... sums the three terms.
    a = assoc["full"]
    np.testing.assert_allclose(
        a["log_p_xti"], a["log_p_x_given_ti"] + a["log_p_t"] + a["log_p_i_given_t"], rtol=1e-5
    )
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["config"]["smoke"] is True
    for fig in ("interventions.png", "conditioning.png", "counterfactuals_full.png", "samples.png"):
        assert (tmp_path / fig).stat().st_size > 10_000
    # One checkpoint per model (SMOKE.checkpoints): the final state, which a second run resumes.
    for kind in experiment.SMOKE.kinds:
        steps = [p.name for p in (tmp_path / "checkpoints" / kind).iterdir() if p.is_dir()]
        assert steps == [str(experiment.SMOKE.steps)], (kind, steps)
    lines = (tmp_path / "train_full.jsonl").read_text().splitlines()
    evals = [json.loads(x) for x in lines if '"eval"' in x]
    assert evals[-1]["step"] == experiment.SMOKE.steps
    # Model selection returned the parameters of the best validation loss.
    best = min(evals, key=lambda r: r["loss"])
    assert m["selected_step"]["full"] == best["step"]


def test_the_model_is_trained_as_an_scm_with_two_learning_rates(models, attrs):
    """The trainable object is the SCM itself, with one learning rate per kind of part.

    The flows get the flow learning rate, the networks the net learning rate (labels follow
    ``scm.mechanisms[node]``).
    """
    import equinox as eqx
    import optax

    scm = models["full"]
    dyn, _ = eqx.partition(scm, eqx.is_inexact_array)
    opt = morpho.optimizer(flow_lr=1.0, net_lr=0.0)
    grads = jax.tree_util.tree_map(jnp.ones_like, dyn)
    updates, _ = opt.update(grads, opt.init(dyn), dyn)
    moved = optax.apply_updates(dyn, updates)
    for node, lr in (("t", 1.0), ("i", 1.0), ("x", 0.0)):
        before = jax.tree_util.tree_leaves(dyn.mechanisms[node])
        after = jax.tree_util.tree_leaves(moved.mechanisms[node])
        step = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(after, before, strict=True))
        assert step == pytest.approx(lr, abs=1e-6), node
    # The loss is the engine's bound on the whole SCM.
    digits, _ = load_mnist_5k("test")
    batch = {"t": attrs["t"][:3], "i": attrs["i"][:3], "x": digits[:3]}
    loss, aux = morpho.loss_fn(particles=2)(scm, batch, jax.random.key(0))
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(
        float(loss), -(aux["log_p_t"] + aux["log_p_i"] + aux["elbo_x"]), rtol=1e-5
    )


def test_kl_warmup_weighs_the_kl_term(models, attrs):
    """KL warm-up: ``-[log p(t) + log p(i|t) + E log p(x|z) - beta KL]``, the bound once beta=1."""
    scm = models["full"]
    digits, _ = load_mnist_5k("test")
    batch = {"t": attrs["t"][:4], "i": attrs["i"][:4], "x": digits[:4]}
    key = jax.random.key(1)
    bound, aux_b = morpho.loss_fn(particles=2)(scm, batch, key)
    warm = morpho.loss_fn(particles=2, kl_warmup=10)
    for step, beta in ((0, 0.1), (4, 0.5), (9, 1.0), (50, 1.0)):
        loss, aux = warm(scm, batch, key, step=jnp.int32(step))
        assert float(aux["kl_weight"]) == pytest.approx(beta)
        # The bound itself is logged unchanged (same key, same draws).
        np.testing.assert_allclose(float(aux["elbo_x"]), float(aux_b["elbo_x"]), rtol=1e-6)
        np.testing.assert_allclose(
            float(loss), float(bound) - (1 - beta) * float(aux["kl_x"]), rtol=1e-5
        )
    # The KL term is the closed form of the encoder's Gaussian against N(0, I), by hand.
    # The loss dequantises with the first half of its key.
    image = scm.mechanisms["x"]
    xq = dequantise(jax.random.split(key)[0], batch["x"]).astype(jnp.float32)
    kls = []
    for k in range(4):
        q = image.posterior(xq[k], {"t": batch["t"][k], "i": batch["i"][k]})
        m, s = np.asarray(q.loc, float), np.asarray(q.scale_diag, float)
        kls.append(0.5 * np.sum(m**2 + s**2 - 1.0 - 2 * np.log(s)))
    assert float(aux["kl_x"]) == pytest.approx(np.mean(kls), rel=1e-4)
    assert float(aux["kl_x"]) > 0
    with pytest.raises(ValueError, match="kl_warmup"):
        morpho.loss_fn(kl_warmup=-1)
    with pytest.raises(ValueError, match="kl_warmup"):
        morpho.loss_fn(kl_warmup=2.5)
