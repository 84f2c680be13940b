"""The causal transition (CT) layer of CT-VAE (sec. 3.4, Figs. 2-3, eqs. 2-5).

Nodes are the cells of the latent code grid (``N = h w``, 64 for an 8x8 grid); a node's
features are the one-hot codes of its ``C`` codebooks and a sinusoidal encoding of its position.
For an action ``a`` (or the null action ``A``, "no intervention"):

1. **Intervention mask** ``R_a`` (eq. 4): node ``i`` is affected by ``a`` with probability
   ``sigmoid(rho_{a,i})``, ``rho = MLP(features_i)_a + b_{a,i}`` (the input decides where the
   object is, the bias which cells an action reaches); sampled with the straight-through
   Gumbel-Bernoulli trick. The null action affects no node.
2. **Adjacency** (eqs. 3-4): ``alpha_ij = MLP^{a}([L_i, L_j])`` for affected targets ``i`` and
   ``MLP^{null}`` for the others, one MLP per action plus the null one. The MLPs' first layer is
   factorised, ``W [L_i; L_j] = U L_i + V L_j``, so a pair costs ``O(hidden)`` instead of
   ``O(features x hidden)``. ``M_ij ~ Bernoulli(sigmoid(alpha_ij))`` (straight-through Gumbel).
3. **GNN** (eq. 2): GATv2-style attention (Brody et al. 2022) ``e_ij = w . LeakyReLU(W_t h_i +
   W_s h_j)`` weighted by the edges, ``m_i = sum_j M_ij exp(e_ij) V h_j / sum_j M_ij exp(e_ij)``,
   residual updates, each followed by a node-wise MLP (optional, ``ffn``); the action enters
   the nodes it affects (``R_i onehot(a)``). The readout
   gives logits over the ``K`` codes of every codebook, plus a learned multiple of the input's
   one-hot codes (a transition leaves most cells unchanged).
4. **Keep gate** (optional, ``gate=True``; ours): the readout as a mixture per node and codebook,
   ``p(L_yi = k) = g_i 1[k = L_xi] + (1 - g_i) softmax(head(h_i))_k`` with
   ``g_i = sigmoid(w . h_i + b)``: "keep the input code, or draw a new one from the GNN". The
   node's state ``h_i`` carries the action (where the mask lets it in) and its parents'
   messages, so where an action changes codes is one scalar per node, while without the gate
   the readout must lower the logit of whichever code the node holds, through a rank-``hidden``
   linear map, differently for every action. The output is then normalised log-probabilities
   (still logits of a categorical per code: the engine's Gumbel-max is unchanged).

5. **Neighbourhood** (optional, ``neighbours=True``; ours): the one-hot codes of the 8
   neighbouring cells join a node's input to the mask network and the GNN's embedding. The
   MCQ-VAE's encoder sees beyond a cell, so an atomic change (a shift, a new shape) changes the
   codes of cells around the object too, and the new code of a cell is a local function of its
   neighbourhood; without it a cell learns its neighbours only through attention messages, and
   its mask (where an action acts) sees only its own codes.

6. **Readout per action** (optional, ``action_heads=True``): the readout of node ``i`` is
   ``head^a`` where ``R_{a,i} = 1`` and ``head^null`` elsewhere, the selection eq. (4) makes
   between the action's and the null pair MLP, applied to the network that maps the node's
   state to its new code. With one shared readout the action reaches the logits only as an
   additive embedding (linear in the one-hot code and in the action, bar the attention's
   ReLU), so "code ``c`` under action ``a`` becomes ``c'``", a lookup on the pair, has no
   direct path; ``head^a`` applied to the node's own code is that lookup, one table per
   action (rank ``hidden``).

7. **Copy prior** (``skip``): the scalar weight of the input's one-hot codes in every node's
   logits. At 8 (the identity initialisation's default) a node keeps its code with
   probability ``e^8 / (e^8 + K - 1) = 0.99`` (``K = 32``) until the readout outweighs it, and
   Adam moves the scalar by at most ``lr`` per step (0.43 in 500 steps of ``lr = 1e-3``
   measured): the codes an action changes were then copied with probability 0.87-0.97.

8. **Local readout** (optional, ``local=W`` or ``local=(W1, W2, ...)``; ours): an MLP with
   hidden layers of those widths (ReLU) from a node's features (codes, position, with
   ``neighbours`` its 8 neighbours' codes) and the action to logits, added where the mask is
   on; its output layer starts at zero, so the identity initialisation is kept. The GNN's
   node state is ``hidden`` wide and its readouts are linear, while a cell's new code under
   some actions is a joint function of its colours and its place on the object; the local
   MLP gives that function a direct path. The part of its first layer that reads the
   features does not depend on the action, so it is computed once per unit; later layers
   run once per action scored.

In evaluation (``key=None``) the mask and the graph are the modes of their Bernoullis
(``sigmoid > 1/2``), so the transition is a deterministic function of ``(codes, a)``: that is
what the SCM mechanism :class:`jcausal.image.VQTransition` needs for exact abduction.
The exogenous ``z`` of eq. (2) is not a separate input: the Gumbel noise of the output codes
(the engine's abduction) plays its part.

Sizes (the seed uses 800-unit pair MLPs; ``hidden = 32`` is enough here): cost
``O(actions x N^2 x hidden)`` per unit.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray


def local_widths(local: int | Sequence[int] | None) -> tuple[int, ...]:
    """The local readout's hidden widths from ``local`` (``()``: none); bad ones: ``ValueError``."""
    if local is None:
        return ()
    many = isinstance(local, Sequence) and not isinstance(local, str)
    widths = tuple(local) if many else (local,)
    if not widths or any(
        isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1 for w in widths
    ):
        raise ValueError(
            "CTLayer: local must be an integer >= 1, a non-empty sequence of them (one width "
            f"per hidden layer) or None, got {local!r}"
        )
    return tuple(int(w) for w in widths)


