"""Sharding the unit axis over (fake CPU) devices gives the same answers, still sharded."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jcausal import parallel

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import jcausal as jc
    from jcausal import examples, parallel

    assert len(jax.devices()) == 8, jax.devices()
    scm = examples.health()
    obs = jc.sample(jax.random.key(0), scm, 64)
    ref = jc.counterfactual(scm, obs, {"age": jc.Shift(-10.0)}, jax.random.key(1))
    mesh = parallel.unit_mesh()
    sharded = parallel.shard_units(obs, mesh)
    assert len(sharded["bp"].sharding.device_set) == 8
    out = jc.counterfactual(scm, sharded, {"age": jc.Shift(-10.0)}, jax.random.key(1))
    for k in ref:
        np.testing.assert_allclose(np.asarray(out[k]), np.asarray(ref[k]), rtol=1e-12)
    assert len(out["risk"].sharding.device_set) == 8, out["risk"].sharding
    lp = jc.log_prob(scm, sharded)
    np.testing.assert_allclose(np.asarray(lp), np.asarray(jc.log_prob(scm, obs)), rtol=1e-12)
    try:
        parallel.shard_units({"x": jnp.zeros(10)}, mesh)
    except ValueError as e:
        assert "['x'] has 10 units, not divisible by 8" in str(e), e
    else:
        raise AssertionError("no error for 10 units on 8 devices")
    print("OK")
    """
)


def test_sharded_counterfactual_matches_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("OK")


def test_mesh_errors():
    with pytest.raises(ValueError, match="asked for 1000 devices"):
        parallel.unit_mesh(1000)
    out = parallel.shard_units({"a": np.zeros(4), "s": np.float64(1.0)}, parallel.unit_mesh(1))
    np.testing.assert_array_equal(out["a"], 0.0)


LAPACK = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import PartitionSpec as P
    import jcausal as jc
    from jcausal import parallel
    from jcausal.economy import mrio, synthetic_mrio

    assert len(jax.devices()) == 8, jax.devices()
    m = synthetic_mrio(4, 16, seed=0)  # 64 sectors: solved by LU (DIRECT_MAX = 100)
    s = jnp.exp(jnp.linspace(-0.3, 0.0, 16))[:, None] * jnp.ones(64)

    def grads(A, s):  # per row of s: d(total output)/ds through the LU and its adjoint
        def total(si):
            return jc.linear_fixed_point(si[:, None] * A, si * m.y, throw=False)[0].sum()
        return jax.vmap(jax.grad(total))(s)

    ref = jax.jit(grads)(m.A, s)
    lam = parallel.sweep_mesh(8)  # 2 LUs per device, each device on its own
    split = jax.jit(jax.shard_map(grads, mesh=lam, in_specs=(P(), P("sweep")),
                                  out_specs=P("sweep"), check_vma=False))(m.A, s)
    rows = parallel.sweep_mesh(8, rows=8)  # A's rows split: every device factorises all 16
    by_rows = jax.jit(grads)(parallel.split_rows(m.A, rows), s)
    scale = float(jnp.max(jnp.abs(ref)))
    # the sweep of the bug report: rows split over 8 devices, one device as reference
    p = mrio.MRIOProblem(m, "R1", "GHG", "Employment")
    lams = np.geomspace(0.01, 100, 8)
    one = mrio.sweep(p, lams, steps=2, lr=0.05)
    r8 = mrio.sweep(p, lams, steps=2, lr=0.05, mesh=rows)
    print("RESULT", float(jnp.max(jnp.abs(split - ref))) / scale,
          float(jnp.max(jnp.abs(by_rows - ref))) / scale,
          float(np.max(np.abs(r8.design.u - one.design.u))),
          float(np.max(np.abs(r8.x_all - one.x_all)) / np.abs(one.x_all).max()),
          float(np.max(np.abs(one.design.u))))
    """
)


def _result_on_8_devices(script: str, what: str, timeout: int = 240) -> list[float]:
    """The numbers of ``script``'s last ``RESULT`` line, run on 8 CPU devices in a subprocess.

    The timeout turns a deadlock (a process that sleeps forever) into a failure, not a hung
    suite.
    """
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    try:
        res = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} on 8 CPU devices did not finish in {timeout} s (deadlock)")
    assert res.returncode == 0, res.stderr[-3000:]
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT")][-1]
    return [float(v) for v in line.split()[1:]]


def test_batched_lu_on_cpu_devices_does_not_deadlock():
    """Batched LU solves (and their adjoints) on 8 CPU devices finish and equal one device.

    jaxlib 0.10.2 splits a batched LAPACK call over XLA's CPU thread pool and blocks the
    calling pool thread; with every device doing so at once the process slept forever
    (``jcausal.solvers.lapack``). Before the fix each of these three programs hung; the
    subprocess's timeout turns a regression into a failure, not a hung suite.
    """
    split, by_rows, u, x, moved = _result_on_8_devices(LAPACK, "batched LU solves")
    assert split < 1e-12 and by_rows < 1e-12  # relative to the largest gradient entry
    assert u < 1e-12 and x < 1e-12 and moved > 1e-3  # the sweep moved, equal to one device


NEWTON_FIT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    jax.config.update("jax_enable_x64", True)
    import jcausal as jc
    from jcausal import parallel
    from jcausal.train import fit

    assert len(jax.devices()) == 8, jax.devices()
    n = 64
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.normal(size=(n, n)) * 0.3 / np.sqrt(n))
    data = {"b": rng.normal(size=(128, n))}

    def loss(theta, batch, key):
        def one(b):  # a nonlinear map, solved by Newton with an LU of its n x n Jacobian
            f = lambda x, a: jnp.tanh(W @ x) * a[0] + a[1]
            x, _ = jc.fixed_point(f, jnp.zeros(n), (theta, b), solver=jc.Newton(linear_solver="lu"))
            return jnp.sum(x**2)
        return jnp.mean(jax.vmap(one)(batch["b"]))

    kw = dict(optimizer=optax.adam(1e-2), steps=20, batch_size=64, key=jax.random.key(1),
              progress=False, log_every=10)
    theta0 = jnp.asarray(0.5)
    one, _ = fit(loss, theta0, data, **kw)
    eight, _ = fit(loss, theta0, data, sharding=parallel.unit_mesh(), **kw)
    print("RESULT", float(abs(one - eight)), float(abs(one - theta0)))
    """
)


