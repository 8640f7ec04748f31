"""Optimizers and learning-rate schedules built from a recipe's ``optim`` and ``sched`` sections."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from utils.errors import UserError


def build_optimizer(
    params: Sequence[nn.Parameter], optim_cfg: dict[str, Any], fused: bool = False
) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD from the recipe's ``optim`` section (lr, betas, eps, weight_decay, amsgrad).

    ``fused``: Adam/AdamW's fused kernel (the same update; chosen by `utils.precision.resolve_fused_adam`)."""
    name = str(optim_cfg.get("name", "adam")).lower()
    lr = float(optim_cfg.get("lr", 1e-3))
    wd = float(optim_cfg.get("weight_decay", 0.0))
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(
            params,
            lr=lr,
            betas=tuple(float(b) for b in optim_cfg.get("betas", (0.9, 0.999))),
            eps=float(optim_cfg.get("eps", 1e-8)),
            weight_decay=wd,
            amsgrad=bool(optim_cfg.get("amsgrad", False)),
            fused=True if fused else None,
        )
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(optim_cfg.get("momentum", 0.9)), weight_decay=wd)
    raise UserError(f"config: optim.name={name!r} is not one of adam, adamw, sgd")


def noam_factor(step: int, d_model: int = 64, warmup_steps: int = 1000) -> float:
    """Noam learning rate at optimizer step ``step`` (1-based).

    d^-0.5 · min(step^-0.5, step · warmup^-1.5); the published recipe (d = 64, warm-up 1000) peaks at
    3.95e-3 at step 1000.
    """
    step = max(1, step)
    return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


class _Noam:
    """Picklable-free Noam multiplier for LambdaLR (LambdaLR calls it with 0 before the first step)."""

    def __init__(self, d_model: int, warmup_steps: int) -> None:
        self.d_model = d_model
        self.warmup_steps = warmup_steps

    def __call__(self, completed_steps: int) -> float:
        return noam_factor(completed_steps + 1, self.d_model, self.warmup_steps)


def cosine_factor(step: int, total_steps: int, min_ratio: float = 0.05) -> float:
    """Per-step cosine annealing multiplier after ``step`` completed optimizer steps (docs/training.md):
    min_ratio + (1 − min_ratio)·½(1 + cos(π·step/total_steps)); 1 at step 0, ``min_ratio`` at the end.
    AASIST: lr 1e-4 down to 5e-6 (min_ratio 0.05)."""
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Cosine:
    """Picklable-free `cosine_factor` for LambdaLR."""

    def __init__(self, total_steps: int, min_ratio: float) -> None:
        self.total_steps = total_steps
        self.min_ratio = min_ratio

    def __call__(self, completed_steps: int) -> float:
        return cosine_factor(completed_steps, self.total_steps, self.min_ratio)


def build_scheduler(
    optimizer: torch.optim.Optimizer, sched_cfg: dict[str, Any] | None, total_steps: int | None = None
) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, str]:
    """The recipe's schedule and when to step it: ``("epoch" | "step")``.

    ``step``: lr · gamma^(epoch // step_epochs) (the XLS-R-LCNN recipe halves every 10 epochs).
    ``noam``: optim.lr · `noam_factor` per optimizer step (SR-LA-Res2Net; optim.lr is a multiplier, 1.0).
    ``cosine``: optim.lr · `cosine_factor` per optimizer step over ``total_steps`` (all epochs' optimizer
    steps; AASIST), ``min_ratio`` (default 0.05) at the end.
    ``none``: constant lr.
    """
    sched_cfg = sched_cfg or {}
    name = str(sched_cfg.get("name", "none")).lower()
    if name in ("none", "constant"):
        return None, "epoch"
    if name == "step":
        sched = torch.optim.lr_scheduler.StepLR(
            optimizer,
            step_size=int(sched_cfg.get("step_epochs", 10)),
            gamma=float(sched_cfg.get("gamma", 0.5)),
        )
        return sched, "epoch"
    if name == "noam":
        fn = _Noam(int(sched_cfg.get("d_model", 64)), int(sched_cfg.get("warmup_steps", 1000)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "step"
    if name == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs the run's total number of optimizer steps")
        fn = _Cosine(int(total_steps), float(sched_cfg.get("min_ratio", 0.05)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "step"
    raise UserError(f"config: sched.name={name!r} is not one of step, noam, cosine, none")
