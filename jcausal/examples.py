"""Built-in structural causal models, used by the demo, the tests and the benchmarks.

Each function returns a fresh ``SCM``; the parameters are arrays, so they can be
differentiated or swapped like any user model's.
"""

from __future__ import annotations

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


def morpho() -> SCM:
    """The true attribute SCM of Morpho-MNIST (Deep SCM, eq. 7), without the image.

    ``t`` (stroke thickness, pixels) ``:= 0.5 + e_t``, ``e_t ~ Gamma(10, 5)``;
    ``i`` (intensity, 0-255) ``:= 191 sigmoid(0.5 e_i + 2 t - 5) + 64``, ``e_i ~ N(0, 1)``.
    Both mechanisms are invertible, so counterfactuals are exact.
    """

    def thickness(p, pa):
        return distrax.ScalarAffine(shift=p, scale=1.0)

    def intensity(p, pa):
        return distrax.Chain(
            [
                distrax.ScalarAffine(shift=p["lo"], scale=p["range"]),
                distrax.Sigmoid(),
                distrax.ScalarAffine(shift=2.0 * pa["t"] - 5.0, scale=0.5),
            ]
        )

    return SCM(
        t=Invertible(thickness, 0.5, distrax.Gamma(10.0, 5.0)),
        i=Invertible(
            intensity, {"lo": 64.0, "range": 191.0}, distrax.Normal(0.0, 1.0), parents=("t",)
        ),
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
