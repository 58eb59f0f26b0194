"""GeoDiff's epsilon network, loss and sampler (Xu et al., ICLR 2022; ``models/epsnet/dualenc.py``), in
plain PyTorch: message passing with ``index_select`` and ``index_add_``, no torch-scatter or
torch-geometric.

The network predicts a score for every edge's *length* from invariant features (atom types, edge types
and lengths), and turns edge scores into atom vectors along the edges (``along_edges``, GeoDiff's
``eq_transform``), so its output rotates and translates with the input and follows a permutation of the
atoms. Two encoders, as in GeoDiff's dual encoder:

* global: SchNet interaction blocks over local and radius edges, with filters that fade out at the cutoff;
  its edge scores are used on the radius edges (type 0);
* local: GIN convolutions over the bond graph extended to third neighbours; scores on those edges.

Differences from the original, on purpose: the local encoder embeds edges with its own edge encoder
(GeoDiff's forward pass reuses the global one for both and leaves the local one unused), and the radius
graph keeps every pair within the cutoff (see ``graph.py``). Diffusion mode: the network takes no time
input; positions are noised as ``x + eps * sqrt(1 - abar) / sqrt(abar)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import DiffusionSection, NetworkSection, SamplingSection
from .graph import MoleculeBatch, rows

ELEMENTS = 100  # atomic numbers and edge types are embedded in tables of this size, as in GeoDiff
GLOBAL_WEIGHT, LOCAL_WEIGHT = 2.0, 5.0  # GeoDiff's loss = 2 x global + 5 x local (per atom)


class MLP(nn.Module):
    """Linear layers with an activation between them, none after the last (GeoDiff's MultiLayerPerceptron)."""

    def __init__(self, dims: list[int], activation: str):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.activation = getattr(F, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = self.activation(x)
        return x


class EdgeEncoder(nn.Module):
    """An edge's features: an MLP of its length times an embedding of its type (GeoDiff's MLPEdgeEncoder)."""

    def __init__(self, hidden: int, activation: str):
        super().__init__()
        self.type_embedding = nn.Embedding(ELEMENTS, hidden)
        self.length_mlp = MLP([1, hidden, hidden], activation)

    def forward(self, lengths: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return self.length_mlp(lengths) * self.type_embedding(types)


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x) - math.log(2.0)


class Interaction(nn.Module):
    """A SchNet interaction block: a continuous filter from the edge features, cut off smoothly."""

    def __init__(self, hidden: int, cutoff: float, smooth: bool):
        super().__init__()
        self.filter = nn.ModuleList([nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)])
        self.into = nn.Linear(hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, hidden)
        self.mix = nn.Linear(hidden, hidden)
        self.cutoff, self.smooth = cutoff, smooth
        nn.init.xavier_uniform_(self.into.weight)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor):
        inside = (lengths <= self.cutoff) & (lengths >= 0)
        fade = 0.5 * (torch.cos(lengths * math.pi / self.cutoff) + 1.0) if self.smooth else torch.ones_like(lengths)
        weights = self.filter[1](shifted_softplus(self.filter[0](features))) * (fade * inside)
        messages = rows(self.into(h), edges[0]) * weights  # from the edge's source to its target
        gathered = torch.zeros_like(h).index_add_(0, edges[1], messages)
        return self.mix(shifted_softplus(self.out(gathered)))


class GlobalEncoder(nn.Module):
    def __init__(self, hidden: int, convolutions: int, cutoff: float, smooth: bool):
        super().__init__()
        self.embedding = nn.Embedding(ELEMENTS, hidden, max_norm=10.0)
        self.interactions = nn.ModuleList(Interaction(hidden, cutoff, smooth) for _ in range(convolutions))

    def forward(self, atom_types, edges, lengths, features) -> torch.Tensor:
        h = self.embedding(atom_types)
        for interaction in self.interactions:
            h = h + interaction(h, edges, lengths, features)
        return h


