"""Lie groups and Lie interventions (Besserve & Schölkopf, UAI 2022, sections 2.4 and 3.2).

A Lie intervention turns a node's structural assignment ``x_k := f_k(pa_k, u_k)`` into
``x_k := g · f_k(pa_k, u_k)`` for an element ``g`` of a Lie group acting smoothly on the node's
values (Definition 3). Group elements are written ``g = exp(u)`` with Lie-algebra parameters
``u``, so ``u = 0`` is the identity, which leaves the model unchanged, and the intervened values
are smooth in ``u`` (Proposition 2): they can be differentiated with ``jax.grad``, batched with
``jax.vmap`` and optimised, in acyclic models and at equilibrium alike.

Built-in groups:

* :class:`Multiplicative` — ``R_+^d`` under elementwise product, acting by ``x -> g * x``: the
  paper's multiplicative intervention (e.g. reducing the final demand of chosen sectors of an
  input-output economy).
* :class:`Translation` — ``R^d`` under addition, acting by ``x -> x + g`` (shift interventions).
* :class:`SO` — rotations of ``R^n`` acting by ``x -> R x``.

Example::

    import jcausal as jc
    from jcausal.lie import Lie, Multiplicative

    # demand of sectors 0 and 2 reduced by 10 % (u = log 0.9), the other sectors untouched
    iv = Lie(Multiplicative(2), jnp.log(0.9) * jnp.ones(2), index=[0, 2])
    cf = jc.counterfactual(scm, obs, {"y": iv})
"""

from .groups import SO, LieGroup, Multiplicative, Translation
from .intervention import Lie, distributed

__all__ = ["SO", "Lie", "LieGroup", "Multiplicative", "Translation", "distributed"]
