"""Evaluation of a trained CT-VAE on held-out transitions (the experiment's metrics).

Causal mode's action retrieval (the engine's posterior of ``a``), the discriminative baseline,
reconstruction and perplexity, action mode on the codes, the mask against the changed cells,
and interventions read back by the factor reader: see :func:`evaluate`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import ctvae
from ..nn import perplexity


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if x.size else None


def _chunks(fn, batch: dict, size: int):
    n = len(batch["a"])
    outs = [fn({k: v[i : i + size] for k, v in batch.items()}) for i in range(0, n, size)]
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outs)


def evaluate(cfg, shapes, vae, ct, baseline, reader, test: dict) -> dict:
    """Causal-mode accuracy, baselines, reconstruction, perplexity and interventions.

    ``baseline=None`` leaves the discriminative baseline out (quick evaluations of the CT
    layer alone).
    """
    model = ctvae.scm(vae, ct)
    f_true = test["a"] // 2
    q = _chunks(lambda b: ctvae.action_posterior(model, b["x"], b["y"]), test, cfg.chunk)
    pred = q.argmax(-1)
    modes = {
        "action_acc": float(np.mean(pred == test["a"])),
        "factor_acc": float(np.mean(pred // 2 == f_true)),
    }
    if cfg.eval_graphs:
        keys = jax.random.split(jax.random.key(777), int(cfg.eval_graphs))
        post = eqx.filter_jit(lambda m, x, y: ctvae.action_posterior(m, x, y, keys))
        drawn = ctvae.scm(vae, ct, keys[0])
        pred = _chunks(lambda b: post(drawn, b["x"], b["y"]), test, cfg.chunk).argmax(-1)
    codes = jax.jit(jax.vmap(vae.codes))
    if baseline is not None:
        pair = jax.jit(
            lambda x, y: jax.vmap(baseline)(jax.vmap(vae.codes)(x), jax.vmap(vae.codes)(y))
        )
        base = _chunks(lambda b: pair(b["x"], b["y"]), test, cfg.chunk).argmax(-1)
    else:
        base = np.full_like(pred, -1)
    counts = np.bincount(test["a"], minlength=shapes.num_actions)
    out = {
        "num_actions": shapes.num_actions,
        "ct_vae": {
            "action_acc": float(np.mean(pred == test["a"])),
            "factor_acc": float(np.mean(pred // 2 == f_true)),
        },
        "ct_vae_graph_modes": modes,
        "discriminative": {
            "action_acc": float(np.mean(base == test["a"])),
            "factor_acc": float(np.mean(base // 2 == f_true)),
        },
        "chance": {
            "action_acc": 1.0 / shapes.num_actions,
            "factor_acc": 1.0 / shapes.num_factors,
            "majority_action_acc": float(counts.max() / counts.sum()),
            "majority_factor_acc": float(np.bincount(f_true).max() / len(f_true)),
        },
        # A factor without test transitions (tiny runs) has no accuracy: None, not NaN.
        "per_factor": {
            name: {
                "frequency": float(np.mean(f_true == f)),
                "ct_vae_factor_acc": _mean(pred[f_true == f] // 2 == f),
                "ct_vae_action_acc": _mean(pred[f_true == f] == test["a"][f_true == f]),
                "discriminative_factor_acc": _mean(base[f_true == f] // 2 == f),
            }
            for f, name in enumerate(shapes.names)
        },
    }
    if baseline is None:
        del out["discriminative"]
        for v in out["per_factor"].values():
            del v["discriminative_factor_acc"]
    recon = jax.jit(jax.vmap(lambda x: vae.decode_codes(vae.codes(x))))
    rx = _chunks(lambda b: {"r": recon(b["x"])}, test, cfg.chunk)["r"]
    out["recon_mse"] = float(np.mean((rx - test["x"]) ** 2))
    cx = np.asarray(codes(test["x"]))
    out["perplexity"] = [float(p) for p in perplexity(jnp.asarray(cx), vae.num_codes)]
    out["codes_used"] = [len(np.unique(cx[..., c])) for c in range(vae.num_codebooks)]
    # Action mode on the codes: the most likely code grid under the true action against Y's.
    cy = np.asarray(codes(test["y"]))
    mode = jax.jit(jax.vmap(lambda c, a: jnp.argmax(ct(c, a), -1)))
    cyhat = _chunks(lambda b: {"c": mode(jnp.asarray(b["cx"]), b["a"])},
                    {"cx": cx, "a": test["a"]}, cfg.chunk)["c"]  # fmt: skip
    changed = cy != cx
    out["action_mode_codes"] = {
        "changed_fraction": float(np.mean(changed)),
        "changed_right": _mean(cyhat[changed] == cy[changed]),
        # Of the codes the action changes, the share the layer left at X's code (a copy).
        "changed_copied": _mean(cyhat[changed] == cx[changed]),
        "unchanged_kept": _mean(cyhat[~changed] == cy[~changed]),
    }
    # Where the mask (its mode, from X's codes and the action) says the action acts, against
    # the cells whose codes the action changed.
    mask = jax.jit(jax.vmap(lambda c, a: ct.graph(ct.features(c), a, None)["mask"]))
    on = _chunks(lambda b: {"m": mask(jnp.asarray(b["cx"]), b["a"])},
                 {"cx": cx, "a": test["a"]}, cfg.chunk)["m"] > 0  # fmt: skip
    cell = changed.any(-1).reshape(on.shape)
    out["action_mode_codes"]["mask_on_changed_cells"] = _mean(on[cell])
    out["action_mode_codes"]["mask_on_unchanged_cells"] = _mean(on[~cell])
    # Interventions, read back by the factor classifier trained on the generator's labels.
    yhat = _chunks(lambda b: {"y": ctvae.intervene(model, b["x"], b["a"])}, test, cfg.chunk)["y"]
    read = jax.jit(jax.vmap(reader))
    fy_hat = np.asarray(read(jnp.asarray(yhat)).argmax(-1))
    fy_true_read = np.asarray(read(jnp.asarray(test["y"])).argmax(-1))
    # The ceiling of an intervention through the codec: Y's own codes decoded, read back.
    ry = _chunks(lambda b: {"r": recon(b["y"])}, test, cfg.chunk)["r"]
    fy_codec = np.asarray(read(jnp.asarray(ry)).argmax(-1))
    rows = np.arange(len(f_true))
    others = np.ones_like(test["fy"], bool)
    others[rows, f_true] = False
    out["intervention"] = {
        "intervened_factor_right": float(np.mean(fy_hat[rows, f_true] == test["fy"][rows, f_true])),
        "other_factors_kept": float(np.mean((fy_hat == test["fy"])[others])),
        "all_factors_right": float(np.mean(np.all(fy_hat == test["fy"], -1))),
        "reader_acc_on_true_y": float(np.mean(fy_true_read == test["fy"])),
        "reader_all_right_on_true_y": float(np.mean(np.all(fy_true_read == test["fy"], -1))),
        "intervened_factor_right_decoding_true_codes": float(
            np.mean(fy_codec[rows, f_true] == test["fy"][rows, f_true])
        ),
        "intervened_factor_right_per_factor": {
            name: _mean(fy_hat[f_true == f, f] == test["fy"][f_true == f, f])
            for f, name in enumerate(shapes.names)
        },
    }
    return out


__all__ = ["evaluate"]
