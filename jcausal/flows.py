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

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Literal

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .scm import Invertible, Parents, as_parents

Constraint = Literal["exp", "sigmoid"] | None


# ----------------------------------------------------------------------------------------------
# linear-rational spline (Dolatabadi, Erfani & Leckie, AISTATS 2020)


def _bin_sizes(raw: Array, total: float, min_size: float) -> Array:
    """Softmax bin sizes that sum to ``total`` with none below ``min_size``."""
    k = raw.shape[-1]
    return jax.nn.softmax(raw, axis=-1) * (total - k * min_size) + min_size


def _positive(raw: Array, minimum: float) -> Array:
    # The offset makes raw = 0 give exactly 1, so zero parameters give the identity spline.
    offset = math.log(math.expm1(1.0 - minimum))
    return jax.nn.softplus(raw + offset) + minimum


def _lrs_bin(xk, yk, d, lam, idx):
    """Quantities of bin ``idx``: left knot, width, y at both ends, weights and split point.

    Each bin is split at ``lam`` (a fraction of its width) into two linear-rational pieces that
    meet at ``(lam, yc)``; the weights ``wa = 1``, ``wb = sqrt(d0 / d1)`` and ``wc`` make the
    derivative equal ``d0`` and ``d1`` at the knots and continuous at the split (Dolatabadi et
    al. 2020, section 3.1).
    """
    x0, x1 = xk[idx], xk[idx + 1]
    y0, y1 = yk[idx], yk[idx + 1]
    d0, d1, lm = d[idx], d[idx + 1], lam[idx]
    w = x1 - x0
    slope = (y1 - y0) / w
    wa = jnp.ones_like(w)
    wb = jnp.sqrt(d0 / d1)
    wc = (lm * d0 + (1 - lm) * wb * d1) / slope
    yc = ((1 - lm) * y0 + lm * wb * y1) / ((1 - lm) + lm * wb)
    return x0, w, y0, y1, yc, wa, wb, wc, lm


def _lrs_forward_one(x, xk, yk, d, lam):
    k = lam.shape[-1]
    inside = (x >= xk[0]) & (x <= xk[-1])
    # jnp.where rather than clip/min/max: at a tie those split the gradient in half, which
    # would halve the derivative exactly at the boundary knots and at the split point.
    xs = jnp.where(inside, x, xk[0])
    idx = jnp.clip(jnp.searchsorted(xk, xs, side="right") - 1, 0, k - 1)
    x0, w, y0, y1, yc, wa, wb, wc, lm = _lrs_bin(xk, yk, d, lam, idx)
    t = (xs - x0) / w
    left = t <= lm
    # Evaluate each piece on its own side of the split so no branch divides by ~0 (this keeps
    # jnp.where's unused branch, and its gradient, finite).
    t1 = jnp.where(left, t, lm)
    t2 = jnp.where(left, lm, t)
    den1 = wa * (lm - t1) + wc * t1
    den2 = wc * (1 - t2) + wb * (t2 - lm)
    y_left = (wa * y0 * (lm - t1) + wc * yc * t1) / den1
    y_right = (wc * yc * (1 - t2) + wb * y1 * (t2 - lm)) / den2
    y = jnp.where(left, y_left, y_right)
    num = jnp.where(left, lm * wa * wc * (yc - y0), (1 - lm) * wb * wc * (y1 - yc))
    den = jnp.where(left, den1, den2)
    logdet = jnp.log(num) - 2 * jnp.log(den) - jnp.log(w)
    return jnp.where(inside, y, x), jnp.where(inside, logdet, 0.0)


