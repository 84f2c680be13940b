"""Sweeps over cases × λ: regions, years or stressor weightings and λ in one compiled program.

A *case* is one design problem: a region (its domestic block, or its sectors on the whole
multi-regional table), a year (another table of the same shape) or a stressor weighting (another
GHG indicator on the same table). :func:`sweep_cases` optimises eq. 5 of
:mod:`jcausal.economy.design` for ``C`` cases × ``L`` values of λ as **one** program, the λ
sweep of :func:`jcausal.economy.design.sweep` being the case ``C = 1``.

The cases are held as one pytree (:class:`Cases`): a leaf that is the same in every case (the
shared multi-regional table of a sweep over regions, the table of a sweep over weightings) is
kept once; a leaf that differs (the tables of several years, each region's domestic block or
indicators) is stacked along a leading case axis. The loss is ``vmap`` over cases (shared leaves
not mapped) of ``vmap`` over λ, so no table is copied per λ or per case. Each ``u_cl`` enters
one term of the summed loss and Adam is elementwise: every (case, λ) follows exactly the updates
of its own run.

On a device mesh (:func:`jcausal.parallel.sweep_mesh`) the grid is split by
:func:`jcausal.economy.sharding.place_grid`: the λ of every case over one mesh axis
(``lambda_axis``, by default ``"sweep"``: tables replicated), or the cases over one
(``case_axis``: each device holds its cases' stacked tables), or both over two; a ``"rows"``
axis splits ``A``'s rows. The results equal one device's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, ArrayLike, Float

from .. import parallel
from ..train import fit, frozen


class Cases(eqx.Module):
    """``C`` design problems as one pytree: differing leaves stacked ``(C, ...)``, others shared.

    Attributes:
        problem: the first problem's structure; a leaf flagged in :attr:`stacked` has a
            leading case axis.
        stacked: per leaf (in ``jax.tree.leaves`` order), whether it is stacked.
        count: the number of cases ``C``.
        layout: ``(mesh, case_axis, lambda_axis)`` when the grid is placed on a mesh whose
            devices each run their own part (set by
            :func:`jcausal.economy.sharding.place_grid`), else ``None``.
    """

    problem: Any
    stacked: tuple[bool, ...] = eqx.field(static=True)
    count: int = eqx.field(static=True)
    layout: tuple | None = eqx.field(static=True, default=None)

    def in_axes(self) -> Any:
        """The ``vmap`` ``in_axes`` of :attr:`problem` over cases (0 or None per leaf)."""
        treedef = jax.tree.structure(self.problem)
        return jax.tree.unflatten(treedef, [0 if s else None for s in self.stacked])

    def map(self, method: str, *args: Array) -> Any:
        """``problem_c.method(*args[c, l])`` for every case ``c`` and λ index ``l``.

        With a :attr:`layout`, the grid runs under ``jax.shard_map``: each device solves its
        own cases and λ from start to end, with no collective inside the solves (each fixed
        point stops on its own device's convergence test, not a global one).

        Args:
            method: the name of a per-point method of the problems (``"terms"``, ``"loss"``).
            *args: arrays with leading ``(C, L)`` axes.

        Returns:
            The method's outputs with leading ``(C, L)`` axes.
        """
        axes = (self.in_axes(), *(0 for _ in args))

        def one_case(prob, *a):
            return jax.vmap(getattr(prob, method))(*a)

        if self.layout is None:
            return jax.vmap(one_case, in_axes=axes)(self.problem, *args)
        mesh, case_axis, lambda_axis = self.layout
        dyn, static = eqx.partition(self.problem, eqx.is_array)
        flags = [s for leaf, s in zip(jax.tree.leaves(self.problem), self.stacked, strict=True)
                 if eqx.is_array(leaf)]  # fmt: skip
        specs = jax.tree.unflatten(
            jax.tree.structure(dyn), [P(case_axis) if s else P() for s in flags]
        )
        grid = P(case_axis, lambda_axis)

        def local(d, *a):
            return jax.vmap(one_case, in_axes=axes)(eqx.combine(d, static), *a)

        # (check_vma off: the solvers' loops mix replicated constants with per-device values)
        return jax.shard_map(local, mesh=mesh, in_specs=(specs, *(grid for _ in args)),
                             out_specs=grid, check_vma=False)(dyn, *args)  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, jax.Array | np.ndarray) and isinstance(b, jax.Array | np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        nan = np.issubdtype(a.dtype, np.inexact)  # (a NaN "not measured" is the same NaN)
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=nan))
    return type(a) is type(b) and a == b


def _dtype(x: Any) -> Any:
    return x.dtype if hasattr(x, "dtype") else type(x)


def stack(problems: Sequence[Any]) -> Cases:
    """Hold ``problems`` (same shapes) as one :class:`Cases`.

    Static metadata (labels, a region's name) may differ: the first problem's is kept, and
    results are reported with each case's own. What changes the computation must agree.

    Args:
        problems: design problems (:class:`~jcausal.economy.design.DesignProblem` or
            :class:`~jcausal.economy.mrio.MRIOProblem`), all of one class.

    Raises:
        ValueError: no problem, problems of different classes, parameterisations
            (``bounded``) or solvers, or of different shapes (e.g. regions of different
            sector counts: sweep them separately).
    """
    problems = list(problems)
    if not problems:
        raise ValueError("a sweep needs at least one case (problem)")
    first = problems[0]
    leaves0 = jax.tree.leaves(first)
    columns = [[leaf] for leaf in leaves0]
    for k, prob in enumerate(problems[1:], 1):
        why = None
        if type(prob) is not type(first):
            why = f"it is a {type(prob).__name__}, case 0 a {type(first).__name__}"
        elif getattr(prob, "bounded", False) != getattr(first, "bounded", False):
            why = "its factors are bounded and case 0's are not (or the reverse)"
        elif jax.tree.structure(prob.model.solver) != jax.tree.structure(first.model.solver):
            why = "its model's fixed-point solver differs from case 0's"
        leaves = jax.tree.leaves(prob)
        if why is None and len(leaves) != len(leaves0):
            why = "its pytree has another structure"
        if why is None:
            bad = [
                (np.shape(a), np.shape(b))
                for a, b in zip(leaves0, leaves, strict=True)
                if np.shape(a) != np.shape(b) or _dtype(a) != _dtype(b)
            ]
            if bad:
                why = f"an array of shape {bad[0][1]} stands where case 0 has {bad[0][0]}"
        if why is not None:
            raise ValueError(
                f"case {k} cannot be swept with case 0 in one program: {why}; cases of one "
                "sweep must have the same sector count, dtype and options (sweep others apart)"
            )
        for col, leaf in zip(columns, leaves, strict=True):
            col.append(leaf)
    stacked, merged = [], []
    for col in columns:
        if all(_same(col[0], leaf) for leaf in col[1:]):
            stacked.append(False)
            merged.append(col[0])
        elif isinstance(col[0], jax.Array | np.ndarray):
            stacked.append(True)
            merged.append(jnp.stack([jnp.asarray(leaf) for leaf in col]))
        else:
            raise ValueError(
                f"the cases differ in a non-array setting ({col[0]!r} vs {col[1]!r}); cases "
                "of one sweep must share their options"
            )
    problem = jax.tree.unflatten(jax.tree.structure(first), merged)
    return Cases(problem, tuple(stacked), len(problems))


def _grid_loss(params: dict, batch: None, key: Array) -> tuple[Array, dict[str, Array]]:
    # Module level, so that `fit` reuses its compiled program across calls.
    loss, (_, _, ok) = params["cases"].map("loss", params["u"], params["lambdas"])
    return jnp.sum(loss), {"loss_per_lambda": loss, "converged": ok}


@eqx.filter_jit
def _terms(cases: Cases, u: Array) -> tuple[Array, Array, Array, Array]:
    return cases.map("terms", u)


def lambda_grid(lambdas: Float[ArrayLike, "..."], cases: int) -> np.ndarray:
    """``(C, L)`` λ values from one grid ``(L,)`` shared by every case, or ``(C, L)``.

    Raises:
        ValueError: not finite, negative, empty, or of the wrong shape.
    """
    lam = np.asarray(lambdas, np.float64)
    if lam.ndim == 1:
        lam = np.broadcast_to(lam, (cases, lam.shape[0]))
    if lam.ndim != 2 or lam.shape[0] != cases or lam.size == 0:
        raise ValueError(
            f"lambdas must be one grid (L,) for every case or one per case ({cases}, L), got "
            f"shape {np.shape(lambdas)}"
        )
    if not (np.all(np.isfinite(lam)) and np.all(lam >= 0)):
        raise ValueError(f"lambdas must be finite values >= 0, got {lam.tolist()}")
    return np.array(lam)


def optimise(
    cases: Cases,
    lambdas: np.ndarray,
    *,
    steps: int,
    lr: float,
    progress: Callable[[int], None] | None,
    mesh: Mesh | None,
    case_axis: str | None,
    lambda_axis: str | None,
) -> tuple[Array, Array, Array, Array]:
    """Adam from ``u = 0`` on the ``(C, L)`` grid: ``(u, converged, history (H, C, L), last)``."""
    from . import design as _design
    from .sharding import place_grid

    dtype = cases.problem.x_ref.dtype
    n = cases.problem.x_ref.shape[-1]
    stride = -(-steps // _design.MAX_HISTORY)  # ceil: at most MAX_HISTORY records
    lams = jnp.asarray(lambdas, dtype)
    u0 = jnp.zeros((*lams.shape, n), dtype)
    if mesh is not None:
        cases, u0, lams = place_grid(cases, u0, lams, mesh, case_axis, lambda_axis)
    params = {"u": u0, "cases": frozen(cases), "lambdas": frozen(lams)}
    try:
        out, hist = fit(
            _grid_loss,
            params,
            None,
            optimizer=_design._optimizer(steps, float(lr)),
            steps=steps,
            key=jax.random.key(0),
            log_every=stride,
            steps_per_call=min(steps, _design.MAX_CALL),
            progress=progress if progress is not None else False,
        )
    except FloatingPointError as err:
        raise _design.DesignDiverged(
            f"the design optimisation did not reach the optimum: it diverged ({err}); "
            "lower the step size (lr) or raise the number of steps"
        ) from None
    rec = hist.train
    losses = jnp.asarray([r["loss_per_lambda"] for r in rec], dtype)[: steps // stride]
    ok = jnp.all(jnp.asarray([r["converged"] for r in rec]), axis=0)
    return out["u"], ok, losses, jnp.asarray(rec[-1]["loss_per_lambda"], dtype)


def results(
    problems: Sequence[Any],
    cases: Cases,
    lambdas: np.ndarray,
    run: tuple[Array, Array, Array, Array],
    *,
    steps: int,
    t0: float,
    mesh: Mesh | None = None,
    case_axis: str | None = None,
    lambda_axis: str | None = None,
) -> list:
    """One :class:`~jcausal.economy.design.DesignResult` per case from :func:`optimise`'s run."""
    from .design import MAX_HISTORY, DesignResult, analytic_front
    from .sharding import place_grid

    u, ok, hist, last = run
    if mesh is not None:
        placed, pu, _ = place_grid(cases, u, jnp.asarray(lambdas), mesh, case_axis, lambda_axis)
        ghg, dev, x, conv = _terms(placed, pu)
    else:
        ghg, dev, x, conv = _terms(cases, u)
    # (parallel.to_host: a sweep spread over several processes is gathered first)
    u, ghg, dev, x, ok, conv, hist, last = parallel.to_host((u, ghg, dev, x, ok, conv, hist, last))
    seconds = time.perf_counter() - t0
    stride = -(-steps // MAX_HISTORY)
    out = []
    for c, problem in enumerate(problems):
        lam = lambdas[c]
        G, E = float(problem.G), float(problem.E)
        g, d = np.asarray(ghg[c], np.float64), np.asarray(dev[c], np.float64)
        ref = analytic_front(problem, lam)
        best = ref["ghg"] / G + lam * ref["deviation"] / E
        with np.errstate(invalid="ignore"):
            excess = g + lam * d - best
        out.append(
            DesignResult(
                lambdas=np.array(lam),
                u=np.asarray(u[c]),
                x=np.asarray(x[c]),
                ghg=g * G,
                employment=np.asarray(x[c]) @ np.asarray(problem.r),
                deviation=d * E,
                ghg_ref=G,
                employment_ref=E,
                analytic_ghg=ref["ghg"],
                analytic_employment=ref["employment"],
                excess_loss=excess,
                loss=np.asarray(hist)[:, c].T,
                loss_stride=stride,
                final_loss=np.asarray(last[c]),
                converged=np.asarray(ok[c] & conv[c]),
                steps=steps,
                seconds=seconds,
            )
        )
    return out


def default_axes(
    mesh: Mesh | None, case_axis: str | None, lambda_axis: str | None
) -> tuple[str | None, str | None]:
    """The mesh axes a grid is split over: as given, or read from the mesh when neither is.

    Neither given: the cases over ``"cases"`` if the mesh has such an axis of more than one
    device (:func:`jcausal.parallel.sweep_mesh` with ``cases > 1``), and the λ over
    ``"sweep"``.

    Raises:
        ValueError: an axis named without a mesh.
    """
    if mesh is None:
        if case_axis is not None or lambda_axis is not None:
            raise ValueError("case_axis / lambda_axis name axes of a mesh: pass mesh= too")
        return None, None
    if case_axis is None and lambda_axis is None:
        names = mesh.axis_names
        split = parallel.CASES in names and mesh.shape[parallel.CASES] > 1
        return (parallel.CASES if split else None), parallel.SWEEP
    return case_axis, lambda_axis


def sweep_cases(
    problems: Sequence[Any],
    lambdas: Float[ArrayLike, "*C L"],
    *,
    steps: int,
    lr: float,
    mesh: Mesh | int | None = None,
    case_axis: str | None = None,
    lambda_axis: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list:
    """Minimise eq. 5 for every case and λ, from ``u = 0``, as one program (see the module).

    Args:
        problems: ``C`` design problems of the same shapes: regions, years (tables), stressor
            weightings (:class:`~jcausal.economy.design.DesignProblem` or
            :class:`~jcausal.economy.mrio.MRIOProblem`).
        lambdas: ``(L,)`` λ for every case, or ``(C, L)`` one grid per case (>= 0).
        steps: Adam steps (a positive integer).
        lr: initial step size (a log-factor; cosine-decayed to ``lr / 1000``).
        mesh: a device mesh; the grid is placed by
            :func:`jcausal.economy.sharding.place_grid` (results equal one device's). Or a
            device count: the mesh and placement of
            :func:`jcausal.economy.sharding.auto_mesh` (λ split, or ``A``'s rows split when
            the table is large on CPU devices).
        case_axis: the mesh axis the cases are split over (``None``: not split).
        lambda_axis: the mesh axis the λ are split over (``None``: not split). When neither
            is given they are read from the mesh (:func:`default_axes`): the cases over
            ``"cases"`` if it has more than one device, the λ over ``"sweep"``.
        progress: called with the number of steps just done (each step advances all cases).

    Returns:
        One :class:`~jcausal.economy.design.DesignResult` per case, in order; check each with
        :meth:`~jcausal.economy.design.DesignResult.check`.

    Raises:
        ValueError: bad λ / steps / lr; cases that cannot share a program (see :func:`stack`);
            a mesh axis that does not exist, the same axis for cases and λ, or an axis whose
            device count does not divide the cases or the λ (see
            :func:`jcausal.economy.sharding.place_grid`).
    """
    return run_cases(problems, lambdas, steps=steps, lr=lr, mesh=mesh, case_axis=case_axis,
                     lambda_axis=lambda_axis, progress=progress)[0]  # fmt: skip


def run_cases(
    problems: Sequence[Any],
    lambdas: Float[ArrayLike, "*C L"],
    *,
    steps: int,
    lr: float,
    mesh: Mesh | int | None = None,
    case_axis: str | None = None,
    lambda_axis: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list, Cases, dict]:
    """:func:`sweep_cases`, also returning the stacked cases as placed and the placement.

    The cases are placed on the mesh once (:func:`jcausal.economy.sharding.place_grid`);
    the later placements of the same call (the final evaluation, a caller's own, e.g.
    :func:`jcausal.economy.mrio.sweep_cases`'s accounting) find the tables where they are
    and copy nothing (``jax.device_put`` to an array's own sharding returns it): with the λ
    split, every placement copies the table to every device.

    Returns:
        ``(results, cases, placement)``: the :class:`DesignResult` list, the :class:`Cases`
        (placed on the mesh, if any) and ``{"mesh", "case_axis", "lambda_axis"}`` as used
        (a device count resolved to its mesh).
    """
    from .design import _check_run
    from .sharding import place_grid, resolve_mesh

    cases = stack(problems)
    lam = lambda_grid(lambdas, cases.count)
    _check_run(lam[0], steps, lr)
    mesh = resolve_mesh(cases, lam, mesh)
    case_axis, lambda_axis = default_axes(mesh, case_axis, lambda_axis)
    t0 = time.perf_counter()
    kw = dict(mesh=mesh, case_axis=case_axis, lambda_axis=lambda_axis)
    if mesh is not None:
        u0 = jnp.zeros((*lam.shape, cases.problem.x_ref.shape[-1]), cases.problem.x_ref.dtype)
        cases = place_grid(cases, u0, jnp.asarray(lam, u0.dtype), mesh, case_axis, lambda_axis)[0]
    run = optimise(cases, lam, steps=int(steps), lr=lr, progress=progress, **kw)
    out = results(list(problems), cases, lam, run, steps=int(steps), t0=t0, **kw)
    return out, cases, kw


__all__ = [
    "Cases",
    "default_axes",
    "lambda_grid",
    "optimise",
    "results",
    "run_cases",
    "stack",
    "sweep_cases",
]
