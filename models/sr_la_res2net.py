"""SR-LA-Res2Net: Res2Net with spatial reconstruction (SR) and local attention (LA).

Differences from the code released with the paper (docs/systems/sr_la_res2net.md):
- the first ("stage") block of each stage builds no SR module (the release built one and never
  used it: 4 x 50 parameters), and the unused softmax head is not built;
- LA uses a kernel-3 Conv1d with padding 1 (the release computed the padding from ``planes``);
- the A-Softmax layer returns only ``‖x‖·cos θ``; the margin term ψ(θ) lives in the loss
  (`models.losses.ASoftmaxLoss`), which recovers cos θ from these logits and the embedding.
Total: 1,004,106 parameters at input (1, 45, 600).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.conv import Conv2d
from models.registry import register_model
from utils.errors import UserError

EXPANSION = 2


class SpatialReconstruction(nn.Module):
    """SR: channel mean -> 7x7 dilated conv -> dropout -> sigmoid -> rescale the input; (B,C,H,W) -> same."""

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=7, padding=6, dilation=2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.drop(self.conv(x.mean(dim=1, keepdim=True)))
        return x * torch.sigmoid(gate)


class LocalAttention(nn.Module):
    """LA (ECA-like): global average pool -> Conv1d (k=3) across channels -> sigmoid -> scale channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.conv(pooled.unsqueeze(1))).squeeze(1)  # (B, C)
        return x * gate[:, :, None, None]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SRLABlock(nn.Module):
    """Res2Net bottleneck with SR and LA; (B, in_planes, H, W) -> (B, 2·planes, ceil(H/s), ceil(W/s)).

    ``first=True`` is the "stage" block (stride ``stride``, split i -> group i, last split average-pooled);
    otherwise the "normal" block (stride 1, hierarchical: group i gets output i−1 + SR(split i)).
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        first: bool = False,
        base_width: int = 26,
        scale: int = 8,
    ) -> None:
        super().__init__()
        if not first and stride != 1:
            raise ValueError("only the first block of a stage can have a stride")
        width = int(math.floor(planes * base_width / 64.0))
        out_planes = planes * EXPANSION
        self.width = width
        self.first = first

        self.conv1 = Conv2d(in_planes, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False) for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale - 1))
        if first:
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1)
        else:
            self.sr = SpatialReconstruction()
        self.conv3 = Conv2d(width * scale, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.la = LocalAttention()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False),
                Conv2d(in_planes, out_planes, 1, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLUs in place on batch-norm outputs and sums, which nothing else keeps (4-5 % faster on CPU)
        splits = torch.split(F.relu(self.bn1(self.conv1(x)), inplace=True), self.width, dim=1)
        outputs: list[torch.Tensor] = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            group_in = splits[i] if self.first or i == 0 else outputs[-1] + self.sr(splits[i])
            outputs.append(F.relu(bn(conv(group_in)), inplace=True))
        outputs.append(self.pool(splits[-1]) if self.first else splits[-1])
        out = self.la(self.bn3(self.conv3(torch.cat(outputs, dim=1))))
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + residual, inplace=True)


class AngleLinear(nn.Module):
    """A-Softmax output layer: logits = x · w_j with unit-norm columns w_j, i.e. ‖x‖·cos θ_j.

    (B, in_features) -> (B, out_features). The weight (in_features, out_features) is renormalised
    column-wise at every forward, as in SphereFace.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        weight = torch.empty(in_features, out_features).uniform_(-1, 1)
        self.weight = nn.Parameter(F.normalize(weight, dim=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ F.normalize(self.weight, dim=0)


@register_model("sr_la_res2net")
class SRLARes2Net(nn.Module):
    """SR-LA-Res2Net on F0-subband features; (B, 1, 45, 600) -> (embedding (B, 256), logits (B, 2)).

    The embedding is the global average of the last stage (256 channels); the logits are
    ‖x‖·cos θ per class (column 0 = bona fide), meant for `models.losses.ASoftmaxLoss`.
    The network is fully convolutional; ``input_shape`` fixes only the input channel count.
    Output maps per stage at 45x600: 45x600, 23x300, 12x150, 6x75.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 45, 600),
        layers: Sequence[int] = (2, 2, 2, 2),
        base_width: int = 26,
        scale: int = 8,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise UserError(
                f"sr_la_res2net: input_shape must be (channels, height, width), got {list(input_shape)}"
            )
        if len(layers) != 4:
            raise UserError(f"sr_la_res2net: layers must list 4 stage depths, got {list(layers)}")
        self.input_shape = tuple(int(v) for v in input_shape)
        stem_channels = 16
        self.stem = nn.Sequential(
            *_conv_bn_relu(self.input_shape[0], stem_channels, 3),
            *_conv_bn_relu(stem_channels, stem_channels, 3),
            *_conv_bn_relu(stem_channels, stem_channels, 3),
        )
        in_planes = stem_channels
        stages = []
        for index, (planes, depth) in enumerate(zip((16, 32, 64, 128), layers, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = [SRLABlock(in_planes, planes, stride, first=True, base_width=base_width, scale=scale)]
            in_planes = planes * EXPANSION
            blocks += [
                SRLABlock(in_planes, planes, base_width=base_width, scale=scale) for _ in range(depth - 1)
            ]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.emb_dim = in_planes
        self.classifier = AngleLinear(in_planes, n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # As released: only 2-D convs get Kaiming init (the LA Conv1d and the SR conv bias keep
        # torch's defaults); BatchNorm starts as the identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 1, 45, 600) log-magnitude F0 subband -> (embedding (B, 256), logits ‖x‖·cos θ (B, 2))."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        embedding = x.mean(dim=(2, 3))
        return embedding, self.classify(embedding)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, 256) embedding -> (B, 2) logits ‖x‖·cos θ: the last layer alone."""
        return self.classifier(embedding)
