"""One optax training loop for every model family: jitted step, evaluation, metrics, checkpoints.

``fit(loss_fn, params, data, optimizer=..., steps=..., batch_size=..., key=...)`` trains any
pytree of parameters (an equinox Module, a dict of arrays, a flow) by minimising
``loss_fn(params, batch, key) -> (loss, aux)``. The loop is built so that a run can be killed at
any moment and restarted with the same command:

* every batch is a pure function of ``(key, step)``: epoch ``e`` visits the units in the order
  ``permutation(fold_in(data_key, e))`` and step ``s`` reads slice ``s mod steps_per_epoch``
  of it, and the loss's own key is ``fold_in(loss_key, s)``; nothing depends on process history;
* a checkpoint (orbax-checkpoint, written to a temporary directory and renamed when complete,
  so a kill mid-write leaves the previous one intact) stores the trainable leaves, the optimizer
  state, the step and the key;
* on start, the latest complete checkpoint is restored, metrics logged after it are dropped,
  and training continues; the resumed run ends with bit-identical parameters.

A non-finite loss, auxiliary term or gradient stops the run with ``FloatingPointError`` naming
the step and the term at fault; the update of that step is discarded and no checkpoint is
written after it, so the last good checkpoint stays the latest.

Data parallelism: pass ``sharding=jax.make_mesh(...)`` (or a ``NamedSharding`` for the batch
axis). Parameters, optimizer state and data are replicated; each batch is split along its
leading axis across the devices; XLA inserts the gradient all-reduce (no ``pmap``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, PRNGKeyArray, PyTree, Scalar

LossFn = Callable[[PyTree, PyTree, PRNGKeyArray], "Scalar | tuple[Scalar, Mapping[str, Array]]"]


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
    """

    loss: np.ndarray
    train: list[dict[str, float]]
    eval: list[dict[str, float]]
    start_step: int
    best_step: int | None = None
    best_value: float | None = None


# ----------------------------------------------------------------------------------------------
# small helpers


def _split_loss(out: Any) -> tuple[Array, dict[str, Array]]:
    """Accept ``loss`` or ``(loss, aux)`` from a loss function."""
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise ValueError(
                "loss_fn must return a scalar loss or a pair (loss, aux) with aux a dict of "
                f"named scalar terms; got a tuple of length {len(out)}"
            )
        loss, aux = out
        return jnp.asarray(loss), dict(aux)
    return jnp.asarray(out), {}


def _check_scalar(loss: Array) -> None:
    if loss.shape != ():
        raise ValueError(
            f"loss_fn must return a scalar loss, got shape {loss.shape}; reduce it over the "
            "batch (e.g. with jnp.mean)"
        )


def _num_units(data: PyTree) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data has no arrays; pass a pytree of arrays with a leading unit axis")
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            "every array in data needs the same leading unit axis; got leading sizes "
            f"{sorted(sizes)}"
        )
    return sizes.pop()


