"""Lie groups acting on node values: the group interface and the built-in groups."""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class LieGroup(eqx.Module):
    """A real Lie group acting smoothly on the values of a node.

    Every method works on **one** group element and one node value (one unit); batch with
    ``jax.vmap``. Elements are arrays (of :attr:`element_shape`); Lie-algebra parameters are
    arrays of :attr:`param_shape`. Groups are equinox Modules without array leaves, so they can
    be closed over or passed through ``jit``, ``vmap`` and ``grad`` freely.

    Subclasses implement ``param_shape``, ``element_shape``, ``identity``, ``compose``,
    ``inverse``, ``exp`` and ``act``; ``log`` and ``log_det_jacobian`` are optional (``log`` is
    only used by users and tests; ``log_det_jacobian`` enables ``log_prob`` under a
    :class:`Lie` intervention). The action must satisfy ``act(identity(), x) == x`` and
    ``act(g, act(h, x)) == act(compose(g, h), x)``.

    Example: the affine group of the line ``x -> a x + b`` (``a > 0``), a group of your own::

        class Affine1D(LieGroup):
            @property
            def param_shape(self):
                return (2,)  # (log-scale s, translation rate t)

            @property
            def element_shape(self):
                return (2,)  # (a, b)

            def identity(self, dtype=None):
                return jnp.array([1.0, 0.0], dtype=dtype)

            def compose(self, g, h):  # (g h) x = g (h x)
                return jnp.stack([g[0] * h[0], g[0] * h[1] + g[1]])

            def inverse(self, g):
                return jnp.stack([1.0 / g[0], -g[1] / g[0]])

            def exp(self, u):  # true exponential map: b = t (e^s - 1) / s
                s, t = u[0], u[1]
                small = jnp.abs(s) < 1e-8
                safe = jnp.where(small, 1.0, s)  # keeps gradients finite at s = 0
                rate = jnp.where(small, 1.0 + s / 2, jnp.expm1(safe) / safe)
                return jnp.stack([jnp.exp(s), t * rate])

            def act(self, g, x):
                return g[0] * x + g[1]

        Lie(Affine1D(), jnp.array([0.1, -0.5]))  # an intervention on a scalar node
    """

    @property
    @abc.abstractmethod
    def param_shape(self) -> tuple[int, ...]:
        """Shape of the Lie-algebra parameters ``u`` of one element."""

    @property
    @abc.abstractmethod
    def element_shape(self) -> tuple[int, ...]:
        """Shape of the array representing one group element."""

    @property
    def dim(self) -> int:
        """Dimension of the group as a manifold (number of free parameters)."""
        return math.prod(self.param_shape)

    @abc.abstractmethod
    def identity(self, dtype=None) -> Array:
        """The identity element ``e`` (in ``dtype``, default float)."""

    @abc.abstractmethod
    def compose(self, g: Array, h: Array) -> Array:
        """The product ``g h`` (apply ``h`` first, then ``g``)."""

    @abc.abstractmethod
    def inverse(self, g: Array) -> Array:
        """The inverse ``g⁻¹``."""

    @abc.abstractmethod
    def exp(self, u: Array) -> Array:
        """The element ``exp(u)`` for Lie-algebra parameters ``u``; ``exp(0)`` is the identity."""

    def log(self, g: Array) -> Array:
        """Parameters ``u`` with ``exp(u) == g`` (the principal logarithm, near the identity)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement log")

    @abc.abstractmethod
    def act(self, g: Array, x: Array) -> Array:
        """The action ``g · x`` on one node value ``x``; same shape as ``x``."""

    def log_det_jacobian(self, g: Array, x: Array) -> Array:
        """``log |det ∂(g · x)/∂x|`` for one value ``x`` (a scalar, in nats).

        Needed for densities under a :class:`Lie` intervention (change of variables).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement log_det_jacobian")


def _shape(d: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(d, int | np.integer):
        shape = (int(d),)
    else:
        shape = tuple(int(k) for k in d)
    if any(k < 1 for k in shape):
        raise ValueError(f"group shape must have positive sizes, got {shape}")
    return shape


class _Elementwise(LieGroup):
    # Abelian groups acting componentwise; elements and parameters share one shape.
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, d: int | Sequence[int] = ()):
        self.shape = _shape(d)

    @property
    def param_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def element_shape(self) -> tuple[int, ...]:
        return self.shape


