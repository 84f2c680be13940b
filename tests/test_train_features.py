"""Tests of fit's options.

Integer checks, compiled chunks without per-step host reads, the step seen by the loss,
full-batch runs (data=None), EMA of the parameters, frozen leaves, keep_best on NaN.
"""

import json
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jcausal.train as train
from jcausal.train import fit


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return {"x": x, "y": np.tanh(x @ np.array([1.0, -2.0, 0.5])) + 0.3}


def _mlp():
    return eqx.nn.MLP(3, 1, 8, 2, key=jax.random.key(1))


def _mlp_loss(m, batch, key):
    pred = jax.vmap(m)(batch["x"])[:, 0] + 0.01 * jax.random.normal(key, (len(batch["y"]),))
    return jnp.mean((pred - batch["y"]) ** 2), {"mse": jnp.mean((pred - batch["y"]) ** 2)}


KW = dict(optimizer=optax.adam(1e-2), batch_size=16, key=jax.random.key(0), progress=False)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))]


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("steps", 2.9, TypeError),
        ("steps", 3.0, TypeError),
        ("steps", True, TypeError),
        ("steps", -1, ValueError),
        ("batch_size", 2.5, TypeError),
        ("log_every", 0, ValueError),
        ("eval_every", 1.5, TypeError),
        ("checkpoint_every", 0.5, TypeError),
    ],
)
def test_counts_must_be_integers(name, value, error):
    kw = KW | {"steps": 4, name: value}
    with pytest.raises(error, match=f"{name} must be"):
        fit(_mlp_loss, _mlp(), _data(), **kw)


