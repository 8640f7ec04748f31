"""Stochastic weight averaging (SWA) of model snapshots, and the BatchNorm update that follows it.

The published AASIST recipe (docs/training.md; torchcontrib's SWA in clovaai/aasist) adds a snapshot
whenever the dev EER is at least as good as the best so far; at the end it loads the equal-weight
average of the snapshots and recomputes the BatchNorm statistics with one pass over the training
set. `WeightAverage` keeps that average (its own ``state_dict`` goes into checkpoints, so resuming
continues the same average); `bn_update` does the BatchNorm pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """Running equal-weight average of state dicts (model snapshots).

    Floating-point tensors (parameters, BN running mean/var) are averaged in their own dtype,
    as torchcontrib and ``torch.optim.swa_utils`` do; other tensors (``num_batches_tracked``)
    keep the value of the latest snapshot. The BN statistics are only a placeholder until
    `bn_update` recomputes them for the averaged weights. Tensors are kept on the device they
    come from.
    """

    def __init__(self) -> None:
        self.count = 0
        self.average: dict[str, torch.Tensor] = {}

    def add(self, state: Mapping[str, torch.Tensor]) -> None:
        """Add one snapshot (e.g. ``model.state_dict()``); its keys must equal the earlier snapshots'."""
        if self.count and state.keys() != self.average.keys():
            differing = sorted(set(state) ^ set(self.average))
            raise ValueError(f"snapshot keys differ from the averaged ones: {differing[:5]}")
        self.count += 1
        for key, value in state.items():
            value = value.detach()
            if self.count == 1 or not value.is_floating_point():
                self.average[key] = value.clone()
            else:
                average = self.average[key]
                average += (value.to(average.dtype) - average) / self.count

    def averaged(self) -> dict[str, torch.Tensor]:
        """The averaged state dict (for ``model.load_state_dict``); raises if nothing was added."""
        if not self.count:
            raise ValueError("no snapshot was added to the weight average")
        return {key: value.clone() for key, value in self.average.items()}

    def state_dict(self) -> dict[str, Any]:
        """``{"count": n, "average": {...}}``: tensors and an int, loadable with ``weights_only=True``."""
        return {"count": self.count, "average": dict(self.average)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from `state_dict` (e.g. on resume)."""
        self.count = int(state["count"])
        self.average = {key: value.clone() for key, value in state["average"].items()}


@torch.no_grad()
def bn_update(model: nn.Module, batches: Iterable[Any], device: torch.device | str | None = None) -> None:
    """Recompute every BatchNorm's running statistics with one pass over ``batches``.

    Each item is the model input or a tuple/list whose first element is (a data loader's
    ``(features, labels, ...)``), moved to ``device`` if given. The statistics are reset and
    then accumulated as a plain average over the batches (momentum None), with the model in train
    mode as in torchcontrib's ``bn_update`` (dropout active); the model's mode and the BN momenta
    are restored afterwards. A model without BatchNorm is left untouched.
    """
    torch.optim.swa_utils.update_bn(batches, model, device=device)
