"""The ctvae experiment end to end on a tiny configuration (plumbing, chance levels, figures)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from jcausal.experiments import ctvae

# Mostly compilation of the five trained programs, each run for a few steps on tiny images:
# compiled without XLA's optimisations (tests/conftest.py, fast_compile).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fast_compile")]

TINY = dataclasses.replace(
    ctvae.SMOKE,
    size=16,
    dim=8,
    codes=8,
    width=8,
    vae_steps=4,
    vae_rounds=2,
    vae_batch=8,
    ct_steps=3,
    ct_batch=4,
    hidden=8,
    layers=1,
    reader_steps=3,
    eval_units=12,
    chunk=6,
    repeats=2,
    eval_graphs=2,
)


def test_tiny_run_writes_table_and_figures(tmp_path):
    # The CT layer's stream half-way to balanced factors (the option's path end to end).
    # Then two tuning steps on balanced factors (a stage of its own).
    cfg = dataclasses.replace(TINY, sample_balance=0.5, ct_tune_steps=2)
    m = ctvae.run(out=tmp_path, config=cfg, progress=False)
    t = m["table1"]
    assert t["num_actions"] == 10
    assert t["chance"]["action_acc"] == pytest.approx(0.1)
    assert t["chance"]["factor_acc"] == pytest.approx(0.2)
    # The sampler's factor frequencies are (card - 1) / sum(card - 1): 2:3:4:5:11; the
    # baseline keeps them, the CT layer's are mixed half-way to 1/5 each.
    probs = np.array(list(m["train_factor_probs"].values()))
    np.testing.assert_allclose(probs, np.array([2, 3, 4, 5, 11]) / 25, atol=1e-6)
    ct_probs = np.array(list(m["ct_train_factor_probs"].values()))
    np.testing.assert_allclose(ct_probs, 0.5 * probs + 0.1, atol=1e-6)
    freq = sum(v["frequency"] for v in t["per_factor"].values())
    assert freq == pytest.approx(1.0)
    for model in ("ct_vae", "ct_vae_graph_modes", "discriminative"):
        assert 0 <= t[model]["action_acc"] <= t[model]["factor_acc"] <= 1
    assert len(t["perplexity"]) == 2 and all(1 <= p <= 8 for p in t["perplexity"])
    for fig in m["figures"]:
        assert (tmp_path / fig).stat().st_size > 1000
    # Every training is checkpointed under a hash of its settings (a rerun resumes them).
    stages = sorted(p.name.split("-")[0] for p in (tmp_path / "checkpoints").iterdir())
    assert stages == ["ct", "discriminative", "reader", "vae"]
    assert len(list((tmp_path / "checkpoints").glob("vae-*/vae_1"))) == 1
    (tune,) = (tmp_path / "checkpoints").glob("ct-*/ct_tune")
    assert sorted(int(p.name) for p in tune.iterdir() if p.name.isdigit())[-1] == 2
    assert m["ct_last"]["step"] == 2  # the tuning stage's last record
    assert "action_mode_codes" in t and 0 <= t["action_mode_codes"]["unchanged_kept"] <= 1
    codes = t["action_mode_codes"]
    # A changed code predicted right is not X's code: the two shares sum to at most one.
    assert codes["changed_right"] + codes["changed_copied"] <= 1 + 1e-9
    assert 0 <= t["intervention"]["intervened_factor_right_decoding_true_codes"] <= 1
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "table1" in json.dumps(saved)
    with pytest.raises(ValueError, match="--steps"):
        ctvae.run(out=tmp_path / "bad", config=TINY, steps=0)
    with pytest.raises(ValueError, match="lr_floor"):
        ctvae.run(out=tmp_path / "bad", config=dataclasses.replace(TINY, lr_floor=1.5))
    with pytest.raises(ValueError, match="eval_graphs"):
        ctvae.run(out=tmp_path / "bad", config=dataclasses.replace(TINY, eval_graphs=-1))


def test_ema_codebooks_pretrain_in_rounds(tmp_path):
    from jcausal.data.transitions import Shapes

    cfg = dataclasses.replace(TINY, codebook="ema", vae_steps=6, vae_rounds=2)
    vae, info = ctvae.train_vae(cfg, Shapes(cfg.size), jax.random.key(0), tmp_path, False)
    q = vae.quantizer  # unmarked: usable directly after training
    assert q.ema and np.all(np.asarray(q.ema_counts) > 0)
    total = np.asarray(q.ema_counts).sum(-1, keepdims=True)
    smooth = (np.asarray(q.ema_counts) + 1e-5) / (total + cfg.codes * 1e-5) * total
    np.testing.assert_allclose(q.codebooks, np.asarray(q.ema_sums) / smooth[..., None], rtol=1e-4)
    assert len(info["restarted_codes"]) == 1
    with pytest.raises(ValueError, match="codebook must be"):
        ctvae.train_vae(dataclasses.replace(cfg, codebook="kmeans"), Shapes(16), None, tmp_path, 0)


@pytest.mark.parametrize("field, value", [("lr", -1e-3), ("lr", 0.0), ("ct_lr", float("nan")),
                                          ("ct_lr", -2e-3), ("ct_lr", True)])  # fmt: skip
def test_bad_learning_rates_are_named_before_training(tmp_path, field, value):
    cfg = dataclasses.replace(ctvae.SMOKE, **{field: value})
    with pytest.raises(ValueError, match=f"Config.{field} must be a finite number > 0"):
        ctvae.run(config=cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "field, value",
    [("causal_weight", -1.0), ("action_weight", float("nan")), ("mask_target_weight", "10"),
     ("changed_weight", True)],
)  # fmt: skip
def test_bad_loss_weights_are_named_before_training(tmp_path, field, value):
    cfg = dataclasses.replace(ctvae.SMOKE, **{field: value})
    with pytest.raises(ValueError, match=f"Config.{field} must be a finite number >= 0"):
        ctvae.run(config=cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("value", [0, (256, 0), (), "256", (128, 2.5), True])
def test_bad_local_readout_is_named_before_training(tmp_path, value):
    cfg = dataclasses.replace(ctvae.SMOKE, local=value)
    with pytest.raises(ValueError, match="Config.local: CTLayer: local must be"):
        ctvae.run(config=cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sample_balance", -0.5, "a number in"),
        ("sample_balance", float("nan"), "a number in"),
        ("sample_balance", True, "a number in"),
        ("tune_balance", 1.01, "a number in"),
        ("tune_balance", "1", "a number in"),
        ("ct_tune_steps", -1, "an integer >= 0"),
        ("ct_tune_steps", 2.5, "an integer >= 0"),
        ("ct_tune_steps", True, "an integer >= 0"),
    ],
)
def test_bad_balance_settings_are_named_before_training(tmp_path, field, value, message):
    cfg = dataclasses.replace(ctvae.SMOKE, **{field: value})
    with pytest.raises(ValueError, match=f"Config.{field} must be {message}"):
        ctvae.run(config=cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sample_balance_on_a_real_set_balances_its_stream(tmp_path, monkeypatch):
    from jcausal.data.factorial import FactorialSet, FactorialSource
    from jcausal.nn import MCQVAE

    card = (2, 3, 5)
    grid = np.stack(np.unravel_index(np.arange(30), card), -1)
    images = np.zeros((30, 4, 4, 1), np.uint8)
    data = FactorialSet(FactorialSource(lambda i: (images[i], grid[i]), card, list("abc")), 16)
    streams = []

    def record(loss, params, stream, steps, *args, **kwargs):  # the stages' data, no training
        streams.append(stream)
        return params, None

    monkeypatch.setattr(ctvae, "_fit", record)
    cfg = dataclasses.replace(TINY, sample_balance=1.0, ct_tune_steps=2, tune_balance=0.5)
    vae = MCQVAE(16, cfg.dim, cfg.codebooks, cfg.codes, cfg.width, key=jax.random.key(0))
    ctvae.train_ct(cfg, data, vae, jax.random.key(1), tmp_path, False)
    natural = np.array([1, 2, 4]) / 7
    np.testing.assert_allclose(streams[0].factor_probs, [1 / 3] * 3)
    np.testing.assert_allclose(streams[1].factor_probs, 0.5 * natural + 0.5 / 3)
    assert streams[1].balance == 0.5 and data.sampler("train", 2).balance == 0.0
