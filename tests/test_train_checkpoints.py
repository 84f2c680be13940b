"""Verified checkpoints: damaged files are detected, named, and the older intact one is used.

Each test here fails on the code before verified checkpoints (f02b2e1): flipped bytes restored
silently, truncation was called "written without keep_best", the older checkpoint was never
tried, a torn metrics line blocked the resume, another optimiser was accepted.
"""

import json
import os
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jcausal.train import fit


def _loss(p, batch, key):
    r = batch["x"] @ p["w"] + p["b"] - batch["y"]
    return jnp.mean(r**2), {"mse": jnp.mean(r**2)}


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    return {"x": x, "y": x @ np.array([1.0, -2.0, 0.5]) + 0.3}


def _params():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


KW = dict(optimizer=optax.adam(0.05), batch_size=16, key=jax.random.key(0), progress=False)


SIDECAR = "jcausal_checksums.json"


def _checkpoints(path):
    from jcausal.train.checkpoint import Checkpoints  # imported late: tests run on old code too

    return Checkpoints(str(path), keep=2)


def _files(step_dir):
    """Every file of a step folder except the checksum sidecar, largest first."""
    out = []
    for root, _, names in os.walk(step_dir):
        out += [os.path.join(root, n) for n in names if n != SIDECAR]
    return sorted(out, key=lambda f: -os.path.getsize(f))


def _array_files(step_dir):
    return [f for f in _files(step_dir) if f"{os.sep}d{os.sep}" in f]


def _reference(steps=20):
    p, _ = fit(_loss, _params(), _data(), steps=steps, **KW)
    return p


def _two_checkpoints(path, eval_kw=None):
    fit(_loss, _params(), _data(), steps=15, checkpoint_dir=path, checkpoint_every=5,
        **KW, **(eval_kw or {}))  # fmt: skip
    assert sorted(int(d) for d in os.listdir(path) if d.isdigit()) == [10, 15]


def _resume_expecting_fallback(path, damaged, **extra):
    with pytest.warns(RuntimeWarning, match=r"checkpoint at step 15 .* is corrupt") as rec:
        p, hist = fit(_loss, _params(), _data(), steps=20, checkpoint_dir=path,
                      checkpoint_every=5, **KW, **extra)  # fmt: skip
    text = " ".join(str(w.message) for w in rec)
    assert "resuming from step 10" in text
    assert hist.start_step == 10
    assert os.path.isdir(os.path.join(path, "15.corrupt"))
    return p, text


