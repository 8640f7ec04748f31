"""The AASIST graph back end shared by AASIST / AASIST-L and XLS-R-AASIST (docs/systems/aasist.md).

Building blocks: `ResBlock` (with the published bug, see there), `GraphAttention` (GAT),
`HeteroGraphAttention` (HS-GAL), `GraphPool`, and `GraphBackEnd`, a base class holding the graph
part from the spectral/temporal node features to the 160-d readout and the output layer.

Attribute names follow the reference implementations (clovaai/aasist ``models/AASIST.py`` and
SSL_Anti-spoofing ``model.py``: ``GAT_layer_S``, ``HtrgGAT_layer_ST11``, ``pool_hS1``, ``pos_S``,
``master1``, ``out_layer``, ``encoder.<i>.0.conv1`` ...), so their state dicts load with a plain
``load_state_dict`` (only the output rows need swapping: class 0 = bona fide here, 1 there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """Residual block: conv1 2×3 pad (1,1) → BN → SELU → conv2 2×3 pad (0,1), + skip, optional MaxPool(1,3).

    (B, C_in, H, W) → (B, C_out, H, W) (W // 3 with ``pool``). The skip path is a 1×3 conv when
    the channel count changes, else the identity.

    Reproduces the published bug (docs/systems/aasist.md), present in clovaai/aasist and SSL_Anti-spoofing:
    in every block but the first, ``bn1`` + SELU of the input is computed and then discarded,
    because conv1 reads the raw input. ``bn1`` is kept so the released checkpoints load (and, in
    training mode, it still updates its running statistics as the reference does), but it never
    affects the output. Its weight and bias therefore get no gradient: DDP needs
    ``find_unused_parameters=True`` (or ``static_graph=True``) for these models.
    """

    def __init__(self, in_channels: int, out_channels: int, first: bool = False, pool: bool = True) -> None:
        super().__init__()
        self.first = first
        if not first:
            self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=(2, 3), padding=(1, 1))
        self.selu = nn.SELU()
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=(2, 3), padding=(0, 1))
        self.downsample = in_channels != out_channels
        if self.downsample:
            self.conv_downsample = nn.Conv2d(in_channels, out_channels, kernel_size=(1, 3), padding=(0, 1))
        self.mp = nn.MaxPool2d((1, 3)) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.first and self.training:
            # The published bug: bn1's output is unused. Only its running-statistics update is
            # observable, so it is skipped in eval mode.
            self.bn1(x)
        out = self.conv2(self.selu(self.bn2(self.conv1(x))))
        identity = self.conv_downsample(x) if self.downsample else x
        return self.mp(out + identity)


def resblock_encoder(channels: Sequence[int], pool: bool) -> nn.Sequential:
    """The stack of ResBlocks: 1 → channels[0] (first block, no bn1) → channels[1] → ...

    Each block is wrapped in its own ``nn.Sequential`` as in the references (keys ``<i>.0.*``).
    """
    blocks, in_channels = [], 1
    for index, out_channels in enumerate(channels):
        blocks.append(nn.Sequential(ResBlock(in_channels, out_channels, first=index == 0, pool=pool)))
        in_channels = out_channels
    return nn.Sequential(*blocks)


def _attention_vector(dim: int) -> nn.Parameter:
    weight = nn.Parameter(torch.empty(dim, 1))
    nn.init.xavier_normal_(weight)
    return weight


def _pairwise_products(x: torch.Tensor) -> torch.Tensor:
    """(B, N, D) → (B, N, N, D) with [b, i, j] = x_i ⊙ x_j."""
    return x.unsqueeze(2) * x.unsqueeze(1)


def _node_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over all B·N node vectors of (B, N, D) (nodes flattened into the batch)."""
    return bn(x.reshape(-1, x.shape[-1])).view(x.shape)


class _NodeAttention(nn.Module):
    """Layers shared by GAT and HS-GAL: edge projection W_a, node update W_1 (attended) and W_2 (self),
    BatchNorm1d over the node vectors, input dropout 0.2, SELU, temperature τ."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.act = nn.SELU()
        self.temp = float(temperature)

    def update_nodes(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """out_i = SELU(BN(W_1 Σ_j α_ij x_j + W_2 x_i)) for nodes x (B, N, d_in), attention α (B, N, N)."""
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return self.act(_node_batch_norm(self.bn, out))


class GraphAttention(_NodeAttention):
    """GAT layer: (B, N, d_in) → (B, N, d_out).

    Dropout 0.2 on the input; e_ij = tanh(W_a(x_i⊙x_j))·w/τ; α = softmax_j(e);
    out_i = W_1 Σ_j α_ij x_j + W_2 x_i; BatchNorm1d over the node vectors; SELU.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__(in_dim, out_dim, temperature)
        self.att_weight = _attention_vector(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_drop(x)
        scores = torch.tanh(self.att_proj(_pairwise_products(x))) @ self.att_weight  # (B, N, N, 1)
        return self.update_nodes(x, F.softmax(scores.squeeze(-1) / self.temp, dim=-1))


class HeteroGraphAttention(_NodeAttention):
    """HS-GAL: heterogeneous stacking graph attention over temporal (type 1) and spectral (type 2) nodes.

    (T (B, N_T, d_in), S (B, N_S, d_in), master (B or 1, 1, d_in)) →
    (T (B, N_T, d_out), S (B, N_S, d_out), master (B, 1, d_out)).
    Type-wise Linear d_in→d_in, concatenation [T, S], Dropout 0.2; edge scores as in GAT with
    weight vector w11 (T–T), w22 (S–S) and a shared w12 (cross); master update
    m' = W_3 Σ_n β_n x_n + W_4 m with β = softmax_n(tanh(W_M(x_n⊙m))·w_M/τ), computed from the
    projected, dropped-out nodes before their update (no BN or activation on the master).
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__(in_dim, out_dim, temperature)
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = _attention_vector(out_dim)
        self.att_weight22 = _attention_vector(out_dim)
        self.att_weight12 = _attention_vector(out_dim)
        self.att_weightM = _attention_vector(out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n1 = x1.shape[1]
        x = self.input_drop(torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1))

        hidden = torch.tanh(self.att_proj(_pairwise_products(x)))  # (B, N, N, d_out)
        is_spectral = torch.arange(x.shape[1], device=x.device) >= n1
        same_type = is_spectral[:, None] == is_spectral[None, :]
        both_spectral = is_spectral[:, None] & is_spectral[None, :]
        w_same = torch.where(both_spectral[..., None], self.att_weight22.T, self.att_weight11.T)  # (N, N, d)
        w_pair = torch.where(same_type[..., None], w_same, self.att_weight12.T)
        scores = (hidden * w_pair).sum(-1)
        att = F.softmax(scores / self.temp, dim=-1)

        master_scores = torch.tanh(self.att_projM(x * master)) @ self.att_weightM  # (B, N, 1)
        beta = F.softmax(master_scores / self.temp, dim=1)
        master = self.proj_with_attM(beta.transpose(1, 2) @ x) + self.proj_without_attM(master)

        out = self.update_nodes(x, att)
        return out[:, :n1], out[:, n1:], master


def kept_nodes(n_nodes: int, ratio: float) -> int:
    """Nodes kept by `GraphPool`: max(floor(N·k), 1), with the reference's float rounding (int(N*k))."""
    return max(int(n_nodes * ratio), 1)


class GraphPool(nn.Module):
    """Graph pooling: s = σ(Linear(Dropout(h))); keep the top max(⌊N·k⌋, 1) nodes times their score.

    (B, N, D) → (B, N', D), nodes in descending-score order.
    """

    def __init__(self, ratio: float, in_dim: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.ratio = float(ratio)
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # (B, N, 1)
        _, index = torch.topk(scores, kept_nodes(h.shape[1], self.ratio), dim=1)
        return torch.gather(h * scores, 1, index.expand(-1, -1, h.shape[2]))


class GraphBackEnd(nn.Module):
    """The graph part of AASIST: GAT-S, GAT-T, two HS-GAL branches with master nodes, readout, output layer.

    Subclasses build their encoder and call `graph_embedding` with the spectral and temporal node
    features; ``classify`` is the output layer alone.

    - ``encoder_dim``: channels C of the encoder output; ``n_spectral``: spectral nodes (size of
      ``pos_S``); ``gat_dims`` (d_GAT, d_HS-GAL); ``pool_ratios`` (S, T, HS-GAL);
      ``temperatures`` (GAT-S, GAT-T, HS-GAL). The embedding is the 5·d_HS-GAL readout.
    """

    #: The dead ``bn1`` parameters of `ResBlock` get no gradient: DDP needs find_unused_parameters.
    has_unused_parameters = True

    def __init__(
        self,
        encoder_dim: int,
        n_spectral: int,
        gat_dims: Sequence[int],
        pool_ratios: Sequence[float],
        temperatures: Sequence[float],
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        gat_dim, hs_dim = (int(v) for v in gat_dims)
        ratio_s, ratio_t, ratio_h = (float(v) for v in pool_ratios)
        temp_s, temp_t, temp_h = (float(v) for v in temperatures)
        self.pos_S = nn.Parameter(torch.randn(1, n_spectral, encoder_dim))
        self.master1 = nn.Parameter(torch.randn(1, 1, gat_dim))
        self.master2 = nn.Parameter(torch.randn(1, 1, gat_dim))
        self.GAT_layer_S = GraphAttention(encoder_dim, gat_dim, temp_s)
        self.GAT_layer_T = GraphAttention(encoder_dim, gat_dim, temp_t)
        self.HtrgGAT_layer_ST11 = HeteroGraphAttention(gat_dim, hs_dim, temp_h)
        self.HtrgGAT_layer_ST12 = HeteroGraphAttention(hs_dim, hs_dim, temp_h)
        self.HtrgGAT_layer_ST21 = HeteroGraphAttention(gat_dim, hs_dim, temp_h)
        self.HtrgGAT_layer_ST22 = HeteroGraphAttention(hs_dim, hs_dim, temp_h)
        self.pool_S = GraphPool(ratio_s, gat_dim)
        self.pool_T = GraphPool(ratio_t, gat_dim)
        self.pool_hS1 = GraphPool(ratio_h, hs_dim)
        self.pool_hT1 = GraphPool(ratio_h, hs_dim)
        self.pool_hS2 = GraphPool(ratio_h, hs_dim)
        self.pool_hT2 = GraphPool(ratio_h, hs_dim)
        self.drop_way = nn.Dropout(0.2)
        self.drop = nn.Dropout(0.5)
        self.out_layer = nn.Linear(5 * hs_dim, n_classes)
        self.embedding_dim = 5 * hs_dim

    def _branch(
        self, index: int, out_t: torch.Tensor, out_s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One HS-GAL branch: HS-GAL → pool S and T → second HS-GAL added as a residual."""
        first = getattr(self, f"HtrgGAT_layer_ST{index}1")
        second = getattr(self, f"HtrgGAT_layer_ST{index}2")
        master = getattr(self, f"master{index}").expand(out_t.shape[0], -1, -1)
        t, s, master = first(out_t, out_s, master)
        s = getattr(self, f"pool_hS{index}")(s)
        t = getattr(self, f"pool_hT{index}")(t)
        t_aug, s_aug, master_aug = second(t, s, master)
        return t + t_aug, s + s_aug, master + master_aug

    def graph_embedding(self, e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
        """Spectral (B, C, n_spectral) and temporal (B, C, N_T) node features → (B, 5·d_HS-GAL) embedding."""
        out_s = self.pool_S(self.GAT_layer_S(e_s.transpose(1, 2) + self.pos_S))
        out_t = self.pool_T(self.GAT_layer_T(e_t.transpose(1, 2)))
        t1, s1, m1 = (self.drop_way(v) for v in self._branch(1, out_t, out_s))
        t2, s2, m2 = (self.drop_way(v) for v in self._branch(2, out_t, out_s))
        out_t, out_s, master = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)
        hidden = torch.cat(
            [
                out_t.abs().amax(dim=1),
                out_t.mean(dim=1),
                out_s.abs().amax(dim=1),
                out_s.mean(dim=1),
                master.squeeze(1),
            ],
            dim=1,
        )
        return self.drop(hidden)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, 5·d_HS-GAL) embedding → (B, n_classes) logits: the output layer alone."""
        return self.out_layer(embedding)
