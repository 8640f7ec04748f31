"""A countermeasure: optional front end + back end + loss as one module.

Training, checkpoints and scoring handle "features from the store" (no front end inside: the input is
features) and "front end inside the model" (the input is waveforms) with the same code. One module
also lets DistributedDataParallel average the gradients of loss parameters (A-Softmax, OC-softmax)
and of a trainable front end.
"""

from __future__ import annotations

import torch
from torch import nn


class Countermeasure(nn.Module):
    """``model`` (back end: features -> (embedding, logits (B, 2))), ``loss`` (`models.losses.CMLoss`)
    and an optional ``frontend`` (`models.frontends.FrontEnd`, waves (B, n) -> features) run first."""

    def __init__(self, model: nn.Module, loss: nn.Module, frontend: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        if frontend is not None:
            self.frontend = frontend

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, *input) features, or (B, n) waves with a front end -> (embedding, logits (B, 2))."""
        if hasattr(self, "frontend"):
            x = self.frontend(x)
        return self.model(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x as in `embed`, labels: (B,) 0 = bona fide -> scalar loss (float32)."""
        embedding, logits = self.embed(x)
        # Losses (A-Softmax margins, CE) are computed in float32 even under autocast.
        with torch.autocast(x.device.type, enabled=False):
            return self.loss(embedding.float(), logits.float(), labels)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) scores, higher = more bona fide (the loss's score definition)."""
        embedding, logits = self.embed(x)
        return self.loss.score(embedding, logits)


class WithFrontEnd(nn.Module):
    """``frontend`` then ``model`` as one back-end-like module: ``forward(waves (B, n)) -> (embedding,
    logits (B, 2))`` and the model's ``classify``. Scoring and BatchNorm updates use it for models whose
    front end runs inside the countermeasure; without a front end it is the model (inputs cast to float32,
    as store batches may be float16)."""

    def __init__(self, model: nn.Module, frontend: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        if frontend is not None:
            self.frontend = frontend

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()
        if hasattr(self, "frontend"):
            x = self.frontend(x)
        return self.model(x)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.model.classify(embedding)
