"""The F0 subband front end in torch: the same features as `models.frontends.f0_subband` (its "dft"
method), as one differentiable graph on any device and exportable to ONNX with dynamic batch and length.

Computed in float64, as the numpy front end, then returned as float32: ln(|X| + e^-80) of near-silent
bins needs the precision (float32 DFT sums of 1,728 products would move them by up to ~0.1).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal.windows import blackman
from torch import nn

from models.frontends.f0_subband import F0SubbandFrontEnd


class F0SubbandTorch(nn.Module):
    """waves (B, L) float32, 16 kHz, any L ≥ 1 -> (B, 1, n_bins, n_frames) float32: the settings of
    ``frontend`` (`F0SubbandFrontEnd`): first ``n_samples`` samples, pre-emphasis, centred frames of n_fft
    every hop with n_fft/2 zeros at both ends, symmetric Blackman window, ln(|X| + e^-80) of the first
    n_bins bins, tiled in time to n_frames (mirror or repeat) when the clip gives fewer frames."""

    def __init__(self, frontend: F0SubbandFrontEnd) -> None:
        super().__init__()
        self.n_samples, self.n_fft, self.hop = frontend.n_samples, frontend.n_fft, frontend.hop
        self.n_bins, self.n_frames, self.tiling = frontend.n_bins, frontend.n_frames, frontend.tiling
        self.pre_emphasis = frontend.pre_emphasis
        n = np.arange(self.n_fft)
        # exact phases: k·n reduced modulo n_fft in integers before the float conversion
        phase = 2.0 * np.pi * ((np.outer(n, np.arange(self.n_bins)) % self.n_fft) / self.n_fft)
        window = blackman(self.n_fft, sym=True)[:, None]
        dft = np.concatenate([window * np.cos(phase), -window * np.sin(phase)], axis=1)  # (n_fft, 2·bins)
        self.register_buffer("dft", torch.from_numpy(dft), persistent=False)
        self.register_buffer("offsets", torch.arange(self.n_fft), persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        x = waves[:, : self.n_samples].to(torch.float64)
        y = torch.cat([x[:, :1], x[:, 1:] - self.pre_emphasis * x[:, :-1]], dim=1)
        half = self.n_fft // 2
        padded = torch.nn.functional.pad(y, (half, half))
        t = torch.sym_min(y.shape[1] // self.hop + 1, self.n_frames)  # kept frames of the centred STFT
        starts = torch.arange(t, device=waves.device) * self.hop
        frames = padded[:, starts[:, None] + self.offsets[None, :]]  # (B, t, n_fft)
        spec = frames @ self.dft  # (B, t, 2·bins) = [Re | Im]
        logmag = torch.log(torch.sqrt(spec[..., : self.n_bins] ** 2 + spec[..., self.n_bins :] ** 2)
                           + float(np.exp(-80.0)))
        index = torch.arange(self.n_frames, device=waves.device)
        count = torch.full((1,), t, dtype=torch.long, device=waves.device)  # a tensor: exportable modulo
        if self.tiling == "mirror":  # S, S reversed, S, ...: period 2t
            phase = index % (2 * count)
            index = torch.where(phase < count, phase, 2 * count - 1 - phase)
        else:
            index = index % count
        return logmag[:, index].transpose(1, 2).unsqueeze(1).to(torch.float32)
