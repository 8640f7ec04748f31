"""A whole countermeasure, front end included, as one ONNX graph: audio windows in, scores out.

    python -m engine.export runs/f0/best.pt sr_la_res2net_f0.onnx
    python -m engine.export packages/xlsr_lcnn xlsr_lcnn.onnx      # a package folder or hub id too

The graph takes ``waves`` (batch, samples) float32 16 kHz mono, one window each (both axes dynamic; all
windows of a batch the same length) and returns ``score`` (batch,) and ``logits`` (batch, 2): a window
longer than the model's input length is cut to it, a shorter one tiled as the PyTorch scorer does (in
time for waveform and SSL models, in STFT frames for the F0 subband front end). The package's config.json
(`models.package.package_config`: threshold, calibration, input length, ...) rides in the model's
metadata under ``asvspoof_package``, so ``generate_score.py --runtime onnx --checkpoint model.onnx``
needs nothing else. Export goes through ``torch.export`` (``torch.onnx.export(dynamo=True)``, which needs
the onnxscript package) with symbolic batch and length.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.scoring_model import ScoringModel, load_scoring_model, read_trained
from models.frontends import build_frontend
from models.frontends.f0_torch import F0SubbandTorch
from models.package import ONNX_METADATA_KEY, locate_model, package_config
from utils.errors import UserError, run_cli
from utils.io import atomic_path

OPSET = 18


class TileOrCut(nn.Module):
    """(B, L) -> (B, n): the first n samples, a shorter clip repeated from its start (`utils.tiling`)."""

    def __init__(self, n_samples: int) -> None:
        super().__init__()
        self.n_samples = int(n_samples)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        length = torch.full((1,), waves.shape[1], dtype=torch.long, device=waves.device)  # exportable modulo
        return waves[:, torch.arange(self.n_samples, device=waves.device) % length]


class FrozenSSL(nn.Module):
    """The frozen SSL front end's features as the store holds them: tiled waves, normalised per utterance
    in float64, hidden states of the chosen layer as (B, 1, hidden, frames), rounded to float16."""

    def __init__(self, frontend: Any) -> None:
        super().__init__()
        self.tile = TileOrCut(frontend.n_samples)
        self.model = frontend.model
        self.do_normalize = frontend.do_normalize
        self.layer_index = frontend._layer_index
        self.last = frontend._layer_index == frontend.model.config.num_hidden_layers

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        x = self.tile(waves)
        if self.do_normalize:
            x = x.double()
            var = x.var(dim=1, unbiased=False, keepdim=True)
            x = ((x - x.mean(dim=1, keepdim=True)) / torch.sqrt(var + 1e-7)).float()
        if self.last:
            hidden = self.model(x).last_hidden_state
        else:
            hidden = self.model(x, output_hidden_states=True).hidden_states[self.layer_index]
        return hidden.transpose(1, 2).unsqueeze(1).half().float()


class ScoringGraph(nn.Module):
    """waves (B, L) -> (score (B,), logits (B, 2)): ``features`` (front end), then the model and the loss's
    score definition, all in float32."""

    def __init__(self, features: nn.Module, model: nn.Module, loss_fn: nn.Module) -> None:
        super().__init__()
        self.features, self.model, self.loss_fn = features, model, loss_fn

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, logits = self.model(self.features(waves))
        return self.loss_fn.score(embedding, logits), logits


def scoring_graph(loaded: ScoringModel) -> tuple[ScoringGraph, int]:
    """The `ScoringGraph` of a loaded model (CPU, eval) and its input length in samples."""
    settings = loaded.input_cfg["frontend"]
    name = settings["name"]
    if name == "waveform":  # raw-waveform models, and models that hold their front end (WithFrontEnd)
        features: nn.Module = TileOrCut(int(settings["n_samples"]))
        n_samples = int(settings["n_samples"])
    elif name == "f0":
        frontend = build_frontend(settings, device="cpu")
        features, n_samples = F0SubbandTorch(frontend), frontend.n_samples
    elif name == "ssl":
        frontend = build_frontend({**settings, "dtype": "fp32"}, device="cpu")
        features, n_samples = FrozenSSL(frontend), frontend.n_samples
    else:
        raise UserError(f"{loaded.source}: no ONNX export for the '{name}' front end")
    return ScoringGraph(features, loaded.model, loaded.loss_fn).eval(), n_samples


def export_onnx(checkpoint: str | Path, out: str | Path, *, example_seconds: float = 1.0) -> dict[str, Any]:
    """Export ``checkpoint`` (best.pt, .safetensors, package folder or hub id) to the ONNX file ``out``
    (atomically) -> the package config stored in its metadata (plus ``window``: the input length)."""
    import onnx

    path = locate_model(checkpoint)
    loaded = load_scoring_model(path, torch.device("cpu"))
    graph, n_samples = scoring_graph(loaded)
    config = package_config(read_trained(path))
    config["onnx"] = {"window": n_samples, "inputs": {"waves": "(batch, samples) float32, 16 kHz"},
                      "outputs": {"score": "(batch,)", "logits": "(batch, 2)"}}
    example = torch.randn(2, min(n_samples, int(example_seconds * 16000)),
                          generator=torch.Generator().manual_seed(0)) * 0.1
    with atomic_path(out) as tmp, torch.inference_mode():
        dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=2, max=16 * n_samples)}
        torch.onnx.export(graph, (example,), str(tmp), input_names=["waves"],
                          output_names=["score", "logits"],
                          dynamic_shapes={"waves": dims}, opset_version=OPSET, dynamo=True, verbose=False)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(config)
        onnx.save(proto, str(tmp))
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.export",
        description="Export a trained countermeasure, front end included, to ONNX: input 'waves' (batch, "
        "samples) of 16 kHz audio windows, outputs 'score' (higher = more bona fide) and 'logits'; the "
        "package config (threshold, calibration, input length) is in the model's metadata. Score with "
        "generate_score.py --runtime onnx --checkpoint OUT.onnx (needs onnxruntime).",
    )
    parser.add_argument("checkpoint", help="best.pt, a .safetensors weights file, a package folder or hub id")
    parser.add_argument("out", help="ONNX file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.out.endswith(".onnx"):
        raise UserError(f"{args.out}: the ONNX file's name must end in .onnx")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install onnx onnxruntime") from None
    config = export_onnx(args.checkpoint, args.out)
    print(f"wrote {args.out} (input windows of {config['onnx']['window']:,} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
