"""The compiled part of the loop: up to ``length`` optimisation steps in one ``while_loop``.

Running a chunk of steps in one compiled call leaves the host idle between steps (no
``float(loss)`` per step): the non-finite checks run on the device, and a step that fails them
stops the chunk without applying its update. The host reads the chunk's per-step losses, the
last step's auxiliary terms and the fault flags back once per chunk.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PyTree

from .. import parallel
from .frozen import unfreeze


def split_output(out: Any) -> tuple[Array, dict[str, Array], PyTree | None]:
    """Accept ``loss``, ``(loss, aux)`` or ``(loss, aux, new_params)`` from a loss function."""
    if isinstance(out, tuple):
        if len(out) not in (2, 3) or not isinstance(out[1], Mapping):
            raise ValueError(
                "loss_fn must return a scalar loss, a pair (loss, aux) with aux a dict of "
                "named terms, or a triple (loss, aux, new_params) whose buffers are kept; got "
                f"a tuple of length {len(out)}"
            )
        return jnp.asarray(out[0]), dict(out[1]), (out[2] if len(out) == 3 else None)
    return jnp.asarray(out), {}, None


def split_loss(out: Any) -> tuple[Array, dict[str, Array]]:
    """Accept ``loss``, ``(loss, aux)`` or ``(loss, aux, new_params)``; return the first two."""
    loss, aux, _ = split_output(out)
    return loss, aux


def take_buffers(
    d: PyTree, new: PyTree | None, expected: Any, buffers: tuple[tuple[int, int], ...]
) -> PyTree:
    """``d`` with its buffer leaves replaced by their values in ``new`` (gradients stopped).

    Args:
        d: the trained leaves (the partition of the parameters that the optimiser sees).
        new: the parameters the loss returned as its third output (unmarked), or ``None``.
        expected: tree structure of the unmarked parameters (``None`` counted as a leaf).
        buffers: ``(leaf index in the full parameters, leaf index in d)`` of every buffer leaf.
    """
    if new is None or not buffers:
        return d
    leaves, treedef = jax.tree_util.tree_flatten(new, is_leaf=lambda x: x is None)
    if treedef != expected:
        raise ValueError(
            "the third output of loss_fn (new parameters carrying the updated buffers) must "
            "have the structure of the parameters the loss received; build it with "
            f"eqx.tree_at on them. Expected {expected}, got {treedef}"
        )
    d_leaves, d_def = jax.tree_util.tree_flatten(d)
    for i, j in buffers:
        old, value = d_leaves[j], jnp.asarray(leaves[i])
        if value.shape != old.shape:
            raise ValueError(
                f"loss_fn returned buffer leaf {i} with shape {value.shape}; it has shape "
                f"{old.shape} and must keep it"
            )
        d_leaves[j] = jax.lax.stop_gradient(value).astype(old.dtype)
    return jax.tree_util.tree_unflatten(d_def, d_leaves)


def stop_buffers(d: PyTree, buffers: tuple[tuple[int, int], ...]) -> PyTree:
    """``d`` with gradients through its buffer leaves stopped."""
    if not buffers:
        return d
    d_leaves, d_def = jax.tree_util.tree_flatten(d)
    for _, j in buffers:
        d_leaves[j] = jax.lax.stop_gradient(d_leaves[j])
    return jax.tree_util.tree_unflatten(d_def, d_leaves)


def takes_step(fn: Callable) -> bool:
    """Whether ``fn`` accepts a ``step`` keyword (then ``fit`` passes the step number)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("step")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def call_loss(fn: Callable, with_step: bool, params, batch, key, step) -> Any:
    """Call the user's loss on the unfrozen parameters, passing ``step=`` if it takes one."""
    if with_step:
        return fn(unfreeze(params), batch, key, step=step)
    return fn(unfreeze(params), batch, key)


def all_finite(tree: PyTree) -> Array:
    """One bool per inexact leaf of ``tree``: is every entry finite?"""
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.stack(flags) if flags else jnp.ones((0,), bool)


class Chunk(NamedTuple):
    """What a chunk of steps returns (device arrays until the host reads them)."""

    dyn: PyTree
    opt_state: PyTree
    ema: PyTree
    perm: Array
    done: Array  # steps completed in this chunk
    losses: Array  # (length,) loss of each step (the entries past ``done`` are unused)
    trace: dict[str, Array]  # (length, ...) auxiliary terms of each step, likewise
    aux: dict[str, Array]  # auxiliary terms of the last step run (the failed one on a fault)
    loss: Array  # loss of the last step run
    bad: Array  # a step failed the checks; its update was discarded
    grads_ok: Array  # (inexact leaves,) per leaf of the gradient of the failed step
    params_ok: Array  # (inexact leaves,) per leaf of the parameters the failed step made