class GINConvolution(nn.Module):
    """GINE: the sum over neighbours of act(h_j + e_ij), plus h_i, through an MLP."""

    def __init__(self, hidden: int, activation: str):
        super().__init__()
        self.mlp = MLP([hidden, hidden, hidden], activation)
        self.activation = getattr(F, activation)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        messages = self.activation(rows(h, edges[0]) + features)
        return self.mlp(torch.zeros_like(h).index_add_(0, edges[1], messages) + h)


class LocalEncoder(nn.Module):
    def __init__(self, hidden: int, convolutions: int, activation: str):
        super().__init__()
        self.embedding = nn.Embedding(ELEMENTS, hidden)
        self.convolutions = nn.ModuleList(GINConvolution(hidden, activation) for _ in range(convolutions))
        self.activation = getattr(F, activation)

    def forward(self, atom_types, edges, features) -> torch.Tensor:
        h = self.embedding(atom_types)
        for index, convolution in enumerate(self.convolutions):
            out = convolution(h, edges, features)
            if index < len(self.convolutions) - 1:
                out = self.activation(out)
            h = out + h  # shortcut
        return h


def along_edges(scores: torch.Tensor, positions: torch.Tensor, edges: torch.Tensor, lengths: torch.Tensor):
    """Atom vectors (N, 3) from edge-length scores (E, 1): each edge pushes its two atoms apart along the
    unit vector between them by its score (GeoDiff's ``eq_transform``)."""
    direction = (rows(positions, edges[0]) - rows(positions, edges[1])) / lengths
    out = torch.zeros_like(positions)
    out.index_add_(0, edges[0], direction * scores)
    out.index_add_(0, edges[1], -direction * scores)
    return out


class DualEncoder(nn.Module):
    """Edge-length scores from a global and a local encoder; ``noise`` holds the diffusion schedule."""

    def __init__(self, network: NetworkSection, diffusion: DiffusionSection):
        super().__init__()
        hidden, activation = network.hidden_dim, network.activation
        self.cutoff = network.cutoff
        self.global_edges = EdgeEncoder(hidden, activation)
        self.global_encoder = GlobalEncoder(hidden, network.global_convolutions, network.cutoff, network.smooth_cutoff)
        self.global_scores = MLP([2 * hidden, hidden, hidden // 2, 1], activation)
        self.local_edges = EdgeEncoder(hidden, activation)
        self.local_encoder = LocalEncoder(hidden, network.local_convolutions, activation)
        self.local_scores = MLP([2 * hidden, hidden, hidden // 2, 1], activation)
        abar = np.cumprod(1.0 - diffusion.betas())
        self.alpha_bar: torch.Tensor
        self.register_buffer("alpha_bar", torch.tensor(abar, dtype=torch.float32), persistent=False)

    def global_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.global_edges, self.global_encoder, self.global_scores) for p in m.parameters()]

    def local_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.local_edges, self.local_encoder, self.local_scores) for p in m.parameters()]

    @property
    def steps(self) -> int:
        return len(self.alpha_bar)

    def forward(self, batch: MoleculeBatch, positions: torch.Tensor):
        """(global scores, local scores, edges, edge types, lengths) at ``positions``; the global scores
        are zero on local edges, so that both can be turned into atom vectors over all edges."""
        edges, types, lengths = batch.edges(positions, self.cutoff)
        local = types > 0

        features = self.global_edges(lengths, types)
        h = self.global_encoder(batch.atom_types, edges, lengths, features)
        global_scores = self.global_scores(torch.cat([rows(h, edges[0]) * rows(h, edges[1]), features], dim=-1))
        global_scores = global_scores * (~local)[:, None]

        local_edges = edges[:, local]
        features = self.local_edges(lengths[local], types[local])
        h = self.local_encoder(batch.atom_types, local_edges, features)
        local_scores = torch.zeros_like(global_scores)
        pairs = rows(h, local_edges[0]) * rows(h, local_edges[1])
        local_scores[local] = self.local_scores(torch.cat([pairs, features], dim=-1))
        return global_scores, local_scores, edges, types, lengths


