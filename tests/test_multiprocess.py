"""Two processes equal one: a sharded counterfactual batch and a sharded λ sweep.

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
    pid, port = int(sys.argv[1]), sys.argv[2]
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
    out = {}
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
            [sys.executable, str(script), str(i), port],
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
    line = [x for x in outs[0][0].splitlines() if x.startswith("RESULT")][-1]
    res = json.loads(line.split(" ", 1)[1])
    assert res["cf_shape"] == [3, 64]
    assert res["cf"] < 1e-12
    assert res["moved"] > 0.1  # the sweep did move the interventions
    assert res["sweep_u"] < 1e-12 and res["sweep_x"] < 1e-12
