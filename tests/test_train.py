"""The training loop: closed-form optimum, metrics, NaN guard, kill-and-resume, sharding."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jcausal.train import fit
from jcausal.train.checkpoint import SIDECAR


def _regression(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=n)
    return {"x": x, "y": y}


def _mse(p, batch, key):
    r = batch["x"] @ p["w"] + p["b"] - batch["y"]
    return jnp.mean(r**2), {"mse": jnp.mean(r**2), "bias_sq": p["b"] ** 2}


def test_fit_reaches_least_squares_and_writes_metrics(tmp_path):
    data = _regression()
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    metrics = tmp_path / "m.jsonl"
    p, hist = fit(
        _mse,
        params,
        data,
        optimizer=optax.sgd(0.3),
        steps=150,
        batch_size=256,
        key=jax.random.key(0),
        eval_data=data,
        eval_every=50,
        metrics_path=metrics,
        log_every=10,
        progress=False,
    )
    design = np.c_[data["x"], np.ones(256)]
    ols = np.linalg.lstsq(design, data["y"], rcond=None)[0]
    np.testing.assert_allclose(np.r_[p["w"], p["b"]], ols, atol=1e-8)
    assert hist.loss[-1] < 0.05 * hist.loss[0]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train] == list(range(10, 151, 10))
    assert [r["step"] for r in evals] == [50, 100, 150]
    assert train == hist.train and evals == hist.eval
    # The logged loss is the loss of that step; the final evaluation is the OLS residual.
    np.testing.assert_allclose([r["loss"] for r in train], hist.loss[9::10])
    np.testing.assert_allclose(evals[-1]["mse"], np.mean((design @ ols - data["y"]) ** 2))


def _pull_to_one(p, batch, key):
    # Full-batch gradient descent from w = 0 moves w monotonically towards 1.
    return jnp.mean((p["w"] - batch["y"]) ** 2)


def _distance_to_half(p, batch, key):
    # The validation metric prefers w = 0.5, passed on the way: the best evaluation is early.
    return {"dist": (p["w"] - 0.5) ** 2}


def test_keep_best_returns_best_evaluated_parameters_and_survives_resume(tmp_path):
    data = {"y": jnp.ones(8)}
    seen = {}
    kwargs = dict(
        optimizer=optax.sgd(0.05),
        batch_size=8,
        key=jax.random.key(0),
        eval_data=data,
        eval_fn=_distance_to_half,
        eval_every=3,
        keep_best="dist",
        progress=False,
    )
    p, hist = fit(
        _pull_to_one,
        {"w": jnp.zeros(())},
        data,
        steps=30,
        callback=lambda step, q, loss: seen.__setitem__(step, float(q["w"])),
        **kwargs,
    )
    dists = {r["step"]: r["dist"] for r in hist.eval}
    best_step = min(dists, key=dists.get)
    assert 0 < best_step < 30  # the check is not vacuous: the last step is not the best
    assert hist.best_step == best_step and hist.best_value == dists[best_step]
    assert float(p["w"]) == seen[best_step]
    assert abs(seen[30] - 0.5) > abs(float(p["w"]) - 0.5)

    # Stopped after the best evaluation, then resumed: the best comes back from the checkpoint.
    ckpt = tmp_path / "ckpt"
    fit(_pull_to_one, {"w": jnp.zeros(())}, data, steps=21, checkpoint_dir=ckpt, **kwargs)
    p2, hist2 = fit(_pull_to_one, {"w": jnp.zeros(())}, data, steps=30, checkpoint_dir=ckpt,
                    checkpoint_every=3, **kwargs)  # fmt: skip
    assert hist2.start_step == 21 and best_step < 21
    assert hist2.best_step == best_step and float(p2["w"]) == float(p["w"])

    with pytest.raises(ValueError, match="eval_data"):
        fit(_pull_to_one, {"w": jnp.zeros(())}, data, steps=3, **(kwargs | {"eval_data": None}))
    with pytest.raises(ValueError, match="not an evaluation metric.*dist"):
        fit(_pull_to_one, {"w": jnp.zeros(())}, data, steps=3, **(kwargs | {"keep_best": "x"}))
    with pytest.raises(ValueError, match="without keep_best"):
        fit(_pull_to_one, {"w": jnp.zeros(())}, data, steps=30, checkpoint_dir=tmp_path / "c2",
            **(kwargs | {"keep_best": None}))  # fmt: skip
        fit(_pull_to_one, {"w": jnp.zeros(())}, data, steps=33, checkpoint_dir=tmp_path / "c2",
            **kwargs)  # fmt: skip
    # A checkpoint of another model (here: one more parameter) is named as such, also with
    # keep_best (whose own restore error must not hide it).
    for extra in ({"keep_best": None}, {}):
        with pytest.raises(
            ValueError, match="holds 1 arrays .* have 2: the checkpoint belongs to a"
        ):
            fit(_pull_to_one, {"w": jnp.zeros(()), "v": jnp.zeros(())}, data, steps=36,
                checkpoint_dir=tmp_path / "c2", **(kwargs | extra))  # fmt: skip


def test_minibatches_cover_each_epoch_once():
    # With loss = mean of the batch's unit ids, an epoch's batch means average to the
    # mean of all ids exactly when every unit is visited once per epoch.
    ids = np.arange(40.0)
    seen = []

    def loss(p, batch, key):
        return jnp.sum(p) * 0 + jnp.mean(batch), {}

    fit(
        loss,
        jnp.zeros(1),
        ids,
        optimizer=optax.sgd(0.1),
        steps=8,
        batch_size=10,
        key=jax.random.key(3),
        progress=False,
        callback=lambda s, p, v: seen.append(v),
    )
    np.testing.assert_allclose(np.mean(seen[:4]), ids.mean())
    np.testing.assert_allclose(np.mean(seen[4:]), ids.mean())
    assert seen[:4] != seen[4:]  # reshuffled between epochs


def test_sampled_data_function_reaches_population_mean():
    # data(key) -> batch: fresh N(3, 1) samples each step; the squared loss's minimiser is 3.
    def sample(key):
        return 3.0 + jax.random.normal(key, (256,))

    p, hist = fit(
        lambda p, b, k: jnp.mean((p - b) ** 2),
        jnp.asarray(0.0),
        sample,
        optimizer=optax.sgd(0.05),
        steps=300,
        key=jax.random.key(2),
        progress=False,
    )
    assert abs(float(p) - 3.0) < 0.05
    assert len(set(hist.loss[-10:].tolist())) == 10  # a new batch every step


def test_nan_guard_names_step_and_term_and_keeps_checkpoint(tmp_path):
    # w falls by 1 per step (loss slope 1, lr 1): 2.5, 1.5, 0.5, -0.5 -> sqrt is NaN at step 3.
    def loss(w, batch, key):
        return w + 0.0 * jnp.sqrt(w), {"linear": w, "sqrt_w": jnp.sqrt(w)}

    ckpt = tmp_path / "ckpt"
    with pytest.raises(FloatingPointError, match=r"step 3\b.*'sqrt_w'.*step 3\)"):
        fit(
            loss,
            jnp.asarray(2.5),
            jnp.zeros(4),
            optimizer=optax.sgd(1.0),
            steps=10,
            batch_size=4,
            key=jax.random.key(0),
            checkpoint_dir=ckpt,
            checkpoint_every=1,
            progress=False,
        )
    assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) == [2, 3]
    # Resuming from the kept checkpoint restores w = -0.5 and fails again at the same step.
    with pytest.raises(FloatingPointError, match="step 3"):
        fit(
            loss,
            jnp.asarray(2.5),
            jnp.zeros(4),
            optimizer=optax.sgd(1.0),
            steps=10,
            batch_size=4,
            key=jax.random.key(0),
            checkpoint_dir=ckpt,
            checkpoint_every=1,
            progress=False,
            callback=lambda *a: pytest.fail("no step should succeed"),
        )


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="batch_size"):
        fit(
            _mse,
            {"w": jnp.zeros(3), "b": jnp.zeros(())},
            _regression(8),
            optimizer=optax.sgd(0.1),
            steps=1,
            batch_size=9,
            key=jax.random.key(0),
            progress=False,
        )
    with pytest.raises(ValueError, match="scalar loss"):
        fit(
            lambda p, b, k: p * b,
            jnp.zeros(2),
            jnp.ones((4, 2)),
            optimizer=optax.sgd(0.1),
            steps=1,
            batch_size=2,
            key=jax.random.key(0),
            progress=False,
        )


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import jax, jax.numpy as jnp, numpy as np, optax, equinox as eqx
    jax.config.update("jax_enable_x64", True)
    from jcausal.train import fit

    ckpt, out, metrics, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    data = {"x": x, "y": np.sin(x[:, 0]) + x[:, 1] ** 2}
    model = eqx.nn.MLP(2, 1, 16, 2, key=jax.random.key(1))

    def loss(m, batch, key):
        # Dropout-like noise keeps the loss's own key stream under test.
        pred = jax.vmap(m)(batch["x"])[:, 0]
        noise = 0.01 * jax.random.normal(key, pred.shape)
        return jnp.mean((pred + noise - batch["y"]) ** 2), {}

    model, hist = fit(
        loss, model, data, optimizer=optax.adam(3e-3), steps=120, batch_size=32,
        key=jax.random.key(7), checkpoint_dir=ckpt, checkpoint_every=10,
        metrics_path=metrics, log_every=5, progress=False,
        callback=lambda *a: time.sleep(delay),
    )
    leaves = [np.asarray(v) for v in jax.tree.leaves(eqx.filter(model, eqx.is_array))]
    np.savez(out, *leaves, start=hist.start_step)
    """
)


