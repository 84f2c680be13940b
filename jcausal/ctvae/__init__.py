"""CT-VAE (causal transition VAE): the CT layer on MCQ-VAE codes, its losses, and the SCM.

* :class:`CTLayer` — action mask, per-action pair MLPs, straight-through Gumbel graph, GATv2 GNN.
* :func:`ct_loss` — standard, action and causal modes with the graph regularisers (eqs. 6-15).
* :func:`scm` — ``x``, ``a``, ``y`` as an SCM; :func:`action_posterior` is causal mode through
  the engine's ``log_prob``; :func:`intervene` and :func:`repeat_action` apply actions.

The MCQ-VAE is :class:`jcausal.nn.MCQVAE`; the data are :mod:`jcausal.data.transitions`.
"""

from .layer import CTLayer, gumbel_bernoulli, local_widths, position_encoding
from .model import (
    Weights,
    action_logliks,
    action_posterior,
    batch_codes,
    code_loglik,
    ct_loss,
    intervene,
    mask_rate,
    mask_target_loss,
    repeat_action,
    scm,
)

__all__ = [
    "CTLayer",
    "Weights",
    "action_logliks",
    "action_posterior",
    "batch_codes",
    "code_loglik",
    "ct_loss",
    "gumbel_bernoulli",
    "intervene",
    "local_widths",
    "mask_rate",
    "mask_target_loss",
    "position_encoding",
    "repeat_action",
    "scm",
]
