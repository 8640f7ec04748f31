"""AASIST, AASIST-L and the XLS-R-AASIST back end (docs/systems/): parameter counts, the layer shape
tables (hooks on the meta device: shapes without the compute), sinc bank values, the ResBlock bug,
graph attention against a loop-by-loop reference, graph pooling, any input length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models import build_model
from models.aasist import AASIST, AASISTL, SincFilterbank
from models.aasist_graph import GraphPool, HeteroGraphAttention, ResBlock
from models.xlsr_aasist import XLSRAASISTBackEnd


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("cfg", "count"),
    [
        ({"name": "aasist"}, 297_866),
        ({"name": "aasist_l"}, 85_306),
        ({"name": "xlsr_aasist", "input_shape": [201, 1024]}, 447_242),
        ({"name": "xlsr_aasist", "input_shape": [1, 1024, 201]}, 447_242),
    ],
)
def test_exact_parameter_counts(cfg: dict, count: int) -> None:
    assert n_params(build_model(cfg)) == count


def output_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """Output shape of every named submodule (tuples for multi-output modules), run on the meta device."""
    shapes: dict[str, tuple] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape)
            else:
                shapes[name] = tuple(tuple(o.shape) for o in output)

        return hook

    model = model.eval().to("meta")
    for name, module in model.named_modules():
        module.register_forward_hook(record(name or "model"))
    model(x.to("meta"))
    return shapes


# docs/systems/aasist.md at 64,600 samples; AASIST-L values in brackets there.
@pytest.mark.parametrize(
    ("model_cls", "c", "gat", "s_nodes", "t_nodes", "hs", "ht"),
    [(AASIST, 64, 64, 11, 20, 5, 10), (AASISTL, 24, 24, 9, 14, 6, 9)],
)
def test_raw_waveform_shape_table(model_cls, c: int, gat: int, s_nodes, t_nodes, hs, ht) -> None:
    shapes = output_shapes(model_cls(), torch.empty(1, 64600))
    assert shapes["conv_time"] == (1, 70, 64472)
    assert shapes["first_bn"] == (1, 1, 23, 21490)
    times = [7163, 2387, 795, 265, 88, 29]
    channels = [32, 32, c, c, c, c]
    for i, (t, ch) in enumerate(zip(times, channels, strict=True)):
        assert shapes[f"encoder.{i}"] == (1, ch, 23, t)
    assert shapes["GAT_layer_S"] == (1, 23, gat) and shapes["GAT_layer_T"] == (1, 29, gat)
    assert shapes["pool_S"] == (1, s_nodes, gat) and shapes["pool_T"] == (1, t_nodes, gat)
    for branch in (1, 2):
        assert shapes[f"pool_hS{branch}"] == (1, hs, 32) and shapes[f"pool_hT{branch}"] == (1, ht, 32)
        assert shapes[f"HtrgGAT_layer_ST{branch}2"] == ((1, ht, 32), (1, hs, 32), (1, 1, 32))
    assert shapes["out_layer"] == (1, 2)
    assert shapes["model"] == ((1, 160), (1, 2))


def test_xlsr_back_end_shape_table() -> None:
    """docs/systems/xlsr_aasist.md at 201 frames of 1024-dim hidden states."""
    shapes = output_shapes(XLSRAASISTBackEnd(), torch.empty(1, 201, 1024))
    assert shapes["LL"] == (1, 201, 128)
    assert shapes["first_bn"] == (1, 1, 42, 67)
    assert [shapes[f"encoder.{i}"] for i in range(6)] == [(1, c, 42, 67) for c in (32, 32, 64, 64, 64, 64)]
    assert shapes["first_bn1"] == shapes["attention"] == (1, 64, 42, 67)
    assert shapes["GAT_layer_S"] == (1, 42, 64) and shapes["pool_S"] == (1, 21, 64)
    assert shapes["GAT_layer_T"] == (1, 67, 64) and shapes["pool_T"] == (1, 33, 64)
    assert shapes["HtrgGAT_layer_ST11"] == ((1, 33, 32), (1, 21, 32), (1, 1, 32))
    assert shapes["pool_hS1"] == (1, 10, 32) and shapes["pool_hT1"] == (1, 16, 32)
    assert shapes["model"] == ((1, 160), (1, 2))


def test_sinc_bank_matches_the_formula() -> None:
    """Edges: 71 points equally spaced in mel over [0, 8 kHz] (computed as the reference does, from a
    257-point frequency grid); h_i[n] = hamming[n]·(2f_hi/fs·sinc(2f_hi·n/fs) − 2f_lo/fs·sinc(2f_lo·n/fs))."""
    fs = 16000
    grid = 8000 * np.linspace(0, 1, 257)
    mel = 2595 * np.log10(1 + grid / 700)
    edges = 700 * (10 ** (np.linspace(mel.min(), mel.max(), 71) / 2595) - 1)
    n = np.arange(-64, 65, dtype=np.float64)
    expected = np.stack(
        [
            np.hamming(129)
            * (2 * hi / fs * np.sinc(2 * hi * n / fs) - 2 * lo / fs * np.sinc(2 * lo * n / fs))
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
    )
    bank = SincFilterbank()
    assert bank.filters.dtype == torch.float32 and bank.filters.shape == (70, 1, 129)
    np.testing.assert_allclose(bank.filters[:, 0].double().numpy(), expected, rtol=1e-6, atol=0)
    # Fixed, not learned: neither a parameter nor in the state dict (released weights do not hold it).
    model = AASIST()
    assert "conv_time.filters" not in model.state_dict()
    assert all("conv_time" not in name for name, _ in model.named_parameters())


def test_resblock_bug_bn1_never_changes_the_output() -> None:
    """Blocks 2–6 compute bn1 but conv1 reads the raw input (docs/systems/): bn1's parameters and statistics
    do not affect the output, bn2's do; in training bn1 still updates its running statistics."""
    torch.manual_seed(0)
    model = XLSRAASISTBackEnd(input_shape=(12, 16)).eval()
    x = torch.randn(2, 12, 16)
    blocks = [model.encoder[i][0] for i in range(6)]
    assert not hasattr(blocks[0], "bn1")
    assert sum(p.numel() for b in blocks[1:] for p in b.bn1.parameters()) == 512
    with torch.no_grad():
        before = model(x)[1]
        for block in blocks[1:]:
            block.bn1.weight.mul_(-3.0).add_(1.0)
            block.bn1.bias.add_(2.0)
            block.bn1.running_mean.add_(5.0)
        torch.testing.assert_close(model(x)[1], before, rtol=0, atol=0)
        blocks[1].bn2.bias.add_(2.0)
        assert not torch.allclose(model(x)[1], before)

    block = ResBlock(4, 4).train()
    block(torch.randn(2, 4, 5, 9) + 3.0)
    assert block.bn1.running_mean.min() > 0.2  # momentum 0.1 towards a mean of about 3