def position_encoding(h: int, w: int, dims: int = 16) -> np.ndarray:
    """Sinusoidal 2-D position encoding ``(h w, dims)``: ``dims / 2`` features per axis."""
    if dims % 4:
        raise ValueError(f"position encoding dims must be a multiple of 4, got {dims}")
    q = dims // 4
    freq = 1.0 / (10.0 ** (np.arange(q) / q))

    def axis(n):
        p = np.arange(n)[:, None] * freq[None] * np.pi / 2
        return np.concatenate([np.sin(p), np.cos(p)], -1)

    ay, ax = axis(h), axis(w)
    out = np.concatenate(
        [np.repeat(ay, w, axis=0), np.tile(ax, (h, 1))], -1
    )  # row-major cells, like the code grid reshaped to (h w, C)
    return out.astype(np.float32)


def gumbel_bernoulli(
    key: PRNGKeyArray | None, logits: Array, temperature: float = 1.0
) -> Float[Array, "..."]:
    """Straight-through Gumbel-Bernoulli sample of ``Bernoulli(sigmoid(logits))``.

    The forward value is exactly 0 or 1 (``P(1) = sigmoid(logits)``); the gradient is that of
    the relaxed sample ``sigmoid((logits + L) / temperature)``, ``L ~ Logistic(0, 1)`` (the
    difference of two Gumbels), as in Jang et al. 2017. With ``key=None`` it is the mode,
    ``1[logits > 0]``, with the gradient of ``sigmoid(logits / temperature)``.
    """
    noise = 0.0 if key is None else jax.random.logistic(key, logits.shape, logits.dtype)
    soft = jax.nn.sigmoid((logits + noise) / temperature)
    hard = (logits + noise > 0).astype(soft.dtype)
    return soft + jax.lax.stop_gradient(hard - soft)


