"""Built-in structural causal models, used by the demo, the tests and the benchmarks.

Each function returns a fresh ``SCM``; the parameters are arrays, so they can be
differentiated or swapped like any user model's.
"""

from __future__ import annotations

import dataclasses

import distrax
import jax
import jax.numpy as jnp

from .scm import SCM, Additive, GumbelMax, Invertible, Root

#: Category names of the ``exercise`` node of :func:`health`.
EXERCISE_LEVELS = ("none", "some", "lots")


def health() -> SCM:
    """A small clinical model mixing continuous and categorical nodes.

    ``age`` (years) -> ``exercise`` (categorical: none / some / lots, Gumbel-max) ->
    ``bp`` (systolic blood pressure, mmHg, additive noise) -> ``risk`` (10-year cardiovascular risk,
    %, an invertible logistic mechanism of ``bp`` and ``age``). Older people exercise less;
    exercise lowers blood pressure; pressure and age raise risk. The numbers are illustrative,
    not clinical estimates.
    """

    def exercise_logits(p, pa):
        return p["base"] + p["age_slope"] * (pa["age"] - 50.0)

    def bp_mean(p, pa):
        return p["b0"] + p["age"] * (pa["age"] - 50.0) + p["ex"] * pa["exercise"]

    def risk_bijector(p, pa):
        logit = p["r0"] + p["bp"] * (pa["bp"] - 120.0) + p["age"] * (pa["age"] - 50.0)
        return distrax.Chain(
            [
                distrax.ScalarAffine(shift=0.0, scale=100.0),
                distrax.Sigmoid(),
                distrax.ScalarAffine(shift=logit, scale=p["spread"]),
            ]
        )

    return SCM(
        age=Root(distrax.Normal(50.0, 12.0)),
        exercise=GumbelMax(
            exercise_logits,
            {"base": jnp.array([0.0, 0.6, 0.9]), "age_slope": jnp.array([0.0, -0.02, -0.06])},
            num_categories=3,
            parents=("age",),
        ),
        bp=Additive(
            bp_mean,
            {"b0": 128.0, "age": 0.6, "ex": -6.0},
            distrax.Normal(0.0, 8.0),
            parents=("age", "exercise"),
        ),
        risk=Invertible(
            risk_bijector,
            {"r0": -2.6, "bp": 0.04, "age": 0.06, "spread": 0.4},
            distrax.Normal(0.0, 1.0),
            parents=("bp", "age"),
        ),
    )


# Morpho-MNIST's attributes (Deep SCM, eq. 7): the one definition, used by the data generator
# (jcausal.data.morphomnist), its true densities and counterfactuals, and the demo.
GAMMA_CONCENTRATION = 10.0
GAMMA_RATE = 5.0
THICKNESS_SHIFT = 0.5
INTENSITY_LOW = 64.0
INTENSITY_RANGE = 191.0
INTENSITY_SLOPE = 2.0
INTENSITY_OFFSET = -5.0
INTENSITY_NOISE_SCALE = 0.5


def _shift(shift, pa):
    return shift


@dataclasses.dataclass(frozen=True)
class _IntensityBijector:
    """``bijector(params, parents)`` of eq. (7)'s intensity, for a given parent name.

    A frozen dataclass rather than a closure, so two models with the same names compare
    equal and share compiled code.
    """

    parent: str

    def __call__(self, p, pa) -> distrax.Bijector:
        # Chain applies its last bijector first: affine in (e_I, t), sigmoid, to [64, 255].
        shift = p["slope"] * pa[self.parent] + p["offset"]
        return distrax.Chain(
            [
                distrax.ScalarAffine(shift=p["low"], scale=p["range"]),
                distrax.Sigmoid(),
                distrax.ScalarAffine(shift=shift, scale=p["noise_scale"]),
            ]
        )


def morpho(thickness: str = "t", intensity: str = "i") -> SCM:
    """The true attribute SCM of Morpho-MNIST (Deep SCM, eq. 7), without the image.

    ``t`` (stroke thickness, pixels) ``:= 0.5 + e_t``, ``e_t ~ Gamma(10, rate 5)`` (an
    additive root); ``i`` (intensity, grey levels 64-255) ``:= 191 sigmoid(0.5 e_i + 2 t - 5)
    + 64``, ``e_i ~ N(0, 1)`` (invertible). Both abductions are exact, so counterfactuals are
    exact, and ``jc.log_prob`` gives the true densities.

    Args:
        thickness: name of the thickness node (``jcausal.data.attribute_scm`` uses
            ``"thickness"``).
        intensity: name of the intensity node (``jcausal.data.attribute_scm`` uses
            ``"intensity"``).
    """
    params = {
        "low": INTENSITY_LOW,
        "range": INTENSITY_RANGE,
        "slope": INTENSITY_SLOPE,
        "offset": INTENSITY_OFFSET,
        "noise_scale": INTENSITY_NOISE_SCALE,
    }
    bijector = _IntensityBijector(thickness)
    return SCM(
        {
            thickness: Additive(
                _shift,
                THICKNESS_SHIFT,
                distrax.Gamma(jnp.asarray(GAMMA_CONCENTRATION), jnp.asarray(GAMMA_RATE)),
            ),
            intensity: Invertible(bijector, params, distrax.Normal(0.0, 1.0), (thickness,)),
        }
    )


