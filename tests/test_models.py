"""The two back ends: parameter counts, shapes, released key layout, stage map sizes, init (docs/systems/)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import MODELS, build_model, discover
from models.lcnn import LCNN, MaxFeatureMap
from models.sr_la_res2net import LocalAttention, SpatialReconstruction, SRLARes2Net
from utils.errors import UserError


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def res2net() -> SRLARes2Net:
    torch.manual_seed(0)
    return SRLARes2Net()


def test_registry_knows_both_models_and_rejects_unknown_names() -> None:
    discover()
    assert {"lcnn", "sr_la_res2net"} <= set(MODELS)
    with pytest.raises(UserError, match="unknown model 'resnet'.*lcnn, .*sr_la_res2net"):
        build_model({"name": "resnet"})
    with pytest.raises(UserError, match="'lcnn'.*dropuot"):
        build_model({"name": "lcnn", "dropuot": 0.5})
    with pytest.raises(UserError, match="'name'"):
        build_model({"input_shape": [1, 45, 600]})


def test_mfm_keeps_elementwise_max_of_the_two_channel_halves() -> None:
    x = torch.tensor([[1.0, -2.0, 5.0, 0.5, -1.0, 3.0]])  # halves [1, -2, 5] and [0.5, -1, 3]
    assert MaxFeatureMap()(x).tolist() == [[1.0, -1.0, 5.0]]


def test_lcnn_parameter_count_and_shapes() -> None:
    model = build_model({"name": "lcnn", "input_shape": [1, 1024, 201]}).eval()
    assert isinstance(model, LCNN)
    assert n_trainable(model) == 4_111_074
    with torch.no_grad():
        embedding, logits = model(torch.randn(2, 1, 1024, 201))
    assert embedding.shape == (2, 256)
    assert logits.shape == (2, 2)


# Hand-computed flatten sizes: 32 channels x (H // 16) x (W // 16) after four 2x2 max-pools.
@pytest.mark.parametrize(("height", "flat"), [(768, 32 * 48 * 12), (64, 32 * 4 * 12)])
def test_lcnn_derives_flatten_size_from_input_shape(height: int, flat: int) -> None:
    model = LCNN(input_shape=(1, height, 201)).eval()
    assert model.out[1].in_features == flat
    with torch.no_grad():
        embedding, logits = model(torch.randn(2, 1, height, 201))
    assert embedding.shape == (2, 256) and logits.shape == (2, 2)


def test_lcnn_rejects_inputs_too_small_for_four_pools() -> None:
    with pytest.raises(UserError, match="too small"):
        LCNN(input_shape=(1, 8, 201))


def test_lcnn_state_dict_matches_the_released_layout() -> None:
    conv_shapes = {
        1: (64, 1, 5, 5), 2: (64, 32, 1, 1), 3: (96, 32, 3, 3), 4: (96, 48, 1, 1), 5: (128, 48, 3, 3),
        6: (128, 64, 1, 1), 7: (64, 64, 3, 3), 8: (64, 32, 1, 1), 9: (64, 32, 3, 3),
    }  # fmt: skip
    bn_at = {2: 2, 3: 3, 4: 2, 6: 2, 7: 2, 8: 2}
    expected: dict[str, tuple[int, ...]] = {}
    for n, shape in conv_shapes.items():
        expected[f"conv{n}.0.weight"] = shape
        expected[f"conv{n}.0.bias"] = shape[:1]
        if n in bn_at:
            for buf, buf_shape in (("running_mean", (shape[0] // 2,)), ("running_var", (shape[0] // 2,))):
                expected[f"conv{n}.{bn_at[n]}.{buf}"] = buf_shape
            expected[f"conv{n}.{bn_at[n]}.num_batches_tracked"] = ()
    expected.update({
        "out.1.weight": (160, 24576), "out.1.bias": (160,), "out.3.weight": (256, 80), "out.3.bias": (256,),
        "fc_mu.weight": (2, 256), "fc_mu.bias": (2,),
    })  # fmt: skip
    state = LCNN().state_dict()
    assert list(state) == list(expected)  # same keys in the released order (BN affine=False: no BN weights)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_res2net_parameter_count_and_no_unused_modules(res2net: SRLARes2Net) -> None:
    assert n_trainable(res2net) == 1_004_106
    # One SR per "normal" block (4), none in the "stage" blocks; one LA per block (8) with kernel 3, pad 1.
    assert sum(isinstance(m, SpatialReconstruction) for m in res2net.modules()) == 4
    las = [m for m in res2net.modules() if isinstance(m, LocalAttention)]
    assert len(las) == 8
    assert all(la.conv.kernel_size == (3,) and la.conv.padding == (1,) for la in las)


def test_res2net_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(1)
    model = SRLARes2Net().train()
    embedding, logits = model(torch.randn(2, 1, 45, 60))  # fully convolutional: a shorter input is enough
    (logits.sum() + embedding.sum()).backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == []


def test_res2net_stage_map_sizes_and_outputs(res2net: SRLARes2Net) -> None:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(res2net, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
        for name in ("layer1", "layer2", "layer3", "layer4")
    ]
    res2net.eval()
    try:
        with torch.no_grad():
            embedding, logits = res2net(torch.randn(2, 1, 45, 600))
    finally:
        for hook in hooks:
            hook.remove()
    assert shapes == {
        "layer1": (2, 32, 45, 600),
        "layer2": (2, 64, 23, 300),
        "layer3": (2, 128, 12, 150),
        "layer4": (2, 256, 6, 75),
    }
    assert embedding.shape == (2, 256) and logits.shape == (2, 2)
    # A-Softmax layer: logits = ‖x‖ cos θ against unit-norm weight columns, whatever the stored scale.
    unit = F.normalize(res2net.classifier.weight.detach(), dim=0)
    torch.testing.assert_close(logits, embedding @ unit)
    with torch.no_grad():
        res2net.classifier.weight.mul_(7.0)
        probe = torch.randn(1, 1, 45, 40)
        _, rescaled = res2net(probe)
        res2net.classifier.weight.div_(7.0)
        _, original = res2net(probe)
    torch.testing.assert_close(rescaled, original)


def test_res2net_init_as_released(res2net: SRLARes2Net) -> None:
    fresh = SRLARes2Net()
    bns = [m for m in fresh.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)
    # Kaiming normal, fan_out, relu: std = sqrt(2 / fan_out); conv3 of the last block is 256 x 416 x 1 x 1.
    weight = fresh.layer4[1].conv3.weight
    assert weight.shape == (256, 416, 1, 1)
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.03)
    # The stem's 3x3 conv 16->16: fan_out = 16 * 9.
    assert fresh.stem[3].weight.std().item() == pytest.approx(math.sqrt(2 / 144), rel=0.1)


@pytest.mark.parametrize("amp", [False, True])
def test_res2net_gradients_are_finite_in_bf16_with_channels_last(amp: bool) -> None:
    """bf16 autocast with channels_last (auto on CPUs with native bf16) keeps every gradient finite: a
    depthwise SR convolution once took oneDNN's bf16 channels_last path, whose weight gradient came out
    non-finite (the demo diverged at its second batch)."""
    torch.manual_seed(0)
    net = SRLARes2Net(input_shape=(1, 45, 200)).train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 45, 200).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        _, logits = net(x)
    logits.float().sum().backward()
    bad = [n for n, p in net.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert bad == []
