"""The current SSL back ends (Nes2Net-X, XLS-R-SLS, XLSR-Mamba; docs/systems/): exact parameter counts,
shapes at each stage, the SSL front end's all-layers output, the torch selective scan against a naive
per-step loop, and XLSR-Mamba's dual-column quirk against the reference's forward written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.frontends.ssl import SSLFrontEnd
from models.mamba import Mamba
from models.nes2net_x import Nes2NetX
from models.selective_scan import (
    RECURRENCE_BLOCK,
    chunk_length,
    mamba_ssm_available,
    selective_scan,
    selective_scan_torch,
)
from models.sls import SLSBackEnd
from models.xlsr_mamba import XLSRMambaBackEnd
from utils.errors import UserError


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_published_parameter_counts() -> None:
    assert n_params(Nes2NetX()) == 512_039
    assert n_params(Nes2NetX(pool_func="ASTP")) == 777_383
    assert n_params(SLSBackEnd()) == 23_399_429
    mamba = XLSRMambaBackEnd()
    assert n_params(mamba) == 1_936_950
    assert n_params(mamba.mixer.forward_layers[0].mixer) == 145_440
    assert n_params(mamba.LL) + n_params(mamba.first_bn) == 147_600 + 2  # the 1024->144 projection and BN


def shapes_through(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Output shape of each named submodule (``name<`` : its input) in one eval forward pass."""
    found: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        if name.endswith("<"):
            handles.append(
                modules[name[:-1]].register_forward_pre_hook(
                    lambda _m, args, key=name: found.__setitem__(key, tuple(args[0].shape))
                )
            )
        else:
            handles.append(
                modules[name].register_forward_hook(
                    lambda _m, _i, out, key=name: found.__setitem__(key, tuple(out.shape))
                )
            )
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return found


def test_nes2net_x_shapes_at_each_stage() -> None:
    torch.manual_seed(0)
    names = [
        "Build_in_Res2Nets.0.conv1",
        "Build_in_Res2Nets.0.convs.6",
        "Build_in_Res2Nets.0",
        "Build_in_Res2Nets.6",
        "bn",
        "fc<",
        "fc",
    ]
    found = shapes_through(Nes2NetX(), torch.randn(2, 1, 1024, 201), names)
    assert found == {
        "Build_in_Res2Nets.0.conv1": (2, 128, 201),
        "Build_in_Res2Nets.0.convs.6": (8 * 2, 16, 201, 1),  # a stack of 8 along the batch axis
        "Build_in_Res2Nets.0": (2, 128, 201),
        "Build_in_Res2Nets.6": (2, 128, 201),
        "bn": (2, 1024, 201),
        "fc<": (2, 1024),
        "fc": (2, 2),
    }
    astp = shapes_through(Nes2NetX(pool_func="ASTP"), torch.randn(2, 1, 1024, 57), ["pooling", "fc"])
    assert astp == {"pooling": (2, 2048), "fc": (2, 2)}  # any number of frames (whole utterances)


def reference_bottle2neck(block, x: torch.Tensor) -> torch.Tensor:
    """The reference Bottle2neck.forward, partial outputs stacked on a last axis, written from its code."""
    bands = torch.split(block.bn1(block.relu(block.conv1(x))).unsqueeze(-1), block.width, 1)
    sp, outs = bands[block.nums], []
    for i in range(block.nums):
        sp = block.bns[i](block.relu(block.convs[i](torch.cat((sp, bands[i]), -1))))
        outs.append((sp * block.weighted_sum[i]).sum(-1))
    out = torch.cat((*outs, bands[block.nums].squeeze(-1)), 1)
    return block.se(block.bn3(block.relu(block.conv3(out)))) + x


@pytest.mark.parametrize("train", [True, False])
def test_nes2net_x_inner_block_equals_the_reference_layout(train: bool) -> None:
    torch.manual_seed(0)
    block = Nes2NetX(input_shape=[1, 64, 30]).Build_in_Res2Nets[0].train(train)
    x = torch.randn(3, 8, 30)
    torch.testing.assert_close(block(x), reference_bottle2neck(block, x), rtol=1e-5, atol=1e-6)