def test_chunked_steps_read_the_host_once_per_log_period(monkeypatch, tmp_path):
    # Reference: one step per compiled call (a callback forces it).
    ref, ref_hist = fit(_mlp_loss, _mlp(), _data(), steps=37, callback=lambda *a: None, **KW)
    from jcausal import parallel

    reads = []
    real = parallel.to_host  # the loop's one read per compiled call (gathers across processes)
    monkeypatch.setattr(parallel, "to_host", lambda x: reads.append(1) or real(x))
    # No implicit device-to-host copy (float(loss), bool(flag)) inside the loop.
    with jax.transfer_guard_device_to_host("disallow"):
        got, hist = fit(_mlp_loss, _mlp(), _data(), steps=37, log_every=10, **KW)
    monkeypatch.undo()
    assert len(reads) == 4  # steps 1-10, 11-20, 21-30, 31-37
    for a, b in zip(_leaves(ref), _leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(hist.loss, ref_hist.loss)
    assert [r["step"] for r in hist.train] == [10, 20, 30, 37]
    assert hist.train == [r for r in ref_hist.train if r["step"] in (10, 20, 30, 37)]
    # Killed at a checkpoint and resumed in chunks: bit-identical too.
    ckpt = tmp_path / "ckpt"
    fit(_mlp_loss, _mlp(), _data(), steps=15, checkpoint_dir=ckpt, log_every=4, **KW)
    resumed, h2 = fit(_mlp_loss, _mlp(), _data(), steps=37, checkpoint_dir=ckpt, log_every=4,
                      **KW)  # fmt: skip
    assert h2.start_step == 15
    for a, b in zip(_leaves(ref), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nan_inside_a_chunk_names_step_and_gradient_leaf():
    # sqrt(0 * v^2) is finite (0) but its gradient is 0 * inf = NaN: only at step 7.
    def loss(p, batch, key, step):
        scale = jnp.where(step == 7, 0.0, 1.0)
        return jnp.mean((p["w"] - batch) ** 2) + jnp.sqrt(scale * p["v"] ** 2 + 0.0)

    with pytest.raises(FloatingPointError, match=r"at step 7 .*the gradient of \['v'\]"):
        fit(loss, {"w": jnp.zeros(()), "v": jnp.ones(())}, jnp.ones(8),
            optimizer=optax.sgd(0.01), steps=20, batch_size=8, key=jax.random.key(0),
            log_every=10, progress=False)  # fmt: skip


def test_loss_sees_the_step_and_data_none_is_full_batch():
    x = np.linspace(-1, 1, 11)
    y = 2.0 * x - 1.0

    def loss(p, batch, key, step):
        assert batch is None
        r = p[0] * x + p[1] - y
        return jnp.mean(r**2), {"step_seen": step.astype(float)}

    p, hist = fit(loss, jnp.zeros(2), None, optimizer=optax.sgd(0.5), steps=200,
                  key=jax.random.key(0), log_every=50, progress=False)  # fmt: skip
    np.testing.assert_allclose(np.asarray(p), [2.0, -1.0], atol=1e-8)
    # The record at step s holds the terms of the step that made it: step index s - 1.
    assert [r["step_seen"] for r in hist.train] == [49.0, 99.0, 149.0, 199.0]


def test_ema_matches_its_recursion_and_survives_resume(tmp_path):
    seen = []
    _, hist = fit(_mlp_loss, _mlp(), _data(), steps=25, ema=0.9,
                  callback=lambda s, m, v: seen.append(_leaves(m)), **KW)  # fmt: skip
    avg = _leaves(_mlp())
    for leaves in seen:
        avg = [0.9 * a + 0.1 * b for a, b in zip(avg, leaves, strict=True)]
    for a, b in zip(avg, _leaves(hist.ema_params), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)
    assert type(hist.ema_params) is type(_mlp())
    ckpt = tmp_path / "ckpt"
    fit(_mlp_loss, _mlp(), _data(), steps=10, ema=0.9, checkpoint_dir=ckpt, **KW)
    _, h2 = fit(_mlp_loss, _mlp(), _data(), steps=25, ema=0.9, checkpoint_dir=ckpt, **KW)
    assert h2.start_step == 10
    for a, b in zip(_leaves(hist.ema_params), _leaves(h2.ema_params), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="ema=0.9, not ema=0.5"):
        fit(_mlp_loss, _mlp(), _data(), steps=30, ema=0.5, checkpoint_dir=ckpt, **KW)
    with pytest.raises(ValueError, match="ema is a decay in"):
        fit(_mlp_loss, _mlp(), _data(), steps=3, ema=1.0, **KW)


def test_frozen_leaf_is_untouched_by_adamw_and_has_no_optimiser_state(tmp_path):
    table = jnp.arange(35.0).reshape(5, 7) / 10

    def loss(p, batch, key):
        assert not isinstance(p["table"], train.Frozen)  # the loss sees a plain array
        return jnp.mean((batch @ p["w"] + jnp.sum(p["table"]) * 0.01 - 1.0) ** 2)

    kw = dict(optimizer=optax.adamw(0.05, weight_decay=0.5), steps=30, batch_size=8,
              key=jax.random.key(0), progress=False)  # fmt: skip
    data = np.ones((8, 7))
    # Without the mark AdamW's decoupled weight decay moves the table (the test can fail).
    moved, _ = fit(loss, {"w": jnp.zeros(7), "table": table}, data, **kw)
    assert float(jnp.max(jnp.abs(moved["table"] - table))) > 1e-3
    ckpt = tmp_path / "ckpt"
    p, _ = fit(loss, {"w": jnp.zeros(7), "table": train.frozen(table)}, data,
               checkpoint_dir=ckpt, **kw)  # fmt: skip
    assert isinstance(p["table"], train.Frozen)
    np.testing.assert_array_equal(np.asarray(p["table"].value), np.asarray(table))
    assert float(jnp.max(jnp.abs(p["w"]))) > 1e-3  # the rest trained
    info = json.loads((ckpt / "30" / "jcausal_checksums.json").read_text())["body"]["info"]
    shapes = [tuple(s) for s, _ in info["optimizer"]["shapes"]]
    assert (5, 7) not in shapes and (7,) in shapes  # adam moments for w only
    assert train.unfreeze(p)["table"] is p["table"].value


def test_keep_best_with_all_nan_evaluation_says_so():
    def evaluate(p, data, key):
        return {"dist": jnp.nan * p}

    with pytest.raises(FloatingPointError, match="every evaluation of 'dist' was non-finite"):
        fit(lambda p, b, k: jnp.mean((p - b) ** 2), jnp.zeros(()), jnp.ones(8),
            optimizer=optax.sgd(0.1), steps=6, batch_size=8, key=jax.random.key(0),
            eval_data=jnp.ones(8), eval_fn=evaluate, eval_every=2, keep_best="dist",
            progress=False)  # fmt: skip


def test_sharding_helpers_live_in_parallel():
    from jcausal import parallel

    mesh = parallel.unit_mesh(1)
    replicated, batch, shards = parallel.batch_shardings(mesh)
    assert replicated.spec == jax.sharding.PartitionSpec()
    assert shards == 1 and batch.spec == jax.sharding.PartitionSpec(("units",))
    assert not hasattr(train, "_batch_shardings")
    with pytest.raises(TypeError, match="sharding must be"):
        parallel.batch_shardings("cpu")
    assert os.path.isfile(parallel.__file__)
    # one device: nothing to split the optimiser state over
    specs = parallel.split_leaves({"w": jnp.zeros((64, 64))}, batch)
    assert specs["w"].spec == jax.sharding.PartitionSpec()
    with pytest.raises(TypeError, match="shard_optimizer must be True, False or None"):
        fit(lambda p, b, k: jnp.sum(p**2), jnp.ones(3), None, optimizer=optax.sgd(0.1),
            steps=1, key=jax.random.key(0), progress=False, shard_optimizer="yes")  # fmt: skip
    with pytest.raises(ValueError, match="no sharding was given"):
        fit(lambda p, b, k: jnp.sum(p**2), jnp.ones(3), None, optimizer=optax.sgd(0.1),
            steps=1, key=jax.random.key(0), progress=False, shard_optimizer=True)  # fmt: skip


def test_python_number_picked_by_a_custom_filter_stays_fixed():
    # As before the chunked loop: only arrays are trained (a float has no gradient slot).
    p, _ = fit(lambda p, b, k: (p["w"] - 1.0) ** 2 + p["s"] ** 2,
                  {"w": jnp.zeros(()), "s": 2.0}, None, optimizer=optax.sgd(0.1), steps=30,
                  key=jax.random.key(0), progress=False, trainable=lambda x: True)  # fmt: skip
    assert p["s"] == 2.0 and abs(float(p["w"]) - 1.0) < 1e-2


@pytest.mark.parametrize(
    "make",
    [
        lambda: optax.chain(optax.adam(0.1), optax.noisy_sgd(0.1, key=jax.random.key(0))),
        lambda: optax.chain(optax.adam(0.1), optax.contrib.reduce_on_plateau(patience=2)),
    ],
    ids=["typed_key_in_state", "needs_value"],
)
def test_optimisers_with_keys_or_value_resume_bit_identically(tmp_path, make):
    def loss(p, batch, key):
        return jnp.sum((p - 1.0) ** 2)

    kw = dict(key=jax.random.key(0), progress=False)
    ref, _ = fit(loss, jnp.zeros(3), None, optimizer=make(), steps=30, **kw)
    fit(loss, jnp.zeros(3), None, optimizer=make(), steps=15, checkpoint_dir=tmp_path, **kw)
    got, hist = fit(loss, jnp.zeros(3), None, optimizer=make(), steps=30,
                    checkpoint_dir=tmp_path, **kw)  # fmt: skip
    assert hist.start_step == 15
    np.testing.assert_array_equal(got, ref)


# ----------------------------------------------------------------------------------------------
# compiled chunks are cached across calls; calls longer than a log period; array terms


def test_second_fit_with_the_same_configuration_does_not_recompile():
    traces = []

    def loss(p, batch, key):
        traces.append(1)  # runs only while jax traces the loss
        return jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2)

    opt = optax.adam(1e-2)
    kw = dict(optimizer=opt, steps=30, batch_size=16, progress=False)
    fit(loss, {"w": jnp.zeros(3)}, _data(), key=jax.random.key(0), **kw)
    first = len(traces)
    assert first > 0
    # Other key, other initial values, other data values of the same shape: no new trace.
    p, _ = fit(loss, {"w": jnp.ones(3)}, _data(seed=1), key=jax.random.key(1), **kw)
    assert len(traces) == first
    # Same result as a run that compiles afresh (the cache holds no state of the first run).
    train.cache_clear()
    q, _ = fit(loss, {"w": jnp.ones(3)}, _data(seed=1), key=jax.random.key(1), **kw)
    assert len(traces) > first
    np.testing.assert_array_equal(p["w"], q["w"])
    # A new optimiser object is a new program.
    n = len(traces)
    fit(
        loss,
        {"w": jnp.ones(3)},
        _data(),
        key=jax.random.key(0),
        **(kw | {"optimizer": optax.adam(1e-2)}),
    )
    assert len(traces) > n


def test_long_calls_give_the_same_run_records_and_progress():
    def loss(p, batch, key):
        r = batch["x"] @ p["w"] - batch["y"]
        return jnp.mean(r**2), {"per_unit": r[:3] ** 2, "ok": jnp.all(jnp.isfinite(r))}

    kw = KW | {"steps": 45, "log_every": 5}
    ref, ref_hist = fit(loss, {"w": jnp.zeros(3)}, _data(), **kw)
    seen = []
    got, hist = fit(loss, {"w": jnp.zeros(3)}, _data(), steps_per_call=500,
                    **(kw | {"progress": seen.append}))  # fmt: skip
    np.testing.assert_array_equal(got["w"], ref["w"])
    np.testing.assert_array_equal(hist.loss, ref_hist.loss)
    assert hist.train == ref_hist.train
    assert [r["step"] for r in hist.train] == list(range(5, 46, 5))
    rec = hist.train[-1]
    assert isinstance(rec["per_unit"], list) and len(rec["per_unit"]) == 3 and rec["ok"] is True
    assert sum(seen) == 45 and len(seen) < 9  # fewer host reads than log records
    with pytest.raises(ValueError, match="steps_per_call must be >= 1"):
        fit(loss, {"w": jnp.zeros(3)}, _data(), steps_per_call=0, **kw)
    with pytest.raises(TypeError, match="progress must be True, False or a function"):
        fit(loss, {"w": jnp.zeros(3)}, _data(), **(kw | {"progress": "yes"}))


def test_multisteps_optimizer_object_is_accepted():
    # optax.MultiSteps (gradient accumulation) is an object with init/update, not a tuple: the
    # checkpoint fingerprint once failed on it. sgd(0.1) on (p - 1)^2 applied every 2nd step
    # with the mean of 2 equal gradients: p = 0.2 after 2 steps, 0.36 after 4.
    p, _ = fit(lambda p, b, k: (p - 1.0) ** 2, jnp.zeros(()), None,
               optimizer=optax.MultiSteps(optax.sgd(0.1), 2), steps=4, key=jax.random.key(0),
               progress=False)  # fmt: skip
    assert abs(float(p) - 0.36) < 1e-6