def _lrs_inverse_one(y, xk, yk, d, lam):
    k = lam.shape[-1]
    inside = (y >= yk[0]) & (y <= yk[-1])
    ys = jnp.where(inside, y, yk[0])
    idx = jnp.clip(jnp.searchsorted(yk, ys, side="right") - 1, 0, k - 1)
    x0, w, y0, y1, yc, wa, wb, wc, lm = _lrs_bin(xk, yk, d, lam, idx)
    left = ys <= yc
    v1 = jnp.where(left, ys, yc)
    v2 = jnp.where(left, yc, ys)
    # Solve each linear-rational piece for t; both denominators keep one sign on their side.
    t_left = lm * wa * (y0 - v1) / (wa * (y0 - v1) + wc * (v1 - yc))
    t_right = (wc * (v2 - yc) + lm * wb * (y1 - v2)) / (wc * (v2 - yc) + wb * (y1 - v2))
    t = jnp.where(left, t_left, t_right)
    t1 = jnp.where(left, t, lm)
    t2 = jnp.where(left, lm, t)
    den = jnp.where(left, wa * (lm - t1) + wc * t1, wc * (1 - t2) + wb * (t2 - lm))
    num = jnp.where(left, lm * wa * wc * (yc - y0), (1 - lm) * wb * wc * (y1 - yc))
    fwd_logdet = jnp.log(num) - 2 * jnp.log(den) - jnp.log(w)
    x = x0 + t * w
    return jnp.where(inside, x, y), jnp.where(inside, -fwd_logdet, 0.0)


class LinearRationalSpline(distrax.Bijector):
    """Monotone linear-rational spline (Dolatabadi et al. 2020), element-wise, identity outside.

    On ``[range_min, range_max]`` the spline has ``K`` bins; each bin is two linear-rational
    pieces ``(a + b t) / (c + e t)`` joined at a learnable fraction ``lambda`` of the bin. The
    map is C¹, with slope 1 at the boundaries so it joins the identity tails smoothly. Forward,
    inverse and log-dets are closed form.

    Args:
        params: unconstrained parameters of shape ``(..., 4 K - 1)``: ``K`` bin widths, ``K``
            bin heights, ``K - 1`` interior knot slopes and ``K`` split fractions. All zeros give
            the identity.
        range_min, range_max: the interval of the spline (Python floats).
        min_bin_size: smallest bin width/height.
        min_slope: smallest knot slope.
        min_lambda: split fractions lie in ``[min_lambda, 1 - min_lambda]``.
    """

    def __init__(
        self,
        params: Float[Array, "... p"],
        range_min: float,
        range_max: float,
        min_bin_size: float = 1e-4,
        min_slope: float = 1e-4,
        min_lambda: float = 0.025,
    ):
        super().__init__(event_ndims_in=0)
        p = params.shape[-1]
        if p % 4 != 3:
            raise ValueError(
                "LinearRationalSpline params need a last axis of size 4 * num_bins - 1 "
                f"(widths, heights, interior slopes, split fractions), got {p}"
            )
        if not range_min < range_max:
            raise ValueError(f"range_min must be < range_max, got {range_min}, {range_max}")
        k = (p + 1) // 4
        size = range_max - range_min
        widths = _bin_sizes(params[..., :k], size, min_bin_size)
        heights = _bin_sizes(params[..., k : 2 * k], size, min_bin_size)
        slopes = _positive(params[..., 2 * k : 3 * k - 1], min_slope)
        self.lam = (1 - 2 * min_lambda) * jax.nn.sigmoid(params[..., 3 * k - 1 :]) + min_lambda
        lo = jnp.full((*params.shape[:-1], 1), range_min, params.dtype)
        hi = jnp.full((*params.shape[:-1], 1), range_max, params.dtype)
        one = jnp.ones((*params.shape[:-1], 1), params.dtype)
        self.x_pos = jnp.concatenate([lo, range_min + jnp.cumsum(widths[..., :-1], -1), hi], -1)
        self.y_pos = jnp.concatenate([lo, range_min + jnp.cumsum(heights[..., :-1], -1), hi], -1)
        self.knot_slopes = jnp.concatenate([one, slopes, one], -1)
        self.num_bins = k

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        fn = jnp.vectorize(_lrs_forward_one, signature="(),(n),(n),(n),(k)->(),()")
        return fn(x, self.x_pos, self.y_pos, self.knot_slopes, self.lam)

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        fn = jnp.vectorize(_lrs_inverse_one, signature="(),(n),(n),(n),(k)->(),()")
        return fn(y, self.x_pos, self.y_pos, self.knot_slopes, self.lam)


# ----------------------------------------------------------------------------------------------
# rational-quadratic spline (Durkan, Bekasov, Murray & Papamakarios, NeurIPS 2019)


