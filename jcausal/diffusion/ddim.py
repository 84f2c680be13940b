"""Deterministic DDIM sampling (eta = 0) and DDIM inversion, each one ``lax.scan``.

The step grid: ``steps = K`` diffusion times ``tau_k = round((k - 1) (T - 1) / (K - 1))``
(``k = 1..K``: evenly spaced from ``tau_1 = 0`` to ``tau_K = T - 1``; ``K = T`` is every step),
the spacing of the guided-diffusion code that Diff-SCM builds on, and *levels* ``0..K`` with
``abar`` of level 0 equal to 1 (the data) and of level ``k`` equal to ``alpha_bar[tau_k]``.
Starting at ``tau_1 = 0`` matters for exact inversion: the step between the data and level 1
inverts the network's last denoising step, which is close to a projection onto the images it
can produce (its Jacobian is ~1 across them), so its implicit equation is nearly singular
unless level 1 is almost noise-free (measured on the trained MNIST UNet, K = 50: relative
residual 3.7e-3 after 300 Anderson steps from ``tau_1 = 19``, 2.7e-5 from ``tau_1 = 0``; every
other level converges in 3-25 steps). A DDIM step between
levels ``i`` and ``j`` with the noise prediction ``e`` is

    x_j = sqrt(a_j / a_i) x_i + (sqrt(1 - a_j) - sqrt(a_j (1 - a_i) / a_i)) e,

i.e. predict ``x_0 = (x_i - sqrt(1 - a_i) e) / sqrt(a_i)`` and re-noise it to ``a_j`` with the
same ``e`` (Song et al. 2021, eq. 12 with sigma = 0). Sampling (``j = i - 1``) takes
``e = eps(x_i, tau_i)``. Inversion (``j = i + 1``, Alg. 1's abduction) must find ``x_{i+1}``
whose sampling step lands on ``x_i``, i.e. solve

    x_{i+1} = sqrt(a_{i+1} / a_i) x_i + c_i eps(x_{i+1}, tau_{i+1}),

an implicit equation. Plain DDIM inversion replaces ``eps(x_{i+1}, .)`` by ``eps(x_i, .)`` (one
fixed-point iteration from ``x_i``), so sampling does not return exactly to the input;
``exact=True`` solves it with :func:`jcausal.fixed_point` (Anderson, implicit gradients), and
then :func:`ddim_sample` inverts :func:`ddim_invert` to the solver's tolerance.

``eps_fn(x, t) -> eps`` takes ``x`` of any shape (one image, or a batch with a shared ``t``)
and an int32 scalar step; classifier guidance and clipping are ``eps_fn`` transformations
(:mod:`jcausal.diffusion.guidance`), so both loops serve plain, guided and clipped models.
Everything is a pure function of arrays: ``jit``, ``vmap`` over units and ``grad`` apply.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..solvers import AbstractSolver, Anderson, fixed_point
from .schedule import Schedule

EpsFn = Callable[[Array, Array], Array]


def ddim_times(T: int, steps: int) -> np.ndarray:
    """The diffusion steps ``tau_1 < ... < tau_K`` of a ``steps``-step grid (int32 ``(K,)``)."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, T={T}], got {steps!r}")
    if steps == 1:
        return np.array([T - 1], np.int32)
    k = np.arange(steps)
    return np.round(k * (T - 1) / (steps - 1)).astype(np.int32)


