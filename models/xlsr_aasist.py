"""AASIST back end of XLS-R-AASIST (SSL_Anti-spoofing model.py; docs/systems/xlsr_aasist.md), 447,242 params.

Input: SSL hidden states (B, frames, hidden) as returned by a Hugging Face wav2vec2-family model
(``last_hidden_state``: the last layer after the final encoder LayerNorm); the cached-feature
layout (B, 1, hidden, frames) of the ``ssl`` front end is accepted too. Linear hidden→128 →
(B, 1, 128, frames) → MaxPool 3×3 → BN → SELU → 6 ResBlocks without pooling (B, 64, 42, frames/3) →
BN → SELU → attention weights w (1×1 convs) → S = Σ_t softmax_t(w)⊙x and T = Σ_f softmax_f(w)⊙x →
the graph back end of `models.aasist_graph`. The spectral axis is fixed at 128 // 3 = 42; any
number of frames ≥ 3 runs. Attribute names follow the reference (``LL``, ``first_bn1``,
``attention`` ...), whose back-end tensors therefore load directly (`models.import_released`
converts the released checkpoints, swapping the output rows into our class order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.aasist_graph import GraphBackEnd, resblock_encoder
from models.registry import register_model
from utils.errors import UserError

#: Width of the Linear projection of the hidden states; the spectral node count is this // 3.
PROJECTED_DIM = 128
ENCODER_CHANNELS = (32, 32, 64, 64, 64, 64)


@register_model("xlsr_aasist")
class XLSRAASISTBackEnd(GraphBackEnd):
    """AASIST back end over SSL hidden states → (embedding (B, 160), logits (B, 2)).

    ``input_shape``: (frames, hidden) for hidden states, or (1, hidden, frames) for the cached
    ``ssl`` front-end layout; only ``hidden`` (1024 for XLS-R 300M) sizes the model. ``min_frames``: any
    number of frames from 3 up runs (the 3×3 max-pool; full-utterance scoring, ``data.score_crop``).
    """

    min_frames = 3

    def __init__(
        self,
        input_shape: Sequence[int] = (201, 1024),
        gat_dims: Sequence[int] = (64, 32),
        pool_ratios: Sequence[float] = (0.5, 0.5, 0.5),
        temperatures: Sequence[float] = (2.0, 2.0, 100.0),
        n_classes: int = 2,
    ) -> None:
        shape = tuple(int(v) for v in input_shape)
        if len(shape) == 2:
            hidden = shape[1]
        elif len(shape) == 3 and shape[0] == 1:
            hidden = shape[1]
        else:
            raise UserError(
                f"xlsr_aasist: input_shape must be (frames, hidden) or (1, hidden, frames), got {list(shape)}"
            )
        channels = ENCODER_CHANNELS[-1]
        super().__init__(channels, PROJECTED_DIM // 3, gat_dims, pool_ratios, temperatures, n_classes)
        self.input_shape = shape
        self.LL = nn.Linear(hidden, PROJECTED_DIM)
        self.first_bn = nn.BatchNorm2d(1)
        self.first_bn1 = nn.BatchNorm2d(channels)
        self.selu = nn.SELU()
        self.encoder = resblock_encoder(ENCODER_CHANNELS, pool=False)
        self.attention = nn.Sequential(
            nn.Conv2d(channels, 2 * channels, kernel_size=1),
            nn.SELU(),
            nn.BatchNorm2d(2 * channels),
            nn.Conv2d(2 * channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, frames, hidden) or (B, 1, hidden, frames) → (embedding (B, 160), logits (B, n_classes))."""
        if x.dim() == 4:
            x = x.squeeze(1).transpose(1, 2)
        x = self.LL(x).transpose(1, 2).unsqueeze(1)  # (B, 1, 128, frames)
        x = self.selu(self.first_bn(F.max_pool2d(x, (3, 3))))  # (B, 1, 42, frames/3)
        x = self.selu(self.first_bn1(self.encoder(x)))  # (B, 64, 42, frames/3)
        w = self.attention(x)
        e_s = (x * F.softmax(w, dim=-1)).sum(dim=-1)  # (B, 64, 42): weighted over time
        e_t = (x * F.softmax(w, dim=-2)).sum(dim=-2)  # (B, 64, frames/3): weighted over frequency
        embedding = self.graph_embedding(e_s, e_t)
        return embedding, self.classify(embedding)