class _Attention(eqx.Module):
    w_t: Array
    w_s: Array
    att: Array
    w_v: Array
    w_o: Array
    ff1: Array | None
    ff_b: Array | None
    ff2: Array | None

    def __init__(self, hidden: int, key: PRNGKeyArray, identity: bool, ffn: bool):
        k = jax.random.split(key, 5)
        kf = jax.random.split(jax.random.fold_in(key, 1), 2)  # ffn=False keeps the first five
        s = 1.0 / np.sqrt(hidden)
        self.w_t = s * jax.random.normal(k[0], (hidden, hidden))
        self.w_s = s * jax.random.normal(k[1], (hidden, hidden))
        self.att = s * jax.random.normal(k[2], (hidden,))
        self.w_v = s * jax.random.normal(k[3], (hidden, hidden))
        # The identity initialisation: messages start at zero, the readout sees the input.
        self.w_o = (0.0 if identity else s) * jax.random.normal(k[4], (hidden, hidden))
        # A node-wise MLP after the messages (as in a transformer block): the new code of a
        # cell is a lookup on (its code, its parents' messages, the action), which the
        # attention's single ReLU represents poorly.
        self.ff1 = s * jax.random.normal(kf[0], (hidden, 2 * hidden)) if ffn else None
        self.ff_b = jnp.zeros(2 * hidden) if ffn else None
        s2 = s / np.sqrt(2)
        self.ff2 = s2 * jax.random.normal(kf[1], (2 * hidden, hidden)) if ffn else None

    def __call__(self, h: Array, adj: Array) -> Array:
        e = jax.nn.leaky_relu((h @ self.w_t)[:, None] + (h @ self.w_s)[None], 0.2) @ self.att
        e = e - jax.lax.stop_gradient(jnp.max(e, axis=1, keepdims=True))
        w = adj * jnp.exp(e)
        w = w / (jnp.sum(w, axis=1, keepdims=True) + 1e-6)
        h = h + jax.nn.relu(w @ (h @ self.w_v)) @ self.w_o
        if self.ff1 is not None:
            h = h + jax.nn.relu(h @ self.ff1 + self.ff_b) @ self.ff2
        return h