def _run(tmp_path, name, delay, wait=True):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    args = [
        sys.executable,
        str(script),
        str(tmp_path / f"{name}_ckpt"),
        str(tmp_path / f"{name}.npz"),
        str(tmp_path / f"{name}.jsonl"),
        str(delay),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if wait:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    return proc


def test_resume_after_sigkill_gives_identical_parameters(tmp_path):
    reference = _run(tmp_path, "ref", 0.0, wait=False)  # runs alongside the killed run
    killed = _run(tmp_path, "run", 0.02, wait=False)
    ckpt = tmp_path / "run_ckpt"
    deadline = time.time() + 240
    while time.time() < deadline:
        if ckpt.exists() and any(d.isdigit() for d in os.listdir(ckpt)):
            break
        assert killed.poll() is None, killed.communicate()[1].decode()[-3000:]
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere between checkpoints
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    # The newest intact checkpoint: a kill between orbax's rename of a step folder and the
    # checksum sidecar written after it leaves a folder that restore rightly skips.
    steps_at_kill = max(
        int(d) for d in os.listdir(ckpt) if d.isdigit() and (ckpt / d / SIDECAR).exists()
    )
    assert steps_at_kill < 120, "the run finished before it could be killed"
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err.decode()[-3000:]

    _run(tmp_path, "run", 0.0)  # the same command, restarted
    resumed, ref = np.load(tmp_path / "run.npz"), np.load(tmp_path / "ref.npz")
    assert int(resumed["start"]) == steps_at_kill >= 10 and int(ref["start"]) == 0
    names = [k for k in ref.files if k != "start"]
    for k in names:
        np.testing.assert_array_equal(resumed[k], ref[k])
    # The metrics file is trimmed to the checkpoint and continued: identical to the reference.
    assert (tmp_path / "run.jsonl").read_text() == (tmp_path / "ref.jsonl").read_text()


SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax, equinox as eqx
    jax.config.update("jax_enable_x64", True)
    from jcausal.train import fit

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3))
    data = {"x": x, "y": np.tanh(x @ np.array([1.0, -1.0, 0.5]))}
    model = eqx.nn.MLP(3, 1, 8, 1, key=jax.random.key(0))

    specs = []

    def loss(m, batch, key):
        specs.append(str(jax.typeof(batch["x"]).sharding.spec))  # recorded while tracing
        return jnp.mean((jax.vmap(m)(batch["x"])[:, 0] - batch["y"]) ** 2), {}

    kw = dict(optimizer=optax.adam(1e-2), steps=60, batch_size=64, key=jax.random.key(1),
              progress=False)
    plain, _ = fit(loss, model, data, **kw)
    mesh = jax.make_mesh((4,), ("data",))
    sharded, _ = fit(loss, model, data, sharding=mesh, **kw)
    spec = specs[-1]
    a = jax.tree.leaves(eqx.filter(plain, eqx.is_array))
    b = jax.tree.leaves(eqx.filter(sharded, eqx.is_array))
    moved = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, jax.tree.leaves(
        eqx.filter(model, eqx.is_array))))
    diff = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, b))
    try:
        fit(loss, model, data, sharding=mesh, **{**kw, "batch_size": 30})
        bad = "no error"
    except ValueError as e:
        bad = str(e)
    print(repr((diff, moved, bad, spec)))
    """
)


def test_sharded_run_matches_unsharded(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    res = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    diff, moved, bad, spec = eval(res.stdout.strip().splitlines()[-1])
    assert "data" in spec  # the loss saw a batch split over the 4 devices
    assert moved > 1e-2  # training changed the parameters
    assert diff < 1e-10
    assert "divisible by the 4 devices" in bad