def paired_timesteps(count: int, steps: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A timestep per conformer: t for the first half and T - 1 - t for the second (GeoDiff's pairing,
    which lowers the loss's variance)."""
    t = torch.randint(0, steps, (count // 2 + 1,), generator=generator, device=device)
    return torch.cat([t, steps - 1 - t])[:count]


def diffusion_loss(
    model: DualEncoder, batch: MoleculeBatch, timesteps: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """GeoDiff's loss per atom, (global, local) each (N,): the squared error of the atom vectors the
    network's edge scores make against those of the true denoising direction of every edge length,
    (d_true - d_noisy) * sqrt(abar) / sqrt(1 - abar), weighted 2 and 5."""
    alpha_bar = model.alpha_bar[timesteps]
    atom_alpha = rows(alpha_bar, batch.graph)[:, None]
    noisy = batch.positions + noise * (1 - atom_alpha).sqrt() / atom_alpha.sqrt()
    global_scores, local_scores, edges, types, lengths = model(batch, noisy)
    true_lengths = (rows(batch.positions, edges[0]) - rows(batch.positions, edges[1])).norm(dim=-1, keepdim=True)
    edge_alpha = rows(alpha_bar, rows(batch.graph, edges[0]))[:, None]
    target = (true_lengths - lengths) * edge_alpha.sqrt() / (1 - edge_alpha).sqrt()
    local = (types > 0)[:, None]
    global_error = along_edges(global_scores - target * ~local, noisy, edges, lengths)
    local_error = along_edges(local_scores - target * local, noisy, edges, lengths)
    return GLOBAL_WEIGHT * global_error.pow(2).sum(-1), LOCAL_WEIGHT * local_error.pow(2).sum(-1)


def clip_norm(vectors: torch.Tensor, limit: float) -> torch.Tensor:
    norms = vectors.norm(dim=-1, keepdim=True)
    return vectors * torch.where(norms > limit, limit / norms, torch.ones_like(norms))


@torch.no_grad()
def langevin_sample(
    model: DualEncoder,
    batch: MoleculeBatch,
    options: SamplingSection,
    generator: torch.Generator,
    clip_local: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (N, 3) for ``batch``'s molecules by GeoDiff's annealed Langevin dynamics (``ld``): from
    noise at the largest sigma, at each step t move by step * score / sigma_t plus sqrt(2 step) noise,
    with step = step_lr * (sigma_t / 0.01)^2; the global score joins once sigma_t < global_start_sigma.
    Also which conformers diverged (``count``,) bool: their positions stopped being finite, and are held
    at zero from then on, while the others go on (a conformer's atoms interact only with each other;
    GeoDiff samples a diverged molecule again with ``clip_local`` = 20, a limit on each atom's local
    score)."""
    model.eval()
    alpha_bar = model.alpha_bar.double()
    sigmas = ((1 - alpha_bar).sqrt() / alpha_bar.sqrt()).tolist()
    shape = batch.positions.shape
    device = batch.positions.device
    positions = torch.randn(shape, generator=generator, device=device) * sigmas[-1]
    diverged = torch.zeros(batch.count, dtype=torch.bool, device=device)
    for t in reversed(range(model.steps)):
        global_scores, local_scores, edges, _, lengths = model(batch, positions)
        score = along_edges(local_scores, positions, edges, lengths)
        if clip_local is not None:
            score = clip_norm(score, clip_local)
        if sigmas[t] < options.global_start_sigma:
            global_score = clip_norm(along_edges(global_scores, positions, edges, lengths), options.clip)
            score = score + options.w_global * global_score
        step = options.step_lr * (sigmas[t] / 0.01) ** 2
        noise = torch.randn(shape, generator=generator, device=device)
        positions = batch.centred(positions + step * score / sigmas[t] + noise * math.sqrt(2 * step))
        finite = torch.isfinite(positions).all(dim=1)
        if not finite.all():
            diverged[batch.graph[~finite]] = True
            positions = torch.where(diverged[batch.graph][:, None], torch.zeros_like(positions), positions)
    return positions, diverged