class CTLayer(eqx.Module):
    """Causal transition layer on a grid of multi-codebook codes.

    Args:
        grid: latent grid ``(h, w)``.
        num_codebooks: ``C``.
        num_codes: ``K``.
        num_actions: ``A`` (the null action is ``A``).
        hidden: width of the mask, pair and GNN networks.
        layers: attention layers of the GNN.
        pos_dims: dimensions of the position encoding.
        identity: start as the identity transition (zero messages, a large skip weight):
            standard mode then reproduces the input codes exactly.
        ffn: a node-wise MLP (width ``2 hidden``) after each attention layer.
        gate: the keep gate of the readout (module docstring, item 4); the input's one-hot
            codes then enter through the gate only (no ``skip`` term).
        neighbours: the one-hot codes of a cell's 8 neighbours (zeros off the grid) join its
            features in the mask network and the GNN's input embedding (not the pair MLPs):
            the encoder's receptive field spans neighbouring cells, so a cell's new code is a
            function of its neighbourhood (module docstring, item 5).
        action_heads: one readout per action plus the null one, chosen per node by the mask
            as eq. (4) chooses the edge network (module docstring, item 6).
        skip: initial weight of the input's one-hot codes in the logits (the copy prior;
            ``None``: 8 with ``identity``, else 1). Any ``skip > 0`` with the identity
            initialisation still makes standard mode's most likely codes the input's. Adam
            moves it by about ``lr`` per step, so it also bounds how fast the layer can stop
            copying (module docstring, item 7).
        acted_skip: initial copy prior of the nodes under the mask (``None``: one ``skip``
            for every node). The nodes outside it and the null action keep ``skip``, so the
            identity of standard mode is unchanged.
        local: width of the local readout's hidden layer, or a sequence of widths, one per
            hidden layer (module docstring, item 8); ``None``: none.
        key: initialisation key.
    """

    mask_w1: Array
    mask_b1: Array
    mask_w2: Array
    mask_bias: Array
    adj_u: Array
    adj_v: Array
    adj_b: Array
    adj_w: Array
    adj_c: Array
    embed: Array
    gnn: tuple[_Attention, ...]
    head: Array
    skip: Array
    acted_skip: Array | None
    gate_w: Array | None
    gate_b: Array | None
    local_w1: Array | None
    local_b: Array | None
    local_mid: tuple[tuple[Array, Array], ...]
    local_w2: Array | None
    pos_dims: int = eqx.field(static=True)
    neighbours: bool = eqx.field(static=True)
    grid: tuple[int, int] = eqx.field(static=True)
    num_codebooks: int = eqx.field(static=True)
    num_codes: int = eqx.field(static=True)
    num_actions: int = eqx.field(static=True)

    def __init__(
        self,
        grid: tuple[int, int],
        num_codebooks: int,
        num_codes: int,
        num_actions: int,
        hidden: int = 32,
        layers: int = 2,
        pos_dims: int = 16,
        identity: bool = True,
        ffn: bool = True,
        gate: bool = False,
        neighbours: bool = False,
        action_heads: bool = False,
        skip: float | None = None,
        acted_skip: float | None = None,
        local: int | Sequence[int] | None = None,
        *,
        key: PRNGKeyArray,
    ):
        if int(num_actions) < 1:
            raise ValueError(f"CTLayer: num_actions must be >= 1, got {num_actions}")
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_codebooks, self.num_codes = int(num_codebooks), int(num_codes)
        self.num_actions = a = int(num_actions)
        self.pos_dims = int(pos_dims)
        self.neighbours = bool(neighbours)
        position_encoding(*self.grid, self.pos_dims)  # checks pos_dims
        f = self.num_codebooks * self.num_codes + pos_dims
        # Inputs of the mask network and the embedding: the features and the neighbourhood.
        fn = f + (8 * self.num_codebooks * self.num_codes if self.neighbours else 0)
        k = jax.random.split(key, 8 + layers)

        def init(kk, shape, fan_in):
            return jax.random.normal(kk, shape) / np.sqrt(fan_in)

        self.mask_w1 = init(k[0], (fn, hidden), fn)
        self.mask_b1 = jnp.zeros(hidden)
        self.mask_w2 = init(k[1], (hidden, a), hidden)
        self.mask_bias = jnp.zeros((a, self.grid[0] * self.grid[1]))
        self.adj_u = init(k[2], (a + 1, f, hidden), f)
        self.adj_v = init(k[3], (a + 1, f, hidden), f)
        self.adj_b = jnp.zeros((a + 1, hidden))
        self.adj_w = init(k[4], (a + 1, hidden), hidden)
        self.adj_c = jnp.zeros(a + 1)
        self.embed = init(k[5], (fn + a, hidden), fn)
        self.gnn = tuple(_Attention(hidden, k[8 + i], identity, ffn) for i in range(layers))
        ck = self.num_codebooks * self.num_codes
        # With action_heads, head[a] for action a and head[A] for the null action (zeros at the
        # identity initialisation, like the shared one).
        shape = (a + 1, hidden, ck) if action_heads else (hidden, ck)
        self.head = (0.0 if identity else 1.0) * init(k[6], shape, hidden)
        if skip is not None and not (np.isfinite(skip) and skip >= 0):
            raise ValueError(f"CTLayer: skip must be a finite number >= 0 or None, got {skip!r}")
        self.skip = jnp.asarray((8.0 if identity else 1.0) if skip is None else float(skip))
        if acted_skip is not None and not (np.isfinite(acted_skip) and acted_skip >= 0):
            raise ValueError(
                f"CTLayer: acted_skip must be a finite number >= 0 or None, got {acted_skip!r}"
            )
        self.acted_skip = None if acted_skip is None else jnp.asarray(float(acted_skip))
        c = self.num_codebooks
        # Identity: keep with probability sigmoid(8) = 0.9997 whatever the state (zero weights);
        # otherwise a random gate around 1/2.
        self.gate_w = (0.0 if identity else 1.0) * init(k[7], (hidden, c), hidden) if gate else None
        self.gate_b = jnp.full(c, 8.0 if identity else 0.0) if gate else None
        widths = local_widths(local)
        if widths and gate:
            raise ValueError("CTLayer: local and gate cannot be combined (gate=True normalises)")
        fa = fn + a
        # The first layer's key is the one a single hidden layer always had (same init).
        kl = jax.random.split(jax.random.fold_in(key, 99))[0]
        self.local_w1 = init(kl, (fa, widths[0]), fa) if widths else None
        self.local_b = jnp.zeros(widths[0]) if widths else None
        self.local_mid = tuple(
            (init(jax.random.fold_in(kl, i), (w_in, w_out), w_in), jnp.zeros(w_out))
            for i, (w_in, w_out) in enumerate(itertools.pairwise(widths), start=1)
        )
        self.local_w2 = jnp.zeros((widths[-1], ck)) if widths else None

    @property
    def num_nodes(self) -> int:
        """``N = h w``."""
        return self.grid[0] * self.grid[1]

    @property
    def base_dims(self) -> int:
        """``F``: one-hot codes and position (the pair MLPs' input), before the neighbourhood."""
        return self.num_codebooks * self.num_codes + self.pos_dims

    def features(self, codes: Int[Array, "h w C"]) -> Float[Array, "N F"]:
        """Node features: one-hot codes of every codebook and the position encoding.

        With ``neighbours``, the one-hot codes of the 8 neighbouring cells follow (row-major
        offsets ``(-1, -1), (-1, 0), ..., (1, 1)``; zeros off the grid): ``(N, F + 8 C K)``.
        """
        want = (*self.grid, self.num_codebooks)
        if tuple(codes.shape) != want:
            raise ValueError(f"CTLayer: a code grid has shape {want}, got {tuple(codes.shape)}")
        x = jax.nn.one_hot(codes, self.num_codes).reshape(*self.grid, -1)
        parts = [
            x.reshape(self.num_nodes, -1),
            jnp.asarray(position_encoding(*self.grid, self.pos_dims)),
        ]
        if self.neighbours:
            h, w = self.grid
            pad = jnp.pad(x, ((1, 1), (1, 1), (0, 0)))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if dy or dx:
                        cell = pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                        parts.append(cell.reshape(self.num_nodes, -1))
        return jnp.concatenate(parts, -1)

    def mask_logits(self, feats: Float[Array, "N F"]) -> Float[Array, "A N"]:
        """``rho_{a, i}`` of every action and node."""
        h = jax.nn.relu(feats @ self.mask_w1 + self.mask_b1)
        return (h @ self.mask_w2).T + self.mask_bias

    def edge_logits(self, feats: Float[Array, "N F"], a: Int[Array, ""]) -> Float[Array, "N N"]:
        """``alpha_ij`` of the pair MLP of action ``a`` (``A``: the null action)."""
        feats = feats[:, : self.base_dims]
        hu = feats @ self.adj_u[a]
        hv = feats @ self.adj_v[a]
        h = jax.nn.relu(hu[:, None] + hv[None] + self.adj_b[a])
        return h @ self.adj_w[a] + self.adj_c[a]

    def graph(
        self,
        feats: Float[Array, "N F"],
        a: Int[Array, ""],
        key: PRNGKeyArray | None,
        null_logits: Array | None = None,
    ) -> dict[str, Array]:
        """Mask, edge logits and adjacency of action ``a`` (sampled with ``key``, else modes).

        Returns:
            ``{"mask": (N,), "mask_logits": (N,), "edge_logits": (N, N), "adjacency": (N, N)}``
            with row ``i`` holding the parents of target node ``i``.
        """
        a = jnp.asarray(a, jnp.int32)
        a = eqx.error_if(
            a,
            (a < 0) | (a > self.num_actions),
            f"CTLayer: action out of range: actions are 0..{self.num_actions - 1}, and "
            f"{self.num_actions} is the null action (no intervention)",
        )
        is_null = a >= self.num_actions
        ai = jnp.clip(a, 0, self.num_actions - 1)
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        rho = self.mask_logits(feats)[ai]
        mask = jnp.where(is_null, 0.0, gumbel_bernoulli(k1, rho))
        if null_logits is None:
            null_logits = self.edge_logits(feats, self.num_actions)
        alpha = mask[:, None] * self.edge_logits(feats, a) + (1 - mask[:, None]) * null_logits
        adj = gumbel_bernoulli(k2, alpha)
        return {"mask": mask, "mask_logits": rho, "edge_logits": alpha, "adjacency": adj}

    def propagate(
        self, feats: Float[Array, "N F"], a: Int[Array, ""], mask: Array, adj: Array
    ) -> Float[Array, "h w C K"]:
        """The GNN (eq. 2): output code logits given the graph."""
        act = mask[:, None] * jax.nn.one_hot(a, self.num_actions)
        f = feats.shape[1]
        # feats @ W is the same for every action scored: under vmap over actions it is
        # computed once (a concatenation before the product would compute it per action).
        h = feats @ self.embed[:f] + act @ self.embed[f:]
        for layer in self.gnn:
            h = layer(h, adj)
        ck = self.num_codebooks * self.num_codes
        shape = (*self.grid, self.num_codebooks, self.num_codes)
        if self.head.ndim == 3:
            # The mask picks the action's readout or the null one per node (as in eq. 4).
            null = h @ self.head[self.num_actions]
            acted = h @ self.head[jnp.clip(a, 0, self.num_actions)]
            out = mask[:, None] * acted + (1 - mask[:, None]) * null
        else:
            out = h @ self.head
        if self.local_w1 is not None:
            act_in = act @ self.local_w1[f:]  # and feats @ W once, as for the embedding
            hl = jax.nn.relu(feats @ self.local_w1[:f] + act_in + self.local_b)
            for w, b in self.local_mid:
                hl = jax.nn.relu(hl @ w + b)
            out = out + mask[:, None] * (hl @ self.local_w2)
        if self.gate_w is None:
            skip = self.skip
            if self.acted_skip is not None:
                skip = (self.acted_skip * mask + self.skip * (1 - mask))[:, None]
            return (out + skip * feats[:, :ck]).reshape(shape)
        keep = (h @ self.gate_w + self.gate_b).reshape(*self.grid, self.num_codebooks, 1)
        new = jax.nn.log_softmax(out.reshape(shape), -1) + jax.nn.log_sigmoid(-keep)
        # The input's code also gets the keep branch: log(g + (1 - g) p_new).
        own = feats[:, :ck].reshape(shape) > 0
        return jnp.where(own, jnp.logaddexp(jax.nn.log_sigmoid(keep), new), new)

    def __call__(
        self, codes: Int[Array, "h w C"], a: Int[Array, ""], key: PRNGKeyArray | None = None
    ) -> Float[Array, "h w C K"]:
        """Logits of the output codes of one unit under action ``a`` (``A``: no action).

        With ``key`` the mask and graph are straight-through samples (training); without, their
        modes (a deterministic transition).
        """
        feats = self.features(codes)
        g = self.graph(feats, a, key)
        return self.propagate(feats, a, g["mask"], g["adjacency"])


__all__ = ["CTLayer", "gumbel_bernoulli", "local_widths", "position_encoding"]
