"""Score calibration: an affine map from raw CM scores to bona fide-vs-spoof LLRs (docs/evaluation.md).

`fit_calibration` fits s' = scale·s + offset on development scores by minimising the prior-weighted
logistic loss at the costs' effective bona fide prior P_eff = Cmiss(1−Pspoof)/(Cmiss(1−Pspoof)+Cfa·Pspoof)
(0.655 with the ASVspoof 5 costs), whose Bayes threshold is −ln β. The fit runs on standardised scores
with a small L2 penalty on the standardised (scale, offset), so perfectly separable development scores
give finite parameters (with a `SeparableScoresWarning`) and the guard does not depend on the score
units. `Calibration.apply` maps evaluation scores unchanged; `as_dict`/`from_dict` store it (e.g. in a
checkpoint) as plain floats. Plain numpy.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from utils.errors import UserError
from utils.metrics import ASVSPOOF5_COSTS, DcfCosts, MetricError

DEFAULT_L2 = 1e-4


class SeparableScoresWarning(UserWarning):
    """The development scores separate the classes perfectly; the L2 guard set the scale."""


def effective_prior(costs: DcfCosts = ASVSPOOF5_COSTS) -> float:
    """The bona fide prior whose Bayes threshold on LLRs is −ln(Cmiss(1−Pspoof)/(Cfa·Pspoof))."""
    miss = costs.cmiss * (1 - costs.pspoof)
    return miss / (miss + costs.cfa * costs.pspoof)


def bayes_threshold(costs: DcfCosts = ASVSPOOF5_COSTS) -> float:
    """The Bayes decision threshold −ln β on LLRs, β = Cmiss(1−Pspoof)/(Cfa·Pspoof) (−0.641854 with the
    ASVspoof 5 costs): LLR ≥ threshold -> bona fide. The threshold of `utils.metrics.act_dcf`."""
    return -math.log(costs.cmiss * (1 - costs.pspoof) / (costs.cfa * costs.pspoof))


@dataclass(frozen=True)
class Calibration:
    """An affine score-to-LLR map s' = scale·s + offset (LLR in nats, bona fide vs spoof)."""

    scale: float
    offset: float
    prior: float  # the bona fide prior the loss was weighted with
    separable: bool  # the development scores separated the classes
    n_bonafide: int
    n_spoof: int

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated LLRs of raw scores, same shape, float64."""
        return self.scale * np.asarray(scores, dtype=np.float64) + self.offset

    def as_dict(self) -> dict:
        """JSON- and checkpoint-safe dict (plain floats, ints and a bool)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """Inverse of `as_dict`; a missing key or a non-finite number raises `UserError`."""
        fields = ("scale", "offset", "prior", "separable", "n_bonafide", "n_spoof")
        missing = [k for k in fields if k not in data]
        if missing:
            raise UserError(f"calibration is missing {', '.join(missing)}")
        values = {k: data[k] for k in fields}
        if not all(math.isfinite(float(values[k])) for k in ("scale", "offset", "prior")):
            raise UserError(f"calibration has a non-finite parameter: {values}")
        return cls(
            scale=float(values["scale"]),
            offset=float(values["offset"]),
            prior=float(values["prior"]),
            separable=bool(values["separable"]),
            n_bonafide=int(values["n_bonafide"]),
            n_spoof=int(values["n_spoof"]),
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x))


def fit_calibration(
    bonafide_scores: np.ndarray,
    spoof_scores: np.ndarray,
    costs: DcfCosts = ASVSPOOF5_COSTS,
    l2: float = DEFAULT_L2,
) -> Calibration:
    """Fit the affine calibration on development scores (higher = more bona fide); Newton's method.

    Minimises P_eff·mean_bona softplus(−(s'+logit P_eff)) + (1−P_eff)·mean_spoof softplus(s'+logit P_eff)
    + l2/2·(a² + b²) over s' = a·z + b, z = the standardised score. Raises `MetricError` (source "dev")
    without both classes or with constant scores; warns `SeparableScoresWarning` on separable classes.
    """
    bona = np.asarray(bonafide_scores, dtype=np.float64).ravel()
    spoof = np.asarray(spoof_scores, dtype=np.float64).ravel()
    if bona.size == 0 or spoof.size == 0:
        raise MetricError(
            f"calibration needs bona fide and spoof scores (got {bona.size} bona fide, {spoof.size} spoof)",
            source="dev",
        )
    scores = np.concatenate((bona, spoof))
    if not np.all(np.isfinite(scores)):
        raise MetricError("the calibration scores contain NaN or inf", source="dev")
    mean, std = float(scores.mean()), float(scores.std())
    if std == 0:
        raise MetricError("the calibration scores are all equal; nothing to fit", source="dev")
    separable = bool(bona.min() > spoof.max() or spoof.min() > bona.max())
    if separable:
        warnings.warn(
            SeparableScoresWarning(
                "the development scores separate bona fide and spoof perfectly; the calibration scale is "
                "set by the L2 guard, so actDCF and Cllr on other data may be optimistic"
            ),
            stacklevel=2,
        )
    prior = effective_prior(costs)
    log_odds = math.log(prior / (1 - prior))
    z = (scores - mean) / std
    # Per-trial weights and targets: bona fide trials pull s' up with weight P_eff/N_bona, spoof down.
    weight = np.concatenate(
        (np.full(bona.size, prior / bona.size), np.full(spoof.size, (1 - prior) / spoof.size))
    )
    sign = np.concatenate((np.ones(bona.size), -np.ones(spoof.size)))
    design = np.stack((z, np.ones_like(z)), axis=1)

    def loss(theta: np.ndarray) -> float:
        eta = design @ theta + log_odds
        return float(weight @ np.logaddexp(0, -sign * eta) + 0.5 * l2 * theta @ theta)

    theta = np.zeros(2)
    current = loss(theta)
    for _ in range(100):
        eta = design @ theta + log_odds
        p = _sigmoid(eta)
        grad = design.T @ (weight * (p - (sign > 0))) + l2 * theta
        hess = (design * (weight * p * (1 - p))[:, None]).T @ design + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-10:  # backtracking keeps every step a descent step
            candidate = theta - t * step
            value = loss(candidate)
            if value <= current:
                break
            t *= 0.5
        else:
            break
        done = abs(current - value) <= 1e-15 * max(1.0, abs(current))
        theta, current = candidate, value
        if done or float(np.max(np.abs(t * step))) < 1e-12:
            break
    scale = float(theta[0] / std)
    return Calibration(
        scale=scale,
        offset=float(theta[1] - scale * mean),
        prior=prior,
        separable=separable,
        n_bonafide=int(bona.size),
        n_spoof=int(spoof.size),
    )