def test_sls_shapes_at_each_stage_and_the_201_frame_rule() -> None:
    torch.manual_seed(0)
    model = SLSBackEnd()
    names = ["fc0", "first_bn", "fc1<", "fc1", "fc3"]
    found = shapes_through(model, torch.randn(2, 24, 201, 1024), names)
    assert found == {
        "fc0": (2, 24, 1),
        "first_bn": (2, 1, 201, 1024),
        "fc1<": (2, 67 * 341),
        "fc1": (2, 1024),
        "fc3": (2, 2),
    }
    with pytest.raises(
        UserError, match=r"sls: needs inputs of exactly \[24, 201, 1024\].*got \[24, 200, 1024\]"
    ):
        model(torch.randn(1, 24, 200, 1024))
    with pytest.raises(UserError, match="sls: input_shape must be"):
        SLSBackEnd(input_shape=[201, 1024])


def test_sls_mixes_layers_with_sigmoid_weights_and_outputs_log_probabilities() -> None:
    torch.manual_seed(0)
    model = SLSBackEnd(input_shape=[3, 9, 12], emb_dim=8).eval()
    x = torch.randn(2, 3, 9, 12)
    with torch.no_grad():
        embedding, logits = model(x)
        weights = torch.sigmoid(x.mean(2) @ model.fc0.weight.T + model.fc0.bias)  # (2, 3, 1)
        mixed = (x * weights[..., None]).sum(1, keepdim=True)
        pooled = F.max_pool2d(F.selu(model.first_bn(mixed)), 3).flatten(1)
        torch.testing.assert_close(embedding, F.selu(model.fc1(pooled)))
    torch.testing.assert_close(logits.exp().sum(1), torch.ones(2))


def test_xlsr_mamba_shapes_at_each_stage() -> None:
    torch.manual_seed(0)
    names = [
        "LL",
        "first_bn",
        "mixer.forward_layers.0.mixer.in_proj",
        "mixer.forward_layers.0.mixer.conv1d",
        "mixer.forward_layers.0.mixer.x_proj",
        "mixer.forward_layers.0.mixer",
        "mixer.f_attention_pool",
        "mixer.LL<",
        "mixer.classifier",
    ]
    found = shapes_through(XLSRMambaBackEnd(), torch.randn(2, 201, 1024), names)
    assert found == {
        "LL": (2, 201, 144),
        "mixer.forward_layers.0.mixer": (2, 201, 144),
        "first_bn": (2, 1, 201, 144),
        "mixer.forward_layers.0.mixer.in_proj": (2, 201, 576),
        "mixer.forward_layers.0.mixer.conv1d": (2, 288, 204),
        "mixer.forward_layers.0.mixer.x_proj": (2, 201, 41),
        "mixer.f_attention_pool": (2, 201, 1),
        "mixer.LL<": (2, 288),
        "mixer.classifier": (2, 2),
    }


# --- the SSL front end's layers -----------------------------------------------------------------------


