"""Sharded sweeps, counterfactuals and training on 8 fake CPU devices equal one device.

The sweeps: λ split (table replicated or rows split; the default placement of a device
count), and sweeps over regions, years and
stressor weightings (cases split, or cases and λ over two mesh axes).

One subprocess (the device count is fixed when JAX starts) runs every check and prints the
differences; the test asserts them. Tolerances: 1e-12 in float64 for the λ sweeps and the
counterfactuals (measured ~2e-14), 1e-10 for training (the batch mean's sum is reduced over
devices in another order; measured ~1e-15).
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, tempfile
    import jax, jax.numpy as jnp, numpy as np, optax, equinox as eqx
    jax.config.update("jax_enable_x64", True)
    import jcausal as jc
    from jcausal import examples, parallel
    from jcausal.economy import mrio, synthetic_mrio
    from jcausal.train import fit

    assert len(jax.devices()) == 8, jax.devices()
    out = {}
    # 1. λ sweeps: split over 8 devices, and 4 (sweep) x 2 (rows of A)
    m = synthetic_mrio(4, 10, seed=1)
    p = mrio.MRIOProblem(m, "R2", "GHG", "Employment")
    lams = np.concatenate([[0.0], np.geomspace(0.05, 20, 7)])
    kw = dict(steps=40, lr=0.1)
    one = mrio.sweep(p, lams, **kw)
    # a device count takes the default placement: λ split for this 40-sector table, rows
    # split when the table counts as large (the threshold lowered to make it so)
    from jcausal.economy import sharding
    out["auto_small"] = sharding.auto_mesh(40, 8, 8)[0].shape["rows"]
    big = sharding.CPU_ROWS_MIN_BYTES
    sharding.CPU_ROWS_MIN_BYTES = 0
    out["auto_large"] = sharding.auto_mesh(40, 8, 8)[0].shape["rows"]
    r8 = mrio.sweep(p, lams, mesh=8, **kw)
    sharding.CPU_ROWS_MIN_BYTES = big
    for name, mesh in (("sweep8", 8), ("rows8", None),
                       ("rows2", parallel.sweep_mesh(8, rows=2))):
        r = r8 if mesh is None else mrio.sweep(p, lams, mesh=mesh, **kw)
        out[name] = max(float(np.max(np.abs(r.design.u - one.design.u))),
                        float(np.max(np.abs(r.x_all - one.x_all)) / np.abs(one.x_all).max()),
                        float(np.max(np.abs(r.design.loss - one.design.loss))))
    out["moved"] = float(np.max(np.abs(one.design.u)))
    # sweeps over regions (one table), and over years x weightings (tables stacked): the
    # regions split over a "cases" axis and the λ over "sweep" (a jax.make_mesh mesh); the
    # 4 cases over "cases" with the stacked tables' rows over "rows" (sweep_mesh)
    from jcausal.economy import design, sweeps
    regs = [mrio.MRIOProblem(m, r, "GHG", "Employment") for r in ("R1", "R2", "R3", "R4")]
    grid = jax.make_mesh((4, 2), ("cases", "sweep"))
    ref = mrio.sweep_cases(regs, lams, **kw)
    got = mrio.sweep_cases(regs, lams, mesh=grid, case_axis="cases", lambda_axis="sweep", **kw)
    out["regions"] = max(max(float(np.max(np.abs(a.design.u - b.design.u))),
                             float(np.max(np.abs(a.x_all - b.x_all)) / np.abs(a.x_all).max()))
                         for a, b in zip(ref, got))
    blocks = [mrio.domestic_block(t, "R2") for t in (m, synthetic_mrio(4, 10, seed=2))]
    cases = [design.DesignProblem(b, {"GHG": 1.0, "Employment": w}, "Employment")
             for w in (0.0, 0.01) for b in blocks]
    ref = sweeps.sweep_cases(cases, lams[:2], **kw)
    got = sweeps.sweep_cases(cases, lams[:2], mesh=parallel.sweep_mesh(8, rows=2, cases=4),
                             **kw)
    out["years_weights"] = max(max(float(np.max(np.abs(a.u - b.u))),
                                   float(np.max(np.abs(a.loss - b.loss))))
                               for a, b in zip(ref, got))
    out["cases_moved"] = float(np.max(np.abs(ref[3].u)))
    errors = {}
    for name, call in {
        "not_dividing": lambda: mrio.sweep(p, lams[:6], mesh=parallel.sweep_mesh(8), **kw),
        "no_axis": lambda: mrio.sweep(p, lams, mesh=parallel.unit_mesh(8), **kw),
        "rows": lambda: parallel.sweep_mesh(8, rows=3),
        "cases_not_dividing": lambda: sweeps.sweep_cases(
            cases[:3], lams, mesh=parallel.sweep_mesh(8), case_axis="sweep", **kw),
        "no_case_axis": lambda: mrio.sweep_cases(regs, lams, mesh=grid, case_axis="regions",
                                                 **kw),
        "same_axis": lambda: mrio.sweep_cases(regs, lams, mesh=grid, case_axis="sweep",
                                              lambda_axis="sweep", **kw),
        "rows_of_A": lambda: mrio.sweep(mrio.MRIOProblem(synthetic_mrio(3, 3), "R1", "GHG",
                                        "Employment"), lams[:2],
                                        mesh=parallel.sweep_mesh(8, rows=4), **kw),
    }.items():
        try:
            call()
            errors[name] = "no error"
        except ValueError as e:
            errors[name] = str(e)
    out["errors"] = errors
    # 2. counterfactuals with per-unit Hard values and Monte Carlo draws, units sharded
    scm = examples.health()
    obs = jc.sample(jax.random.key(0), scm, 64)
    age = jnp.linspace(20.0, 80.0, 64)
    ref = jc.counterfactual(scm, obs, {"age": jc.Hard(age)}, jax.random.key(1), num_samples=5)
    s_obs, s_age = parallel.shard_units((obs, age))
    got = jc.counterfactual(scm, s_obs, {"age": jc.Hard(s_age)}, jax.random.key(1),
                            num_samples=5)
    out["cf"] = max(float(jnp.max(jnp.abs(got[k] - ref[k]))) for k in ref)
    out["cf_devices"] = len(got["risk"].sharding.device_set)
    # 3. training: 8 devices == 1 (optimiser state split over the devices, the default, or
    # replicated); a checkpoint of 8 devices resumed on 2 and on 1; process-local data. The
    # model's large leaves are split by the optimiser sharding: the 64 x 64 hidden weights
    # along their rows, the (3, 2048) matrix along its columns (3 rows do not divide by 8).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3))
    data = {"x": x, "y": np.tanh(x @ np.array([1.0, -1.0, 0.5]))}
    model = (eqx.nn.MLP(3, 1, 64, 2, key=jax.random.key(0)),
             0.1 * jax.random.normal(jax.random.key(2), (3, 2048)))

    def loss(mdl, batch, key):
        net, w = mdl
        fit_ = jnp.mean((jax.vmap(net)(batch["x"])[:, 0] - batch["y"]) ** 2)
        return fit_ + 1e-2 * jnp.mean((batch["x"] @ w - 0.3) ** 2)

    split_specs = []

    def spy(updates, state, params=None):
        # (the sharding each update leaf gets in the compiled step)
        for u in jax.tree.leaves(updates):
            jax.debug.inspect_array_sharding(u, callback=lambda s: split_specs.append(str(s)))
        return updates, state

    kw = dict(optimizer=optax.adam(1e-2), batch_size=64, key=jax.random.key(1),
              progress=False, log_every=10, ema=0.9)
    leaves = lambda t: jax.tree.leaves(eqx.filter(t, eqx.is_array))
    diff = lambda a, b: max(float(jnp.max(jnp.abs(u - v))) for u, v in
                            zip(leaves(a), leaves(b), strict=True))
    plain, h1 = fit(loss, model, data, steps=40, **kw)
    eight, h8 = fit(loss, model, data, steps=40, sharding=parallel.unit_mesh(8), **kw)
    out["fit8"] = diff(eight, plain)
    out["fit8_ema"] = diff(h8.ema_params, h1.ema_params)
    out["ema_devices"] = len(leaves(h8.ema_params)[1].sharding.device_set)
    kept, _ = fit(loss, model, data, steps=40, sharding=parallel.unit_mesh(8),
                  shard_optimizer=False, **kw)
    out["fit8_replicated"] = diff(kept, plain)
    out["fit_moved"] = diff(plain, model)
    spied = dict(kw, optimizer=optax.chain(optax.adam(1e-2),
                                          optax.GradientTransformation(lambda p: (), spy)))
    fit(loss, model, data, steps=1, sharding=parallel.unit_mesh(8), **spied)
    out["split_specs"] = split_specs
    with tempfile.TemporaryDirectory() as d:
        fit(loss, model, data, steps=20, sharding=parallel.unit_mesh(8), checkpoint_dir=d,
            checkpoint_every=20, **kw)
        resumed, hist = fit(loss, model, data, steps=40, sharding=parallel.unit_mesh(2),
                            checkpoint_dir=d, checkpoint_every=20, **kw)
        out["resume_start"] = hist.start_step
        out["resume8to2"] = diff(resumed, plain)
        resumed1, _ = fit(loss, model, data, steps=40, checkpoint_dir=d, checkpoint_every=20,
                          **kw)
        out["resume_to1"] = diff(resumed1, plain)
    mesh = parallel.unit_mesh(8)
    sliced = parallel.process_local_data(data, mesh)  # one process: its slice is everything
    out["local_data"] = diff(fit(loss, model, sliced, steps=40, sharding=mesh, **kw)[0], plain)
    print("RESULT", json.dumps(out))
    """
)


