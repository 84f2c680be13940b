"""``fit``: the host side of the training loop (arguments, chunks, evaluation, checkpoints).

(Over 600 lines: ``fit`` is one function whose argument checks, resume, device layout and chunk
loop share its local state; the compiled step is in :mod:`jcausal.train.step`, checkpoint
files in :mod:`jcausal.train.checkpoint`, batch checks in :mod:`jcausal.train.checks`.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jaxtyping import Array, PRNGKeyArray, PyTree, Scalar

from .. import parallel
from . import metrics as _metrics
from .checkpoint import (
    Checkpoints,
    describe_optimizer_change,
    from_numpy,
    optimizer_fingerprint,
    structure_text,
    to_numpy,
)
from .checks import fault, integer, key_data, leaf_names, num_units
from .frozen import buffer_flags, is_none, trainable_mask, unfreeze
from .step import bare_step_is_faster, call_loss, make_chunk, permutation, split_loss, takes_step

CALL_SECONDS = 0.25  # target wall time of one compiled call when steps_per_call is large

LossFn = Callable[..., "Scalar | tuple[Scalar, Mapping[str, Array]]"]


@dataclasses.dataclass
class History:
    """What one call of :func:`fit` did.

    Attributes:
        loss: training loss of every step run by this call, shape ``(steps - start_step,)``.
        train: logged training records (every ``log_every`` steps), dicts with ``step``,
            ``loss`` and the auxiliary terms.
        eval: evaluation records, dicts with ``step`` and the evaluation metrics.
        start_step: the step this call started from (0, or the step of the restored checkpoint).
        best_step: with ``keep_best``, the step whose evaluation was best (the parameters
            returned), else ``None``.
        best_value: with ``keep_best``, the metric's value at ``best_step``, else ``None``.
        ema_params: with ``ema``, the exponential moving average of the parameters after the
            last step (same structure as the parameters), else ``None``.
    """

    loss: np.ndarray
    train: list[dict[str, float]]
    eval: list[dict[str, float]]
    start_step: int
    best_step: int | None = None
    best_value: float | None = None
    ema_params: PyTree | None = None


# ----------------------------------------------------------------------------------------------
# the loop


def fit(
    loss_fn: LossFn,
    params: PyTree,
    data: PyTree | Callable[[PRNGKeyArray], PyTree] | None,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    key: PRNGKeyArray,
    batch_size: int | None = None,
    eval_data: PyTree | None = None,
    eval_every: int | None = None,
    eval_fn: Callable[..., Any] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    keep: int = 2,
    metrics_path: str | os.PathLike | None = None,
    log_every: int = 10,
    progress: bool | Callable[[int], None] = True,
    steps_per_call: int | None = None,
    sharding: Mesh | NamedSharding | None = None,
    shard_optimizer: bool | None = None,
    trainable: Callable[[Any], bool] | PyTree = eqx.is_inexact_array,
    callback: Callable[[int, PyTree, float], None] | None = None,
    keep_best: str | None = None,
    ema: float | None = None,
) -> tuple[PyTree, History]:
    """Minimise ``loss_fn`` over the trainable arrays of ``params`` with an optax optimizer.

    Args:
        loss_fn: ``loss_fn(params, batch, key) -> loss`` or ``-> (loss, aux)``, with ``loss`` a
            scalar and ``aux`` a dict of named scalar terms (logged, and named by the NaN guard).
            If it takes a ``step`` keyword, it is called as ``loss_fn(params, batch, key,
            step=step)`` with the step number (an int32 scalar, traced), for annealing
            schedules or alternating modes.
        params: any pytree (equinox Module, dict, ...); the leaves selected by ``trainable``
            and not wrapped in :func:`jcausal.train.frozen` are optimised, the rest is held
            fixed (no optimiser state, so weight decay cannot move it either).
        data: a pytree of arrays with a common leading unit axis ``(n, ...)``, batched without
            replacement epoch by epoch (the last ``n mod batch_size`` units of each shuffled
            epoch are skipped); or a function ``data(key) -> batch`` sampling a fresh batch
            (called inside the compiled step with ``key = fold_in(data_key, step)``); or
            None: the loss gets ``batch=None`` (full-batch problems whose data live in the
            loss).
        optimizer: an optax gradient transformation, e.g. ``optax.adam(5e-3)``; one that
            takes extra arguments (``optax.GradientTransformationExtraArgs``, e.g. a chain
            with ``optax.contrib.reduce_on_plateau``) gets ``value=loss``. A resumed run must
            use the same optimiser (state structure and settings) as the checkpoint.
        steps: total number of optimisation steps (including those of a restored run).
        key: ``jax.random.key(seed)``; batches and the loss's keys derive from it and the step.
        batch_size: units per batch (required for array data; must divide evenly across the
            devices of ``sharding``).
        eval_data: held-out data (pytree of arrays) evaluated every ``eval_every`` steps and at
            the end.
        eval_every: evaluation period in steps (default: ``steps // 10``).
        eval_fn: ``eval_fn(params, eval_data, key) -> dict`` (or ``loss`` / ``(loss, aux)``;
            a ``step`` keyword is passed as for ``loss_fn``); default: ``loss_fn`` on the whole
            of ``eval_data``.
        checkpoint_dir: directory of orbax checkpoints, each verified by sha256 checksums;
            the newest intact one is restored on start (a corrupt one is moved aside with a
            warning naming it).
        checkpoint_every: checkpoint period in steps (default: ``steps // 10``); the final
            state is always checkpointed.
        keep: number of checkpoints kept (at least 2, so there is one to fall back to).
        metrics_path: JSON-lines file; one record per ``log_every`` steps (``split: "train"``)
            and per evaluation (``split: "eval"``).
        log_every: period of the training records, in steps. A record holds the loss and
            the auxiliary terms of its step (array terms as lists).
        progress: show a tqdm progress bar with the running loss (True), none (False), or
            call ``progress(k)`` with the number of steps just run after each compiled call
            (for a progress display of one's own).
        steps_per_call: most steps run in one compiled call between two host reads (default
            ``log_every``, or 1 for some convolutional networks on CPU: see below). Calls are
            shortened so that each takes about a quarter of a second once compiled: progress
            moves and Ctrl-C stops a run promptly whatever the step costs. Grouping steps
            differently does not change the result. The compiled program is cached across
            calls of ``fit`` with the same loss function, optimiser object, data layout and
            non-trained parameters, so a loop of short runs compiles once.
            ``steps_per_call=1`` compiles a single step with no loop around it, which is what
            many convolutional networks need on CPU: XLA:CPU runs a convolution whose
            dimension numbers are not channel-last (JAX's own gradients of any convolution,
            equinox's channel-first layers) as a naive loop nest inside a compiled loop, many
            times slower (a small UNet: 15x), and compiles the loop far longer. The default
            therefore picks 1 on CPU when the step's jaxpr (traced once, not compiled) holds
            such a convolution (:func:`jcausal.train.step.bare_step_is_faster`); networks
            built on :func:`jcausal.nn.conv_general_dilated` keep the loop (the Morpho-MNIST
            Deep SCM: 0.092 against 0.115 CPU-s per step bare).
        sharding: a ``jax.sharding.Mesh`` (batches split over all its axes) or a
            ``NamedSharding`` for the batch's leading axis, for data-parallel training.
        shard_optimizer: with ``sharding``, split the optimiser's state, the update and the
            moving average (``ema``) over the batch's devices (ZeRO stage 1): the gradient is
            reduce-scattered, each device updates its slice of every large parameter (see
            :func:`jcausal.parallel.split_leaves`) and the new parameters are all-gathered,
            instead of every device updating every parameter. The parameters the loss sees
            stay replicated, and the result is the same up to float rounding. Default
            (``None``): on whenever the batch is split over several devices.
        trainable: equinox filter (function or pytree of bools) choosing the trained leaves.
        callback: ``callback(step, params, loss)`` after every step (``step`` counts completed
            steps), e.g. for custom logging. It makes every step a host round trip.
        keep_best: name of an evaluation metric to minimise (e.g. ``"loss"``); ``fit`` then
            returns the parameters of the evaluation where it was lowest (early stopping by
            validation) instead of the last ones. The best parameters are stored in every
            checkpoint, so a resumed run selects the same ones. Needs ``eval_data``.
        ema: decay ``d`` in ``(0, 1)`` of an exponential moving average of the trained
            parameters, ``ema <- d * ema + (1 - d) * params`` after every step, starting from
            the initial parameters; checkpointed with the run and returned as
            ``history.ema_params``.

    Returns:
        ``(params, history)``: the trained parameters (the last ones, or the best evaluated ones
        with ``keep_best``; same structure as ``params``) and a :class:`History`.

    Raises:
        FloatingPointError: a loss, auxiliary term, gradient or updated parameter is not
            finite (the message names the step and the term; that update is discarded and the
            last good checkpoint kept); or, with ``keep_best``, every evaluation was non-finite.
        TypeError: a count (``steps``, ``batch_size``, ...) is not an integer.
        ValueError: inconsistent arguments (batch size, data shapes, ``shard_optimizer``
            without ``sharding``), a checkpoint of another
            run (model, optimiser, key, data), or no intact checkpoint in ``checkpoint_dir``.
    """
    steps = integer("steps", steps, 0)
    log_every = integer("log_every", log_every, 1)
    if steps_per_call is not None:
        steps_per_call = integer("steps_per_call", steps_per_call, 1)
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(
            f"progress must be True, False or a function progress(k) of the steps just run; "
            f"got {progress!r}"
        )
    keep = integer("keep", keep, 1)
    if keep < 2 and checkpoint_dir is not None:
        raise ValueError(
            f"keep must be >= 2 (got {keep}) so that a corrupt newest checkpoint has an intact "
            "one to fall back to"
        )
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"optimizer must be an optax GradientTransformation (e.g. optax.adam(1e-3)), got "
            f"{type(optimizer).__name__}"
        )
    if ema is not None:
        if isinstance(ema, bool) or not isinstance(ema, numbers.Real) or not 0 < ema < 1:
            raise ValueError(f"ema is a decay in (0, 1), e.g. 0.999; got {ema!r}")
        ema = float(ema)
    key_bytes = key_data(key)
    data_key, loss_key, eval_key = jax.random.split(key, 3)
    replicated, batch_sharding, shards = parallel.batch_shardings(sharding)
    if shard_optimizer is not None and not isinstance(shard_optimizer, bool):
        raise TypeError(f"shard_optimizer must be True, False or None, got {shard_optimizer!r}")
    if shard_optimizer and sharding is None:
        raise ValueError(
            "shard_optimizer=True splits the optimiser state over the devices of `sharding`, "
            "but no sharding was given; pass sharding=mesh, or leave shard_optimizer=None"
        )
    if shard_optimizer is None:
        shard_optimizer = shards > 1

    sampled = callable(data) and not isinstance(data, eqx.Module)
    if sampled or data is None:
        n, steps_per_epoch = 0, 1
        if batch_size is not None:
            batch_size = integer("batch_size", batch_size, 1)
    else:
        n = num_units(data)
        if batch_size is None:
            raise ValueError("batch_size is required when data is an array pytree")
        batch_size = integer("batch_size", batch_size, 1)
        if batch_size > n:
            raise ValueError(
                f"batch_size must be in [1, {n}] (the number of units), got {batch_size}"
            )
        steps_per_epoch = n // batch_size
        data = jax.tree_util.tree_map(jnp.asarray, data)
    if batch_size is not None and batch_size % shards:
        raise ValueError(
            f"batch_size {batch_size} must be divisible by the {shards} devices of the batch "
            "sharding"
        )
    if keep_best is not None and eval_data is None:
        raise ValueError(
            f"keep_best={keep_best!r} selects parameters by an evaluation metric, but no "
            "eval_data was given; pass held-out eval_data or drop keep_best"
        )
    every = max(1, steps // 10)
    eval_every = integer("eval_every", eval_every, 1) if eval_every is not None else every
    checkpoint_every = (
        integer("checkpoint_every", checkpoint_every, 1) if checkpoint_every is not None else every
    )

    # Trained part: the leaves chosen by `trainable`, minus frozen ones.
    dyn, static = eqx.partition(params, trainable)
    dyn, fixed = eqx.partition(dyn, trainable_mask(dyn))
    # Only arrays are trained: a Python number picked by a custom filter stays as it is.
    dyn, scalars = eqx.partition(dyn, eqx.is_array)
    static = eqx.combine(static, fixed, scalars)
    buffers = buffer_positions(params, dyn)
    opt_state = optimizer.init(dyn)
    ema_dyn = dyn if ema is not None else None
    names = leaf_names(dyn)
    # (what a checkpoint records of the optimiser; its treedef's text is slow to build)
    fingerprint = None if checkpoint_dir is None else optimizer_fingerprint(optimizer, opt_state)
    structure = None if checkpoint_dir is None else structure_text(dyn)
    # Where each piece of the training state lives on a mesh: parameters replicated; the
    # optimiser state and the moving average replicated too, or split (shard_optimizer).
    split = None
    if replicated is not None:
        layout = (replicated, replicated, None if ema_dyn is None else replicated)
        if shard_optimizer and shards > 1:
            dyn_split = parallel.split_leaves(dyn, batch_sharding)
            state_split = parallel.split_leaves(opt_state, batch_sharding)
            layout = (replicated, state_split, None if ema_dyn is None else dyn_split)
            split = (
                replicated,
                tuple(jax.tree_util.tree_leaves(dyn_split)),
                tuple(jax.tree_util.tree_leaves(state_split)),
            )
        dyn, opt_state, ema_dyn = parallel.put((dyn, opt_state, ema_dyn), layout)
        if not sampled and data is not None:
            # Data already spread over processes (parallel.process_local_data: each process
            # holds its slice) stays so; the step gathers each batch across them.
            data = jax.tree_util.tree_map(
                lambda x: x if not x.is_fully_addressable else parallel.put(x, replicated), data
            )

    # Best evaluation so far (keep_best): its step, value and trainable leaves. Step -1 means
    # no finite evaluation yet; the leaves then hold the initial parameters.
    best = {"step": -1, "value": math.inf, "dyn": dyn}

    # ---- restore
    ckpt = Checkpoints(os.fspath(checkpoint_dir), keep) if checkpoint_dir is not None else None
    start = 0
    dyn_leaves, dyn_def = jax.tree_util.tree_flatten(dyn)
    opt_leaves, opt_def = jax.tree_util.tree_flatten(opt_state)

    def check_info(step: int, info: Mapping[str, Any]) -> None:
        where = f"checkpoint at step {step} in {ckpt.directory}"
        shapes = info.get("params", [])
        if len(shapes) != len(dyn_leaves):
            raise ValueError(
                f"{where} holds {len(shapes)} arrays of trainable parameters, but this model's "
                f"trainable parameters have {len(dyn_leaves)}: the checkpoint belongs to a "
                "different model (another architecture). Use a new checkpoint_dir"
            )
        for i, (saved, x) in enumerate(zip(shapes, dyn_leaves, strict=True)):
            if saved != [list(np.shape(x)), str(np.asarray(x).dtype)]:
                raise ValueError(
                    f"{where}: parameter {names[i] if i < len(names) else i} has shape/dtype "
                    f"{saved}, the model's has {[list(np.shape(x)), str(x.dtype)]}; the "
                    "checkpoint belongs to a different model. Use a new checkpoint_dir"
                )
        # The same arrays in another tree (a module gained, lost or renamed a field): the
        # optimiser's state, which mirrors the parameters, would differ too, but say why.
        # (Checkpoints written before this record was kept fall through to that check.)
        saved_structure = info.get("params_structure")
        if saved_structure is not None and saved_structure != structure:
            raise ValueError(
                f"{where} holds the same parameter arrays in a different tree structure (a "
                "module of the model gained, lost or renamed a field since it was written): "
                "it belongs to another version of the model. Use a new checkpoint_dir"
            )
        change = describe_optimizer_change(info.get("optimizer", {}), fingerprint)
        if change is not None:
            raise ValueError(
                f"{where} was written with a different optimiser: {change}. Resume with the "
                "checkpoint's optimiser, or use a new checkpoint_dir"
            )
        if info.get("key") != key_bytes.tolist():
            raise ValueError(
                f"{where} was written by a run with a different key; use the same key to "
                "resume or a new checkpoint_dir"
            )
        if info.get("data_size") != n:
            raise ValueError(
                f"{where} was written for data with {info.get('data_size')} units, but data "
                f"has {n}; use the same data to resume or a new checkpoint_dir"
            )
        if keep_best is not None and not info.get("keep_best"):
            raise ValueError(
                f"{where} holds no best-evaluation state; it was written without keep_best. "
                "Resume with the same keep_best, or use a new checkpoint_dir"
            )
        if ema is not None and info.get("ema") != ema:
            raise ValueError(
                f"{where} was written with ema={info.get('ema')}, not ema={ema}; resume with "
                "the same ema, or use a new checkpoint_dir"
            )

    def check_arrays(arrays) -> str | None:
        for group in ("params", "best", "ema"):
            for k, x in arrays.get(group, {}).items():
                if np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
                    return f"it holds non-finite values in {group} array {k}"
        return None

    def cast(new: Mapping[str, np.ndarray], like: list) -> list:
        return [from_numpy(new[str(i)], x) for i, x in enumerate(like)]

    if ckpt is not None:
        found = ckpt.restore_latest(check_info, check_arrays)
        if found is not None:
            start, arrays, info = found
            dyn = jax.tree_util.tree_unflatten(dyn_def, cast(arrays.get("params", {}), dyn_leaves))
            opt_state = jax.tree_util.tree_unflatten(
                opt_def, cast(arrays.get("opt", {}), opt_leaves)
            )
            if ema is not None:
                ema_dyn = jax.tree_util.tree_unflatten(
                    dyn_def, cast(arrays.get("ema", {}), dyn_leaves)
                )
            if keep_best is not None:
                best = {
                    "step": int(info["best_step"]),
                    "value": float(info["best_value"]),
                    "dyn": jax.tree_util.tree_unflatten(
                        dyn_def, cast(arrays.get("best", {}), dyn_leaves)
                    ),
                }
            if replicated is not None:
                # (re-sharded for this run's devices, whatever the writing run's were)
                dyn, opt_state, ema_dyn = parallel.put((dyn, opt_state, ema_dyn), layout)
    if start > steps:
        raise ValueError(
            f"checkpoint_dir holds step {start}, beyond steps={steps}; use a new checkpoint_dir"
        )

    def save(step: int) -> None:
        def group(tree):
            # (parallel.local: parameters spread over processes are gathered before writing)
            leaves = jax.tree_util.tree_leaves(parallel.local(tree))
            return {str(i): to_numpy(x) for i, x in enumerate(leaves)}

        arrays = {"params": group(dyn), "opt": group(opt_state)}
        info = {
            "params": [[list(np.shape(x)), str(np.asarray(x).dtype)] for x in dyn_leaves],
            "optimizer": fingerprint,
            "params_structure": structure,
            "key": key_bytes.tolist(),
            "data_size": n,
            "keep_best": keep_best is not None,
            "ema": ema,
        }
        if keep_best is not None:
            arrays["best"] = group(best["dyn"])
            info |= {"best_step": best["step"], "best_value": best["value"]}
        if ema is not None:
            arrays["ema"] = group(ema_dyn)
        ckpt.save(step, arrays, info)

    if metrics_path is not None:
        metrics_path = os.fspath(metrics_path)
        _metrics.trim(metrics_path, start)

    eval_with_step = takes_step(eval_fn if eval_fn is not None else loss_fn)

    @eqx.filter_jit
    def evaluate(d, eval_data_, step):
        p = eqx.combine(d, static)
        k = jax.random.fold_in(eval_key, step)
        if eval_fn is None:
            loss, aux = split_loss(call_loss(loss_fn, eval_with_step, p, eval_data_, k, step))
            return {"loss": loss, **aux}
        out = call_loss(eval_fn, eval_with_step, p, eval_data_, k, step)
        if isinstance(out, Mapping):
            return dict(out)
        loss, aux = split_loss(out)
        return {"loss": loss, **aux}

    # ---- loop
    history = History(loss=np.zeros(0), train=[], eval=[], start_step=start)
    # Per-step losses, one array per compiled call (memory grows with the steps actually run,
    # not with `steps`: a run asked for a billion steps and stopped early costs nothing).
    loss_parts: list[np.ndarray] = []
    metrics_file = open(metrics_path, "a") if metrics_path is not None else None

    def record(rec: dict) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(rec) + "\n")
            metrics_file.flush()

    def run_eval(step: int) -> None:
        if eval_data is None:
            return
        values = _metrics.to_values(evaluate(dyn, eval_data, jnp.asarray(step, jnp.int32)))
        rec = {"step": step, "split": "eval", **values}
        history.eval.append(rec)
        record(rec)
        if keep_best is not None:
            if keep_best not in rec:
                raise ValueError(
                    f"keep_best={keep_best!r} is not an evaluation metric; the evaluation "
                    f"returns {sorted(k for k in rec if k not in ('step', 'split'))}"
                )
            value = rec[keep_best]
            # Strictly lower: ties keep the earlier (less trained) parameters.
            if math.isfinite(value) and value < best["value"]:
                best.update(step=step, value=value, dyn=dyn)

    def next_stop(done: int) -> int:
        """The first step after ``done`` at which the host has work (log, eval, checkpoint)."""
        stops = [steps]
        if eval_data is not None:
            stops.append((done // eval_every + 1) * eval_every)
        if ckpt is not None:
            stops.append((done // checkpoint_every + 1) * checkpoint_every)
        return min(stops)

    bar = None
    report = progress if callable(progress) else None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="fit", dynamic_ncols=True)
    if sampled or data is None:
        perm = jnp.zeros((1,), jnp.int32)
    else:
        # The permutation of the current epoch; the compiled step redraws it at each new epoch.
        perm = permutation(data_key, jnp.asarray(start // steps_per_epoch), n)
    if replicated is not None:
        perm = parallel.put(perm, replicated)

    # ---- compiled pieces
    chunk_config = dict(
        loss_fn=loss_fn,
        with_step=takes_step(loss_fn),
        static=static,
        optimizer=optimizer,
        data_key=data_key,
        loss_key=loss_key,
        sampled=sampled,
        sampler=data if sampled else None,
        n=n,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        batch_sharding=batch_sharding,
        ema_decay=ema,
        buffers=buffers,
        split=split,
    )
    per_call = steps_per_call
    if per_call is None:
        per_call = log_every
        if bare_step_is_faster(dyn):
            # A convolutional network on CPU: one bare step per call if the step has a
            # convolution XLA:CPU runs slowly inside a loop (read from one step's jaxpr; the
            # one-step program is cached, so choosing it costs no second compilation).
            one = make_chunk(**chunk_config, length=1)
            first = (jnp.asarray(start, jnp.int32), jnp.asarray(1, jnp.int32))
            slow = one.slow_convolutions(dyn, opt_state, ema_dyn, data, perm, *first)
            per_call = 1 if slow else log_every
    length = 1 if callback is not None else max(1, min(per_call, steps))
    chunk = make_chunk(**chunk_config, length=length)
    running = None
    done = start
    # Steps per call: all of `length` when it is short; else start small and grow towards
    # CALL_SECONDS per call (the first call's time is mostly compilation, so it is not used).
    budget = length if length <= 64 else 8
    # Does the run span several processes (arrays some of whose shards live elsewhere)?
    spread = jax.process_count() > 1 and any(
        isinstance(x, jax.Array) and not x.is_fully_addressable
        for x in jax.tree_util.tree_leaves((dyn, static, data))
    )
    warm = False
    out = None
    try:
        while done < steps:
            count = min(next_stop(done), done + budget) - done
            tick = time.perf_counter()
            out = chunk(dyn, opt_state, ema_dyn, data, perm, jnp.asarray(done, jnp.int32),
                        jnp.asarray(count, jnp.int32))  # fmt: skip
            ran, bad, losses, trace, loss_f, aux_f, grads_ok, params_ok = parallel.to_host(
                (out.done, out.bad, out.losses, out.trace, out.loss, out.aux, out.grads_ok,
                 out.params_ok)
            )  # fmt: skip
            ran = int(ran)
            if warm and ran and length > 64:
                per_step = max((time.perf_counter() - tick) / ran, 1e-7)
                budget = int(np.clip(CALL_SECONDS / per_step, 1, min(2 * budget + 64, length)))
                if spread:
                    # Every process must run the same steps per call (the calls' collectives
                    # would wait for each other forever): process 0's timing decides.
                    from jax.experimental import multihost_utils

                    budget = int(multihost_utils.broadcast_one_to_all(np.int32(budget)))
            warm = True
            dyn, opt_state, ema_dyn, perm = out.dyn, out.opt_state, out.ema, out.perm
            loss_parts.append(np.asarray(losses[:ran]))
            for v in losses[:ran]:
                running = float(v) if running is None else 0.95 * running + 0.05 * float(v)
            for i in range(ran):
                s = done + i + 1
                if s % log_every == 0 or s == steps:
                    rec = {"step": s, "split": "train", "loss": float(losses[i])}
                    rec |= _metrics.to_values({k: v[i] for k, v in trace.items()})
                    history.train.append(rec)
                    record(rec)
            done += ran
            if bool(bad):
                loss_f, aux_f = float(loss_f), _metrics.to_values(aux_f)
                # The steps before the failed one are kept, and checkpointed if one was due.
                last = None if ckpt is None else ckpt.latest()
                kept = (
                    f"; the last good checkpoint (step {last}) in {checkpoint_dir} is kept"
                    if last is not None
                    else ""
                )
                culprit = fault(loss_f, aux_f, grads_ok, params_ok, names)
                raise FloatingPointError(
                    f"non-finite value at step {done} (from the state after {done} updates; "
                    f"this update is discarded): {culprit} = {aux_f or {'loss': loss_f}}{kept}. "
                    "Lower the learning rate, check the data for NaN/inf, or guard the term "
                    "(e.g. clip a log's argument)"
                )
            if done % eval_every == 0 or done == steps:
                run_eval(done)
            if ckpt is not None and (done % checkpoint_every == 0 or done == steps):
                save(done)
            if bar is not None:
                bar.update(ran)
                bar.set_postfix(loss=f"{running:.4g}")
            if report is not None:
                report(ran)
            if callback is not None:
                callback(done, unfreeze(eqx.combine(dyn, static)), float(loss_f))
    except BaseException:
        # Ctrl-C (or any error) while a compiled call runs: let that call finish before the
        # exception unwinds, so the interpreter never exits under a running XLA computation
        # (a crash at exit). A call lasts at most about CALL_SECONDS once compiled.
        if out is not None:
            try:
                jax.block_until_ready(out)
            except Exception:  # the call's own failure: the exception being raised says more
                pass
        raise
    finally:
        history.loss = np.concatenate(loss_parts) if loss_parts else np.zeros(0)
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if ckpt is not None:
            ckpt.close()
    if keep_best is not None:
        if best["step"] < 0 and history.eval:
            raise FloatingPointError(
                f"keep_best={keep_best!r}: every evaluation of {keep_best!r} was non-finite "
                f"(steps {[r['step'] for r in history.eval]}: "
                f"{[r[keep_best] for r in history.eval]}), so there are no best parameters to "
                "return. Check eval_fn and eval_data for NaN/inf, or drop keep_best"
            )
        history.best_step, history.best_value = best["step"], best["value"]
        if best["step"] >= 0:
            dyn = best["dyn"]
    if ema is not None:
        if split is not None:  # (held in slices: returned whole, like the parameters)
            ema_dyn = parallel.put(ema_dyn, replicated)
        history.ema_params = eqx.combine(parallel.local(ema_dyn), static)
    # Several processes: the returned parameters are process-local copies (gathered).
    return eqx.combine(parallel.local(dyn), static), history


def buffer_positions(params: PyTree, dyn: PyTree) -> tuple[tuple[int, int], ...]:
    """``(index among the leaves of params, index among the leaves of dyn)`` of each buffer leaf.

    Raises:
        ValueError: a buffer leaf is not a floating-point array selected by ``trainable``.
    """
    flags = buffer_flags(params)
    slots = jax.tree_util.tree_leaves(dyn, is_leaf=is_none)
    if not any(flags):
        return ()
    if len(slots) != len(flags):
        raise ValueError("a buffer may not hold None leaves; mark arrays with buffer(...)")
    out, j = [], 0
    for i, (flag, slot) in enumerate(zip(flags, slots, strict=True)):
        if flag and slot is None:
            raise ValueError(
                f"parameter leaf {i} is marked as a buffer but is not a floating-point array "
                "chosen by `trainable`; buffers must be float arrays (keep counters as floats)"
            )
        if slot is not None:
            if flag:
                out.append((i, j))
            j += 1
    return tuple(out)


__all__ = ["History", "fit"]