def test_flipped_bytes_in_array_data_fall_back_to_older_checkpoint(tmp_path):
    ref = _reference()
    path = tmp_path / "ckpt"
    _two_checkpoints(path)
    # One bit in each data file (orbax keeps a per-process copy; which one is read varies).
    for target in _array_files(path / "15"):
        blob = bytearray(open(target, "rb").read())
        blob[len(blob) // 3] ^= 0x10
        open(target, "wb").write(bytes(blob))
    p, text = _resume_expecting_fallback(path, None)
    assert str(path / "15") in text
    # Resumed from step 10, the run ends where an uninterrupted run ends.
    for k in ref:
        np.testing.assert_array_equal(p[k], ref[k])


def test_truncated_data_file_is_corruption_not_missing_keep_best(tmp_path):
    path = tmp_path / "ckpt"
    ev = dict(eval_data=_data(), keep_best="loss")
    _two_checkpoints(path, ev)
    for target in _array_files(path / "15"):
        with open(target, "r+b") as f:
            f.truncate(os.path.getsize(target) // 2)
    _, text = _resume_expecting_fallback(path, None, **ev)
    assert "without keep_best" not in text


@pytest.mark.parametrize("damage", ["manifest", "metadata", "step_folder", "sidecar"])
def test_truncated_manifest_or_step_folder_falls_back(tmp_path, damage):
    path = tmp_path / "ckpt"
    _two_checkpoints(path)
    step = path / "15"
    if damage == "manifest":
        for f in _files(step):
            if f.endswith("manifest.ocdbt"):
                with open(f, "r+b") as fh:
                    fh.truncate(os.path.getsize(f) // 2)
    elif damage == "metadata":
        (step / "default" / "_METADATA").write_text('{"tree_metadata": ')
    elif damage == "step_folder":
        shutil.rmtree(step / "default")
    else:  # killed after orbax finished but before the checksums were written
        (step / SIDECAR).unlink()
    _resume_expecting_fallback(path, step)


def test_no_intact_checkpoint_is_an_error_naming_each(tmp_path):
    path = tmp_path / "ckpt"
    _two_checkpoints(path)
    for s in ("10", "15"):
        (path / s / SIDECAR).write_text("{}")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="no intact checkpoint"):
        fit(_loss, _params(), _data(), steps=20, checkpoint_dir=path, **KW)


def test_every_single_byte_flip_is_detected_or_harmless(tmp_path):
    # Checkpoints alone: flip one byte at several places of every file of the newest step.
    # A restore must then give the saved arrays exactly, or fall back to the older step.
    src = tmp_path / "src"
    c = _checkpoints(src)
    rng = np.random.default_rng(1)
    saved = {s: {"params": {"0": rng.normal(size=(7, 5)), "1": rng.normal(size=3)}}
             for s in (1, 2)}  # fmt: skip
    for s, arrays in saved.items():
        c.save(s, arrays, {"note": s})
    c.close()
    cases = 0
    for f in _files(src / "2"):
        size = os.path.getsize(f)
        for pos in sorted({0, size // 4, size // 2, (3 * size) // 4, size - 1}):
            work = tmp_path / f"w{cases}"
            shutil.copytree(src, work)
            g = work / os.path.relpath(f, src)
            blob = bytearray(g.read_bytes())
            blob[pos] ^= 0x01
            g.write_bytes(bytes(blob))
            cc = _checkpoints(work)
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                step, arrays, _ = cc.restore_latest(lambda s, i: None, lambda a: None)
            cc.close()
            if step == 1:
                assert any("step 2" in str(w.message) for w in rec), (f, pos)
            for k, v in saved[step]["params"].items():
                np.testing.assert_array_equal(arrays["params"][k], v, err_msg=f"{f} {pos}")
            cases += 1
    assert cases >= 20


def test_update_overflowing_to_inf_is_caught_and_checkpoint_stays_finite(tmp_path):
    # float32 w grows by 1e38 a step (loss -w, slope -1, lr 1e38): 2e38, 3e38, then inf at
    # the third update while the loss and gradient are still finite.
    def loss(w, batch, key):
        return -w

    path = tmp_path / "ckpt"
    with pytest.raises(FloatingPointError, match=r"step 2\b.*updated parameter.*step 2\)"):
        fit(loss, jnp.asarray(1e38, jnp.float32), jnp.zeros(4), optimizer=optax.sgd(1e38),
            steps=10, batch_size=4, key=jax.random.key(0), checkpoint_dir=path,
            checkpoint_every=1, progress=False)  # fmt: skip
    assert max(int(d) for d in os.listdir(path) if d.isdigit()) == 2
    c = _checkpoints(path)
    step, arrays, _ = c.restore_latest(lambda s, i: None, lambda a: None)
    c.close()
    assert step == 2 and np.isfinite(arrays["params"]["0"]).all()


def test_half_written_metrics_line_does_not_block_resume(tmp_path):
    path, metrics = tmp_path / "ckpt", tmp_path / "m.jsonl"
    kw = dict(checkpoint_dir=path, checkpoint_every=5, metrics_path=metrics, log_every=5, **KW)
    fit(_loss, _params(), _data(), steps=10, **kw)
    with open(metrics, "a") as f:
        f.write('{"step": 15, "split": "tr')  # killed mid-write
    with pytest.warns(RuntimeWarning, match="half-written last line"):
        fit(_loss, _params(), _data(), steps=20, **kw)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    metrics.write_text('{"step": 5}\nnot json\n{"step": 10}\n')
    with pytest.raises(ValueError, match="line 2 of .*m.jsonl is not a JSON record"):
        fit(_loss, _params(), _data(), steps=20, **kw)


@pytest.mark.parametrize(
    "other, what",
    [
        (optax.adam(0.01), "settings differ.*'-0.05'.*'-0.01'"),
        (optax.adamw(0.05), "state has a different structure"),
        (optax.sgd(0.05), "state has a different structure"),
    ],
)
def test_resuming_with_another_optimiser_is_refused(tmp_path, other, what):
    path = tmp_path / "ckpt"
    fit(_loss, _params(), _data(), steps=10, checkpoint_dir=path, **KW)
    with pytest.raises(ValueError, match="different optimiser: its optimiser " + what):
        fit(_loss, _params(), _data(), steps=20, checkpoint_dir=path,
            **(KW | {"optimizer": other}))  # fmt: skip
    # The same optimiser, built again, is accepted.
    fit(_loss, _params(), _data(), steps=20, checkpoint_dir=path,
        **(KW | {"optimizer": optax.adam(0.05)}))  # fmt: skip


def test_same_arrays_in_another_tree_is_named(tmp_path):
    # A model that gained an empty field (CTLayer's local_mid, stop 37) has the same arrays in
    # another tree: the refusal names the model's structure, not the optimiser.
    path = tmp_path / "ckpt"
    fit(_loss, _params(), _data(), steps=10, checkpoint_dir=path, **KW)
    grown = _params() | {"extra": ()}
    with pytest.raises(ValueError, match="same parameter arrays in a different tree structure"):
        fit(_loss, grown, _data(), steps=20, checkpoint_dir=path, **KW)
    _, hist = fit(_loss, _params(), _data(), steps=20, checkpoint_dir=path, **KW)
    assert hist.start_step == 10


def test_restoring_never_unpickles(tmp_path, monkeypatch):
    import pickle

    path = tmp_path / "ckpt"
    fit(_loss, _params(), _data(), steps=10, checkpoint_dir=path, **KW)

    def refuse(*a, **k):
        raise AssertionError("a checkpoint was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    _, hist = fit(_loss, _params(), _data(), steps=20, checkpoint_dir=path, **KW)
    assert hist.start_step == 10


def test_checkpoint_with_non_finite_parameters_is_not_used(tmp_path):
    # A verified checkpoint whose parameters are inf (as the old guard could write): rewritten
    # with a valid checksum file, it is still refused and the older one used.
    path = tmp_path / "ckpt"
    _two_checkpoints(path)
    c = _checkpoints(path)
    step, arrays, info = c.restore_latest(lambda s, i: None, lambda a: None)
    assert step == 15
    arrays["params"]["0"] = np.full_like(arrays["params"]["0"], -np.inf)
    shutil.rmtree(path / "15")
    c.manager.reload()
    c.save(15, arrays, info)
    c.close()
    _, text = _resume_expecting_fallback(path, None)
    assert "non-finite values in params" in text


def test_keep_below_two_is_refused(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 2"):
        fit(_loss, _params(), _data(), steps=5, checkpoint_dir=tmp_path, keep=1, **KW)


def test_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a folder")
    calls = []
    with pytest.raises(ValueError, match="is a file, not a folder"):
        fit(_loss, _params(), _data(), steps=20, checkpoint_dir=path,
            callback=lambda *a: calls.append(1), **KW)  # fmt: skip
    assert calls == []  # refused before any step