# Compiled chunks, reused across calls of ``fit`` with the same configuration (loss function,
# optimiser, data layout, static part of the parameters): a loop of short ``fit`` calls (one
# per λ, per seed, per fold) then compiles once instead of once per call. Keys hold the user's
# functions by identity; the least recently used entries are dropped past ``_CACHE_SIZE``.
_CACHE: OrderedDict[Any, Callable] = OrderedDict()
_CACHE_SIZE = 16


def cache_clear() -> None:
    """Forget every compiled chunk (e.g. to free memory, or in tests)."""
    _CACHE.clear()


@contextlib.contextmanager
def unoptimised():
    """XLA's optimisations off inside, and every program compiled inside forgotten after.

    ``jax_disable_most_optimizations`` makes XLA:CPU compile about twice as fast and run
    slower: for work that is mostly compilation of programs called a few times (smoke runs,
    tests). jax.jit's caches are not keyed on the flag, so a function compiled inside would
    keep its unoptimised program after, and a later caller with the same shapes would get
    other floats (this changed the policy smoke's front in a CI worker after the CT-VAE test);
    so every compiled program (jax's and :func:`fit`'s chunks) is forgotten on the way in and
    out, and what runs inside does not depend on what ran before it.
    """
    before = jax.config.read("jax_disable_most_optimizations")
    _forget_compiled()
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        _forget_compiled()


def _forget_compiled() -> None:
    jax.clear_caches()
    cache_clear()  # the chunks' jit objects (emptied by jax.clear_caches, dropped here)


def _cache_key(config: tuple) -> Any:
    try:
        hash(config)
    except TypeError:  # an unhashable static leaf or field: compile for this call only
        return None
    return config


def make_chunk(
    *,
    loss_fn: Callable,
    with_step: bool,
    static: PyTree,
    optimizer: optax.GradientTransformation,
    data_key: Array,
    loss_key: Array,
    sampled: bool,
    sampler: Callable | None,
    n: int,
    batch_size: int | None,
    steps_per_epoch: int,
    batch_sharding,
    ema_decay: float | None,
    length: int,
    buffers: tuple[tuple[int, int], ...] = (),
    split: tuple | None = None,
) -> Callable[..., Chunk]:
    """Build ``chunk(dyn, opt_state, ema, data, perm, start, count) -> Chunk``.

    Step ``s`` (``start <= s < start + count <= start + length``) is a pure function of the
    state and ``s``: its batch is slice ``s mod steps_per_epoch`` of epoch ``s //
    steps_per_epoch``'s permutation (redrawn on the device at each epoch's first step), its
    loss key is ``fold_in(loss_key, s)``; so how steps are grouped into chunks does not
    change the result.

    The compiled program takes the keys and the array leaves of ``static`` as arguments, so
    it is cached on everything else (see ``_CACHE``) and a second call with the same
    configuration reuses it.

    ``split``, for data-parallel training with the optimiser sharded (ZeRO stage 1):
    ``(whole, dyn_split, state_split)``, the replicated sharding and one sharding per leaf of
    the trained parameters and of the optimiser state (:func:`jcausal.parallel.split_leaves`).
    The gradient is then reduced onto those slices, each device updates (and checks) only
    its slice of the parameters, optimiser state and moving average, and the new parameters
    are gathered back to every device for the next step's forward pass.
    """
    static_arrays, static_rest = eqx.partition(static, eqx.is_array)
    rest_leaves, rest_def = jax.tree_util.tree_flatten(static_rest)
    config = (loss_fn, with_step, optimizer, sampled, sampler, n, batch_size, steps_per_epoch,
              batch_sharding, ema_decay, length, buffers, split, rest_def,
              tuple(rest_leaves))  # fmt: skip
    key = _cache_key(config)
    compiled = _CACHE.get(key) if key is not None else None
    if compiled is None:
        compiled = _compile(
            loss_fn=loss_fn,
            with_step=with_step,
            static_rest=static_rest,
            optimizer=optimizer,
            sampled=sampled,
            sampler=sampler,
            n=n,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            batch_sharding=batch_sharding,
            ema_decay=ema_decay,
            length=length,
            buffers=buffers,
            split=split,
        )
        if key is not None:
            _CACHE[key] = compiled
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)

    def call(d, state, ema, data, perm, start, count):
        if sampled:  # the sampling function is part of the compiled program
            data = None
        return compiled(static_arrays, data_key, loss_key, d, state, ema, data, perm, start,
                        count)  # fmt: skip

    def jaxpr(d, state, ema, data, perm, start, count):
        """The chunk's program as a jaxpr (traced, not compiled)."""
        if sampled:
            data = None
        args = (static_arrays, data_key, loss_key, d, state, ema, data, perm, start, count)
        return eqx.filter_make_jaxpr(compiled)(*args)[0]

    def slow_convolutions(d, state, ema, data, perm, start, count) -> int:
        """:func:`loop_slow_convolutions` of the chunk's program, remembered per layout."""
        leaves = jax.tree_util.tree_leaves((d, state, ema, None if sampled else data, perm))
        layout = (
            jax.tree_util.tree_structure((d, state, ema, None if sampled else data)),
            tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x)))) for x in leaves),
        )
        memo = compiled.__dict__.setdefault("slow_convolutions", {})
        if layout not in memo:
            memo[layout] = loop_slow_convolutions(jaxpr(d, state, ema, data, perm, start, count))
        return memo[layout]

    call.jaxpr = jaxpr
    call.slow_convolutions = slow_convolutions
    return call