def test_only_the_dead_bn1_parameters_get_no_gradient() -> None:
    torch.manual_seed(0)
    model = AASISTL().train()
    embedding, logits = model(torch.randn(2, 2315))
    logits.sum().backward()
    no_grad = {name for name, p in model.named_parameters() if p.grad is None}
    assert no_grad == {f"encoder.{i}.0.bn1.{w}" for i in range(1, 6) for w in ("weight", "bias")}
    assert embedding.shape == (2, 160)


@pytest.mark.parametrize("n_samples", [2315, 5001])
def test_raw_waveform_models_run_at_any_length(n_samples: int) -> None:
    torch.manual_seed(0)
    model = AASISTL().eval()
    with torch.no_grad():
        embedding, logits = model(torch.randn(2, n_samples) * 0.1)
        again = model(torch.randn(2, 1, n_samples) * 0.1)[1]  # (B, 1, n) is accepted too
    assert embedding.shape == (2, 160) and logits.shape == again.shape == (2, 2)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(model.classify(embedding), logits)


def test_too_short_waveform_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2315 samples, got 2314"):
        AASIST().eval()(torch.zeros(1, 2314))


def test_xlsr_back_end_accepts_both_layouts_and_any_frame_count() -> None:
    torch.manual_seed(0)
    model = XLSRAASISTBackEnd(input_shape=(1, 16, 50)).eval()
    hidden = torch.randn(2, 50, 16)
    with torch.no_grad():
        _, logits = model(hidden)
        _, cached = model(hidden.transpose(1, 2).unsqueeze(1))  # (B, 1, hidden, frames) of the ssl front end
        _, short = model(torch.randn(1, 4, 16))
    torch.testing.assert_close(cached, logits)
    assert short.shape == (1, 2)