def chain_fn(x: jax.Array) -> jax.Array:
    """The chain benchmark's link function ``tanh(1.5 x) + 0.5 x``."""
    return jnp.tanh(1.5 * x) + 0.5 * x


def chain(k: int = 5) -> SCM:
    """``X1 = N1``, ``X_j = tanh(1.5 X_{j-1}) + 0.5 X_{j-1} + N_j`` with ``N ~ N(0, 1)``."""
    if k < 2:
        raise ValueError(f"a chain needs at least 2 nodes, got k={k}")
    mechs = {"X1": Root(distrax.Normal(0.0, 1.0))}
    for j in range(2, k + 1):
        prev = f"X{j - 1}"
        mechs[f"X{j}"] = Additive(
            lambda p, pa, prev=prev: chain_fn(pa[prev]),
            None,
            distrax.Normal(0.0, 1.0),
            parents=(prev,),
        )
    return SCM(mechs)


def treatment_effect(p, x):
    """Per-unit effect slope ``τ(x)`` of the dose in :func:`treatment`.

    Args:
        p: the parameters of :func:`treatment`'s ``y`` mechanism (``scm.mechanisms["y"].params``).
        x: one unit's covariates ``(2,)``.
    """
    return p["tau0"] + p["tau1"] * jnp.tanh(2.0 * x[0]) + p["tau2"] * x[1]


def _treatment_dose(p, pa):
    return p["t0"] + p["tx"] * pa["x"][0]


def _treatment_outcome(p, pa):
    x, t = pa["x"], pa["t"]
    return p["b"] @ x + treatment_effect(p, x) * t - p["kappa"] * t**2


def treatment() -> SCM:
    """A dose-response model with heterogeneous effects and a known optimal policy.

    ``x`` (two covariates, ``N(0, I)``) -> ``t`` (dose, observed ``0.8 + 0.4 x_0 + N(0,
    0.3²)``: confounded by ``x_0``) -> ``y`` (outcome, larger is better, additive noise
    ``N(0, 0.5²)``):

        y := b·x + τ(x) t - κ t² + u_y,    τ(x) = τ0 + τ1 tanh(2 x_0) + τ2 x_1

    with ``b = (0.5, -0.3)``, ``τ0 = 1``, ``τ1 = 0.8``, ``τ2 = 0.4``, ``κ = 0.5``. Units
    differ in how much a dose helps (``τ`` ranges over about ``(-0.5, 2.5)``) and some are
    harmed. The counterfactual outcome of a unit under ``do(t := d)`` is its observed ``y``
    plus ``τ(x)(d - t) - κ(d² - t²)``, so :func:`treatment_oracle` gives the best doses in
    closed form, from the mechanisms' own parameters.
    """
    p_y = {
        "b": jnp.array([0.5, -0.3]),
        "tau0": 1.0,
        "tau1": 0.8,
        "tau2": 0.4,
        "kappa": 0.5,
    }
    return SCM(
        x=Root(distrax.Normal(jnp.zeros(2), jnp.ones(2))),
        t=Additive(_treatment_dose, {"t0": 0.8, "tx": 0.4}, distrax.Normal(0.0, 0.3), ["x"]),
        y=Additive(_treatment_outcome, p_y, distrax.Normal(0.0, 0.5), ["x", "t"]),
    )


def treatment_oracle(
    scm: SCM, x: jax.Array, budget: float | None = None, upper: float = 2.0
) -> jax.Array:
    """The best per-unit doses of :func:`treatment`'s model for covariates ``x`` ``(n, 2)``.

    Maximises the mean counterfactual outcome ``mean_i τ(x_i) d_i - κ d_i²`` over doses
    ``d_i`` in ``[0, upper]`` with ``mean d <= budget`` (``None``: no budget): ``d_i =
    clip((τ_i - ν) / 2κ, 0, upper)`` with the multiplier ``ν >= 0`` found by bisection so that
    the budget binds (KKT conditions of a concave separable programme). Reads ``τ`` and ``κ``
    from ``scm``'s mechanism of ``y``.

    Returns:
        ``(n,)`` doses.
    """
    import numpy as np

    p = scm.mechanisms["y"].params
    tau = np.asarray(jax.vmap(lambda v: treatment_effect(p, v))(jnp.asarray(x)), np.float64)
    kappa = float(p["kappa"])

    def dose(nu):
        return np.clip((tau - nu) / (2 * kappa), 0.0, upper)

    if budget is None or dose(0.0).mean() <= budget:
        return jnp.asarray(dose(0.0))
    lo, hi = 0.0, float(tau.max())
    for _ in range(200):  # mean dose(nu) is continuous and nonincreasing in nu
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if dose(mid).mean() > budget else (lo, mid)
    return jnp.asarray(dose(hi))


MODELS = {"health": health, "morpho": morpho, "chain": chain}
