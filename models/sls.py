"""The XLS-R-SLS back end, "sensitive layer selection" (Zhang et al., ACM MM 2024;
QiShanZhang/SLSforASVspoof-2021-DF ``model.py``; docs/systems/sls.md): 23,399,429 parameters on XLS-R 300M.

It reads every transformer layer's output before the final encoder LayerNorm (the ``ssl`` front end with
``layers: all``), (B, layers, T, hidden). Each layer map is averaged over time → Linear hidden→1 →
sigmoid, a weight per layer; the weighted sum of the full maps (B, 1, T, hidden) → BatchNorm2d(1) → SELU
→ max-pool 3×3 → flatten → Linear → SELU (the embedding, 1024) → Linear 1024→2 → SELU → log-softmax (the
logits; the published score is the bona fide column). The flatten size, (T//3)·(hidden//3) = 67·341 =
22,847 at 201 frames of XLS-R, fixes the number of frames: other lengths are refused with a clear error.
Attribute names follow the reference (``fc0``, ``first_bn``, ``fc1``, ``fc3``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_model
from utils.errors import UserError


@register_model("sls")
class SLSBackEnd(nn.Module):
    """SLS over all SSL layers -> (embedding (B, 1024), logits = log-probabilities (B, 2)).

    ``input_shape``: (layers, frames, hidden), e.g. (24, 201, 1024) for XLS-R 300M at 64,600 samples.
    """

    def __init__(self, input_shape: Sequence[int] = (24, 201, 1024), emb_dim: int = 1024,
                 n_classes: int = 2) -> None:
        super().__init__()
        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3 or min(shape) < 1 or shape[1] < 3 or shape[2] < 3:
            raise UserError(
                f"sls: input_shape must be (layers, frames >= 3, hidden >= 3) of the ssl front end with "
                f"layers: all, got {list(shape)}"
            )
        self.input_shape = shape
        _, frames, hidden = shape
        self.fc0 = nn.Linear(hidden, 1)
        self.first_bn = nn.BatchNorm2d(1)
        self.selu = nn.SELU()
        self.fc1 = nn.Linear((frames // 3) * (hidden // 3), emb_dim)
        self.fc3 = nn.Linear(emb_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, layers, frames, hidden) -> (embedding (B, 1024), log-probabilities (B, 2))."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise UserError(
                f"sls: needs inputs of exactly {list(self.input_shape)} (layers, frames, hidden): its "
                f"flatten size fixes {self.input_shape[1]} frames; got {list(x.shape[1:])} (score SLS on "
                "fixed-length crops, not whole utterances)"
            )
        weights = torch.sigmoid(self.fc0(x.mean(dim=2)))  # (B, layers, 1): one weight per layer
        mixed = (x * weights.unsqueeze(-1)).sum(dim=1, keepdim=True)  # (B, 1, frames, hidden)
        mixed = F.max_pool2d(self.selu(self.first_bn(mixed)), (3, 3))
        embedding = self.selu(self.fc1(mixed.flatten(1)))
        return embedding, self.classify(embedding)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, 1024) -> (B, 2) log-probabilities (SELU, then log-softmax, as published)."""
        return F.log_softmax(self.selu(self.fc3(embedding)), dim=1)
