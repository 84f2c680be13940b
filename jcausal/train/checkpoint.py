"""Verified checkpoints: orbax-checkpoint for the arrays, a sha256 sidecar to trust them.

orbax writes each step into a temporary folder and renames it when complete, so a kill
mid-write leaves the previous checkpoint intact; but it verifies no array data on restore
(its crc32c covers only the shard index), so a flipped bit restores silently. Here every saved
array's sha256 (with its shape and dtype) goes into ``jcausal_checksums.json`` inside the step
folder, written atomically after orbax finishes, itself protected by a sha256 of its body.
On restore the newest checkpoint whose sidecar, arrays and checksums all agree (and whose
parameters are finite) is used; a corrupt one is moved aside to ``<step>.corrupt`` with a
warning naming the step and what was wrong, and the next older one is tried.

Several processes (``jax.distributed``): orbax's own protocol writes the arrays (its primary
process writes and renames the folder; the others wait at its barriers); the sidecar is written,
and a corrupt folder moved aside, by process 0 only, the others waiting at a barrier
(:func:`_after_primary`) so that no process reads a folder before it is complete.

Only JSON and orbax's tensorstore arrays are read (orbax's ``StandardRestore`` reads JSON
metadata and array data; nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

#: Name of the checksum sidecar inside each step folder.
SIDECAR = "jcausal_checksums.json"
_FORMAT = "jcausal-checkpoint-1"
# A sidecar is a few kB per thousand arrays; anything far larger is not ours.
_MAX_SIDECAR_BYTES = 64 << 20

Arrays = dict[str, dict[str, np.ndarray]]


class CorruptCheckpoint(Exception):
    """A checkpoint's files do not match their checksums (or cannot be read)."""


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _body_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _primary() -> bool:
    import jax

    return jax.process_index() == 0