def test_sharded_sweeps_counterfactuals_and_training_match_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT")][-1]
    out = json.loads(line.split(" ", 1)[1])
    assert out["moved"] > 0.1 and out["fit_moved"] > 1e-2  # the runs did something
    assert out["sweep8"] < 1e-12 and out["rows2"] < 1e-12 and out["rows8"] < 1e-12
    assert out["auto_small"] == 1 and out["auto_large"] == 8
    assert out["regions"] < 1e-12 and out["years_weights"] < 1e-12 and out["cases_moved"] > 0.1
    assert out["cf"] < 1e-12 and out["cf_devices"] == 8
    assert out["fit8"] < 1e-10 and out["local_data"] < 1e-10
    assert out["fit8_replicated"] < 1e-10 and out["fit8_ema"] < 1e-10
    assert out["ema_devices"] == 8  # the moving average comes back whole (replicated)
    # the optimiser's update ran on slices: the hidden weights' rows and w's columns split
    specs = out["split_specs"]
    assert "spec=P('units'" in " ".join(specs), specs
    assert "spec=P(None, 'units')" in " ".join(specs), specs
    assert any("spec=P()" in s for s in specs), specs  # small leaves replicated
    assert out["resume_start"] == 20
    assert out["resume8to2"] < 1e-10 and out["resume_to1"] < 1e-10
    err = out["errors"]
    assert (
        "has 6 λ values, not divisible by the 8 devices of mesh axis 'sweep'" in err["not_dividing"]
    )
    assert "the mesh has no axis 'sweep'" in err["no_axis"] and "['units']" in err["no_axis"]
    assert "rows=3 must be a positive divisor of the 8 devices" in err["rows"]
    assert "a matrix of 9 rows cannot be split over the 4 devices" in err["rows_of_A"]
    assert (
        "has 3 cases, not divisible by the 8 devices of mesh axis 'sweep'"
        in (err["cases_not_dividing"])
    )
    assert "the mesh has no axis 'regions'" in err["no_case_axis"]
    assert "['cases', 'sweep']" in err["no_case_axis"]
    assert "case_axis and lambda_axis are both 'sweep'" in err["same_axis"]