def _bin_index(knots: Array, v: Array) -> Array:
    """Index ``i`` in ``[0, K - 1]`` of the bin ``[knots[i], knots[i + 1])`` that holds ``v``.

    ``compare_all`` counts the knots ``<= v`` in one vectorised comparison: for the few knots
    of a spline it beats a binary search on CPU, and it batches under ``vmap`` without a loop.
    """
    k = knots.shape[-1] - 1
    return jnp.clip(jnp.searchsorted(knots, v, side="right", method="compare_all") - 1, 0, k - 1)


def _rqs_bin(xk, yk, dk, idx):
    """Bin ``idx``: left knot ``(x0, y0)``, width, height, slope ``h / w`` and knot slopes."""
    x0, y0 = xk[idx], yk[idx]
    w, h = xk[idx + 1] - x0, yk[idx + 1] - y0
    return x0, y0, w, h, h / w, dk[idx], dk[idx + 1]


def _rqs_log_det(z, s, d0, d1):
    """``log dy/dx`` at the bin fraction ``z`` (Durkan et al. 2019, eq. 5).

    The denominator ``s + (d0 + d1 - 2 s) z (1 - z) >= s / 2`` on ``[0, 1]`` and the middle
    term is a positive combination of positive numbers, so every log is finite.
    """
    z1mz = z * (1 - z)
    den = s + (d0 + d1 - 2 * s) * z1mz
    num = d1 * z * z + 2 * s * z1mz + d0 * (1 - z) ** 2
    return 2 * jnp.log(s) + jnp.log(num) - 2 * jnp.log(den)


def _rqs_tails(v, lo, hi, lo_out, hi_out, slope_lo, slope_hi):
    """The linear tails outside the open interval ``(lo, hi)``, continuing the boundary slopes."""
    below = v <= lo
    out = jnp.where(below, lo_out + (v - lo) * slope_lo, hi_out + (v - hi) * slope_hi)
    return out, jnp.log(jnp.where(below, slope_lo, slope_hi))


def _rqs_forward_one(x, xk, yk, dk):
    # The boundaries belong to the tails, as in distrax: value and first derivative agree
    # there, but the log-det has a kink and its one-sided derivative is distrax's.
    inside = (x > xk[0]) & (x < xk[-1])
    # jnp.where rather than clip: clip splits the gradient in half at a tie, which would
    # halve the derivative at every knot. Outside, the spline is evaluated at xk[0] (z = 0),
    # where all its terms are finite, so the untaken branch has finite gradients.
    xs = jnp.where(inside, x, xk[0])
    x0, y0, w, h, s, d0, d1 = _rqs_bin(xk, yk, dk, _bin_index(xk, xs))
    z = (xs - x0) / w  # in [0, 1]: xs is in [x0, x1] and rounding is monotone
    z1mz = z * (1 - z)
    y = y0 + h * (s * z * z + d0 * z1mz) / (s + (d0 + d1 - 2 * s) * z1mz)
    tail, tail_log_det = _rqs_tails(x, xk[0], xk[-1], yk[0], yk[-1], dk[0], dk[-1])
    return jnp.where(inside, y, tail), jnp.where(inside, _rqs_log_det(z, s, d0, d1), tail_log_det)


def _rqs_inverse_one(y, xk, yk, dk):
    inside = (y > yk[0]) & (y < yk[-1])
    ys = jnp.where(inside, y, yk[0])
    x0, y0, w, h, s, d0, d1 = _rqs_bin(xk, yk, dk, _bin_index(yk, ys))
    v = (ys - y0) / h
    # Within the bin, y = y0 + h v is a quadratic a z^2 + b z + c = 0 in z (Durkan et al.
    # 2019, appendix A.3), with c = -s v <= 0 and a + b = s > 0. If b < 0 then a > 0 and the
    # discriminant is >= b^2; either way -b - sqrt(.) < 0 (b = 0 needs v > 0, so c < 0 and
    # a = s > 0), so this form of the root never cancels nor divides by zero.
    b = d0 - (d0 + d1 - 2 * s) * v
    a = s - b
    c = -s * v
    disc = jnp.maximum(b * b - 4 * a * c, 0.0)  # >= 0 in exact arithmetic; guards rounding
    z = 2 * c / (-b - jnp.sqrt(disc))
    x = x0 + w * z
    slope_lo, slope_hi = 1 / dk[0], 1 / dk[-1]
    tail, tail_log_det = _rqs_tails(y, yk[0], yk[-1], xk[0], xk[-1], slope_lo, slope_hi)
    return jnp.where(inside, x, tail), jnp.where(inside, -_rqs_log_det(z, s, d0, d1), tail_log_det)


