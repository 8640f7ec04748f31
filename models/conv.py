"""`Conv2d` that computes the convolutions oneDNN is slow at on CPUs as matrix products.

Per-op profiles of fp32 training on an AVX2 CPU (docs/PERFORMANCE.md) found two kinds of
convolution where oneDNN spends far more time than their arithmetic needs:

- one input channel (LCNN's first 5x5 conv over 1024x201 SSL features, SR-LA-Res2Net's stem):
  oneDNN's weight gradient for ``ic=1`` runs at a few GFLOP/s and its output is reordered from a
  blocked layout to NCHW and back (a 1 -> 1 channel conv, such as SR-LA-Res2Net's spatial-reconstruction
  gate, measured faster in oneDNN and stays there);
- 1x1 convolutions over NCHW maps whose channel counts are not multiples of 8 (SR-LA-Res2Net's
  Res2Net blocks): most of the time goes to those layout reorders.

Both are one batched matrix product over the NCHW memory as it is: ``weight (O, I*k*k) @ patches``
with ``patches = unfold(x)`` (one channel: ``k*k`` rows per sample) or ``x.view(B, I, H*W)`` (1x1).
Autograd differentiates ``unfold`` and ``bmm``, so every gradient is the same sum as the
convolution's, in another order (float32 rounding differs in the last bits).

The matrix-product path is taken only on CPU, in float32 outside autocast, for NCHW-contiguous
inputs; everything else (CUDA, bf16 autocast, channels_last, other shapes) is ``F.conv2d``.
The state dict and ``isinstance(m, nn.Conv2d)`` are those of ``nn.Conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with the CPU matrix-product path above; (B, C, H, W) -> (B, O, H', W')."""

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if self.uses_matmul(input):
            return conv_as_matmul(self, input, weight, bias)
        return super()._conv_forward(input, weight, bias)

    def uses_matmul(self, x: torch.Tensor) -> bool:
        """Whether ``x`` goes through the matrix-product path (see the module docstring)."""
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
            return False
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return False
        if x.dim() != 4 or not x.is_contiguous():
            return False
        # 1 -> 1 channel (the SR gate): the matrix product measured slower than oneDNN (a gemv)
        return (self.in_channels == 1 and self.out_channels > 1) or _pointwise(self)


def _pointwise(conv: nn.Conv2d) -> bool:
    """A 1x1, stride-1, unpadded convolution: its patches are the input map itself."""
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)


def conv_as_matmul(
    conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``conv``'s convolution of x (B, C, H, W) as ``weight (O, C*kh*kw) @ patches (B, C*kh*kw, L)``."""
    batch, _, height, width = x.shape
    if _pointwise(conv):
        out_h, out_w = height, width
        patches = x.reshape(batch, conv.in_channels, height * width)
    else:
        out_h, out_w = (
            (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
            for size, pad, dil, k, stride in zip(
                (height, width), conv.padding, conv.dilation, conv.kernel_size, conv.stride, strict=True
            )
        )
        patches = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    # bmm over an expanded (not copied) weight: torch.matmul's 2-D @ 3-D folding copies the maps
    matrix = weight.reshape(conv.out_channels, -1).expand(batch, conv.out_channels, -1)
    if bias is None:
        y = torch.bmm(matrix, patches)
    else:
        y = torch.baddbmm(bias.view(1, -1, 1), matrix, patches)
    return y.view(batch, conv.out_channels, out_h, out_w)
