"""Stochastic weight averaging (utils/swa.py): the average equals the mean of the snapshots; BN update."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from utils.swa import WeightAverage, bn_update


def small_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def snapshots(n: int) -> list[dict[str, torch.Tensor]]:
    """n state dicts of the same architecture with different weights and BN counters 10, 20, ..."""
    states = []
    for i in range(n):
        torch.manual_seed(i)
        model = small_model()
        model[1].running_mean.uniform_(-1, 1)
        model[1].num_batches_tracked.fill_(10 * (i + 1))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


def test_average_equals_the_mean_of_the_snapshots() -> None:
    states = snapshots(3)
    swa = WeightAverage()
    for state in states:
        swa.add(state)
    averaged = swa.averaged()
    assert swa.count == 3
    for key in ("0.weight", "0.bias", "1.running_mean", "3.weight"):
        mean = torch.stack([s[key] for s in states]).double().mean(0).float()
        torch.testing.assert_close(averaged[key], mean, rtol=1e-6, atol=1e-7)
        assert not torch.equal(averaged[key], states[0][key])
    assert averaged["1.num_batches_tracked"].item() == 30  # kept from the latest snapshot
    # One hand-checked element: the mean of three numbers.
    values = [s["0.weight"][1, 2].item() for s in states]
    assert averaged["0.weight"][1, 2].item() == pytest.approx(sum(values) / 3, rel=1e-6)


def test_state_dict_round_trip_continues_the_same_average() -> None:
    states = snapshots(4)
    whole = WeightAverage()
    for state in states:
        whole.add(state)
    first = WeightAverage()
    for state in states[:2]:
        first.add(state)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = WeightAverage()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for state in states[2:]:
        resumed.add(state)
    assert resumed.count == 4
    for key, value in whole.averaged().items():
        assert torch.equal(resumed.averaged()[key], value), key


def test_snapshots_of_another_model_and_an_empty_average_are_refused() -> None:
    swa = WeightAverage()
    with pytest.raises(ValueError, match="no snapshot"):
        swa.averaged()
    swa.add(snapshots(1)[0])
    with pytest.raises(ValueError, match="keys differ"):
        swa.add({"0.weight": torch.zeros(4, 3)})


def test_bn_update_recomputes_statistics_as_a_plain_average_over_batches() -> None:
    torch.manual_seed(0)
    model = small_model().eval()
    model[1].running_mean.fill_(5.0)
    batches = [(torch.randn(8, 3), torch.zeros(8)) for _ in range(3)]  # (features, labels) like a loader
    bn_update(model, batches)
    assert not model.training and model[1].momentum == 0.1  # mode and momentum restored
    with torch.no_grad():
        hidden = [model[0](x) for x, _ in batches]
    expected_mean = torch.stack([h.mean(0) for h in hidden]).mean(0)
    expected_var = torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    torch.testing.assert_close(model[1].running_var, expected_var)
    assert model[1].num_batches_tracked.item() == 3
