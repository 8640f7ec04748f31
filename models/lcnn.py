"""XLS-R-LCNN back end: a light CNN over cached SSL hidden states (docs/systems/xlsr_lcnn.md).

The attribute names (``conv1`` ... ``conv9``, ``out``, ``fc_mu``) and the positions of the
layers inside each ``nn.Sequential`` reproduce the released model, so its state dict (see
`models.import_released`) loads with a plain ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.conv import Conv2d
from models.registry import register_model
from utils.errors import UserError


class _MaxOfHalves(torch.autograd.Function):
    """max(first half, second half) of dim 1 whose backward routes the gradient by a saved bool mask.

    ``torch.maximum``'s backward splits the gradient of ties in two (eq, where, div, two masked_fills
    and a cat over the full conv maps); it took a third of LCNN's fp32 training step on an AVX2 CPU
    (docs/PERFORMANCE.md). Here a tie sends the whole gradient to the first half, as max-pooling does;
    the forward values are the same.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=1)
        ctx.save_for_backward(first >= second)
        return torch.maximum(first, second)  # 4x faster than torch.where on these strided halves

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (take_first,) = ctx.saved_tensors
        if torch.compiler.is_compiling():  # dynamo cannot trace out= into views (a graph break per MFM)
            first = grad * take_first
            return torch.cat((first, grad - first), dim=1)
        out = grad.new_empty(grad.shape[0], 2 * grad.shape[1], *grad.shape[2:])
        first, second = out.chunk(2, dim=1)
        torch.mul(grad, take_first, out=first)
        torch.sub(grad, first, out=second)
        return out


class MaxFeatureMap(nn.Module):
    """Max-feature-map: split dim 1 into two halves and keep their element-wise maximum.

    (B, 2C, ...) -> (B, C, ...); works on conv maps and on linear features alike.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MaxOfHalves.apply(x)


# One row per block: (conv out channels before MFM, kernel size, layers after the MFM).
# The conv input is the previous block's MFM output (half its conv channels).
_BLOCKS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (64, 5, ("pool",)),
    (64, 1, ("bn",)),
    (96, 3, ("pool", "bn")),
    (96, 1, ("bn",)),
    (128, 3, ("pool",)),
    (128, 1, ("bn",)),
    (64, 3, ("bn",)),
    (64, 1, ("bn",)),
    (64, 3, ("pool",)),
)
_N_POOLS = sum("pool" in after for _, _, after in _BLOCKS)


def _block(in_channels: int, conv_channels: int, kernel: int, after: tuple[str, ...]) -> nn.Sequential:
    """conv (with bias, 'same' padding) -> MFM -> MaxPool 2x2 and/or BatchNorm (affine=False) as listed."""
    layers: list[nn.Module] = [
        Conv2d(in_channels, conv_channels, kernel, padding=kernel // 2),
        MaxFeatureMap(),
    ]
    for name in after:
        if name == "pool":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(nn.BatchNorm2d(conv_channels // 2, affine=False))
    return nn.Sequential(*layers)


@register_model("lcnn")
class LCNN(nn.Module):
    """LCNN back end of XLS-R-LCNN (4,111,074 parameters at input (1, 1024, 201)).

    Input (B, C, H, W) = (batch, 1, SSL hidden size, frames); output ``(embedding (B, emb_dim),
    logits (B, n_classes))`` with logit column 0 = bona fide. The flatten size is derived from
    ``input_shape`` (each of the 4 max-pools halves H and W, rounding down), so 768-dim SSL models
    and other lengths work.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 1024, 201),
        dropout: float = 0.7,
        emb_dim: int = 256,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise UserError(f"lcnn: input_shape must be (channels, height, width), got {list(input_shape)}")
        channels, height, width = (int(v) for v in input_shape)
        shrink = 2**_N_POOLS
        if height < shrink or width < shrink:
            raise UserError(
                f"lcnn: input_shape {list(input_shape)} is too small; height and width must be >= {shrink}"
            )
        self.input_shape = (channels, height, width)

        in_channels = channels
        for index, (conv_channels, kernel, after) in enumerate(_BLOCKS, start=1):
            setattr(self, f"conv{index}", _block(in_channels, conv_channels, kernel, after))
            in_channels = conv_channels // 2

        flat = in_channels * (height // shrink) * (width // shrink)
        self.out = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(flat, 160),
            MaxFeatureMap(),
            nn.Linear(80, emb_dim),
        )
        self.fc_mu = nn.Linear(emb_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) features -> (embedding (B, emb_dim), logits (B, n_classes))."""
        for index in range(1, len(_BLOCKS) + 1):
            x = getattr(self, f"conv{index}")(x)
        embedding = self.out(torch.flatten(x, 1))
        return embedding, self.classify(embedding)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, emb_dim) embedding -> (B, n_classes) logits: the last layer alone."""
        return self.fc_mu(embedding)
