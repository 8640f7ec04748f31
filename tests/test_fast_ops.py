"""The models' faster training ops (docs/PERFORMANCE.md) compute what the plain ops compute."""

from __future__ import annotations

import pytest
import torch

from models.conv import Conv2d
from models.lcnn import MaxFeatureMap


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


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "kernel", "stride", "padding", "dilation", "bias", "shape"),
    [
        (1, 8, 5, 1, 2, 1, True, (2, 1, 17, 13)),  # LCNN's first conv, small
        (1, 6, 3, 2, 1, 1, False, (3, 1, 9, 12)),  # strided
        (1, 4, 7, 1, 6, 2, True, (2, 1, 15, 20)),  # dilated
        (5, 7, 1, 1, 0, 1, False, (3, 5, 6, 9)),  # 1x1 (Res2Net)
        (6, 10, 1, 1, 0, 1, True, (2, 6, 4, 5)),
    ],
)
def test_matmul_convolution_equals_nn_conv2d(
    in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, dilation: int, bias: bool,
    shape: tuple[int, ...],
) -> None:
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, bias=bias)
    fast = Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, bias=bias)
    fast.load_state_dict(ref.state_dict())
    x0 = torch.randn(*shape)
    assert fast.uses_matmul(x0)
    results = []
    for conv in (ref, fast):
        x = x0.clone().requires_grad_()
        y = conv(x)
        (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
        results.append([y.detach(), x.grad, *(p.grad for p in conv.parameters())])
    assert results[1][0].shape == results[0][0].shape
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_matmul_convolution_only_where_measured_faster() -> None:
    x = torch.randn(2, 1, 8, 8)
    assert not Conv2d(1, 1, 3).uses_matmul(x)  # 1 -> 1 (SR gate): oneDNN was faster
    assert not Conv2d(4, 4, 3).uses_matmul(torch.randn(2, 4, 8, 8))  # 3x3 over several channels
    assert not Conv2d(4, 4, 1, stride=2).uses_matmul(torch.randn(2, 4, 8, 8))
    assert not Conv2d(1, 8, 3).uses_matmul(x.transpose(2, 3))  # not NCHW-contiguous
    assert not Conv2d(1, 8, 3).uses_matmul(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not Conv2d(1, 8, 3).uses_matmul(x)
    assert Conv2d(1, 8, 3).uses_matmul(x)