class RationalQuadraticSpline(distrax.RationalQuadraticSpline):
    """distrax's rational-quadratic spline with a gather-one-bin forward and inverse.

    Same constructor, parameters (``params`` of shape ``(..., 3 K + 1)``: ``K`` widths, ``K``
    heights, ``K + 1`` knot slopes), boundary options, knots and tails as
    ``distrax.RationalQuadraticSpline``, so existing parameters and checkpoints give the same
    function. distrax finds the bin of each element with a one-hot mask and sums over all ``K``
    bins; here a ``searchsorted`` picks the bin and only its knots are gathered, so a
    ``vmap``-ed log-density and its gradient do ``O(1)`` work per element instead of ``O(K)``.
    Forward (Durkan et al. 2019, eq. 4), inverse (the stable root of appendix A.3) and
    log-dets (eq. 5) are closed form; outside ``[range_min, range_max]`` the map is linear with
    the boundary slopes (the identity for ``boundary_slopes="identity"``).

    Values and log-dets agree with distrax's to rounding, and so do derivatives except exactly
    on an interior knot, where distrax's ``clip`` of the bin fraction halves the derivative
    with respect to the input (and the parameter derivatives through it); here it is the knot
    slope.
    """

    def forward_and_log_det(self, x: Float[Array, "..."]) -> tuple[Array, Array]:
        """``y = f(x)`` and ``log f'(x)``, element-wise, broadcasting ``x`` against the params."""
        fn = jnp.vectorize(_rqs_forward_one, signature="(),(n),(n),(n)->(),()")
        return fn(x, self.x_pos, self.y_pos, self.knot_slopes)

    def inverse_and_log_det(self, y: Float[Array, "..."]) -> tuple[Array, Array]:
        """``x = f^{-1}(y)`` and ``log (f^{-1})'(y)``, element-wise."""
        fn = jnp.vectorize(_rqs_inverse_one, signature="(),(n),(n),(n)->(),()")
        return fn(y, self.x_pos, self.y_pos, self.knot_slopes)


class _ExpBijector(distrax.Bijector):
    """``y = exp(x)``, element-wise; ``log|dy/dx| = x``."""

    def __init__(self):
        super().__init__(event_ndims_in=0)

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        return jnp.exp(x), x

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        x = jnp.log(y)
        return x, -x


# ----------------------------------------------------------------------------------------------
# layers


class Layer(eqx.Module):
    """A flow layer: ``layer(context) -> distrax.Bijector`` (element-wise).

    ``context`` is a 1-D array of the node's (normalised) parents, or an empty array for a
    root node.
    """

    @abc.abstractmethod
    def __call__(self, context: Float[Array, " c"]) -> distrax.Bijector:
        """The layer's bijector for this context."""


def _leaky_relu(x: Array) -> Array:
    return jax.nn.leaky_relu(x, 0.1)


def zero_head_mlp(
    in_size: int,
    out_size: int,
    width: int,
    depth: int,
    *,
    key: PRNGKeyArray,
    activation=jax.nn.relu,
    output_scale: float = 0.0,
    dtype=None,
) -> eqx.nn.MLP:
    """An ``eqx.nn.MLP`` whose output layer starts scaled by ``output_scale`` with zero bias.

    ``output_scale=0`` gives an MLP whose output is exactly zero at initialisation (yet whose
    output weights get gradients), so a learned correction starts as "no change" — a
    conditional flow as the unconditional one, a compensator as the unintervened model. A
    small positive scale keeps the context's influence small but nonzero.

    Args:
        in_size: input size.
        out_size: output size.
        width: hidden width.
        depth: number of hidden layers (``depth=0``: linear).
        key: initialisation key.
        activation: hidden activation.
        output_scale: factor on the output layer's initial weights.
        dtype: parameter dtype (default: equinox's).
    """
    kw = {} if dtype is None else {"dtype": dtype}
    net = eqx.nn.MLP(in_size, out_size, width, depth, activation=activation, key=key, **kw)
    last = net.layers[-1]
    return eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        net,
        (last.weight * output_scale, jnp.zeros_like(last.bias)),
    )


