"""One optax training loop for every model family: compiled steps, evaluation, metrics, checkpoints.

``fit(loss_fn, params, data, optimizer=..., steps=..., batch_size=..., key=...)`` trains any
pytree of parameters (an equinox Module, a dict of arrays, a flow) by minimising
``loss_fn(params, batch, key) -> (loss, aux)``. The loop is built so that a run can be killed at
any moment and restarted with the same command:

* every batch is a pure function of ``(key, step)``: epoch ``e`` visits the units in the order
  ``permutation(fold_in(data_key, e))`` and step ``s`` reads slice ``s mod steps_per_epoch``
  of it, and the loss's own key is ``fold_in(loss_key, s)``; nothing depends on process history;
* a checkpoint (orbax-checkpoint, written to a temporary directory and renamed when complete,
  so a kill mid-write leaves the previous one intact) stores the trainable leaves, the optimizer
  state, the best-evaluation and EMA parameters, the step and the key, with a sha256 of every
  array in a sidecar file (:mod:`jcausal.train.checkpoint`);
* on start, the newest intact checkpoint is restored (a corrupt or truncated one is moved aside
  with a warning and the one before it is used), metrics logged after it are dropped, and
  training continues; the resumed run ends with bit-identical parameters. A checkpoint of
  another model, optimiser (structure or settings), key or data is refused.

Steps run on the device in chunks of up to ``log_every`` steps (one compiled ``while_loop``),
so the host does not wait on every step. Inside the chunk every step checks its loss,
auxiliary terms, gradient and updated parameters; a non-finite one stops the run with
``FloatingPointError`` naming the step and the term (or the parameter) at fault; the update of
that step is discarded and no checkpoint is written after it, so the last good checkpoint stays
the latest.

For the next model families: ``ema=`` keeps an exponential moving average of the parameters;
a loss that takes a ``step`` keyword receives the step number (annealing, alternating modes);
:func:`frozen` marks leaves (schedules, position tables) that get no optimiser state and are
never moved, not even by decoupled weight decay; :func:`buffer` marks leaves that the loss
updates without a gradient (EMA codebooks, running statistics) by returning
``(loss, aux, new_params)``.

Data parallelism: pass ``sharding=jax.make_mesh(...)`` (or a ``NamedSharding`` for the batch
axis). Parameters, optimizer state and data are replicated; each batch is split along its
leading axis across the devices (:mod:`jcausal.parallel`); XLA inserts the gradient all-reduce
(no ``pmap``).

Compiled programs are cached: a second ``fit`` with the same loss function, optimiser object,
data layout and non-trained parameters reuses the first one's program (a loop of short runs
compiles once); :func:`cache_clear` empties the cache; :func:`unoptimised` compiles a block
with XLA's optimisations off and forgets its programs after (smoke runs and tests).
"""

from .frozen import Buffer, Frozen, buffer, frozen, unfreeze
from .loop import History, fit
from .step import cache_clear, unoptimised

__all__ = [
    "Buffer",
    "Frozen",
    "History",
    "buffer",
    "cache_clear",
    "fit",
    "frozen",
    "unfreeze",
    "unoptimised",
]