def test_default_placement_rules():
    """The default layout of a sweep given a device count (no devices needed)."""
    from jcausal.economy.sharding import CPU_ROWS_MIN_BYTES, auto_layout

    assert CPU_ROWS_MIN_BYTES == 8 * 2**20
    assert auto_layout(2000, 64, 8)[0] == 8  # CPU, 32 MB: rows over every device
    assert auto_layout(400, 64, 8)[0] == 1  # 1.3 MB: λ split
    assert auto_layout(1024, 64, 8)[0] == 8 and auto_layout(1023, 64, 8)[0] == 1
    assert auto_layout(2002, 64, 8)[0] == 2  # 2002 rows: only 2 row devices divide them
    assert auto_layout(2000, 7, 8)[0] == 8  # all rows split: any λ count
    assert auto_layout(2000, 64, 1)[0] == 1
    # an accelerator keeps the λ split while A fits a quarter of its memory
    gb = 2**30
    assert auto_layout(9800, 64, 8, platform="gpu", memory=16 * gb)[0] == 1
    assert auto_layout(9800, 64, 8, platform="gpu", memory=gb)[0] == 4  # 768 MB / 4 <= 256
    assert auto_layout(9800, 64, 8, platform="gpu", memory=None)[0] == 1
    assert "rows split" in auto_layout(2000, 64, 8)[1]
