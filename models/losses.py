"""Training losses and the matching scores (docs/training.md).

Every loss is an ``nn.Module`` with ``forward(embedding, logits, labels) -> scalar`` and
``score(embedding, logits) -> (B,)`` (higher = more bona fide). Labels: 0 = bona fide, 1 = spoof.
Losses carry their state in ``state_dict()`` (the A-Softmax iteration counter, the OC-softmax
direction), so save and restore them with the model. The trainer must switch the loss between
``train()`` and ``eval()`` together with the model, and give ``loss.parameters()`` (non-empty for
OC-softmax) to the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import build_from, make_register, registry_section
from utils.errors import UserError

LOSSES: dict[str, type[nn.Module]] = {}
register_loss = make_register(LOSSES, "loss")
register_loss.__doc__ = "Class decorator: make a loss available to `build_loss` under ``name``."


def build_loss(cfg: Mapping[str, Any]) -> CMLoss:
    """Build a loss from ``{"name": "weighted_ce" | "asoftmax" | "ocsoftmax", **kwargs}``."""
    return build_from(LOSSES, "loss", cfg)  # type: ignore[return-value]


#: A recipe's ``loss`` section: ``name`` and the keyword parameters of that loss's constructor.
LOSS_SECTION = registry_section(LOSSES, "loss")


def logit_difference(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2) logits -> (B,) bona fide minus spoof logit (no softmax: it saturates to ties in float32)."""
    return logits[:, 0] - logits[:, 1]


class CMLoss(nn.Module):
    """Base class: the score is the logit difference bona fide − spoof."""

    def forward(self, embedding: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, embedding: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B, D) embedding, (B, 2) logits -> (B,) scores, higher = more bona fide."""
        return logit_difference(logits)


#: Score definitions of `WeightedCrossEntropy`: ours, and the one published for AASIST and XLS-R-AASIST.
CE_SCORES = ("logit_diff", "raw_logit")


@register_loss("weighted_ce")
class WeightedCrossEntropy(CMLoss):
    """Cross entropy with class weights (default bona fide 10, spoof 1: the 2019 LA imbalance).

    ``score``: ``logit_diff`` (default: bona fide − spoof logit) or ``raw_logit`` (the
    bona fide logit alone, as AASIST and XLS-R-AASIST published their scores; docs/training.md). The
    two rank trials differently.
    """

    def __init__(self, weights: Sequence[float] = (10.0, 1.0), score: str = "logit_diff") -> None:
        super().__init__()
        if score not in CE_SCORES:
            raise UserError(f"loss 'weighted_ce': score must be one of {', '.join(CE_SCORES)}, got {score!r}")
        self.score_kind = score
        # Not persistent: the weights come from the recipe, not from a checkpoint.
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]), persistent=False)

    def forward(self, embedding: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean weighted CE of (B, 2) logits against (B,) int labels; the embedding is unused."""
        return F.cross_entropy(logits, labels, weight=self.weights)

    @torch.no_grad()
    def score(self, embedding: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B, 2) logits -> (B,) scores, higher = more bona fide (see ``score`` in the class docstring)."""
        if self.score_kind == "raw_logit":
            return logits[:, 0].clone()
        return logit_difference(logits)


def asoftmax_lambda(
    it: int | torch.Tensor, lambda_min: float = 5.0, lambda_max: float = 1500.0
) -> torch.Tensor:
    """A-Softmax annealing weight λ = max(λ_min, λ_max / (1 + 0.1·it)) as a float64 tensor."""
    it = torch.as_tensor(it, dtype=torch.float64)
    return torch.clamp(lambda_max / (1.0 + 0.1 * it), min=lambda_min)


def chebyshev_cos_multiple(cos: torch.Tensor, m: int) -> torch.Tensor:
    """cos(mθ) as the Chebyshev polynomial T_m(cos θ): smooth gradients, unlike cos(m·acos(c)) at c = ±1."""
    previous, current = torch.ones_like(cos), cos
    if m == 0:
        return previous
    for _ in range(m - 1):
        previous, current = current, 2 * cos * current - previous
    return current


@register_loss("asoftmax")
class ASoftmaxLoss(CMLoss):
    """A-Softmax (SphereFace) loss, margin m = ``margin`` (4), over logits ‖x‖·cos θ from `AngleLinear`.

    cos θ = logits / ‖x‖ is recovered from the model outputs; ψ(θ) = (−1)^k cos(mθ) − 2k with
    k = floor(mθ/π). The target logit becomes ‖x‖cos θ + (‖x‖ψ − ‖x‖cos θ)/(1+λ), the other logit
    stays ‖x‖cos θ, then cross entropy. λ = max(5, 1500/(1 + 0.1·it)) where ``it`` counts training
    forward passes: in ``train()`` mode the counter is incremented before λ is computed (as in
    the SphereFace code, so the n-th training pass uses it = n); in ``eval()`` mode it is left
    alone. ``it`` is a persistent buffer so it survives epochs and checkpoints (the released code
    rebuilt the loss and so reset it). Score: logit difference = ‖x‖(cos θ_bona − cos θ_spoof).
    """

    def __init__(self, margin: int = 4, lambda_min: float = 5.0, lambda_max: float = 1500.0) -> None:
        super().__init__()
        self.margin = int(margin)
        self.lambda_min = float(lambda_min)
        self.lambda_max = float(lambda_max)
        self.register_buffer("it", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        """λ for the current value of the counter."""
        return float(asoftmax_lambda(self.it, self.lambda_min, self.lambda_max))

    def forward(self, embedding: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embedding (B, D), logits ‖x‖·cos θ (B, C), labels (B,) -> mean A-Softmax loss."""
        if self.training:
            self.it += 1
        lam = asoftmax_lambda(self.it, self.lambda_min, self.lambda_max).to(logits.dtype)
        norm = embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = (logits / norm).clamp(-1.0, 1.0)
        # k only selects the branch of ψ, so it carries no gradient (as in SphereFace).
        k = torch.floor(self.margin * torch.acos(cos.detach()) / math.pi)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)  # (−1)^k
        psi = sign * chebyshev_cos_multiple(cos, self.margin) - 2.0 * k
        cos_x, psi_x = norm * cos, norm * psi
        target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        margined = cos_x + target * (psi_x - cos_x) / (1.0 + lam)
        return F.cross_entropy(margined, labels)


