"""AASIST and AASIST-L on raw waveforms (docs/systems/aasist.md; clovaai/aasist).

Fixed sinc filterbank (70 band-pass filters, 129 taps) → |·| → MaxPool 3×3 → BN → SELU →
6 ResBlocks, each followed by MaxPool(1,3) → spectral nodes S = max_t|e| (+ pos_S) and temporal
nodes T = max_f|e| → the graph back end of `models.aasist_graph`. 297,866 (AASIST) and 85,306
(AASIST-L) parameters. Attribute names follow clovaai's ``models/AASIST.py``, so its state dicts
load (after swapping the output rows: class 0 = bona fide here).

Differences from the reference: the filterbank is computed in float64 throughout (the reference
evaluates the sinc on a float32 grid) and stored as float32; frequency masking of the filterbank
(``Freq_aug``, off in the published recipes) is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.aasist_graph import GraphBackEnd, resblock_encoder
from models.registry import register_model
from utils.errors import UserError


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Hz → mel = 2595·log10(1 + f/700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """mel → Hz, the inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def sinc_filterbank(n_filters: int = 70, kernel_size: int = 129, sample_rate: int = 16000) -> np.ndarray:
    """Fixed mel-spaced band-pass sinc filters, float64 (n_filters, kernel_size).

    Edges f_0..f_n: n_filters + 1 points equally spaced in mel over [0, sample_rate/2] Hz. For taps
    n = −(K−1)/2 … (K−1)/2: h_i[n] = hamming[n]·(2f_{i+1}/fs·sinc(2f_{i+1}n/fs) − 2f_i/fs·sinc(2f_i n/fs)),
    with the symmetric Hamming window and sinc(x) = sin(πx)/(πx).
    """
    if kernel_size % 2 == 0:
        raise UserError(f"aasist: kernel_size must be odd (a symmetric filter), got {kernel_size}")
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_filters + 1))
    taps = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) / 2
    scaled = 2.0 * edges[:, None] / sample_rate  # (n_filters + 1, 1)
    ideal = scaled * np.sinc(scaled * taps)  # low-pass impulse responses, one per edge
    return np.hamming(kernel_size) * (ideal[1:] - ideal[:-1])


class SincFilterbank(nn.Module):
    """Fixed (not learned) `sinc_filterbank` as a 1-D convolution: (B, 1, n) → (B, n_filters, n − K + 1).

    The filters are a non-persistent float32 buffer (n_filters, 1, K), computed in float64: not in
    the state dict, so the reference checkpoints (which do not store them either) load.
    """

    def __init__(self, n_filters: int = 70, kernel_size: int = 129, sample_rate: int = 16000) -> None:
        super().__init__()
        bank = torch.from_numpy(sinc_filterbank(n_filters, kernel_size, sample_rate)).float()
        self.register_buffer("filters", bank.unsqueeze(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.filters.to(x.dtype))


#: Published sizes (the two .conf files of clovaai/aasist).
AASIST_CHANNELS = (32, 32, 64, 64, 64, 64)
AASIST_L_CHANNELS = (32, 32, 24, 24, 24, 24)


@register_model("aasist")
class AASIST(GraphBackEnd):
    """AASIST on raw 16 kHz waveforms: (B, n_samples) float32 → (embedding (B, 160), logits (B, 2)).

    Any length of at least `min_samples` (2,315 with the defaults) runs; the recipes train on
    random 64,600-sample crops and score the first 64,600 samples. ``input_shape`` (n_samples,)
    only documents the recipe's length. ``channels``: output channels of the 6 ResBlocks;
    ``gat_dims``, ``pool_ratios`` (S, T, HS-GAL) and ``temperatures`` (GAT-S, GAT-T, HS-GAL) as in
    `GraphBackEnd`.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (64600,),
        n_filters: int = 70,
        kernel_size: int = 129,
        sample_rate: int = 16000,
        channels: Sequence[int] = AASIST_CHANNELS,
        gat_dims: Sequence[int] = (64, 32),
        pool_ratios: Sequence[float] = (0.5, 0.7, 0.5),
        temperatures: Sequence[float] = (2.0, 2.0, 100.0),
        n_classes: int = 2,
    ) -> None:
        if len(channels) != 6:
            raise UserError(f"aasist: channels must list the 6 ResBlock widths, got {list(channels)}")
        n_spectral = int(n_filters) // 3
        super().__init__(channels[-1], n_spectral, gat_dims, pool_ratios, temperatures, n_classes)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.conv_time = SincFilterbank(n_filters, kernel_size, sample_rate)
        self.first_bn = nn.BatchNorm2d(1)
        self.selu = nn.SELU()
        self.encoder = resblock_encoder(channels, pool=True)
        # Sinc conv (K−1 samples lost), MaxPool 3, then six MaxPool(1,3): the time axis must stay ≥ 1.
        self.min_samples = kernel_size - 1 + 3 * 3 ** len(channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, n_samples) or (B, 1, n_samples) waveform → (embedding (B, 160), logits (B, n_classes))."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if x.shape[-1] < self.min_samples:
            raise ValueError(f"AASIST needs at least {self.min_samples} samples, got {x.shape[-1]}")
        x = self.conv_time(x)  # (B, F, n − K + 1)
        x = F.max_pool2d(x.unsqueeze(1).abs(), (3, 3))  # (B, 1, F/3, T/3)
        e = self.encoder(self.selu(self.first_bn(x)))  # (B, C, F/3, T/3^7)
        embedding = self.graph_embedding(e.abs().amax(dim=3), e.abs().amax(dim=2))
        return embedding, self.classify(embedding)


@register_model("aasist_l")
class AASISTL(AASIST):
    """AASIST-L: AASIST with the light sizes of ``AASIST-L.conf`` (85,306 parameters)."""

    def __init__(self, input_shape: Sequence[int] = (64600,), n_classes: int = 2) -> None:
        super().__init__(
            input_shape,
            channels=AASIST_L_CHANNELS,
            gat_dims=(24, 32),
            pool_ratios=(0.4, 0.5, 0.7),
            temperatures=(2.0, 2.0, 100.0),
            n_classes=n_classes,
        )
