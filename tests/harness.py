"""Training harness shared by tests/test_cuda.py and bench/gpu_check.py: a real `engine.trainer.Trainer`
fed with batches already on the device, so a test or a benchmark runs the trainer's own step (autocast,
GradScaler, optimizer, scheduler) without input costs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch


class DeviceBatches:
    """Stands in for the trainer's DataLoader (and its sampler): ``(x, y)`` pairs already on the device,
    yielded as the trainer's ``(x, y, utt_ids, attacks)`` batches, so `Trainer.train_epoch` runs its real
    step (autocast, GradScaler, optimizer, scheduler) without input costs."""

    def __init__(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = list(batches)
        self.generator = torch.Generator()

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str], list[str]]]:
        for x, y in self.batches:
            yield x, y, [f"u{i}" for i in range(len(y))], ["-"] * len(y)

    def set_epoch(self, epoch: int) -> None:
        """Sampler interface: the order is the list's."""


def device_trainer(
    cfg: dict[str, Any], device: torch.device, out_dir: Path, frontend: torch.nn.Module | None = None
) -> Any:
    """An `engine.trainer.Trainer` of the recipe ``cfg`` on ``device``, set up (model, optimizer, scaler,
    compile) and ready for `train_on_batches`."""
    from engine.trainer import Trainer
    from models import build_model
    from models.losses import build_loss
    from utils.distributed import DistInfo

    model, loss_fn = build_model(cfg["model"]), build_loss(cfg["loss"])
    trainer = Trainer(
        cfg,
        model,
        loss_fn,
        [],
        [],
        out_dir,
        frontend=frontend,
        dist_info=DistInfo(device=device),
        progress=False,
    )
    trainer.setup()
    return trainer


def train_on_batches(
    trainer: Any, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], epoch: int = 0
) -> float:
    """One `Trainer.train_epoch` over ``batches`` (on the trainer's device) -> mean training loss."""
    trainer.train_loader = trainer.train_sampler = DeviceBatches(batches)
    loss, _lr = trainer.train_epoch(epoch)
    return loss


def random_batches(
    shape: Sequence[int],
    batch: int,
    n: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of standard-normal inputs (batch, *shape) and random 0/1 labels, on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, *shape, generator=gen).to(device=device, dtype=dtype),
            torch.randint(0, 2, (batch,), generator=gen).to(device),
        )
        for _ in range(n)
    ]
