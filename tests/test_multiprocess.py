"""Two processes equal one: a sharded counterfactual batch and a sharded λ sweep; checkpoints.

The processes run on this machine (JAX's distributed runtime, gloo collectives on CPU, 2 × 4
devices).
Each process holds only its half of the units (``parallel.process_local_data``); results spread
over both processes are gathered with ``parallel.to_host``. The launch is the README's
"Scaling out" recipe: one command per process with an explicit coordinator address.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import json, sys
    pid, port, ckpt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    import jax.numpy as jnp, numpy as np
    import jcausal as jc
    from jcausal import examples, parallel
    from jcausal.economy import mrio, synthetic_mrio

    assert jax.process_count() == 2 and len(jax.devices()) == 8, jax.devices()
    assert len(jax.local_devices()) == 4
    scm = examples.health()
    obs = jc.sample(jax.random.key(0), scm, 64)
    age = jnp.linspace(20.0, 80.0, 64)  # Hard values with a unit axis
    mesh = parallel.unit_mesh()
    half = slice(32 * pid, 32 * (pid + 1))  # this process's units only
    local = jax.tree.map(lambda v: np.asarray(v)[half], obs)
    g_obs, g_age = parallel.process_local_data((local, np.asarray(age)[half]), mesh)
    assert not g_age.is_fully_addressable
    got = jc.counterfactual(scm, g_obs, {"age": jc.Hard(g_age)}, jax.random.key(1),
                            num_samples=3)
    got = parallel.to_host(got)
    m = synthetic_mrio(2, 4, seed=1)
    p = mrio.MRIOProblem(m, "R2", "GHG", "Employment")
    lams = np.concatenate([[0.0], np.geomspace(0.05, 20, 7)])
    two = mrio.sweep(p, lams, steps=70, lr=0.1, mesh=parallel.sweep_mesh())
    # training with checkpoints in one shared folder: orbax writes the arrays, process 0 alone
    # the checksum sidecar (the others wait at a barrier); a resumed run equals an unbroken one
    import equinox as eqx, optax
    from jcausal.train import checkpoint, fit
    writes, real = [], checkpoint._atomic_write
    checkpoint._atomic_write = lambda path, text: (writes.append(path), real(path, text))[1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    data = {"x": x[32 * pid:][:32], "y": np.tanh(x @ np.array([1.0, -1.0, 0.5]))[32 * pid:][:32]}
    data = parallel.process_local_data(data, mesh)
    # (its 64 x 64 weights' Adam state is split over both processes' devices: fit gathers it
    # before writing a checkpoint and splits it again on restore)
    model = eqx.nn.MLP(3, 1, 64, 2, key=jax.random.key(0))
    loss = lambda mdl, b, key: jnp.mean((jax.vmap(mdl)(b["x"])[:, 0] - b["y"]) ** 2)
    kw = dict(optimizer=optax.adam(1e-2), batch_size=32, key=jax.random.key(1), progress=False,
              log_every=5, sharding=mesh, steps_per_call=5)
    unbroken, _ = fit(loss, model, data, steps=20, **kw)
    fit(loss, model, data, steps=10, checkpoint_dir=ckpt, checkpoint_every=10, **kw)
    resumed, hist = fit(loss, model, data, steps=20, checkpoint_dir=ckpt, checkpoint_every=10,
                        **kw)
    leaves = lambda t: jax.tree.leaves(eqx.filter(t, eqx.is_array))
    out = {"sidecar_writes": len(writes), "resume_start": hist.start_step,
           "resumed": max(float(jnp.max(jnp.abs(a - b)))
                          for a, b in zip(leaves(resumed), leaves(unbroken))),
           "trained": max(float(jnp.max(jnp.abs(a - b)))
                          for a, b in zip(leaves(unbroken), leaves(model)))}
    if pid == 0:  # the single-process references, on this process's own devices
        ref = jc.counterfactual(scm, obs, {"age": jc.Hard(age)}, jax.random.key(1),
                                num_samples=3)
        out["cf"] = max(float(np.max(np.abs(got[k] - np.asarray(ref[k])))) for k in ref)
        out["cf_shape"] = list(got["risk"].shape)
        one = mrio.sweep(p, lams, steps=70, lr=0.1)
        out["sweep_u"] = float(np.max(np.abs(one.design.u - two.design.u)))
        out["sweep_x"] = float(np.max(np.abs(one.x_all - two.x_all)) / np.abs(one.x_all).max())
        out["moved"] = float(np.max(np.abs(one.design.u)))
    print("RESULT", json.dumps(out), flush=True)
    jax.distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port, str(tmp_path / "ckpt")],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        pytest.fail("the two processes did not finish in 240 s")
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    res, other = (
        json.loads([x for x in o.splitlines() if x.startswith("RESULT")][-1].split(" ", 1)[1])
        for o, _ in outs
    )
    assert res["cf_shape"] == [3, 64]
    assert res["cf"] < 1e-12
    assert res["moved"] > 0.1  # the sweep did move the interventions
    assert res["sweep_u"] < 1e-12 and res["sweep_x"] < 1e-12
    # checkpoints: steps 10 and 20, each sidecar written once, by process 0
    assert res["sidecar_writes"] == 2 and other["sidecar_writes"] == 0
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["10", "20"]
    for r in (res, other):
        assert r["resume_start"] == 10 and r["resumed"] < 1e-12 and r["trained"] > 1e-2
