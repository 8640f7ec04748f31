"""ONNX Runtime vs PyTorch eager float32 scoring on the CPU, and the time to a first score from a package.

1. Utterances/s (one 4-5 s window each) at batch 1 and batch 16 for XLS-R-LCNN (the demo's narrow random
   SSL model, and the full XLS-R 300M configuration with random weights), AASIST, and SR-LA-Res2Net + F0:
   PyTorch = what ``generate_score.py --audio`` runs (front end ``extract``, then the model in float32,
   `engine.score_windows.torch_window_scorer`); ONNX Runtime = the graph of ``python -m engine.export``
   (front end included). Same windows, same thread count, interleaved rounds; ratio = ONNX / PyTorch.
2. Package load + first score of one 4 s file, each in a fresh process (``generate_score.py --checkpoint
   PACKAGE --audio one.wav``, and ``--runtime onnx``): wall-clock seconds to the result.

    python bench/bench_onnx.py                       # ~15-25 min on 2 cores (the 300M export is slow)
    python bench/bench_onnx.py --systems xlsr_lcnn_narrow,aasist --rounds 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_preprocess import interleaved  # noqa: E402

from engine.export import export_onnx  # noqa: E402
from engine.onnx_scoring import load_onnx_scorer  # noqa: E402
from engine.package import package_model  # noqa: E402
from engine.scorer import load_scorer  # noqa: E402
from models import build_model  # noqa: E402
from models.losses import build_loss  # noqa: E402
from utils.checkpoint import save_checkpoint  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.precision import cpu_facts  # noqa: E402

CONFIGS = REPO / "configs"
#: name -> (recipe, overrides): the full published architectures, random weights.
SYSTEMS: dict[str, tuple[str, dict[str, dict]]] = {
    "xlsr_lcnn_narrow": ("demo_xlsr_lcnn", {"frontend": {"model": "random:narrow", "dtype": "fp32"}}),
    "xlsr_lcnn_300m": ("xlsr_lcnn", {"frontend": {"model": "random:xlsr-300m", "dtype": "fp32"}}),
    "aasist": ("aasist", {}),
    "sr_la_res2net_f0": ("sr_la_res2net_f0", {}),
}


def make_checkpoint(name: str, folder: Path) -> Path:
    """An untrained best.pt of system ``name`` (seeded) with a dev-EER threshold."""
    recipe, overrides = SYSTEMS[name]
    cfg = load_config(CONFIGS / f"{recipe}.yaml")
    for section, values in overrides.items():
        cfg[section] = {**cfg[section], **values}
    torch.manual_seed(0)
    model, loss = build_model(cfg["model"]).eval(), build_loss(cfg["loss"]).eval()
    path = folder / name / "best.pt"
    path.parent.mkdir(parents=True)
    save_checkpoint({"model": model.state_dict(), "loss": loss.state_dict(), "config": cfg, "epoch": 1,
                     "threshold": 0.0, "best": {"epoch": 1, "threshold": 0.0}}, path)
    return path


def bench_system(name: str, work: Path, rounds: int, batches: Sequence[int]) -> dict[str, float]:
    """utterances/s of PyTorch and ONNX Runtime at each batch size -> {"b1 ratio": ..., ...}."""
    checkpoint = make_checkpoint(name, work)
    start = time.perf_counter()
    onnx_file = checkpoint.with_name("model.onnx")
    export_onnx(checkpoint, onnx_file)
    print(f"\n== {name}: exported in {time.perf_counter() - start:.0f} s "
          f"({onnx_file.stat().st_size / 2**20:.0f} MiB)")
    threads = torch.get_num_threads()
    ratios = {}
    for batch in batches:
        scorer = load_scorer(checkpoint, device="cpu", amp="none", batch_size=batch)
        window, torch_scores = scorer.window_scorer()
        onnx_scores = load_onnx_scorer(onnx_file, batch_size=batch, threads=threads).score_windows
        rng = np.random.default_rng(batch)
        windows = list((0.1 * rng.standard_normal((batch, window))).astype(np.float32))
        diff = np.abs(torch_scores(windows) - onnx_scores(windows)).max()  # also a warm-up of both
        speed = interleaved({"pytorch": lambda _r, w=windows, f=torch_scores: len(f(w)),
                             "onnxruntime": lambda _r, w=windows, f=onnx_scores: len(f(w))}, rounds)
        ratios[f"b{batch}"] = speed["onnxruntime"] / speed["pytorch"]
        print(f"  batch {batch:2d}: PyTorch {speed['pytorch']:7.2f} utt/s, ONNX Runtime "
              f"{speed['onnxruntime']:7.2f} utt/s, ratio {ratios[f'b{batch}']:.2f}x "
              f"(max score difference {diff:.1e})")
    return ratios


def first_score(name: str, work: Path) -> None:
    """Seconds from a fresh process to the result of one 4 s file, from the package and its ONNX file."""
    checkpoint = make_checkpoint(name, work / "cold")
    package, _ = package_model(checkpoint, work / "cold" / f"{name}_package")
    export_onnx(package, package / "model.onnx")
    clip = work / "one.wav"
    t = np.arange(64000) / 16000
    sf.write(clip, (0.1 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 16000)
    print(f"\n== package load + first score of one 4 s file, fresh process ({name})")
    for runtime in ("torch", "onnx"):
        cmd = [sys.executable, "generate_score.py", "--checkpoint", str(package), "--audio", str(clip),
               "--device", "cpu", "--no-progress", "--runtime", runtime]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        print(f"  --runtime {runtime}: {time.perf_counter() - start:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS))
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant and batch size")
    parser.add_argument("--batches", default="1,16", help="batch sizes (default 1,16)")
    parser.add_argument("--cold", default="xlsr_lcnn_narrow", help="system for the first-score timing")
    args = parser.parse_args(argv)
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; {cpu_facts().describe()}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_onnx.") as tmp:
        for name in args.systems.split(","):
            batches = [int(b) for b in args.batches.split(",")]
            results[name] = bench_system(name, Path(tmp), args.rounds, batches)
        if args.cold:
            first_score(args.cold, Path(tmp))
    print("\n== ONNX Runtime / PyTorch eager fp32, utterances/s (goal, SSL systems at batch 1: >= 1.3x)")
    for name, ratios in results.items():
        print(f"  {name:18s} " + "  ".join(f"{k}: {v:.2f}x" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
