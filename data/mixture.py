"""Several corpora in one training run: `MixtureDataset` joins the datasets of several sources end to end
(like ``torch.utils.data.ConcatDataset``, with names, weights and per-epoch draws) and `MixtureSampler`
draws an epoch from them by weight.

An epoch is ``draws`` items. The source of each draw is chosen with probability proportional to its
weight; within a source, items come in a random order without replacement until the source is exhausted,
then in a fresh random order. Everything is drawn from one ``torch.Generator`` seeded from (run seed,
epoch), so the order is the same on every process, in every run and after a resume; each of ``world_size``
processes then takes the draws ``rank, rank + world_size, ...`` of the order padded (by repeating its
start) to a multiple of ``world_size``, as ``torch.utils.data.DistributedSampler`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from utils.errors import UserError

#: Multiplier of the run seed in the epoch order's seed, as in the trainer's loader seed.
_EPOCH_SEED = 100_003


class MixtureDataset(Dataset):
    """The datasets ``parts`` of the sources ``names`` one after another: item ``offsets[k] + i`` is item
    ``i`` of source ``k``. ``weights`` (> 0) are the sources' draw weights (`MixtureSampler`)."""

    def __init__(self, parts: Sequence[Dataset], names: Sequence[str], weights: Sequence[float]) -> None:
        if not (len(parts) == len(names) == len(weights)) or not parts:
            raise ValueError("a mixture needs one name and weight per source, and at least one source")
        for name, part in zip(names, parts, strict=True):
            if len(part) == 0:
                raise UserError(f"data source '{name}' has no utterances")
        self.parts, self.names = list(parts), [str(n) for n in names]
        self.weights = [float(w) for w in weights]
        self.sizes = [len(p) for p in parts]
        self.offsets = np.concatenate(([0], np.cumsum(self.sizes))).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(source, index within the source) of mixture item ``index``."""
        source = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return source, int(index) - int(self.offsets[source])

    def source_of(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n,) int64: the source of each mixture item of ``indices``."""
        return np.searchsorted(self.offsets, np.asarray(indices, np.int64), side="right") - 1

    def __getitem__(self, index: int) -> Any:
        source, i = self.locate(index)
        return self.parts[source][i]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The items of ``indices`` in that order, read per source in one batch where a source can
        (a feature store's batched reads)."""
        sources = self.source_of(indices)
        out: list[Any] = [None] * len(indices)
        for source in np.unique(sources):
            where = np.flatnonzero(sources == source)
            part = self.parts[source]
            local = [int(indices[j]) - int(self.offsets[source]) for j in where]
            batch = part.__getitems__(local) if hasattr(part, "__getitems__") else [part[i] for i in local]
            for j, item in zip(where, batch, strict=True):
                out[j] = item
        return out

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Pass the epoch on to the sources with per-epoch draws (crops, augmentation); source ``k`` of
        ``n`` gets run seed ``seed * n + k``, so that equal row indices of two sources draw differently."""
        for k, part in enumerate(self.parts):
            set_epoch = getattr(part, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch, seed=None if seed is None else int(seed) * len(self.parts) + k)

    @property
    def augment_settings(self) -> dict[str, Any] | None:
        """The first source's augmentation settings (every source uses the recipe's one)."""
        return next((s for s in (getattr(p, "augment_settings", None) for p in self.parts) if s), None)


def mixture_order(
    sizes: Sequence[int], weights: Sequence[float], draws: int, seed: int, epoch: int
) -> torch.Tensor:
    """(draws,) int64 mixture indices of one epoch (see the module docstring), from (seed, epoch) only."""
    if draws < 1:
        raise ValueError(f"an epoch needs at least one draw, got {draws}")
    generator = torch.Generator()
    generator.manual_seed(int(seed) * _EPOCH_SEED + int(epoch))
    sources = torch.multinomial(
        torch.tensor(weights, dtype=torch.float64), draws, replacement=True, generator=generator
    )
    order = torch.empty(draws, dtype=torch.int64)
    offset = 0
    for k, size in enumerate(sizes):
        where = torch.nonzero(sources == k).flatten()
        rounds = math.ceil(where.numel() / size)  # each round: a fresh permutation of the source
        if rounds:
            items = torch.cat([torch.randperm(size, generator=generator) for _ in range(rounds)])
            order[where] = offset + items[: where.numel()]
        offset += size
    return order


class MixtureSampler(Sampler[int]):
    """This process's share of each epoch's `mixture_order` over sources of ``sizes`` and ``weights``.

    ``draws``: items per epoch (None: the sum of ``sizes``). ``set_epoch`` chooses the epoch, as with
    ``DistributedSampler``; ``rank`` and ``world_size`` say which share (no torch.distributed here)."""

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float],
        draws: int | None = None,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.sizes, self.weights = [int(s) for s in sizes], [float(w) for w in weights]
        self.draws = sum(self.sizes) if draws is None else int(draws)
        self.seed, self.rank, self.world_size, self.epoch = int(seed), int(rank), int(world_size), 0
        self.num_samples = math.ceil(self.draws / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> torch.Tensor:
        """The whole epoch's order, as every process sees it."""
        return mixture_order(self.sizes, self.weights, self.draws, self.seed, self.epoch)

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        total = self.num_samples * self.world_size
        if total > order.numel():  # pad with the order's start, as DistributedSampler does
            order = torch.cat([order] * math.ceil(total / order.numel()))[:total]
        return iter(order[self.rank : total : self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples
