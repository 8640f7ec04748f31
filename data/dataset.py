"""Torch datasets: features read from a feature store, or computed from audio on the fly.

Both yield ``(feature, label, utt_id, attack)``: ``feature`` a tensor of the front end's
``feature_shape`` (in the store's dtype for `StoreDataset` — float16 for SSL features, so batches move
half the bytes and are cast to float32 on the compute device by the trainer and scorer; float32 from
`AudioDataset`), ``label`` 0 = bona fide / 1 = spoof. `collate_batch` stacks them for a DataLoader.
Both also implement ``__getitems__``, which torch's DataLoader uses to fetch a whole batch in one call
(one gathered store read, or one batched front-end call).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data.audio import load_audio
from data.protocols import ProtocolRow
from data.store import FeatureStore
from utils.errors import UserError

Item = tuple[torch.Tensor, int, str, str]


def audio_file(row: ProtocolRow, path_fn: Callable[[str], str | os.PathLike] | None) -> Path:
    """Where ``row``'s audio is: ``path_fn(utt_id)``, or the row's own path when ``path_fn`` is None."""
    if path_fn is not None:
        return Path(path_fn(row.utt_id))
    if row.path is None:
        raise ValueError(f"protocol row {row.utt_id} carries no audio path and no path_fn was given")
    return Path(row.path)


class StoreDataset(Dataset):
    """Rows of a feature store joined with protocol rows; rows marked bad in the store are left out.

    ``rows``: the protocol rows to use (labels and attacks come from them; every one must be in the
    store). None = every good row of the store, with labels from the protocol columns preprocess.py
    recorded in the store index. ``allow_partial`` also accepts an unfinished store (pending rows are
    left out like bad ones).
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        rows: Sequence[ProtocolRow] | None = None,
        allow_partial: bool = False,
    ) -> None:
        self.store = FeatureStore(store_dir, allow_partial=allow_partial)
        if rows is None:
            if any(len(cols) != 4 for cols in self.store.index):
                raise UserError(f"{self.store.store_dir}: the store index has no protocol labels; "
                                "pass the protocol rows")
            # index columns, as written by preprocess.py: utt_id speaker attack key
            rows = [ProtocolRow(cols[1], cols[0], cols[2], cols[3]) for cols in self.store.index]
        missing = [r.utt_id for r in rows if r.utt_id not in self.store]
        if missing:
            raise UserError(f"{self.store.store_dir}: {len(missing)} protocol utterance(s) not in the store "
                            f"(first: {', '.join(missing[:3])}); made from "
                            f"another protocol or only its first rows?")
        store_rows = np.array([self.store.row_of(r.utt_id) for r in rows], dtype=np.int64)
        keep = self.store.valid[store_rows] if len(rows) else np.zeros(0, bool)
        self.rows = [r for r, k in zip(rows, keep, strict=True) if k]
        self.store_rows = store_rows[keep]
        #: protocol rows left out because the store marks them bad (or, with allow_partial, pending)
        self.excluded = [r for r, k in zip(rows, keep, strict=True) if not k]
        self.labels = np.array([r.label for r in self.rows], dtype=np.int64)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.store.feature_shape

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Item:
        row = self.rows[i]
        feature = torch.from_numpy(np.array(self.store[int(self.store_rows[i])]))
        return feature, row.label, row.utt_id, row.attack

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        batch = self.store.get_batch(self.store_rows[np.asarray(indices)])
        # a variable-length store gives one array per row (a batch of them cannot be stacked here)
        if isinstance(batch, np.ndarray):
            feats = torch.from_numpy(batch)
        else:
            feats = [torch.from_numpy(row) for row in batch]
        return [(feats[j], self.rows[i].label, self.rows[i].utt_id, self.rows[i].attack)
                for j, i in enumerate(indices)]


#: ``augment(wave, (run_seed, epoch, index)) -> wave``, e.g. `data.augment.Augmenter`.
Augment = Callable[[np.ndarray, tuple[int, int, int]], np.ndarray]


class EpochDraws(Dataset):
    """What datasets with per-utterance random draws share (augmentation; crops in `WaveformDataset`):
    every draw is keyed by (run seed, epoch, row index), set with `set_epoch`, so it is fresh every epoch
    yet the same in every run, DataLoader worker and resume. Subclasses set ``augment`` and call
    ``super().__init__(augment, seed)``."""

    def __init__(self, augment: Augment | None, seed: int) -> None:
        self.augment, self.seed, self.epoch = augment, int(seed), 0

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """The epoch (0-based) whose draws the following reads make, and the run seed if given."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    def key(self, index: int) -> tuple[int, int, int]:
        """(run seed, epoch, row index): the seed of row ``index``'s draws this epoch."""
        return self.seed, self.epoch, int(index)

    def augmented(self, wave: np.ndarray, index: int) -> np.ndarray:
        """``wave`` of row ``index`` after this epoch's augmentation (unchanged without one)."""
        return wave if self.augment is None else self.augment(wave, self.key(index))

    @property
    def augment_settings(self) -> dict[str, Any] | None:
        """The augmentation's ``settings()`` for the run record (None without augmentation)."""
        settings = getattr(self.augment, "settings", None)
        return settings() if callable(settings) else None


class AudioDataset(EpochDraws):
    """Protocol rows whose features are computed from audio when read (no store needed).

    ``path_fn(utt_id) -> path`` locates the audio; None: the rows' own ``path`` (`data.corpora.Corpus.read`
    fills it in); ``frontend`` is a front end from `models.frontends.build_frontend`.
    Unreadable audio raises `UserError` naming the file. For SSL front ends keep DataLoader workers at 0
    (the model is big); F0 is cheap enough to compute in workers.

    ``augment(wave, (augment_seed, epoch, index)) -> wave`` (e.g. `data.augment.Augmenter`) runs between
    loading and the front end: float32 (n,) at 16 kHz in and out, a pure function of its arguments, so an
    utterance's augmentation is fresh every epoch yet the same in every run, worker and resume. The
    trainer calls `set_epoch` before each epoch; DataLoader workers get the dataset (and its epoch) when
    the epoch's iterator starts, so they must not be persistent. Nothing augmented is cached.
    """

    def __init__(
        self,
        rows: Sequence[ProtocolRow],
        path_fn: Callable[[str], str | os.PathLike] | None,
        frontend: Any,
        augment: Augment | None = None,
        augment_seed: int = 0,
    ) -> None:
        super().__init__(augment, augment_seed)
        self.rows = list(rows)
        self.path_fn = path_fn
        self.frontend = frontend
        self.labels = np.array([r.label for r in self.rows], dtype=np.int64)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.frontend.feature_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def _features(self, indices: Sequence[int]) -> torch.Tensor:
        # keyed by the row's position in the partition: independent of batching, order and worker
        waves = [self.augmented(load_audio(audio_file(self.rows[i], self.path_fn)), i) for i in indices]
        return torch.from_numpy(np.asarray(self.frontend.extract(waves), dtype=np.float32))

    def __getitem__(self, i: int) -> Item:
        row = self.rows[i]
        return self._features([i])[0], row.label, row.utt_id, row.attack

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        feats = self._features(indices)
        return [(feats[j], self.rows[i].label, self.rows[i].utt_id, self.rows[i].attack)
                for j, i in enumerate(indices)]


def collate_batch(items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """Items -> (features (B, *feature_shape), labels (B,) int64, utt_ids, attacks)."""
    feats, labels, utt_ids, attacks = zip(*items, strict=True)
    return torch.stack(feats), torch.tensor(labels, dtype=torch.int64), list(utt_ids), list(attacks)