def _wave(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def test_all_layers_are_the_pre_layernorm_outputs_frozen_and_fine_tuned() -> None:
    wave = _wave(4000)
    frozen = SSLFrontEnd("random:tiny", layers="all", n_samples=4000, do_normalize=False, device="cpu")
    assert frozen.feature_shape == (2, 12, 1024) and frozen.settings()["layers"] == "all"
    out = torch.from_numpy(frozen.extract([wave]))  # (1, 2, 12, 1024)
    caught = {}
    hook = frozen.model.encoder.layers[1].register_forward_hook(
        lambda _m, _i, o: caught.__setitem__("last", o[0] if isinstance(o, tuple) else o)
    )
    with torch.no_grad():
        ref = frozen.model(torch.from_numpy(wave)[None], output_hidden_states=True)
    hook.remove()
    half = torch.float16
    assert torch.equal(out[0, 0], ref.hidden_states[1][0].to(half).float())
    assert torch.equal(out[0, 1], caught["last"][0].to(half).float())  # layer 2 before the final LayerNorm
    assert (out[0, 1] - ref.last_hidden_state[0]).abs().max() > 0.5  # ... which last_hidden_state has
    # Hugging Face's hidden_states[-1] is the LayerNorm'ed one in transformers 4.x, the pre-norm one in 5.x
    assert torch.equal(ref.hidden_states[2], caught["last"]) or torch.equal(
        ref.hidden_states[2], ref.last_hidden_state
    )
    tuned = SSLFrontEnd(
        "random:tiny", layers="all", n_samples=4000, do_normalize=False, device="cpu", trainable=True
    ).eval()
    features = tuned(torch.from_numpy(wave)[None])
    assert features.shape == (1, 2, 12, 1024)
    torch.testing.assert_close(features.detach().to(half).float(), out, atol=2e-3, rtol=1e-3)
    features.square().sum().backward()
    assert tuned.model.encoder.layers[1].feed_forward.output_dense.weight.grad.abs().sum() > 0
    with pytest.raises(UserError, match="layers must be one of last, all"):
        SSLFrontEnd("random:narrow", layers="mean", device="cpu")


# --- the selective scan --------------------------------------------------------------------------------


def naive_scan(u, delta, A, B, C, D, z, delta_bias):
    """One time step after another, as state-spaces/mamba's selective_scan_ref."""
    delta = F.softplus(delta + delta_bias[:, None])
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        state = (
            torch.exp(delta[:, :, t, None] * A) * state
            + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        )
        ys.append((state * C[:, None, :, t]).sum(-1))
    return (torch.stack(ys, 2) + u * D[:, None]) * F.silu(z)


def scan_inputs(b: int, d: int, length: int, n: int, delta_scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tensors = [
        torch.randn(b, d, length, generator=g),
        torch.randn(b, d, length, generator=g) * delta_scale,
        -torch.exp(torch.randn(d, n, generator=g)),
        torch.randn(b, n, length, generator=g),
        torch.randn(b, n, length, generator=g),
        torch.randn(d, generator=g),
        torch.randn(b, d, length, generator=g),
        torch.randn(d, generator=g) - 2.0,
    ]
    return [t.requires_grad_() for t in tensors]


def assert_scan_matches(got: torch.Tensor, expected: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    """Outputs to 1e-5 and the gradients of every input to 1e-4 (random output weights)."""
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(expected)
    want = torch.autograd.grad((expected * weights).sum(), inputs)
    have = torch.autograd.grad((got * weights).sum(), inputs)
    for a, b in zip(have, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunk", [None, 1, 5, 16])
def test_selective_scan_equals_the_naive_loop_with_gradients(chunk: int | None) -> None:
    inputs = scan_inputs(2, 6, 37, 4)
    u, delta, A, B, C, D, z, bias = inputs
    expected = naive_scan(*inputs)
    got = selective_scan_torch(u, delta, A, B, C, D, z, bias, chunk=chunk)
    assert_scan_matches(got, expected, inputs)


@pytest.mark.parametrize("length", [1, RECURRENCE_BLOCK - 3, RECURRENCE_BLOCK, 2 * RECURRENCE_BLOCK + 1])
def test_cpu_recurrence_equals_the_naive_loop_at_block_edges(length: int) -> None:
    """The CPU default (blocked recurrence, states recomputed from block starts in backward) at lengths
    shorter than, equal to and one past whole blocks, with a strong decay the chunked scan would cut."""
    inputs = scan_inputs(2, 5, length, 3, delta_scale=3.0, seed=2)
    expected = naive_scan(*inputs)
    got = selective_scan_torch(*inputs)
    assert_scan_matches(got, expected, inputs)


def test_selective_scan_stays_exact_when_the_decay_is_strong() -> None:
    """Large Δ·A would overflow e^{-L} in long chunks; the chunk length shrinks instead."""
    inputs = scan_inputs(1, 4, 50, 3, delta_scale=30.0, seed=1)
    delta = F.softplus(inputs[1] + inputs[7][:, None])
    assert chunk_length(delta, inputs[2]) < 16
    with torch.no_grad():
        got = selective_scan_torch(*inputs)
        torch.testing.assert_close(got, naive_scan(*inputs), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(got).all()


@pytest.mark.cuda
@pytest.mark.skipif(
    not (torch.cuda.is_available() and mamba_ssm_available()), reason="needs CUDA and mamba_ssm"
)
def test_mamba_ssm_kernel_matches_the_torch_scan() -> None:
    inputs = [t.detach().cuda() for t in scan_inputs(2, 288, 201, 16)]
    torch.testing.assert_close(
        selective_scan(*inputs, impl="mamba_ssm"), selective_scan(*inputs, impl="torch"), rtol=1e-4, atol=1e-4
    )


def test_mamba_layer_matches_a_per_step_reference() -> None:
    torch.manual_seed(0)
    layer = Mamba(8, d_state=4)
    x = torch.randn(2, 11, 8)
    xz = layer.in_proj(x).transpose(1, 2)
    xs, z = xz[:, :16], xz[:, 16:]
    xs = F.silu(F.conv1d(F.pad(xs, (3, 0)), layer.conv1d.weight, layer.conv1d.bias, groups=16))
    dt, B, C = layer.x_proj(xs.transpose(1, 2)).split([1, 4, 4], -1)
    y = naive_scan(
        xs,
        (dt @ layer.dt_proj.weight.T).transpose(1, 2),
        -torch.exp(layer.A_log),
        B.transpose(1, 2),
        C.transpose(1, 2),
        layer.D,
        z,
        layer.dt_proj.bias,
    )
    torch.testing.assert_close(layer(x), layer.out_proj(y.transpose(1, 2)), rtol=1e-5, atol=1e-5)


# --- XLSR-Mamba's dual-column quirk --------------------------------------------------------------------


def reference_mixer_forward(mixer, x: torch.Tensor) -> torch.Tensor:
    """The reference MixerModel.forward with fused_add_norm, every block run, written from its code."""

    def run(blocks, hidden):
        residual = None
        for block in blocks:  # Block: residual = hidden + residual; hidden = mixer(norm(residual))
            residual = hidden if residual is None else hidden + residual
            hidden = block.mixer(block.norm(residual))
        return hidden, residual

    _, f_res = run(mixer.forward_layers, x)
    _, b_res = run(mixer.backward_layers, x.flip(1))
    f = mixer.norm_f(x + f_res)  # rms_norm_fn(hidden_states, ..., residual=f_residual): the column INPUT
    b = mixer.norm_f(x + b_res)
    pool = torch.cat((mixer.pool(mixer.f_attention_pool, f), mixer.pool(mixer.b_attention_pool, b)), 1)
    return mixer.classifier(mixer.LL(pool))


def test_dual_column_quirk_kept_and_the_last_blocks_are_dead() -> None:
    torch.manual_seed(0)
    model = XLSRMambaBackEnd(input_shape=[1, 32, 15], emb_size=16, num_encoders=6).eval()
    x = torch.randn(3, 15, 32)
    with torch.no_grad():
        hidden = F.selu(model.first_bn(model.LL(x).unsqueeze(1))).squeeze(1)
        torch.testing.assert_close(model(x)[1], reference_mixer_forward(model.mixer, hidden))
        before = model(x)[1]
        for column in (model.mixer.forward_layers, model.mixer.backward_layers):
            for p in column[-1].parameters():
                p.add_(1.0)
        assert torch.equal(model(x)[1], before)  # the last block of each column changes nothing
    model.train()
    model(x)[1].sum().backward()
    dead = [
        p.grad
        for column in (model.mixer.forward_layers, model.mixer.backward_layers)
        for p in column[-1].parameters()
    ]
    assert all(g is None for g in dead) and model.has_unused_parameters
    assert model.mixer.forward_layers[0].mixer.in_proj.weight.grad.abs().sum() > 0