class Multiplicative(_Elementwise):
    """The multiplicative group ``R_+^d``: positive factors acting by ``x -> g * x``.

    ``exp(u) = e^u`` elementwise (so ``u`` is a log-factor: ``u = log 0.9`` reduces by 10 %),
    ``compose(g, h) = g * h``. The factors broadcast against the value with numpy rules, so
    ``Multiplicative()`` scales every component of a vector node by one factor.

    Args:
        d: shape of the factors: an int ``d`` for a vector of ``d`` components, a tuple for
            other shapes, ``()`` (default) for a single scalar factor.
    """

    def identity(self, dtype=None):
        return jnp.ones(self.shape, dtype=dtype)

    def compose(self, g, h):
        return g * h

    def inverse(self, g):
        return 1.0 / g

    def exp(self, u):
        return jnp.exp(u)

    def log(self, g):
        return jnp.log(g)

    def act(self, g, x):
        return g * x

    def log_det_jacobian(self, g, x):
        # diag(g) broadcast over x: each scaled component contributes log g.
        return jnp.sum(jnp.broadcast_to(jnp.log(g), jnp.broadcast_shapes(g.shape, x.shape)))


class Translation(_Elementwise):
    """The additive group ``R^d``: shifts acting by ``x -> x + g`` (in the node's units).

    ``exp(u) = u`` and ``log(g) = g``: the algebra is the group itself.

    Args:
        d: shape of the shift: an int, a tuple, or ``()`` (default) for one scalar shift.
    """

    def identity(self, dtype=None):
        return jnp.zeros(self.shape, dtype=dtype)

    def compose(self, g, h):
        return g + h

    def inverse(self, g):
        return -g

    def exp(self, u):
        return u

    def log(self, g):
        return g

    def act(self, g, x):
        return x + g

    def log_det_jacobian(self, g, x):
        # Volume-preserving.
        return jnp.zeros((), dtype=jnp.result_type(g, x))


class SO(LieGroup):
    """The rotation group ``SO(n)``, acting on vectors of length ``n`` by ``x -> R x``.

    Elements are ``(n, n)`` orthogonal matrices with determinant +1. ``exp(u)`` is the matrix
    exponential of a skew-symmetric matrix ``hat(u)`` built from ``n(n-1)/2`` parameters
    (radians):

    * ``n = 2``: ``u = (θ,)`` rotates counter-clockwise by ``θ`` (closed form).
    * ``n = 3``: ``u`` is the rotation vector (axis times angle), ``hat(u) v = u × v``.
    * ``n ≥ 4``: ``hat(u)[i, j] = u_k``, ``hat(u)[j, i] = -u_k`` for the ``k``-th pair
      ``i > j`` of ``numpy.tril_indices(n, -1)``; ``exp`` uses ``jax.scipy.linalg.expm``.

    ``act`` also accepts a stack of vectors ``(..., n)`` (each is rotated). The action preserves
    volume, so densities under a :class:`Lie` intervention are available.

    Logarithm limits: ``log`` returns the principal logarithm, which exists and is unique when
    no rotation angle equals π. ``n = 2`` (``atan2``) and ``n = 3`` (closed form, with separate
    branches near 0 and near π) are accurate for every angle, and return one of the two valid
    answers at exactly π. For ``n ≥ 4`` it uses inverse scaling and squaring (Denman–Beavers
    square roots, then a series), which is accurate for angles up to about ``π - 1e-5`` and
    degrades towards π; it is differentiable but slower.

    Args:
        n: dimension of the rotated space, ``n ≥ 2``.
    """

    n: int = eqx.field(static=True)

    def __init__(self, n: int):
        n = int(n)
        if n < 2:
            raise ValueError(f"SO(n) needs n >= 2 (SO(1) is trivial), got n={n}")
        self.n = n

    @property
    def param_shape(self) -> tuple[int, ...]:
        return (self.n * (self.n - 1) // 2,)

    @property
    def element_shape(self) -> tuple[int, ...]:
        return (self.n, self.n)

    def hat(self, u: Float[Array, " p"]) -> Float[Array, "n n"]:
        """The skew-symmetric matrix of parameters ``u`` (see the class docstring)."""
        u = jnp.asarray(u)
        if u.shape != self.param_shape:
            raise ValueError(
                f"SO({self.n}) parameters must have shape {self.param_shape}, got {u.shape}"
            )
        if self.n == 3:
            z = jnp.zeros((), u.dtype)
            return jnp.array([[z, -u[2], u[1]], [u[2], z, -u[0]], [-u[1], u[0], z]], dtype=u.dtype)
        i, j = np.tril_indices(self.n, -1)
        a = jnp.zeros((self.n, self.n), u.dtype)
        return a.at[i, j].set(u).at[j, i].set(-u)

    def vee(self, a: Float[Array, "n n"]) -> Float[Array, " p"]:
        """Inverse of :meth:`hat` on skew-symmetric matrices (uses the skew part of ``a``)."""
        a = (a - a.T) / 2
        if self.n == 3:
            return jnp.stack([a[2, 1], a[0, 2], a[1, 0]])
        i, j = np.tril_indices(self.n, -1)
        return a[i, j]

    def identity(self, dtype=None):
        return jnp.eye(self.n, dtype=dtype)

    def compose(self, g, h):
        return g @ h

    def inverse(self, g):
        # Orthogonal: the transpose is the inverse, exactly and cheaply.
        return g.T

    def exp(self, u):
        u = jnp.asarray(u)
        if self.n == 2:
            c, s = jnp.cos(u[0]), jnp.sin(u[0])
            return jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])])
        return jax.scipy.linalg.expm(self.hat(u))

    def log(self, g):
        g = jnp.asarray(g)
        if self.n == 2:
            return jnp.arctan2(g[1, 0], g[0, 0])[None]
        if self.n == 3:
            return _log_so3(g)
        return self.vee(_logm_rotation(g))

    def act(self, g, x):
        # x @ R^T rotates the last axis, so a single vector or a stack of them both work.
        return x @ g.T

    def log_det_jacobian(self, g, x):
        return jnp.zeros((), dtype=jnp.result_type(g, x))