def _after_primary(name: str) -> None:
    """Every process waits here until all reach it (a no-op in a single process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _atomic_write(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _scalars(obj: Any, ancestors: tuple[int, ...] = ()) -> Any:
    """The Python scalars an optax transformation's closures hold, as nested JSON lists.

    optax transformations are pairs of closures; their hyperparameters (learning rates,
    betas, schedules' constants) live in the closure cells, so this walk recovers them.
    """
    if isinstance(obj, (bool, int, str, type(None))):
        return obj
    if isinstance(obj, float):
        return repr(obj)
    if np.ndim(obj) == 0 and hasattr(obj, "dtype"):
        try:
            return repr(float(obj))
        except (TypeError, ValueError):  # e.g. a tracer or a key: only its type is compared
            return type(obj).__name__
    if id(obj) in ancestors or len(ancestors) > 24:
        return "..."
    inner = (*ancestors, id(obj))
    if isinstance(obj, types.FunctionType):
        cells = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
        return [obj.__qualname__, [_scalars(c, inner) for c in cells],
                [_scalars(d, inner) for d in obj.__defaults__ or ()]]  # fmt: skip
    if isinstance(obj, (tuple, list)):
        return [_scalars(o, inner) for o in obj]
    if isinstance(obj, Mapping):
        return {str(k): _scalars(obj[k], inner) for k in sorted(obj, key=str)}
    return type(obj).__qualname__


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _number(x: Any) -> Any:
    """A setting as a float when it is a number (``100``, ``100.0`` and ``"100.0"`` agree).

    optax keeps some constants as given and converts others on first use (a schedule's int
    step count becomes a float), so the same optimiser can print an int before its first step
    and a float after it; a resume must not take that for a change of settings.
    """
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return x


def _flat(tree: Any) -> list:
    if isinstance(tree, list):
        return [y for x in tree for y in _flat(x)]
    if isinstance(tree, dict):
        return [y for k in sorted(tree) for y in [k, *_flat(tree[k])]]
    return [tree]


def to_numpy(x: Any) -> np.ndarray:
    """A leaf as a numpy array for saving; a typed PRNG key is stored as its key data."""
    import jax

    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def from_numpy(x: np.ndarray, like: Any) -> Any:
    """The inverse of :func:`to_numpy`, shaped and typed as ``like``."""
    import jax
    import jax.numpy as jnp

    if isinstance(like, jax.Array) and jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(like))
    return jnp.asarray(x, dtype=jnp.asarray(like).dtype)


def _structure(text: str) -> str:
    # A treedef's text names static functions with their memory address (flax nnx modules:
    # "<function promote_dtype at 0x7f...>"), which differs in every process: drop it.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def structure_text(tree: Any) -> str:
    """The text of ``tree``'s structure (its treedef), the same in every process."""
    import jax

    return _structure(str(jax.tree_util.tree_structure(tree)))


def optimizer_fingerprint(optimizer: Any, opt_state: Any) -> dict[str, Any]:
    """What identifies an optimiser: its state's tree structure and shapes, its settings."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    # optax.MultiSteps is an object with init/update, not a GradientTransformation tuple.
    if hasattr(optimizer, "gradient_transformation"):
        optimizer = optimizer.gradient_transformation()
    try:
        parts = tuple(optimizer)
    except TypeError:  # any other object with init/update: its two functions' settings
        parts = (optimizer.init, optimizer.update)
    return {
        "structure": _structure(str(treedef)),
        "shapes": [[list(np.shape(x)), str(getattr(x, "dtype", type(x).__name__))] for x in leaves],
        "settings": _scalars(parts),
    }


def describe_optimizer_change(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """None if the fingerprints agree, else a sentence saying what differs."""
    same = _structure(str(saved.get("structure"))) == _structure(now["structure"])
    if not same or saved.get("shapes") != now["shapes"]:
        return (
            "its optimiser state has a different structure (another optax transformation or "
            f"chain): checkpoint {saved.get('structure')}, now {now['structure']}"
        )
    a, b = _flat(saved.get("settings")), _flat(now["settings"])
    if [_number(x) for x in a] != [_number(x) for x in b]:
        diff = next(((x, y) for x, y in zip(a, b, strict=False) if x != y), (a[-1:], b[-1:]))
        return (
            "its optimiser settings differ (e.g. a learning rate, a schedule or a "
            f"hyperparameter): checkpoint {diff[0]!r}, now {diff[1]!r}"
        )
    return None


class Checkpoints:
    """orbax-checkpoint manager for flat groups of arrays, with verified restores.

    Args:
        directory: folder of the checkpoints (created if missing).
        keep: number of checkpoints kept (at least 2, so a corrupt newest one has an intact
            one behind it).
    """

    def __init__(self, directory: str, keep: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(
                f"checkpoint_dir {self.directory} is a file, not a folder; name a folder (it "
                "is created if missing)"
            )
        self._keep = keep
        self.manager = self._open()

    def _open(self):
        ocp = self._ocp
        # Synchronous saves: the sidecar is written into the finished step folder. The handler
        # is named so that orbax does not guess the layout from a (possibly damaged) folder.
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self._keep, create=True, enable_async_checkpointing=False
            ),
            item_handlers=ocp.StandardCheckpointHandler(),
        )

    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.manager.all_steps())

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, arrays: Arrays, info: Mapping[str, Any]) -> None:
        """Write ``arrays`` (groups of named arrays) and ``info`` (JSON) at ``step``."""
        # Empty groups (e.g. the state of plain SGD) are left out: orbax does not store them.
        arrays = {g: {k: np.asarray(v) for k, v in a.items()} for g, a in arrays.items() if a}
        self.manager.save(step, args=self._ocp.args.StandardSave(arrays), force=True)
        self.manager.wait_until_finished()
        body = {
            "format": _FORMAT,
            "step": int(step),
            "arrays": {
                f"{g}/{k}": [list(v.shape), v.dtype.str, _digest(v)]
                for g, a in arrays.items()
                for k, v in a.items()
            },
            "info": dict(info),
        }
        text = json.dumps({"body": body, "sha256": _body_digest(body)})
        if _primary():  # (every process holds the same gathered arrays: one writer)
            _atomic_write(os.path.join(self._folder(step), SIDECAR), text)
        _after_primary(f"jcausal checkpoint {step} written")

    def _folder(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def read_info(self, step: int) -> dict[str, Any]:
        """The sidecar's body of ``step``, checked against its own checksum."""
        path = os.path.join(self._folder(step), SIDECAR)
        if not os.path.isfile(path):
            raise CorruptCheckpoint(
                f"{path} is missing (the run was cut short while writing the checkpoint, or "
                "it was written by a jcausal before verified checkpoints, or by another program)"
            )
        if os.path.getsize(path) > _MAX_SIDECAR_BYTES:
            raise CorruptCheckpoint(f"{path} is too large to be a checksum file")
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read().decode())
            body, digest = doc["body"], doc["sha256"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CorruptCheckpoint(f"{path} is not a readable checksum file ({e})") from None
        if _body_digest(body) != digest or body.get("format") != _FORMAT:
            raise CorruptCheckpoint(f"{path} does not match its own checksum")
        if body.get("step") != step:
            raise CorruptCheckpoint(f"{path} belongs to step {body.get('step')}, not {step}")
        return body

    def restore(self, step: int, body: Mapping[str, Any]) -> Arrays:
        """The arrays of ``step``, each checked against the sidecar's sha256."""
        target: Arrays = {}
        for name, (shape, dtype, _) in body["arrays"].items():
            group, key = name.split("/", 1)
            target.setdefault(group, {})[key] = np.zeros(shape, np.dtype(dtype))
        try:
            state = self.manager.restore(step, args=self._ocp.args.StandardRestore(target))
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise CorruptCheckpoint(
                f"its array data in {self._folder(step)} cannot be read ({first})"
            ) from None
        out: Arrays = {}
        for name, (shape, dtype, digest) in body["arrays"].items():
            group, key = name.split("/", 1)
            x = np.asarray(state[group][key])
            if list(x.shape) != shape or x.dtype.str != dtype or _digest(x) != digest:
                raise CorruptCheckpoint(
                    f"array {name!r} in {self._folder(step)} does not match its sha256 in "
                    f"{SIDECAR} (the data files were damaged)"
                )
            out.setdefault(group, {})[key] = x
        return out

    def restore_latest(
        self,
        check_info: Callable[[int, Mapping[str, Any]], None],
        check_arrays: Callable[[Arrays], str | None],
    ) -> tuple[int, Arrays, dict[str, Any]] | None:
        """Restore the newest intact checkpoint, moving corrupt newer ones aside.

        Args:
            check_info: raises ``ValueError`` when a checkpoint's info shows it belongs to
                another run (model, optimiser, key, data); that is not corruption, so the
                error propagates.
            check_arrays: a reason string if restored arrays are unusable (non-finite
                parameters), else None.

        Returns:
            ``(step, arrays, info)``, or None when the folder holds no checkpoint.

        Raises:
            ValueError: every checkpoint is corrupt (each is named with its fault), or
                ``check_info`` refused one.
        """
        faults = []
        for step in reversed(self.steps()):
            try:
                body = self.read_info(step)
                check_info(step, body["info"])
                arrays = self.restore(step, body)
                bad = check_arrays(arrays)
                if bad is not None:
                    raise CorruptCheckpoint(bad)
            except CorruptCheckpoint as e:
                moved = self._quarantine(step)
                faults.append(f"step {step}: {e}")
                warnings.warn(
                    f"checkpoint at step {step} in {self.directory} is corrupt: {e}. It was "
                    f"moved to {moved}; trying the next older checkpoint",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            if faults:
                warnings.warn(
                    f"resuming from step {step}, the newest intact checkpoint in {self.directory}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return step, arrays, body["info"]
        if faults:
            raise ValueError(
                f"no intact checkpoint in {self.directory}: " + "; ".join(faults) + ". The "
                "damaged ones were moved aside (*.corrupt); remove them and start again, or "
                "use a new checkpoint_dir"
            )
        return None

    def _quarantine(self, step: int) -> str:
        # (several processes: all found the same fault in the same files; process 0 moves)
        _after_primary(f"jcausal quarantine {step}")
        src = self._folder(step)
        dst, i = src + ".corrupt", 1
        while os.path.exists(dst):
            dst, i = f"{src}.corrupt{i}", i + 1
        if _primary():
            os.replace(src, dst)
        _after_primary(f"jcausal quarantine {step} done")
        self.manager.close()
        self.manager = self._open()
        return dst

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


__all__ = [
    "SIDECAR",
    "Checkpoints",
    "CorruptCheckpoint",
    "describe_optimizer_change",
    "from_numpy",
    "optimizer_fingerprint",
    "structure_text",
    "to_numpy",
]