def _compile(
    *,
    loss_fn,
    with_step,
    static_rest,
    optimizer,
    sampled,
    sampler,
    n,
    batch_size,
    steps_per_epoch,
    batch_sharding,
    ema_decay,
    length,
    buffers,
    split=None,
) -> Callable[..., Chunk]:
    if split is not None:
        whole, dyn_split, state_split = split

        def sliced(tree, shardings):
            # (flattened as fit flattened it when it chose the shardings: None is no leaf)
            leaves, treedef = jax.tree_util.tree_flatten(tree)
            return jax.tree_util.tree_unflatten(
                treedef, parallel.constrain(leaves, list(shardings))
            )

    def objective(d, static_arrays, batch, k, step):
        static = eqx.combine(static_arrays, static_rest)
        params = eqx.combine(stop_buffers(d, buffers), static)
        loss, aux, new = split_output(call_loss(loss_fn, with_step, params, batch, k, step))
        if loss.shape != ():
            raise ValueError(
                f"loss_fn must return a scalar loss, got shape {loss.shape}; reduce it over "
                "the batch (e.g. with jnp.mean)"
            )
        if new is not None and not buffers:
            raise ValueError(
                "loss_fn returned new parameters (a third output) but no parameter is marked "
                "as a buffer; wrap the leaves it updates in jcausal.train.buffer(...)"
            )
        if new is not None:
            expected = jax.tree_util.tree_structure(unfreeze(params), is_leaf=lambda x: x is None)
            new = take_buffers(d, new, expected, buffers)
        return loss, (aux, new)

    def one_step(static_arrays, data_key, loss_key, d, state, ema, data, perm, step):
        if sampled:
            batch = sampler(jax.random.fold_in(data_key, step))
        elif data is None:
            batch = None
        else:
            perm = jax.lax.cond(
                step % steps_per_epoch == 0,
                lambda: permutation(data_key, step // steps_per_epoch, n),
                lambda: perm,
            )
            pos = (step % steps_per_epoch) * batch_size
            idx = jax.lax.dynamic_slice_in_dim(perm, pos, batch_size)
            batch = jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), data)
        if batch_sharding is not None and batch is not None:
            batch = parallel.constrain_batch(batch, batch_sharding)
        k = jax.random.fold_in(loss_key, step)
        (loss, (aux, with_buffers)), grads = eqx.filter_value_and_grad(objective, has_aux=True)(
            d, static_arrays, batch, k, step
        )
        if split is not None:
            # ZeRO-1: the summed gradient is wanted only on each device's slice (a
            # reduce-scatter instead of an all-reduce), and the update runs on the slices.
            grads = sliced(grads, dyn_split)
            d = sliced(d, dyn_split)
            if with_buffers is not None:
                with_buffers = sliced(with_buffers, dyn_split)
        if isinstance(optimizer, optax.GradientTransformationExtraArgs):
            # The loss as ``value`` (optax.contrib.reduce_on_plateau, polyak_sgd need it).
            updates, new_state = optimizer.update(grads, state, d, value=loss)
        else:
            updates, new_state = optimizer.update(grads, state, d)
        new_d = eqx.apply_updates(d, updates)
        # Buffers take the loss's new values (or keep their own): the optimiser never moves them.
        new_d = _restore_buffers(new_d, d if with_buffers is None else with_buffers, buffers)
        if split is not None:
            new_d, new_state = sliced(new_d, dyn_split), sliced(new_state, state_split)
        new_ema = None if ema is None else optax.incremental_update(new_d, ema, 1.0 - ema_decay)
        if split is not None and new_ema is not None:
            new_ema = sliced(new_ema, dyn_split)
        # (sharded: the parameters come back whole after the step is accepted, in `body`)
        return new_d, new_state, new_ema, perm, loss, aux, all_finite(grads), all_finite(new_d)

    def chunk(static_arrays, data_key, loss_key, d, state, ema, data, perm, start, count):
        fixed = (static_arrays, data_key, loss_key)
        # Trace one step to learn the shapes of its outputs (the loop's carry).
        shapes = eqx.filter_eval_shape(one_step, *fixed, d, state, ema, data, perm, start)
        _, _, _, _, loss0, aux0, g0, p0 = shapes

        def zeros(s, lead=()):
            return jnp.zeros((*lead, *s.shape), s.dtype)

        init = Chunk(
            dyn=d,
            opt_state=state,
            ema=ema,
            perm=perm,
            done=jnp.zeros((), jnp.int32),
            losses=jnp.zeros((length,), loss0.dtype),
            trace=jax.tree_util.tree_map(lambda s: zeros(s, (length,)), aux0),
            aux=jax.tree_util.tree_map(zeros, aux0),
            loss=zeros(loss0),
            bad=jnp.zeros((), bool),
            grads_ok=jnp.ones(g0.shape, bool),
            params_ok=jnp.ones(p0.shape, bool),
        )

        def cond(c):
            return (c.done < count) & ~c.bad

        def body(c):
            step = start + c.done
            new_d, new_state, new_ema, perm_, loss, aux, g_ok, p_ok = one_step(
                *fixed, c.dyn, c.opt_state, c.ema, data, c.perm, step
            )
            terms = [loss, *aux.values()]
            ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(t)) for t in terms]))
            ok = ok & jnp.all(g_ok) & jnp.all(p_ok)

            # One branch choice for the whole state, not a select per leaf: on XLA:CPU, a
            # `where(ok, ...)` on every parameter, with `ok` reduced from every gradient, made
            # a small UNet's chunk compile 5-9x slower (85 s vs 9.5 s measured).
            old_d = c.dyn if split is None else sliced(c.dyn, dyn_split)
            kept_d, kept_state, kept_ema = jax.lax.cond(
                ok,
                lambda new, old: new,
                lambda new, old: old,
                (new_d, new_state, new_ema),
                (old_d, c.opt_state, c.ema),
            )
            if split is not None:
                # Every device's slice of the new parameters to every device (all-gather).
                kept_d = parallel.constrain(kept_d, whole)

            return Chunk(
                dyn=kept_d,
                opt_state=kept_state,
                ema=kept_ema,
                perm=perm_,
                done=c.done + ok.astype(jnp.int32),
                losses=c.losses.at[c.done].set(loss),
                trace=jax.tree_util.tree_map(lambda b, a: b.at[c.done].set(a), c.trace, aux),
                aux=aux,
                loss=loss,
                bad=~ok,
                grads_ok=g_ok,
                params_ok=p_ok,
            )

        if length == 1:
            # One step per call (the host always asks for count == 1): no loop at all. On
            # XLA:CPU a convolution-heavy step runs up to ~15x slower inside a while loop
            # (a small UNet: 5.8 s vs 0.37 s per step), so such models train one step per call.
            return body(init)
        return jax.lax.while_loop(cond, body, init)

    # Everything but a Python leaf of the trained part is an array, so plain jax.jit applies:
    # its dispatch costs a fraction of eqx.filter_jit's per call.
    jitted = jax.jit(chunk)
    fallback = eqx.filter_jit(chunk)

    def call(static_arrays, data_key, loss_key, d, state, ema, data, perm, start, count):
        args = (static_arrays, data_key, loss_key, d, state, ema, data, perm, start, count)
        arrays = all(
            isinstance(x, jax.Array | np.ndarray)
            for x in jax.tree_util.tree_leaves((d, state, ema, perm))
        )
        if not arrays:  # e.g. a trainable filter that picked a Python scalar
            return fallback(*args)
        return jitted(*args)

    return call