def _log_so3(r: Array) -> Array:
    """Rotation vector of a 3x3 rotation, accurate for every angle in [0, π]."""
    dtype = r.dtype
    eps = jnp.finfo(dtype).eps
    v = jnp.stack([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])  # 2 sinθ · axis
    c = (jnp.trace(r) - 1) / 2  # cos θ
    sq = v @ v  # 4 sin²θ
    small = sq < eps
    # Double `where`: keep every branch finite so the unused ones cannot leak NaN gradients.
    s = jnp.sqrt(jnp.where(small, 1.0, sq)) / 2  # sin θ
    theta = jnp.arctan2(jnp.where(small, 0.0, s), c)
    # Near the identity (θ < π/2): u = θ / (2 sinθ) · v, Taylor-expanded where sinθ ≈ 0.
    factor = jnp.where(small, 0.5 + sq / 48, theta / (2 * s))
    near = factor * v
    # Near π the antisymmetric part vanishes; read the axis off the symmetric part instead:
    # (R + Rᵀ)/2 = cosθ I + (1 - cosθ) w wᵀ.
    far_c = jnp.where(c > 0, -1.0, c)
    far_theta = jnp.arctan2(jnp.where(small, 0.0, s), far_c)
    wwt = ((r + r.T) / 2 - far_c * jnp.eye(3, dtype=dtype)) / (1 - far_c)
    k = jnp.argmax(jnp.diagonal(wwt))
    w = wwt[:, k] / jnp.sqrt(jnp.maximum(wwt[k, k], eps))
    w = w / jnp.linalg.norm(w)
    sign = jnp.where(w @ v < 0, -1.0, 1.0)
    far = far_theta * sign * w
    return jnp.where(c > 0, near, far).astype(dtype)


def _sqrtm_db(a: Array, iters: int = 30) -> Array:
    """Principal square root by the Denman–Beavers iteration (no eigenvalue on (-inf, 0])."""

    def body(_, yz):
        y, z = yz
        return (y + jnp.linalg.inv(z)) / 2, (z + jnp.linalg.inv(y)) / 2

    y, _ = jax.lax.fori_loop(0, iters, body, (a, jnp.eye(a.shape[0], dtype=a.dtype)))
    return y


def _logm_rotation(r: Array, roots: int = 5, terms: int = 16) -> Array:
    """Principal matrix logarithm of a rotation by inverse scaling and squaring.

    ``roots`` square roots bring every rotation angle below ``π / 2**roots``; the series of
    ``log(I + X)`` then converges fast and the result is scaled back by ``2**roots``.
    """
    eye = jnp.eye(r.shape[0], dtype=r.dtype)
    # The first root may start next to an eigenvalue -1 (angle near π), where Denman–Beavers
    # converges slowly; afterwards every angle is below π/2 and a few iterations suffice.
    y = _sqrtm_db(r, iters=30)
    y = jax.lax.fori_loop(0, roots - 1, lambda _, y: _sqrtm_db(y, iters=8), y)
    x = y - eye
    # Horner form of sum_{j=1..terms} (-1)^(j+1) X^j / j.
    acc = eye * ((-1) ** (terms + 1) / terms)
    for j in range(terms - 1, 0, -1):
        acc = eye * ((-1) ** (j + 1) / j) + x @ acc
    out = (2**roots) * (x @ acc)
    return (out - out.T) / 2