def test_graph_pool_keeps_the_top_nodes_in_score_order() -> None:
    pool = GraphPool(0.5, in_dim=2, dropout=0.0)
    with torch.no_grad():
        pool.proj.weight.copy_(torch.tensor([[1.0, 0.0]]))
        pool.proj.bias.zero_()
    h = torch.tensor([[[0.0, 1.0], [2.0, 5.0], [-1.0, 3.0], [1.0, -2.0], [3.0, 0.5]]])
    out = pool(h)  # 5 nodes, k = 0.5 -> floor(2.5) = 2 kept: scores σ(3) and σ(2), in that order
    expected = torch.stack(
        [h[0, 4] * torch.sigmoid(torch.tensor(3.0)), h[0, 1] * torch.sigmoid(torch.tensor(2.0))]
    )
    torch.testing.assert_close(out[0], expected)
    assert GraphPool(0.5, 2)(h[:, :1]).shape == (1, 1, 2)  # at least one node is kept


def reference_hs_gal(layer: HeteroGraphAttention, t: torch.Tensor, s: torch.Tensor, m: torch.Tensor):
    """HS-GAL (docs/systems/aasist.md) in eval mode, node by node in float64, without the vectorised code."""
    p = {k: v.double() for k, v in layer.state_dict().items()}

    def linear(name: str, x: torch.Tensor) -> torch.Tensor:
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    t, s, m = t.double()[0], s.double()[0], m.double()[0, 0]
    x = torch.cat([linear("proj_type1", t), linear("proj_type2", s)])
    n, n1 = x.shape[0], t.shape[0]
    scores = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            key = "att_weight11" if max(i, j) < n1 else "att_weight22" if min(i, j) >= n1 else "att_weight12"
            scores[i, j] = torch.tanh(linear("att_proj", x[i] * x[j])) @ p[key][:, 0] / layer.temp
    att = torch.softmax(scores, dim=1)
    beta = torch.softmax(
        torch.stack([torch.tanh(linear("att_projM", x[k] * m)) @ p["att_weightM"][:, 0] for k in range(n)])
        / layer.temp,
        dim=0,
    )
    master = linear("proj_with_attM", beta @ x) + linear("proj_without_attM", m)
    out = linear("proj_with_att", att @ x) + linear("proj_without_att", x)
    out = (out - p["bn.running_mean"]) / torch.sqrt(p["bn.running_var"] + layer.bn.eps) * p["bn.weight"] + p[
        "bn.bias"
    ]
    out = torch.selu(out)
    return out[:n1], out[n1:], master


def test_hs_gal_matches_a_node_by_node_reference() -> None:
    torch.manual_seed(0)
    layer = HeteroGraphAttention(6, 4, temperature=2.0).eval()
    with torch.no_grad():
        layer.bn.running_mean.uniform_(-0.5, 0.5)
        layer.bn.running_var.uniform_(0.5, 2.0)
        t, s, m = torch.randn(1, 3, 6), torch.randn(1, 2, 6), torch.randn(1, 1, 6)
        out_t, out_s, master = layer(t, s, m)
    ref_t, ref_s, ref_m = reference_hs_gal(layer, t, s, m)
    torch.testing.assert_close(out_t[0].double(), ref_t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_s[0].double(), ref_s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(master[0, 0].double(), ref_m, rtol=1e-5, atol=1e-6)
