"""Raw-waveform datasets for models that read waves (AASIST) or train their front end (XLS-R-AASIST).

`WaveformDataset` yields ``(wave (n_samples,) float32, label, utt_id, attack)`` with the same
``collate_batch`` as the feature datasets. Per utterance: load (16 kHz mono) → optional augmentation of the
whole utterance (RawBoost, as published: before cropping) → crop to ``n_samples``:

- ``first``: the first ``n_samples`` samples, tiled when shorter (XLS-R-AASIST training; scoring);
- ``random``: a random ``n_samples`` window, tiled from the start when shorter (AASIST; docs/features.md).
  The reference draws ``randint(len - n)`` and crashes when an utterance is exactly ``n_samples`` long;
  here the start is drawn from ``0 … len - n`` inclusive.
- ``full``: the whole utterance at its own length (scoring with ``data.score_crop: full``, one utterance
  per batch); only an utterance shorter than ``min_samples``, the fewest samples the model takes, is tiled
  up to that.

Every random draw (augmentation and crop) is a pure function of (run seed, epoch, utterance index), set
with `WaveformDataset.set_epoch`: the same in every worker, run and ``--resume``, fresh every epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from data.audio import load_audio
from data.dataset import Augment, EpochDraws, audio_file
from data.protocols import ProtocolRow
from utils.errors import UserError
from utils.tiling import fix_length

#: The crops of the training partition (``data.train_crop``).
TRAIN_CROPS = ("first", "random")
#: The crops of scoring with a checkpoint (``data.score_crop``, generate_score.py --crop).
SCORE_CROPS = ("first", "full")
CROPS = (*TRAIN_CROPS, "full")
# Spawn key of the crop's generator: independent of the augmentation's draws for the same utterance.
_CROP_STREAM = 0x63726F70


def crop_start(n_wave: int, n_samples: int, seed: tuple[int, int, int]) -> int:
    """Start sample of the random crop of an ``n_wave``-sample utterance (0 when it is not longer)."""
    if n_wave <= n_samples:
        return 0
    rng = np.random.default_rng(np.random.SeedSequence([*(int(s) for s in seed), _CROP_STREAM]))
    return int(rng.integers(0, n_wave - n_samples + 1))


class WaveformDataset(EpochDraws):
    """Protocol rows read as fixed-length waves (see the module docstring).

    ``path_fn(utt_id) -> path`` locates the audio (None: the rows' own ``path``); ``crop`` is ``first``,
    ``random`` or ``full`` (then ``min_samples`` is the shortest wave yielded); ``augment`` (optional) is
    applied to the whole utterance before cropping; ``seed`` is the run seed (also settable with
    `set_epoch`). Unreadable audio raises `UserError` naming the file.
    """

    def __init__(
        self,
        rows: Sequence[ProtocolRow],
        path_fn: Callable[[str], str | os.PathLike] | None,
        n_samples: int,
        crop: str = "first",
        augment: Augment | None = None,
        seed: int = 0,
        min_samples: int = 1,
    ) -> None:
        if crop not in CROPS:
            raise UserError(f"config: crop {crop!r} is not one of {', '.join(CROPS)}")
        if int(n_samples) < 1:
            raise UserError(f"config: n_samples must be positive, got {n_samples}")
        super().__init__(augment, seed)
        self.rows = list(rows)
        self.path_fn = path_fn
        self.n_samples = int(n_samples)
        self.crop = crop
        self.min_samples = max(1, int(min_samples))
        self.labels = np.array([r.label for r in self.rows], dtype=np.int64)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.n_samples,)

    def __len__(self) -> int:
        return len(self.rows)

    def wave(self, i: int) -> np.ndarray:
        """Utterance ``i`` of this epoch: (n_samples,) float32 (``full``: (n,) with n >= min_samples),
        augmented and cropped."""
        wave = self.augmented(load_audio(audio_file(self.rows[i], self.path_fn)), i)
        if self.crop == "full":
            return np.asarray(fix_length(wave, max(wave.shape[0], self.min_samples)), dtype=np.float32)
        start = crop_start(wave.shape[0], self.n_samples, self.key(i)) if self.crop == "random" else 0
        return np.asarray(fix_length(wave[start:], self.n_samples), dtype=np.float32)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str, str]:
        row = self.rows[i]
        return torch.from_numpy(self.wave(i)), row.label, row.utt_id, row.attack