def level(fraction: float, steps: int, what: str = "fraction") -> int:
    """The grid level ``round(fraction * steps)`` of a fraction in ``[0, 1]`` of the steps."""
    f = float(fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(
            f"{what} must lie in [0, 1] (a fraction of the DDIM steps), got {fraction}"
        )
    return round(f * steps)


def _grid(sched: Schedule, steps: int) -> tuple[np.ndarray, Array]:
    times = ddim_times(sched.T, steps)
    abar = jnp.concatenate([jnp.ones((1,), sched.alpha_bar.dtype), sched.alpha_bar[times]])
    return times, abar


def _coefficients(a_from: Array, a_to: Array) -> tuple[Array, Array]:
    cx = jnp.sqrt(a_to / a_from)
    ce = jnp.sqrt(1.0 - a_to) - jnp.sqrt(a_to) * jnp.sqrt(1.0 - a_from) / jnp.sqrt(a_from)
    return cx, ce


def ddim_sample(
    eps_fn: EpsFn,
    sched: Schedule,
    x: Float[Array, "*shape"],
    *,
    steps: int = 100,
    start: float = 1.0,
    end: float = 0.0,
    unroll: bool = False,
) -> Float[Array, "*shape"]:
    """Deterministic DDIM generation from level ``start`` down to level ``end``.

    Args:
        eps_fn: noise prediction ``eps_fn(x, t)`` (possibly guided / clipped).
        sched: the training schedule.
        x: the state at level ``round(start * steps)``: ``x_T ~ N(0, I)`` for ``start=1``, or
            abducted noise ``x_{t_L}`` for ``start=L``. Any shape ``eps_fn`` accepts.
        steps: number of grid steps ``K`` over the whole range ``[0, T]`` (static).
        start: fraction of the grid to start from (static), in ``[0, 1]``.
        end: fraction of the grid to stop at (static), ``<= start``; 0 gives the data.
        unroll: unroll the scan completely (static); costs compile time proportional to the
            number of steps. Rarely needed: XLA:CPU runs a convolution's gradient inside a
            loop as a slow naive kernel unless it is written channel-last, which
            :mod:`jcausal.nn.conv` does for the library's networks (the rolled scan then
            measured as fast as the unrolled one); it helps networks built on plain
            ``lax.conv_general_dilated``.

    Returns:
        The state at level ``round(end * steps)`` (the image for ``end=0``), ``x``'s shape.

    Raises:
        ValueError: ``steps`` not in ``[1, T]``, fractions outside ``[0, 1]``, or
            ``end > start``.
    """
    times, abar = _grid(sched, steps)
    hi, lo = level(start, steps, "start"), level(end, steps, "end")
    if lo > hi:
        raise ValueError(f"ddim_sample runs from start down to end; got start={start} < end={end}")
    if hi == lo:
        return x
    idx = np.arange(hi, lo, -1)  # levels i -> i - 1
    xs = (abar[idx], abar[idx - 1], jnp.asarray(times[idx - 1]))

    def body(x, step):
        a_from, a_to, t = step
        cx, ce = _coefficients(a_from, a_to)
        return cx * x + ce * eps_fn(x, t), None

    x, _ = jax.lax.scan(body, x, xs, unroll=len(idx) if unroll else 1)
    return x


def ddim_invert(
    eps_fn: EpsFn,
    sched: Schedule,
    x0: Float[Array, "*shape"],
    *,
    steps: int = 100,
    fraction: float = 1.0,
    exact: bool = False,
    solver: AbstractSolver | None = None,
) -> Float[Array, "*shape"]:
    """DDIM inversion (Alg. 1's abduction): the data ``x0`` -> the latent at level ``fraction``.

    Args:
        eps_fn: noise prediction ``eps_fn(x, t)``: the same (clipped) network as for
            generation; Diff-SCM abducts without guidance.
        sched: the training schedule.
        x0: data, any shape ``eps_fn`` accepts.
        steps: number of grid steps ``K`` over ``[0, T]`` (static; use the generation's).
        fraction: how far to invert, a fraction ``L`` of the grid in ``[0, 1]`` (static).
        exact: solve each step's implicit equation with :func:`jcausal.fixed_point` (so that
            ``ddim_sample(eps_fn, sched, z, steps=K, start=L)`` returns ``x0`` to the
            solver's tolerance) instead of the plain one-evaluation approximation.
        solver: the fixed-point solver for ``exact=True`` (default ``Anderson(rtol=1e-6)``);
            a failed solve raises
            :class:`jcausal.FixedPointError` (``eqx.error_if`` under ``jit``).

    Returns:
        The latent ``x_{t_L}`` at level ``round(fraction * steps)``, ``x0``'s shape.
    """
    times, abar = _grid(sched, steps)
    hi = level(fraction, steps)
    if hi == 0:
        return x0
    idx = np.arange(0, hi)  # levels i -> i + 1
    xs = (abar[idx], abar[idx + 1], jnp.asarray(times[idx]))
    # rtol 1e-6: the per-step residuals add up over the steps (1e-5 gave ~1e-4 at K = 100).
    solver = Anderson(rtol=1e-6) if solver is None else solver

    def body(x, step):
        a_from, a_to, t = step
        cx, ce = _coefficients(a_from, a_to)
        y = cx * x + ce * eps_fn(x, t)  # plain DDIM inversion
        if exact:

            def g(y, args):
                x, cx, ce, t = args
                return cx * x + ce * eps_fn(y, t)

            y, _ = fixed_point(g, y, (x, cx, ce, t), solver=solver)
        return y, None

    x, _ = jax.lax.scan(body, x0, xs)
    return x


__all__ = ["ddim_invert", "ddim_sample", "ddim_times", "level"]
