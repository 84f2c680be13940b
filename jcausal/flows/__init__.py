"""Conditional normalising-flow bijectors on distrax, usable as invertible SCM mechanisms.

A flow here is a composition of element-wise layers, listed outermost first like function
composition (and like ``distrax.Chain``): the Deep SCM thickness mechanism
``t = (exp ∘ AffineNormalisation ∘ Spline)(u)`` is ``Flow([Exp(), Normalise(m, s), Spline(...)])``.
Every layer is an equinox Module whose ``__call__(context)`` returns a distrax bijector; layers
with a context network compute their parameters from the (flattened, normalised) parents, so the
same module is an unconditional flow (no parents) or a conditional one.

Layers:
    * :class:`Spline` — monotone spline on ``[-bound, bound]``, identity outside; ``order=
      "quadratic"`` is the rational-quadratic spline of Durkan et al. (2019) with distrax's
      parameters, evaluated one bin per element by :class:`RationalQuadraticSpline`;
      ``order="linear"`` the linear-rational spline of Dolatabadi et al. (2020) that Deep SCM
      uses (Pyro's default), implemented here as :class:`LinearRationalSpline` with closed-form
      inverse and log-det.
    * :class:`Affine` — ``x = shift + exp(log_scale) * u``, learnable or predicted by a context
      network (Deep SCM's ``ConditionalAffine``).
    * :class:`Exp`, :class:`Sigmoid` — support constraints ``(0, inf)`` and ``(0, 1)``.
    * :class:`Normalise` — fixed affine map (not trained), e.g. from data with
      :func:`normalisation`.

All layers act element-wise (``event_ndims_in=0``), so a node may be a scalar or an array of
shape ``shape``; the log-det of the node is the sum over its elements (the SCM engine sums).

:func:`flow_mechanism`, :func:`spline_mechanism` and :func:`affine_mechanism` return
``jc.Invertible`` mechanisms directly: abduction is the exact inverse, ``log_prob`` the exact
change of variables, and everything passes through ``jit``, ``vmap`` and ``grad``.
"""

from .conditioners import Conditioner, ParentContext, zero_head_mlp
from .layers import Affine, Exp, Flow, Layer, Normalise, Sigmoid, Spline, flow_bijector
from .mechanisms import (
    Constraint,
    affine_mechanism,
    flow_mechanism,
    normalisation,
    spline_mechanism,
)
from .splines import LinearRationalSpline, RationalQuadraticSpline

__all__ = [
    "Affine",
    "Conditioner",
    "Constraint",
    "Exp",
    "Flow",
    "Layer",
    "LinearRationalSpline",
    "Normalise",
    "ParentContext",
    "RationalQuadraticSpline",
    "Sigmoid",
    "Spline",
    "affine_mechanism",
    "flow_bijector",
    "flow_mechanism",
    "normalisation",
    "spline_mechanism",
    "zero_head_mlp",
]
