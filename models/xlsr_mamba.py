"""The XLSR-Mamba back end (Xiao & Das, IEEE SPL 2025; swagshaw/XLSR-Mamba ``model.py`` and
``mamba_blocks.py``; docs/systems/xlsr_mamba.md): 1,936,950 parameters at emb 144 with 12 encoders.

Linear hidden→emb on the SSL hidden states (B, T, hidden), BatchNorm2d(1) over (B, 1, T, emb), SELU, then
the dual-column mixer: Dropout 0.1; a forward column of n_encoders/2 Mamba blocks on the sequence and a
backward column on the time-reversed sequence, each block Add → RMSNorm → Mamba (`models.mamba`); one
final RMSNorm (``norm_f``, shared by the columns); per-column attention pooling (Linear emb→1, softmax
over time); concatenation → Linear 2·emb→emb → Dropout 0.1 → Linear emb→2.

**The dual-column quirk, kept.** The reference's ``MixerModel.forward`` (with ``fused_add_norm``) ends
each column with norm_f(x + residual), where x is the mixer's *input* after dropout in forward time order
(for both columns) and residual is the column's running residual: the last block's mixer output is never
used. So each column's last block (mixer and norm, 145,584 parameters each) has no effect on the output
and gets no gradient; its weights are kept so released checkpoints load, it is not computed, and
``has_unused_parameters`` tells DDP. The backward column's residual stays in reversed time order when
it is added to the forward-order input, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.mamba import MambaBlock, RMSNorm
from models.registry import register_model
from models.ssl_input import frames_first, hidden_size_of


class DualColumnMixer(nn.Module):
    """The reference's bidirectional ``MixerModel``: (B, T, emb) -> (embedding (B, emb), logits (B, 2)).
    Attribute names follow the reference (``forward_layers``, ``norm_f``, ``f_attention_pool``, ...)."""

    def __init__(self, d_model: int = 144, n_layer: int = 6, n_classes: int = 2, impl: str = "auto") -> None:
        super().__init__()
        self.forward_layers = nn.ModuleList(MambaBlock(d_model, impl=impl) for _ in range(n_layer))
        self.backward_layers = nn.ModuleList(MambaBlock(d_model, impl=impl) for _ in range(n_layer))
        self.norm_f = RMSNorm(d_model)
        # the reference rescales out_proj by 1/sqrt(n_layer) (GPT-2 scheme) before the heads are built
        for block in (*self.forward_layers, *self.backward_layers):
            nn.init.kaiming_uniform_(block.mixer.out_proj.weight, a=5**0.5)
            with torch.no_grad():
                block.mixer.out_proj.weight /= n_layer**0.5
        self.f_attention_pool = nn.Linear(d_model, 1)
        self.b_attention_pool = nn.Linear(d_model, 1)
        self.LL = nn.Linear(2 * d_model, d_model)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(d_model, n_classes)

    def column(self, blocks: nn.ModuleList, hidden: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """One column on ``hidden`` (B, T, emb) -> norm_f(start + the residual entering its last block)."""
        residual = None
        for block in blocks[:-1]:
            hidden, residual = block(hidden, residual)
        # the last block only adds its input to the residual; its mixer output is discarded (quirk)
        residual = hidden.float() if residual is None else residual + hidden.float()
        return self.norm_f(start.float() + residual).to(start.dtype)

    @staticmethod
    def pool(attention: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """Attention pooling over time: Σ_t softmax_t(attention(x_t)) x_t -> (B, emb)."""
        return (F.softmax(attention(x), dim=1) * x).sum(dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dropout(x)
        forward = self.column(self.forward_layers, x, x)
        backward = self.column(self.backward_layers, x.flip(1), x)
        pooled = torch.cat(
            (self.pool(self.f_attention_pool, forward), self.pool(self.b_attention_pool, backward)), 1
        )
        embedding = self.dropout(self.LL(pooled))
        return embedding, self.classifier(embedding)


@register_model("xlsr_mamba")
class XLSRMambaBackEnd(nn.Module):
    """XLSR-Mamba back end over SSL hidden states -> (embedding (B, emb), logits (B, 2)).

    ``input_shape``: (frames, hidden) or (1, hidden, frames); only ``hidden`` sizes the model, any number
    of frames runs. ``impl``: the selective scan (`models.selective_scan.selective_scan`).
    """

    has_unused_parameters = True  # each column's last block (see the module docstring)
    #: any number of frames from one up runs (full-utterance scoring, ``data.score_crop``)
    min_frames = 1

    def __init__(
        self,
        input_shape: Sequence[int] = (201, 1024),
        emb_size: int = 144,
        num_encoders: int = 12,
        n_classes: int = 2,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(v) for v in input_shape)
        self.LL = nn.Linear(hidden_size_of(self.input_shape, "xlsr_mamba"), emb_size)
        self.first_bn = nn.BatchNorm2d(1)
        self.selu = nn.SELU()
        self.mixer = DualColumnMixer(emb_size, num_encoders // 2, n_classes, impl)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, frames, hidden) or (B, 1, hidden, frames) -> (embedding (B, emb), logits (B, 2))."""
        x = self.LL(frames_first(x)).unsqueeze(1)  # (B, 1, T, emb)
        x = self.selu(self.first_bn(x)).squeeze(1)
        return self.mixer(x)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, emb) pooled embedding -> (B, 2) logits."""
        return self.mixer.classifier(embedding)
