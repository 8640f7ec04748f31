"""The Nes2Net-X back end (Liu et al., IEEE T-IFS 2025; Liu-Tianchi/Nes2Net_ASVspoof_ITW
``model_scripts/wav2vec2_Nes2Net_X.py``; docs/systems/nes2net_x.md): 512,039 parameters with the published
settings (Nes_ratio [8, 8], SE ratio 1, dilation 2, mean pooling), 777,383 with ASTP pooling.

It reads the last SSL hidden state (B, hidden, T) without reducing its dimension. Outer nest: the channels
are split into ``nes_ratio[0]`` groups; for i = 1..groups−1 the running sum sp (group i plus the previous
sp) goes through an inner `Bottle2neck`, ReLU and BatchNorm1d; the outputs and the last group are
concatenated → BatchNorm1d(hidden) → ReLU → mean over time (or `ASTP`) → Linear → 2 logits. Mean pooling
runs on any number of frames (Nes2Net-X scores In-the-Wild on whole utterances). Attribute names follow
the reference, whose back-end tensors load directly (`models.import_released`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.registry import register_model
from models.ssl_input import hidden_size_of
from utils.errors import UserError

POOLINGS = ("mean", "ASTP")


class SEModule(nn.Module):
    """Squeeze-excitation over channels: x · σ(conv(ReLU(conv(mean_t x)))), channels//ratio inside."""

    def __init__(self, channels: int, ratio: int = 8) -> None:
        super().__init__()
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool1d(1),
            nn.Conv1d(channels, channels // ratio, kernel_size=1),
            nn.ReLU(),
            nn.Conv1d(channels // ratio, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(x)


class Bottle2neck(nn.Module):
    """The inner nest: a Res2Net block whose sub-band convolutions see a growing stack of the earlier
    partial outputs, combined by learned weights (initialised 1/(i+2)).

    conv1 1×1 → ReLU → BN; split into ``scale`` bands of ``width``; sp starts as the last band; for band
    i: stack [sp, band i] on a new last axis → (k×1) dilated conv → ReLU → BN → weighted sum over the
    stack; outputs and the last band → conv3 1×1 → ReLU → BN → SE → + input. (B, C, T) -> (B, C, T).
    """

    def __init__(self, planes: int, kernel_size: int = 3, dilation: int = 2, scale: int = 8,
                 se_ratio: int = 8) -> None:
        super().__init__()
        width = planes // scale
        self.width, self.nums = width, scale - 1
        self.conv1 = nn.Conv1d(planes, width * scale, kernel_size=1)
        self.bn1 = nn.BatchNorm1d(width * scale)
        pad = kernel_size // 2 * dilation
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, (kernel_size, 1), dilation=(dilation, 1), padding=(pad, 0))
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(self.nums))
        self.weighted_sum = nn.ParameterList(
            nn.Parameter(torch.full((1, 1, 1, i + 2), 1.0 / (i + 2))) for i in range(self.nums)
        )
        self.conv3 = nn.Conv1d(width * scale, planes, kernel_size=1)
        self.bn3 = nn.BatchNorm1d(planes)
        self.relu = nn.ReLU()
        self.se = SEModule(planes, se_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        bands = torch.split(self.bn1(self.relu(self.conv1(x))).unsqueeze(-1), self.width, 1)  # (B, w, T, 1)
        # The reference stacks partial outputs on a last axis, (B, w, T, s); here the stack runs along the
        # batch axis, (s·B, w, T, 1): the same (k×1) convolutions and BatchNorm statistics on contiguous
        # tensors (several times faster on CPU), and appending to the stack is a cheap concatenation.
        sp = bands[self.nums].contiguous()
        outs = []
        for i in range(self.nums):
            sp = self.bns[i](self.relu(self.convs[i](torch.cat((sp, bands[i]), 0))))  # ((i+2)·B, w, T, 1)
            weights = self.weighted_sum[i].view(-1, 1, 1, 1, 1)
            outs.append((sp.view(i + 2, b, *sp.shape[1:]) * weights).sum(0).squeeze(-1))
        out = torch.cat((*outs, bands[self.nums].squeeze(-1)), 1)
        return self.se(self.bn3(self.relu(self.conv3(out)))) + x


class ASTP(nn.Module):
    """Attentive statistics pooling (ECAPA-TDNN): (B, C, T) -> (B, 2C) attention-weighted mean and std."""

    def __init__(self, in_dim: int, bottleneck_dim: int = 128) -> None:
        super().__init__()
        self.linear1 = nn.Conv1d(in_dim, bottleneck_dim, kernel_size=1)
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)
        mean = (alpha * x).sum(2)
        var = (alpha * x * x).sum(2) - mean * mean
        return torch.cat((mean, var.clamp(min=1e-10).sqrt()), 1)


@register_model("nes2net_x")
class Nes2NetX(nn.Module):
    """Nes2Net-X over the last SSL hidden state -> (embedding (B, hidden) or (B, 2·hidden) with ASTP,
    logits (B, 2)).

    ``input_shape``: (1, hidden, frames) (the ``ssl`` front end's layout, stored or fine-tuned) or
    (frames, hidden); only ``hidden`` sizes the model. ``nes_ratio``: (outer groups, inner scale).
    ``min_frames``: any number of frames from one up runs (full-utterance scoring, ``data.score_crop``).
    """

    min_frames = 1

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 1024, 201),
        nes_ratio: Sequence[int] = (8, 8),
        se_ratio: int = 1,
        dilation: int = 2,
        pool_func: str = "mean",
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(v) for v in input_shape)
        hidden = hidden_size_of(self.input_shape, "nes2net_x")
        groups, scale = (int(v) for v in nes_ratio)
        if hidden % groups or (hidden // groups) % scale:
            raise UserError(f"nes2net_x: hidden size {hidden} does not divide by nes_ratio {list(nes_ratio)}")
        if pool_func not in POOLINGS:
            raise UserError(f"nes2net_x: pool_func must be one of {', '.join(POOLINGS)}, got {pool_func!r}")
        self.C, self.nes_ratio, self.pool_func = hidden // groups, groups, pool_func
        self.Build_in_Res2Nets = nn.ModuleList(
            Bottle2neck(self.C, 3, dilation, scale, se_ratio) for _ in range(groups - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.C) for _ in range(groups - 1))
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU()
        if pool_func == "ASTP":
            self.pooling = ASTP(hidden, bottleneck_dim=128)
        self.fc = nn.Linear(2 * hidden if pool_func == "ASTP" else hidden, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 1, hidden, frames) or (B, frames, hidden) -> (embedding, logits (B, 2))."""
        x = x.squeeze(1) if x.dim() == 4 else x.transpose(1, 2)  # (B, hidden, T)
        groups = torch.split(x, self.C, 1)
        outs, sp = [], None
        for i in range(self.nes_ratio - 1):
            sp = groups[i] if sp is None else sp + groups[i]
            sp = self.bns[i](self.relu(self.Build_in_Res2Nets[i](sp)))
            outs.append(sp)
        out = self.relu(self.bn(torch.cat((*outs, groups[-1]), 1)))
        embedding = out.mean(-1) if self.pool_func == "mean" else self.pooling(out)
        return embedding, self.classify(embedding)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, hidden) pooled features -> (B, 2) logits."""
        return self.fc(embedding)
