"""Sharding the unit axis over (fake CPU) devices gives the same answers, still sharded."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

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