def test_newton_lu_in_fit_on_cpu_devices_does_not_deadlock():
    """``Newton("lu")`` inside ``fit``'s loop on 8 CPU devices finishes and equals one device.

    Its LU went through lineax (jax.scipy's batched ``getrf``), which jaxlib 0.10.2 splits over
    XLA's CPU pool: with 8 units per device the process slept forever (measured: 13 s of CPU in
    5 min). It now factorises with ``jcausal.solvers.lapack``, one matrix at a time on CPU.
    """
    diff, moved = _result_on_8_devices(NEWTON_FIT, "Newton('lu') in fit")
    assert diff < 1e-12 and moved > 1e-2  # trained, and the same on 8 devices as on 1


FIT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax, equinox as eqx
    jax.config.update("jax_enable_x64", True)
    from jcausal import parallel
    from jcausal.train import fit

    assert len(jax.devices()) == 8, jax.devices()
    mesh = parallel.unit_mesh()
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,), mesh.axis_types
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3))
    data = {"x": x, "y": np.tanh(x @ np.array([1.0, -1.0, 0.5]))}
    model = eqx.nn.MLP(3, 1, 8, 1, key=jax.random.key(0))
    seen = []

    def loss(m, batch, key):
        seen.append(batch["x"])
        return jnp.mean((jax.vmap(m)(batch["x"])[:, 0] - batch["y"]) ** 2)

    kw = dict(optimizer=optax.adam(1e-2), steps=40, batch_size=64, key=jax.random.key(1),
              progress=False, log_every=10)
    plain, _ = fit(loss, model, data, **kw)
    sharded, _ = fit(loss, model, data, sharding=mesh, **kw)
    a = jax.tree.leaves(eqx.filter(plain, eqx.is_array))
    b = jax.tree.leaves(eqx.filter(sharded, eqx.is_array))
    assert len(sharded.layers[0].weight.sharding.device_set) == 8  # replicated on the mesh
    print(max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, b)))
    """
)


def test_fit_on_unit_mesh_matches_single_device():
    # unit_mesh is a jax.make_mesh mesh with an Auto axis: fit constrains each batch to it.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    res = subprocess.run(
        [sys.executable, "-c", FIT], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert float(res.stdout.strip().splitlines()[-1]) < 1e-10


def test_batch_shardings_reads_meshes_and_named_shardings():
    mesh = parallel.unit_mesh(1)
    replicated, batch, shards = parallel.batch_shardings(mesh)
    assert shards == 1 and replicated.spec == PartitionSpec() and batch.mesh is mesh
    assert parallel.batch_shardings(None) == (None, None, 1)
    named = NamedSharding(mesh, PartitionSpec("units"))
    assert parallel.batch_shardings(named)[1] is named
    with pytest.raises(TypeError, match="sharding must be a jax.sharding.Mesh"):
        parallel.batch_shardings(jax.devices()[0])