register_loss("a_softmax")(ASoftmaxLoss)  # alias: the spelling used in the recipes


@register_loss("ocsoftmax")
class OCSoftmaxLoss(CMLoss):
    """One-class softmax (AIR anti-spoofing): bona fide pulled within a margin of one learned direction.

    cos = cosine between the embedding and a learned unit direction w (``emb_dim`` values, a
    parameter of this module: give ``loss.parameters()`` to the optimizer). Loss = mean over the
    batch of softplus(α(m_bona − cos)) for bona fide and softplus(α(cos − m_spoof)) for spoof.
    Score = cos (higher = more bona fide); the logits are unused.
    """

    def __init__(
        self, emb_dim: int = 256, m_bona: float = 0.9, m_spoof: float = 0.2, alpha: float = 20.0
    ) -> None:
        super().__init__()
        self.m_bona = float(m_bona)
        self.m_spoof = float(m_spoof)
        self.alpha = float(alpha)
        self.center = nn.Parameter(torch.empty(1, emb_dim))
        nn.init.kaiming_uniform_(self.center, 0.25)

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, emb_dim) -> (B,) cosine to the learned direction."""
        return F.normalize(embedding, dim=1) @ F.normalize(self.center, dim=1).squeeze(0)

    def forward(self, embedding: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embedding)
        margin = torch.where(labels == 0, self.m_bona - cos, cos - self.m_spoof)
        return F.softplus(self.alpha * margin).mean()

    @torch.no_grad()
    def score(self, embedding: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B, emb_dim) embedding -> (B,) cosine to the bona fide direction."""
        return self.cosine(embedding)