class Conditioner(eqx.Module):
    """Parameters of shape ``shape + (p,)``: a learnable bias plus an optional context network.

    ``net`` (an ``eqx.nn.MLP`` from the context to ``prod(shape) * p`` numbers) is initialised
    with its output layer scaled by ``init_scale`` so a new conditional flow starts near the
    unconditional one.
    """

    bias: Array
    net: eqx.nn.MLP | None

    def __init__(
        self,
        key: PRNGKeyArray,
        shape: tuple[int, ...],
        num_params: int,
        context_size: int = 0,
        width: int = 16,
        depth: int = 1,
        init_scale: float = 0.1,
    ):
        self.bias = jnp.zeros((*shape, num_params))
        if context_size:
            self.net = zero_head_mlp(
                context_size,
                int(np.prod(shape, dtype=int)) * num_params,
                width,
                depth,
                key=key,
                activation=_leaky_relu,
                output_scale=init_scale,
            )
        else:
            self.net = None

    def __call__(self, context: Array) -> Array:
        if self.net is None:
            return self.bias
        if context.shape[-1] != self.net.in_size:
            raise ValueError(
                f"flow context has size {context.shape[-1]} but the context network expects "
                f"{self.net.in_size}; set context_size to the total size of the parents"
            )
        return self.bias + self.net(context).reshape(self.bias.shape)


class Spline(Layer):
    """Monotone spline on ``[-bound, bound]`` (identity outside), optionally conditional.

    Args:
        key: initialises the context network (unused without context).
        shape: shape of the node (``()`` for a scalar).
        num_bins: number of bins ``K``.
        bound: half-width of the spline's interval, in the layer's input units.
        order: ``"quadratic"`` (:class:`RationalQuadraticSpline`, distrax's parameters,
            ``3K + 1`` of them) or
            ``"linear"`` (:class:`LinearRationalSpline`, ``4K - 1`` parameters).
        context_size, width, depth: context network (none when ``context_size == 0``).
    """

    params: Conditioner
    order: str = eqx.field(static=True)
    bound: float = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        shape: tuple[int, ...] = (),
        num_bins: int = 8,
        bound: float = 3.0,
        order: Literal["quadratic", "linear"] = "quadratic",
        context_size: int = 0,
        width: int = 16,
        depth: int = 1,
    ):
        if order not in ("quadratic", "linear"):
            raise ValueError(f"Spline order must be 'quadratic' or 'linear', got {order!r}")
        if num_bins < 1:
            raise ValueError(f"Spline needs num_bins >= 1, got {num_bins}")
        p = 3 * num_bins + 1 if order == "quadratic" else 4 * num_bins - 1
        self.params = Conditioner(key, tuple(shape), p, context_size, width, depth)
        self.order = order
        self.bound = float(bound)

    def __call__(self, context: Array) -> distrax.Bijector:
        theta = self.params(context)
        if self.order == "quadratic":
            return RationalQuadraticSpline(
                theta, -self.bound, self.bound, boundary_slopes="identity"
            )
        return LinearRationalSpline(theta, -self.bound, self.bound)


class Affine(Layer):
    """``x = shift + exp(log_scale) * u`` element-wise; conditional when ``context_size > 0``.

    Without context this is Deep SCM's ``Affine``; with a context network it is its
    ``ConditionalAffine`` (``depth=0`` gives the paper's linear context map).
    """

    params: Conditioner

    def __init__(
        self,
        key: PRNGKeyArray,
        shape: tuple[int, ...] = (),
        context_size: int = 0,
        width: int = 8,
        depth: int = 1,
    ):
        self.params = Conditioner(key, tuple(shape), 2, context_size, width, depth)

    def __call__(self, context: Array) -> distrax.Bijector:
        theta = self.params(context)
        return distrax.ScalarAffine(shift=theta[..., 0], log_scale=theta[..., 1])


class Normalise(Layer):
    """Fixed affine map ``x = loc + scale * u`` (not trained: gradients are stopped)."""

    loc: Array
    scale: Array

    def __init__(self, loc: ArrayLike, scale: ArrayLike):
        self.loc = jnp.asarray(loc, dtype=float)
        self.scale = jnp.asarray(scale, dtype=float)
        if np.any(np.asarray(self.scale) <= 0):
            raise ValueError(f"Normalise needs a positive scale, got {np.asarray(self.scale)}")

    def __call__(self, context: Array) -> distrax.Bijector:
        return distrax.ScalarAffine(
            shift=jax.lax.stop_gradient(self.loc), scale=jax.lax.stop_gradient(self.scale)
        )


