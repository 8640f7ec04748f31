"""The models' faster training ops (docs/PERFORMANCE.md) compute what the plain ops compute."""

from __future__ import annotations

import torch

from models.lcnn import MaxFeatureMap
from models.sr_la_res2net import SpatialReconstruction


def test_max_feature_map_matches_torch_maximum_and_routes_ties_to_the_first_half() -> None:
    torch.manual_seed(0)
    for shape in ((4, 6, 5, 7), (3, 160)):  # conv maps and linear features
        x = torch.randn(*shape, requires_grad=True)
        grad = torch.randn(shape[0], shape[1] // 2, *shape[2:])
        out = MaxFeatureMap()(x)
        out.backward(grad)
        ref_x = x.detach().clone().requires_grad_()
        ref = torch.maximum(*ref_x.chunk(2, dim=1))
        ref.backward(grad)
        assert torch.equal(out, ref) and torch.equal(x.grad, ref_x.grad)
    x = torch.tensor([[1.0, 2.0, 1.0, 3.0]], requires_grad=True)  # halves (1, 2) and (1, 3): a tie at 0
    MaxFeatureMap()(x).backward(torch.tensor([[5.0, 7.0]]))
    assert x.grad.tolist() == [[5.0, 0.0, 0.0, 7.0]]


def test_spatial_reconstruction_equals_the_plain_one_channel_conv() -> None:
    torch.manual_seed(0)
    sr = SpatialReconstruction().eval()
    plain = torch.randn(3, 5, 9, 11)
    for x0 in (plain, plain.contiguous(memory_format=torch.channels_last)):
        x = x0.clone().requires_grad_()
        out = sr(x)
        out.square().sum().backward()
        fast = (out.detach(), x.grad, sr.conv.weight.grad.clone(), sr.conv.bias.grad.clone())
        sr.zero_grad()
        x = x0.clone().requires_grad_()
        ref = x * torch.sigmoid(sr.conv(x.mean(dim=1, keepdim=True)))
        ref.square().sum().backward()
        for a, b in zip(fast, (ref.detach(), x.grad, sr.conv.weight.grad, sr.conv.bias.grad), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        sr.zero_grad()