def _key_data(key: PRNGKeyArray) -> np.ndarray:
    if isinstance(key, int):
        raise TypeError("key must be a jax.random key (jax.random.key(seed)), not an int")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def _atomic_write_text(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-metrics-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _trim_metrics(path: str, upto: int) -> None:
    """Keep the records of steps ``<= upto``: later ones belong to a run that was cut short."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and json.loads(line).get("step", 0) <= upto:
                kept.append(line + "\n")
    _atomic_write_text(path, "".join(kept))


def _to_floats(tree: Mapping[str, Array]) -> dict[str, float]:
    return {k: float(v) for k, v in tree.items()}


def _first_bad(loss: float, aux: Mapping[str, float], grads_ok: bool) -> str | None:
    """Name the term at fault: a non-finite auxiliary term first, then the loss, then a gradient."""
    bad = [k for k, v in aux.items() if not math.isfinite(v)]
    if bad:
        return ", ".join(repr(k) for k in bad)
    if not math.isfinite(loss):
        return "'loss'"
    if not grads_ok:
        return "the gradient (the loss is finite)"
    return None


class _Checkpoints:
    """orbax-checkpoint manager for the training state (flat leaves, step, key)."""

    def __init__(self, directory: str, keep: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self, step: int, leaves: list, key: np.ndarray, n: int, best: dict | None = None
    ) -> None:
        state = {
            "leaves": {str(i): x for i, x in enumerate(leaves)},
            "step": np.asarray(step, np.int64),
            "key": key,
            "data_size": np.asarray(n, np.int64),
        }
        if best is not None:
            state["best"] = best
        self.manager.save(step, args=self._ocp.args.StandardSave(state))

    def restore(
        self, step: int, leaves: list, key: np.ndarray, n: int, best: dict | None = None
    ) -> tuple[list, dict | None]:
        target = {
            "leaves": {str(i): np.asarray(x) for i, x in enumerate(leaves)},
            "step": np.asarray(0, np.int64),
            "key": key,
            "data_size": np.asarray(0, np.int64),
        }
        if best is not None:
            target["best"] = best
        try:
            state = self.manager.restore(step, args=self._ocp.args.StandardRestore(target))
        except (KeyError, ValueError) as e:
            saved = self._saved_leaves(step)
            if saved is not None and saved != len(leaves):
                raise ValueError(
                    f"checkpoint at step {step} in {self.manager.directory} holds {saved} "
                    f"arrays of parameters and optimiser state, but this model and optimiser "
                    f"have {len(leaves)}: the checkpoint belongs to a different model (another "
                    "architecture or optimiser). Use a new checkpoint_dir"
                ) from e
            if best is None:
                raise
            raise ValueError(
                f"checkpoint at step {step} in {self.manager.directory} holds no best-evaluation "
                "state; it was written without keep_best. Resume with the same keep_best, or "
                "use a new checkpoint_dir"
            ) from e
        if not np.array_equal(np.asarray(state["key"]), key):
            raise ValueError(
                f"checkpoint at step {step} in {self.manager.directory} was written by a run "
                "with a different key; use the same key to resume or a new checkpoint_dir"
            )
        if int(state["data_size"]) != n:
            raise ValueError(
                f"checkpoint at step {step} was written for data with {int(state['data_size'])} "
                f"units, but data has {n}; use the same data to resume or a new checkpoint_dir"
            )
        restored = [state["leaves"][str(i)] for i in range(len(leaves))]
        for i, (old, new) in enumerate(zip(leaves, restored, strict=True)):
            if np.shape(old) != np.shape(new):
                raise ValueError(
                    f"checkpoint leaf {i} has shape {np.shape(new)} but the model's has "
                    f"{np.shape(old)}; the checkpoint belongs to a different model"
                )
        return restored, state.get("best")

    def _saved_leaves(self, step: int) -> int | None:
        """Number of arrays in the checkpoint's ``leaves`` (None if it cannot be read)."""
        try:
            return len(self.manager.item_metadata(step)["leaves"])
        except Exception:  # only used to explain a failed restore
            return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _batch_shardings(sharding) -> tuple[NamedSharding | None, NamedSharding | None, int]:
    """(replicated, batch, number of batch shards) for a Mesh or a batch NamedSharding."""
    if sharding is None:
        return None, None, 1
    if isinstance(sharding, Mesh):
        names = tuple(sharding.axis_names)
        batch = NamedSharding(sharding, PartitionSpec(names))
    elif isinstance(sharding, NamedSharding):
        batch = sharding
    else:
        raise TypeError(
            "sharding must be a jax.sharding.Mesh (the batch is split over all its axes) or a "
            f"NamedSharding for the batch's leading axis, got {type(sharding).__name__}"
        )
    mesh = batch.mesh
    spec = batch.spec[0] if len(batch.spec) else None
    names = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
    shards = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    return NamedSharding(mesh, PartitionSpec()), batch, shards


def _split_batch(batch: PyTree, sharding: NamedSharding) -> PyTree:
    """Split the batch's leading axis across devices, inside jit.

    ``jax.make_mesh`` gives Explicit axes by default, which take ``reshard``; meshes with Auto
    axes take a sharding constraint that the compiler propagates.
    """
    explicit = any(t == jax.sharding.AxisType.Explicit for t in sharding.mesh.axis_types)
    if explicit:
        return jax.tree_util.tree_map(lambda x: jax.sharding.reshard(x, sharding), batch)
    return jax.lax.with_sharding_constraint(batch, sharding)


# ----------------------------------------------------------------------------------------------
# the loop


def fit(
    loss_fn: LossFn,
    params: PyTree,
    data: PyTree | Callable[[PRNGKeyArray], PyTree],
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    key: PRNGKeyArray,
    batch_size: int | None = None,
    eval_data: PyTree | None = None,
    eval_every: int | None = None,
    eval_fn: Callable[[PyTree, PyTree, PRNGKeyArray], Any] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    keep: int = 2,
    metrics_path: str | os.PathLike | None = None,
    log_every: int = 10,
    progress: bool = True,
    sharding: Mesh | NamedSharding | None = None,
    trainable: Callable[[Any], bool] | PyTree = eqx.is_inexact_array,
    callback: Callable[[int, PyTree, float], None] | None = None,
    keep_best: str | None = None,
) -> tuple[PyTree, History]:
    """Minimise ``loss_fn`` over the trainable arrays of ``params`` with an optax optimizer.

    Args:
        loss_fn: ``loss_fn(params, batch, key) -> loss`` or ``-> (loss, aux)``, with ``loss`` a
            scalar and ``aux`` a dict of named scalar terms (logged, and named by the NaN guard).
        params: any pytree (equinox Module, dict, ...); the leaves selected by ``trainable``
            are optimised, the rest is held fixed.
        data: a pytree of arrays with a common leading unit axis ``(n, ...)``, batched without
            replacement epoch by epoch (the last ``n mod batch_size`` units of each shuffled
            epoch are skipped); or a function ``data(key) -> batch`` sampling a fresh batch
            (called inside the jitted step with ``key = fold_in(data_key, step)``).
        optimizer: an optax gradient transformation, e.g. ``optax.adam(5e-3)``.
        steps: total number of optimisation steps (including those of a restored run).
        key: ``jax.random.key(seed)``; batches and the loss's keys derive from it and the step.
        batch_size: units per batch (required for array data; must divide evenly across the
            devices of ``sharding``).
        eval_data: held-out data (pytree of arrays) evaluated every ``eval_every`` steps and at
            the end.
        eval_every: evaluation period in steps (default: ``steps // 10``).
        eval_fn: ``eval_fn(params, eval_data, key) -> dict`` (or ``loss`` / ``(loss, aux)``);
            default: ``loss_fn`` on the whole of ``eval_data``.
        checkpoint_dir: directory of orbax checkpoints; the latest one is restored on start.
        checkpoint_every: checkpoint period in steps (default: ``steps // 10``); the final
            state is always checkpointed.
        keep: number of checkpoints kept.
        metrics_path: JSON-lines file; one record per ``log_every`` steps (``split: "train"``)
            and per evaluation (``split: "eval"``).
        log_every: period of the training records, in steps.
        progress: show a tqdm progress bar with the running loss.
        sharding: a ``jax.sharding.Mesh`` (batches split over all its axes) or a
            ``NamedSharding`` for the batch's leading axis, for data-parallel training.
        trainable: equinox filter (function or pytree of bools) choosing the trained leaves.
        callback: ``callback(step, params, loss)`` after every step (``step`` counts completed
            steps), e.g. for custom logging.
        keep_best: name of an evaluation metric to minimise (e.g. ``"loss"``); ``fit`` then
            returns the parameters of the evaluation where it was lowest (early stopping by
            validation) instead of the last ones. The best parameters are stored in every
            checkpoint, so a resumed run selects the same ones. Needs ``eval_data``.

    Returns:
        ``(params, history)``: the trained parameters (the last ones, or the best evaluated ones
        with ``keep_best``; same structure as ``params``) and a :class:`History`.

    Raises:
        FloatingPointError: a loss, auxiliary term or gradient is not finite; the message names
            the step and the term; the last good checkpoint is kept.
        ValueError: inconsistent arguments (batch size, data shapes, checkpoint of another run).
    """
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    key_bytes = _key_data(key)
    data_key, loss_key, eval_key = jax.random.split(key, 3)
    replicated, batch_sharding, shards = _batch_shardings(sharding)

    sampled = callable(data) and not isinstance(data, eqx.Module)
    if sampled:
        n, steps_per_epoch = 0, 1
    else:
        n = _num_units(data)
        if batch_size is None:
            raise ValueError("batch_size is required when data is an array pytree")
        batch_size = int(batch_size)
        if not 0 < batch_size <= n:
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
    eval_every = int(eval_every or every)
    checkpoint_every = int(checkpoint_every or every)

    dyn, static = eqx.partition(params, trainable)
    opt_state = optimizer.init(dyn)
    if replicated is not None:
        dyn, opt_state = jax.device_put((dyn, opt_state), replicated)
        if not sampled:
            data = jax.device_put(data, replicated)

    # Best evaluation so far (keep_best): its step, value and trainable leaves. Step -1 means
    # no evaluation yet; the leaves then hold the initial parameters.
    best = {"step": -1, "value": math.inf, "dyn": dyn}

    def best_state() -> dict | None:
        if keep_best is None:
            return None
        return {
            "step": np.asarray(best["step"], np.int64),
            "value": np.asarray(best["value"], np.float64),
            "leaves": {
                str(i): np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(best["dyn"]))
            },
        }

    # ---- restore
    ckpt = _Checkpoints(os.fspath(checkpoint_dir), keep) if checkpoint_dir is not None else None
    start = 0
    if ckpt is not None and ckpt.latest() is not None:
        start = int(ckpt.latest())
        leaves, treedef = jax.tree_util.tree_flatten((dyn, opt_state))
        restored, saved_best = ckpt.restore(start, leaves, key_bytes, n, best_state())

        def cast(new, like):
            return [
                jnp.asarray(r, dtype=jnp.asarray(x).dtype) for r, x in zip(new, like, strict=True)
            ]

        dyn, opt_state = jax.tree_util.tree_unflatten(treedef, cast(restored, leaves))
        if saved_best is not None:
            dyn_leaves, dyn_def = jax.tree_util.tree_flatten(dyn)
            got = [saved_best["leaves"][str(i)] for i in range(len(dyn_leaves))]
            best = {
                "step": int(saved_best["step"]),
                "value": float(saved_best["value"]),
                "dyn": jax.tree_util.tree_unflatten(dyn_def, cast(got, dyn_leaves)),
            }
        if replicated is not None:
            dyn, opt_state = jax.device_put((dyn, opt_state), replicated)
    if start > steps:
        raise ValueError(
            f"checkpoint_dir holds step {start}, beyond steps={steps}; use a new checkpoint_dir"
        )
    if metrics_path is not None:
        metrics_path = os.fspath(metrics_path)
        _trim_metrics(metrics_path, start)

    # ---- compiled pieces
    def objective(d, batch, k):
        loss, aux = _split_loss(loss_fn(eqx.combine(d, static), batch, k))
        _check_scalar(loss)
        return loss, aux

    @eqx.filter_jit
    def train_step(d, state, data_, perm, step):
        if sampled:
            batch = data_(jax.random.fold_in(data_key, step))
        else:
            pos = (step % steps_per_epoch) * batch_size
            idx = jax.lax.dynamic_slice_in_dim(perm, pos, batch_size)
            batch = jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), data_)
        if batch_sharding is not None:
            batch = _split_batch(batch, batch_sharding)
        k = jax.random.fold_in(loss_key, step)
        (loss, aux), grads = eqx.filter_value_and_grad(objective, has_aux=True)(d, batch, k)
        updates, state = optimizer.update(grads, state, d)
        d = eqx.apply_updates(d, updates)
        finite = [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]
        grads_ok = jnp.all(jnp.stack(finite)) if finite else jnp.asarray(True)
        return d, state, loss, aux, grads_ok

    @eqx.filter_jit
    def permutation(epoch):
        return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)

    @eqx.filter_jit
    def evaluate(d, eval_data_, step):
        p = eqx.combine(d, static)
        k = jax.random.fold_in(eval_key, step)
        if eval_fn is None:
            loss, aux = _split_loss(loss_fn(p, eval_data_, k))
            return {"loss": loss, **aux}
        out = eval_fn(p, eval_data_, k)
        if isinstance(out, Mapping):
            return dict(out)
        loss, aux = _split_loss(out)
        return {"loss": loss, **aux}

    # ---- loop
    history = History(loss=np.zeros(steps - start), train=[], eval=[], start_step=start)
    metrics_file = open(metrics_path, "a") if metrics_path is not None else None

    def record(rec: dict) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(rec) + "\n")
            metrics_file.flush()

    def run_eval(step: int) -> None:
        if eval_data is None:
            return
        rec = {
            "step": step,
            "split": "eval",
            **_to_floats(evaluate(dyn, eval_data, jnp.asarray(step))),
        }
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

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="fit", dynamic_ncols=True)
    epoch, perm = -1, None
    running = None
    try:
        for step in range(start, steps):
            if not sampled and step // steps_per_epoch != epoch:
                epoch = step // steps_per_epoch
                perm = permutation(jnp.asarray(epoch))
                if replicated is not None:
                    perm = jax.device_put(perm, replicated)
            new_dyn, new_state, loss, aux, grads_ok = train_step(
                dyn, opt_state, data, perm, jnp.asarray(step)
            )
            loss_f, aux_f = float(loss), _to_floats(aux)
            fault = _first_bad(loss_f, aux_f, bool(grads_ok))
            if fault is not None:
                last = None if ckpt is None else ckpt.latest()
                kept = (
                    f"; the last good checkpoint (step {last}) in {checkpoint_dir} is kept"
                    if last is not None
                    else ""
                )
                raise FloatingPointError(
                    f"non-finite value at step {step} (from the state after {step} updates; this "
                    f"update is discarded): "
                    f"{fault} = {aux_f or {'loss': loss_f}}{kept}. Lower the learning rate, "
                    "check the data for NaN/inf, or guard the term (e.g. clip a log's argument)"
                )
            dyn, opt_state = new_dyn, new_state
            done = step + 1
            history.loss[step - start] = loss_f
            running = loss_f if running is None else 0.95 * running + 0.05 * loss_f
            if done % log_every == 0 or done == steps:
                rec = {"step": done, "split": "train", "loss": loss_f, **aux_f}
                history.train.append(rec)
                record(rec)
            if done % eval_every == 0 or done == steps:
                run_eval(done)
            if ckpt is not None and (done % checkpoint_every == 0 or done == steps):
                leaves = jax.tree_util.tree_leaves((dyn, opt_state))
                ckpt.save(done, [np.asarray(x) for x in leaves], key_bytes, n, best_state())
            if bar is not None:
                bar.update(1)
                if done % max(1, log_every) == 0:
                    bar.set_postfix(loss=f"{running:.4g}")
            if callback is not None:
                callback(done, eqx.combine(dyn, static), loss_f)
    finally:
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if ckpt is not None:
            ckpt.close()
    if keep_best is not None:
        history.best_step, history.best_value = best["step"], best["value"]
        if best["step"] >= 0:
            dyn = best["dyn"]
    return eqx.combine(dyn, static), history


__all__ = ["History", "fit"]