class Exp(Layer):
    """``x = exp(u)``: maps onto ``(0, inf)``."""

    def __call__(self, context: Array) -> distrax.Bijector:
        return _ExpBijector()


class Sigmoid(Layer):
    """``x = 1 / (1 + exp(-u))``: maps onto ``(0, 1)``."""

    def __call__(self, context: Array) -> distrax.Bijector:
        return distrax.Sigmoid()


class ParentContext(eqx.Module):
    """Parents of one unit as a standardised context vector (Deep SCM's "hat" values).

    The raveled parents are concatenated in ``parents`` order (categorical parents cast to
    float), those named in ``log_parents`` log-transformed first (positive parents such as a
    thickness), then standardised by the fixed ``loc`` / ``scale`` (gradients stopped). Without
    this, networks mostly follow the parent with the largest magnitude (Deep SCM, appendix
    A.2, footnote 5). The one implementation of parent standardisation: :class:`Flow` and the
    image mechanisms' networks use it.

    Args:
        parents: parent names, in order.
        log_parents: parents to log-transform first.
        loc, scale: fixed standardisation of the context vector (``None``: none).
        dtype: dtype of the context (e.g. ``jnp.float32`` for float32 networks, so a float64
            context under ``jax_enable_x64`` does not promote every layer); default: the
            default float dtype.
    """

    loc: Array | None
    scale: Array | None
    parents: tuple[str, ...] = eqx.field(static=True)
    log_parents: tuple[str, ...] = eqx.field(static=True)
    dtype: object = eqx.field(static=True)

    def __init__(
        self,
        parents: Sequence[str] = (),
        log_parents: Sequence[str] = (),
        loc: ArrayLike | None = None,
        scale: ArrayLike | None = None,
        dtype=None,
    ):
        self.parents = as_parents(parents, "ParentContext")
        unknown = set(log_parents) - set(self.parents)
        if unknown:
            raise ValueError(f"log_parents {sorted(unknown)} are not parents {self.parents}")
        self.log_parents = tuple(log_parents)
        self.dtype = None if dtype is None else jnp.dtype(dtype)
        dt = self.dtype or float
        self.loc = None if loc is None else jnp.asarray(loc, dt)
        self.scale = None if scale is None else jnp.asarray(scale, dt)

    def __call__(self, parents: Parents) -> Float[Array, " c"]:
        """The context vector of one unit, shape ``(c,)`` (``(0,)`` without parents)."""
        dt = self.dtype or jnp.result_type(float)
        parts = []
        for name in self.parents:
            if name not in parents:
                raise ValueError(f"context needs parent {name!r}; got {sorted(parents)}")
            v = jnp.ravel(jnp.asarray(parents[name])).astype(dt)
            parts.append(jnp.log(v) if name in self.log_parents else v)
        c = jnp.concatenate(parts) if parts else jnp.zeros((0,), dt)
        if self.loc is not None:
            c = c - jax.lax.stop_gradient(self.loc)
        if self.scale is not None:
            c = c / jax.lax.stop_gradient(self.scale)
        return c


