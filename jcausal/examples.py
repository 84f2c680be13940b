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


MODELS = {"health": health, "morpho": morpho, "chain": chain}