def _restore_buffers(d: PyTree, source: PyTree, buffers: tuple[tuple[int, int], ...]) -> PyTree:
    if not buffers:
        return d
    d_leaves, d_def = jax.tree_util.tree_flatten(d)
    src = jax.tree_util.tree_leaves(source)
    for _, j in buffers:
        d_leaves[j] = src[j]
    return jax.tree_util.tree_unflatten(d_def, d_leaves)


@functools.partial(jax.jit, static_argnums=2)
def permutation(data_key: Array, epoch: Array, n: int) -> Array:
    """The order of the ``n`` units in epoch ``epoch`` (a permutation of ``arange(n)``)."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)


__all__ = [
    "Chunk",
    "all_finite",
    "cache_clear",
    "call_loss",
    "loop_slow_convolutions",
    "make_chunk",
    "permutation",
    "split_loss",
    "split_output",
    "takes_step",
]


def bare_step_is_faster(
    dyn: PyTree, backend: str | None = None, step: jex_core.ClosedJaxpr | None = None
) -> bool:
    """Whether ``fit`` should compile one bare step per call rather than a loop of steps.

    On XLA:CPU a convolution whose dimension numbers are not channel-last (``N...C`` input and
    output, ``...IO`` kernel) runs as a naive loop nest inside a compiled ``while_loop``, many
    times slower than the same program at the top level, where XLA rewrites it for its fast
    kernel (measured: a width-16 UNet, batch 64, 0.37 s bare against 5.8 s in the loop). JAX's
    own gradients of a channel-last convolution are such convolutions; the ones of
    :func:`jcausal.nn.conv_general_dilated` (and of the layers built on it) are not. For every
    other step the loop saves a host round trip per step: the Morpho-MNIST Deep SCM's step,
    whose convolutions all go through that function, costs 0.097 s of CPU in the loop against
    0.115 s bare (batch 64).

    Args:
        dyn: the trained leaves. Without ``step``, a trained leaf with 3 or more dimensions
            (what a convolution kernel has: flax ``(h, w, in, out)`` or ``(w, in, out)``,
            equinox ``(out, in, h, w)`` or ``(out, in, w)``) is taken to mean a possibly slow
            convolution, and no such leaf to mean none.
        backend: the platform (default: JAX's default backend).
        step: the jaxpr of one training step (forward and backward); when given, the
            decision is made from its convolutions (:func:`loop_slow_convolutions`).

    Returns:
        True on CPU when the step has a convolution that is slow inside a loop.
    """
    if (backend or jax.default_backend()) != "cpu":
        return False
    if step is not None:
        return loop_slow_convolutions(step) > 0
    # (3, not 4: a 1-D convolution's kernel is 3-D, and its JAX gradient in the loop ran 35x
    # slower than bare: 0.32 against 0.009 CPU-s per step, a 3-layer nnx.Conv net, batch 64.)
    return any(getattr(x, "ndim", 0) >= 3 for x in jax.tree_util.tree_leaves(dyn))


def _channel_last(dn) -> bool:
    nd = len(dn.lhs_spec)
    spatial = tuple(range(1, nd - 1))
    last = (0, nd - 1, *spatial)
    return (
        tuple(dn.lhs_spec) == last
        and tuple(dn.out_spec) == last
        and tuple(dn.rhs_spec) == (nd - 1, nd - 2, *range(nd - 2))
    )


def _sub_jaxprs(value):
    if isinstance(value, jex_core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jex_core.Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _sub_jaxprs(v)


def loop_slow_convolutions(jaxpr: jex_core.ClosedJaxpr | jex_core.Jaxpr) -> int:
    """How many convolutions of ``jaxpr`` (and of the jaxprs inside it) are not channel-last.

    Those are the ones XLA:CPU runs as naive loop nests inside a compiled loop (see
    :func:`bare_step_is_faster`).
    """
    count = 0
    stack = list(_sub_jaxprs(jaxpr))
    while stack:
        for eqn in stack.pop().eqns:
            if eqn.primitive.name == "conv_general_dilated":
                count += not _channel_last(eqn.params["dimension_numbers"])
            for value in eqn.params.values():
                stack.extend(_sub_jaxprs(value))
    return count