class Flow(eqx.Module):
    """A conditional flow: layers (outermost first) and how to build the context from parents.

    The context is the concatenation of the raveled parents in ``parents`` order (categorical
    parents cast to float), with the parents named in ``log_parents`` log-transformed, then
    standardised by the fixed ``context_loc`` / ``context_scale`` (the "hat" values of Deep SCM).

    Args:
        layers: sequence of :class:`Layer`, outermost first (``Flow([Exp(), Normalise(m, s),
            Spline(k)])`` is ``exp ∘ normalise ∘ spline``).
        parents: names of the parents feeding the context networks, in order.
        log_parents: parents to log-transform first (positive parents).
        context_loc, context_scale: fixed standardisation of the context vector.
    """

    layers: tuple[Layer, ...]
    parents: tuple[str, ...] = eqx.field(static=True)
    log_parents: tuple[str, ...] = eqx.field(static=True)
    context_loc: Array | None
    context_scale: Array | None

    def __init__(
        self,
        layers: Sequence[Layer],
        parents: Sequence[str] = (),
        log_parents: Sequence[str] = (),
        context_loc: ArrayLike | None = None,
        context_scale: ArrayLike | None = None,
    ):
        self.layers = tuple(layers)
        if not self.layers:
            raise ValueError("Flow needs at least one layer")
        ctx = ParentContext(parents, log_parents, context_loc, context_scale)
        self.parents = ctx.parents
        self.log_parents = ctx.log_parents
        self.context_loc = ctx.loc
        self.context_scale = ctx.scale

    def context(self, parents: Parents) -> Float[Array, " c"]:
        """The context vector of one unit, shape ``(c,)`` (``(0,)`` without parents).

        The :class:`ParentContext` of this flow's fields.
        """
        ctx = ParentContext(self.parents, self.log_parents)
        ctx = eqx.tree_at(
            lambda c: (c.loc, c.scale),
            ctx,
            (self.context_loc, self.context_scale),
            is_leaf=lambda x: x is None,
        )
        return ctx(parents)

    def __call__(self, parents: Parents | None = None) -> distrax.Chain:
        """The bijector ``u -> x`` for one unit with these parents."""
        c = self.context({} if parents is None else parents)
        return distrax.Chain([layer(c) for layer in self.layers])


def flow_bijector(flow: Flow, parents: Parents) -> distrax.Bijector:
    """``bijector(params, parents)`` for :class:`jcausal.Invertible`: the flow is the params."""
    return flow(parents)


# ----------------------------------------------------------------------------------------------
# mechanisms


def normalisation(
    x: ArrayLike, constraint: Constraint = None, margin: float = 0.01
) -> tuple[Array, Array]:
    """Fixed ``(loc, scale)`` of the :class:`Normalise` layer, estimated from data ``x`` (n, ...).

    * ``None``: mean and standard deviation of ``x`` (whitening);
    * ``"exp"``: mean and standard deviation of ``log x`` (whitening in log space);
    * ``"sigmoid"``: ``loc = min - margin * range`` and ``scale = (1 + 2 margin) * range``
      (Deep SCM rescales ``(0, 1)`` to the data's range; the margin keeps the extreme
      observations strictly inside, where the log-density is finite).
    """
    x = jnp.asarray(x, dtype=float)
    if constraint == "exp":
        if np.any(np.asarray(x) <= 0):
            raise ValueError("normalisation with constraint='exp' needs positive data")
        lx = jnp.log(x)
        return jnp.mean(lx, axis=0), jnp.std(lx, axis=0)
    if constraint == "sigmoid":
        lo, hi = jnp.min(x, axis=0), jnp.max(x, axis=0)
        r = hi - lo
        return lo - margin * r, (1 + 2 * margin) * r
    if constraint is None:
        return jnp.mean(x, axis=0), jnp.std(x, axis=0)
    raise ValueError(f"constraint must be None, 'exp' or 'sigmoid', got {constraint!r}")


def _outer(constraint: Constraint, normalise) -> list[Layer]:
    """Constraint and normalisation layers, outermost first, in Deep SCM's order."""
    norm = [] if normalise is None else [Normalise(*normalise)]
    if constraint is None:
        return norm
    if constraint == "exp":
        return [Exp(), *norm]  # whiten in log space, then exponentiate
    if constraint == "sigmoid":
        return [*norm, Sigmoid()]  # squash to (0, 1), then rescale to the data's range
    raise ValueError(f"constraint must be None, 'exp' or 'sigmoid', got {constraint!r}")


def _standard_normal(shape: tuple[int, ...]) -> distrax.Distribution:
    if shape:
        return distrax.Independent(
            distrax.Normal(jnp.zeros(shape), jnp.ones(shape)), reinterpreted_batch_ndims=len(shape)
        )
    return distrax.Normal(jnp.zeros(()), jnp.ones(()))


def flow_mechanism(flow: Flow, noise: distrax.Distribution | None = None) -> Invertible:
    """An invertible mechanism ``x := flow(parents)(u)``; ``u`` standard normal by default.

    The noise shape is taken from ``noise``; without it, from the first layer that has
    parameters (scalar if none).
    """
    if noise is None:
        shape: tuple[int, ...] = ()
        for layer in flow.layers:
            params = getattr(layer, "params", None)
            if isinstance(params, Conditioner):
                shape = tuple(params.bias.shape[:-1])
                break
        noise = _standard_normal(shape)
    return Invertible(flow_bijector, flow, noise, flow.parents)


