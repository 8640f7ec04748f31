"""docs/training.md: weighted CE, A-Softmax (hand-computed), λ schedule and counter, OC-softmax, scores."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    LOSSES,
    ASoftmaxLoss,
    OCSoftmaxLoss,
    WeightedCrossEntropy,
    asoftmax_lambda,
    build_loss,
)
from utils.errors import UserError

# Two embeddings against unit weight columns w_bona = [1, 0], w_spoof = [0, 1], so logits = ‖x‖ cos θ = x.
#   x1 = [3, 4], ‖x1‖ = 5, label bona fide: cos θ = 0.6, θ = 0.9273 rad, 4θ/π = 1.18 -> k = 1,
#        cos 4θ = 8·0.6⁴ − 8·0.6² + 1 = −0.8432, ψ = (−1)·(−0.8432) − 2 = −1.1568.
#   x2 = [5, 12], ‖x2‖ = 13, label spoof: cos θ = 12/13, θ = 0.3948 rad, 4θ/π = 0.50 -> k = 0,
#        ψ = cos 4θ = 8(12/13)⁴ − 8(12/13)² + 1 = −239/28561.
EMBEDDING = torch.tensor([[3.0, 4.0], [5.0, 12.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1])
PSI = (-1.1568, -239 / 28561)


def hand_asoftmax(lam: float) -> float:
    """Mean CE with target logits ‖x‖cos θ + (‖x‖ψ − ‖x‖cos θ)/(1+λ) for the two samples above."""
    target1 = 3.0 + (5.0 * PSI[0] - 3.0) / (1 + lam)  # bona fide column of x1; spoof logit stays 4
    target2 = 12.0 + (13.0 * PSI[1] - 12.0) / (1 + lam)  # spoof column of x2; bona fide logit stays 5
    ce1 = math.log(math.exp(target1) + math.exp(4.0)) - target1
    ce2 = math.log(math.exp(5.0) + math.exp(target2)) - target2
    return (ce1 + ce2) / 2


def test_registry_names_and_unknown_loss() -> None:
    assert {"weighted_ce", "asoftmax", "ocsoftmax"} <= set(LOSSES)
    assert isinstance(build_loss({"name": "weighted_ce"}), WeightedCrossEntropy)
    assert build_loss({"name": "a_softmax", "margin": 4}).margin == 4
    assert build_loss({"name": "ocsoftmax", "emb_dim": 8}).center.shape == (1, 8)
    with pytest.raises(UserError, match="unknown loss 'focal'.*asoftmax.*ocsoftmax.*weighted_ce"):
        build_loss({"name": "focal"})


def test_weighted_ce_matches_hand_value_and_torch() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
    labels = torch.tensor([0, 1, 0])
    loss = build_loss({"name": "weighted_ce"})(torch.zeros(3, 4), logits, labels)
    # Per-sample CE: log(1+e^-2), log(1+e^-1), log(1+e^2); weights 10, 1, 10; mean divides by 21.
    by_hand = (10 * math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + 10 * math.log1p(math.exp(2))) / 21
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, weight=torch.tensor([10.0, 1.0])))


def test_weighted_ce_score_setting_raw_logit_or_logit_difference() -> None:
    logits = torch.tensor([[2.0, -1.5], [0.5, 3.0], [-4.0, -4.25]])
    default = build_loss({"name": "weighted_ce"}).score(torch.zeros(3, 4), logits)
    raw = build_loss({"name": "weighted_ce", "weights": [0.9, 0.1], "score": "raw_logit"})
    assert default.tolist() == [3.5, -2.5, 0.25]
    scores = raw.score(torch.zeros(3, 4), logits)
    assert scores.tolist() == [2.0, 0.5, -4.0]
    logits[0, 0] = 7.0  # the scores are a copy, not a view of the logits
    assert scores[0].item() == 2.0
    # The two definitions rank these trials differently (docs/training.md): trial 3 is last by raw logit only.
    assert default.argsort().tolist() == [1, 2, 0] and scores.argsort().tolist() == [2, 1, 0]
    with pytest.raises(UserError, match="score must be one of logit_diff, raw_logit, got 'prob'"):
        build_loss({"name": "weighted_ce", "score": "prob"})


@pytest.mark.parametrize(
    ("it", "lam"),
    [(0, 1500.0), (1, 1500 / 1.1), (100, 1500 / 11), (10000, 5.0), (2990, 5.0), (2000, 1500 / 201)],
)
def test_lambda_schedule(it: int, lam: float) -> None:
    assert asoftmax_lambda(it).item() == pytest.approx(lam, rel=1e-12)


def test_asoftmax_matches_hand_computation() -> None:
    loss = ASoftmaxLoss(margin=4).eval()  # eval: λ from the counter, which is not advanced
    assert loss(EMBEDDING, EMBEDDING.clone(), LABELS).item() == pytest.approx(hand_asoftmax(1500.0), rel=1e-9)
    loss.load_state_dict({"it": torch.tensor(10000)})
    value = loss(EMBEDDING, EMBEDDING.clone(), LABELS).item()
    assert value == pytest.approx(hand_asoftmax(5.0), rel=1e-9)
    assert value == pytest.approx((2.5456665212506815 + 0.0068377943628537) / 2, rel=1e-9)


def test_asoftmax_counter_counts_training_passes_across_epochs_and_checkpoints() -> None:
    loss = build_loss({"name": "asoftmax"})
    logits = EMBEDDING.float()
    for _epoch in range(2):
        loss.train()
        for _batch in range(3):
            loss(logits, logits, LABELS)
        loss.eval()  # dev pass: must not advance the counter
        loss(logits, logits, LABELS)
    assert int(loss.it) == 6
    assert loss.current_lambda() == pytest.approx(1500 / 1.6)
    # The n-th training pass uses it = n: the 7th pass of a restored loss uses λ(7).
    restored = ASoftmaxLoss()
    restored.load_state_dict(loss.state_dict())
    assert int(restored.it) == 6
    restored.train()
    value = restored(EMBEDDING, EMBEDDING.clone(), LABELS).item()
    assert int(restored.it) == 7
    assert value == pytest.approx(hand_asoftmax(1500 / 1.7), rel=1e-9)


def test_asoftmax_gradients_are_finite_when_embedding_is_aligned_with_a_column() -> None:
    embedding = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)  # cos θ = ±1 / 0 exactly
    ASoftmaxLoss().train()(embedding, embedding * 1.0, torch.tensor([0, 0])).backward()
    assert torch.isfinite(embedding.grad).all()


def test_scores_are_higher_for_bona_fide() -> None:
    logits = torch.tensor([[4.0, -1.0], [-2.0, 3.0]])  # row 0 clearly bona fide, row 1 clearly spoof
    embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for name in ("weighted_ce", "asoftmax"):
        scores = build_loss({"name": name}).score(embedding, logits)
        assert scores.tolist() == [5.0, -5.0]  # logit difference bona fide − spoof
    # A-Softmax: logit difference = ‖x‖(cos θ_bona − cos θ_spoof) = 5·(0.6 − 0.8) for x = [3, 4].
    assert ASoftmaxLoss().score(EMBEDDING, EMBEDDING)[0].item() == pytest.approx(-1.0)


def test_ocsoftmax_hand_values_parameters_and_scores() -> None:
    loss = OCSoftmaxLoss(emb_dim=2)
    assert [tuple(p.shape) for p in loss.parameters()] == [(1, 2)]  # must reach the optimizer
    with torch.no_grad():
        loss.center.copy_(torch.tensor([[2.0, 0.0]]))  # direction e1 (normalised inside)
    embedding = torch.tensor([[3.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    # cos = 1, 0, 1/√2. Bona fide: softplus(20(0.9 − 1)); spoof: softplus(20(cos − 0.2)).
    by_hand = (
        math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-4.0)) + math.log1p(math.exp(20 * (0.5**0.5 - 0.2)))
    ) / 3
    assert loss(embedding, torch.zeros(3, 2), labels).item() == pytest.approx(by_hand, rel=1e-6)
    assert loss.score(embedding, torch.zeros(3, 2)).tolist() == pytest.approx([1.0, 0.0, 0.5**0.5])
    restored = OCSoftmaxLoss(emb_dim=2)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.center, loss.center)
