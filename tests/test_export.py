"""ONNX export (engine/export.py) and ONNX Runtime scoring (engine/onnx_scoring.py, generate_score.py
--runtime onnx): for every registered model on a tiny config, and for the released AASIST imported with
models.import_released, ONNX Runtime scores equal PyTorch float32 scores within 1e-4. Skipped without
onnx, onnxscript or onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, SMALLER_MODELS
from test_package import tiny_checkpoint

import generate_score
from engine.export import main as export_main
from engine.package import package_model
from models import MODELS, discover
from models.package import ONNX_NAME
from utils.errors import run_cli

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
discover()


def score_rows(checkpoint: Path | str, files: list[Path], out: Path, *extra: str) -> list[dict]:
    argv = ["--checkpoint", str(checkpoint), "--audio", *map(str, files), "--output", str(out),
            "--no-progress", "--device", "cpu", "--batch-size", "2", *extra]
    assert generate_score.main(argv) == 0
    return json.loads(out.read_text())


def assert_same_scores(torch_rows: list[dict], onnx_rows: list[dict]) -> None:
    assert [r["file"] for r in onnx_rows] == [r["file"] for r in torch_rows]
    np.testing.assert_allclose([r["score"] for r in onnx_rows], [r["score"] for r in torch_rows], rtol=0,
                               atol=1e-4)
    for name in ("threshold", "windows", "duration_s", "status"):
        assert [r[name] for r in onnx_rows] == [r[name] for r in torch_rows]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_runtime_scores_equal_pytorch(name: str, clips, tmp_path: Path) -> None:
    """Short (tiled) and resampled stereo recordings, and a long one where the window is long (several
    windows in batches of 2; the tiny raw-waveform models already cut the 2.5 s stereo one into 33), with
    LLRs."""
    checkpoint = tiny_checkpoint(name, tmp_path, **({"model": SMALLER_MODELS[name]} if name in SMALLER_MODELS
                                                    else {}))
    package, _ = package_model(checkpoint, tmp_path / "pkg")
    assert run_cli(export_main, [str(package), str(package / ONNX_NAME)]) == 0
    window = json.loads((package / "config.json").read_text())["input"]["n_samples"]
    files = [clips["short"], clips["stereo"], *([clips["long"]] if window >= 64600 else [])]
    torch_rows = score_rows(checkpoint, files, tmp_path / "torch.json", "--llr")
    onnx_rows = score_rows(package, files, tmp_path / "onnx.json", "--llr", "--runtime", "onnx")
    assert_same_scores(torch_rows, onnx_rows)
    np.testing.assert_allclose([r["llr"] for r in onnx_rows], [r["llr"] for r in torch_rows], atol=2e-4)


def test_released_aasist_exports_and_scores_equal(clips, tmp_path: Path) -> None:
    release = SHARED / "released_weights" / "AASIST.pth"
    if not release.is_file():
        pytest.skip("../shared/released_weights/AASIST.pth is not present")
    from models.import_released import main as import_main

    weights = tmp_path / "aasist.safetensors"
    assert import_main([str(release), str(weights), "--trust-pickle"]) == 0
    assert export_main([str(weights), str(tmp_path / "aasist.onnx")]) == 0
    files = [clips["short"], clips["stereo"]]
    torch_rows = score_rows(weights, files, tmp_path / "torch.json")
    onnx_rows = score_rows(tmp_path / "aasist.onnx", files, tmp_path / "onnx.json", "--runtime", "onnx")
    assert_same_scores(torch_rows, onnx_rows)


def test_onnx_runtime_mistakes_are_one_line_errors(clips, tmp_path: Path, capsys) -> None:
    checkpoint = tiny_checkpoint("sr_la_res2net", tmp_path)
    package, _ = package_model(checkpoint, tmp_path / "pkg")
    base = ["--audio", str(clips["short"]), "--runtime", "onnx", "--no-progress"]
    cases = [
        (["--checkpoint", str(package)], f"error: {package}: no {ONNX_NAME} in this folder (export: "
         "python -m engine.export)"),
        (["--checkpoint", str(checkpoint)], f"error: {checkpoint}: ONNX Runtime scores an .onnx file of "
         "engine.export"),
        (["--checkpoint", str(checkpoint), "--compile"], "error: --compile applies to --runtime torch only "
         "(the ONNX model runs in float32)"),
    ]
    for argv, message in cases:
        assert run_cli(generate_score.main, [*base, *argv]) == 2
        assert capsys.readouterr().err.strip() == message