def spline_mechanism(
    key: PRNGKeyArray,
    parents: Sequence[str] = (),
    *,
    shape: tuple[int, ...] = (),
    num_bins: int = 8,
    bound: float = 3.0,
    order: Literal["quadratic", "linear"] = "quadratic",
    context_size: int | None = None,
    width: int = 16,
    depth: int = 1,
    affine: bool = False,
    constraint: Constraint = None,
    normalise: tuple[ArrayLike, ArrayLike] | None = None,
    log_parents: Sequence[str] = (),
    context_normalise: tuple[ArrayLike, ArrayLike] | None = None,
    noise: distrax.Distribution | None = None,
) -> Invertible:
    """Spline-flow mechanism ``x := (constraint ∘ normalise ∘ spline_pa [∘ affine])(u)``.

    Deep SCM's thickness (eq. A.1) is ``spline_mechanism(key, constraint="exp",
    normalise=normalisation(t, "exp"))``; its independent intensity (A.3) adds
    ``affine=True`` with ``constraint="sigmoid"``.

    Args:
        key: initialises the context networks.
        parents: parent names; with parents the spline (and affine) parameters come from a
            context network of the parents.
        shape: node shape.
        num_bins: number of spline bins (see :class:`Spline`).
        bound: the spline acts on ``[-bound, bound]``, identity outside (see :class:`Spline`).
        order: ``"quadratic"`` (rational-quadratic) or ``"linear"`` (see :class:`Spline`).
        context_size: total size of the parents' values (default: one number per parent).
        width: hidden width of the context network.
        depth: hidden layers of the context network.
        affine: add a learnable (conditional) affine layer before the spline.
        constraint: ``None``, ``"exp"`` (positive node) or ``"sigmoid"`` (bounded node).
        normalise: ``(loc, scale)`` of the fixed normalisation (see :func:`normalisation`).
        log_parents: parents that enter the context as their logarithm (see :class:`Flow`).
        context_normalise: ``(loc, scale)`` of the context (see :class:`Flow`).
        noise: exogenous noise (default standard normal of ``shape``).
    """
    parents = tuple(parents)
    c = (len(parents) if context_size is None else int(context_size)) if parents else 0
    k1, k2 = jax.random.split(key)
    core: list[Layer] = [Spline(k1, shape, num_bins, bound, order, c, width, depth)]
    if affine:
        core.append(Affine(k2, shape, c, width, depth))
    ctx = (None, None) if context_normalise is None else context_normalise
    flow = Flow([*_outer(constraint, normalise), *core], parents, log_parents, *ctx)
    return flow_mechanism(flow, noise)


def affine_mechanism(
    key: PRNGKeyArray,
    parents: Sequence[str] = (),
    *,
    shape: tuple[int, ...] = (),
    context_size: int | None = None,
    width: int = 8,
    depth: int = 1,
    constraint: Constraint = None,
    normalise: tuple[ArrayLike, ArrayLike] | None = None,
    log_parents: Sequence[str] = (),
    context_normalise: tuple[ArrayLike, ArrayLike] | None = None,
    noise: distrax.Distribution | None = None,
) -> Invertible:
    """Conditional-affine mechanism ``x := (constraint ∘ normalise ∘ affine_pa)(u)``.

    Deep SCM's intensity given thickness (eq. A.2) is ``affine_mechanism(key, ["t"],
    depth=0, constraint="sigmoid", normalise=normalisation(i, "sigmoid"), log_parents=["t"],
    context_normalise=normalisation(t, "exp"))`` (``depth=0``: a linear context map).
    Arguments as in :func:`spline_mechanism`.
    """
    parents = tuple(parents)
    c = (len(parents) if context_size is None else int(context_size)) if parents else 0
    ctx = (None, None) if context_normalise is None else context_normalise
    layers = [*_outer(constraint, normalise), Affine(key, shape, c, width, depth)]
    return flow_mechanism(Flow(layers, parents, log_parents, *ctx), noise)


__all__ = [
    "Affine",
    "Conditioner",
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
