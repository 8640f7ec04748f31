"""The CUDA paths: AMP training steps of every model, nccl DDP, GPU scores and SSL features against the
CPU, checkpoints moving between GPU and CPU. Marked ``cuda``; skipped without a GPU.

`bench/gpu_check.py` runs them (``pytest -m cuda``) and reads the measured differences from the junit XML
(``record_property``). ``CUDA_TESTS_DEVICE=cpu`` runs them on the CPU instead (fp16 and the GPU-vs-CPU
comparisons then test nothing new; meant for checking the tests themselves on a machine without a GPU).

Tolerances, GPU vs CPU float32 (cuDNN convolutions use TF32 by default, ~1e-3 relative per layer):
scores within 1e-2 x the largest |score|; SSL features (float16 rows) within 0.05 absolute, 5e-3 mean.
bf16 autocast (the GPU default, 8-bit mantissa): scores within 0.05 x the largest |score| (8e-3 measured
with bf16 on the CPU), and no tied scores; SSL features cosine similarity >= 0.99 per utterance and
0.05 mean absolute difference (0.99993 and 9e-3 measured with bf16 on the CPU).
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CONFIGS, REPO, free_port
from harness import device_trainer, random_batches, train_on_batches

from models.registry import MODELS, discover
from utils.config import load_config

DEVICE = torch.device(os.environ.get("CUDA_TESTS_DEVICE", "cuda"))
ON_GPU = DEVICE.type == "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

#: A small input per registered model (the recipes' shapes shrunk); a model missing here fails its test.
TINY_INPUT = {
    "lcnn": [1, 64, 32],
    "sr_la_res2net": [1, 45, 64],
    "aasist": [4000],
    "aasist_l": [4000],
    "xlsr_aasist": [1, 1024, 48],
}
PLAIN = {
    "loss": {"name": "weighted_ce", "weights": [0.9, 0.1]},
    "optim": {"name": "adam", "lr": 1.0e-3},
    "sched": {"name": "none"},
    "train": {},
}
FINETUNE_SSL = {"name": "ssl", "model": "random:tiny", "n_samples": 16000, "trainable": True}


def training_cases() -> list[pytest.param]:
    """Every recipe in configs/ (model input shrunk), every registered model no recipe uses (raw-waveform
    AASIST, the XLS-R-AASIST back end), and XLS-R-AASIST fine-tuned with a trainable SSL front end."""
    discover()
    cases, covered = [], set()
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        covered.add(cfg["model"]["name"])
        cases.append(pytest.param(cfg, None, id=path.stem))
    for name in sorted(set(MODELS) - covered):
        cases.append(pytest.param({**PLAIN, "model": {"name": name}}, None, id=name))
    cases.append(
        pytest.param({**PLAIN, "model": {"name": "xlsr_aasist"}}, FINETUNE_SSL, id="xlsr_aasist-finetune")
    )
    return cases


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters() if v.requires_grad}


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize(("recipe", "frontend_cfg"), training_cases())
def test_amp_training_step(
    recipe: dict, frontend_cfg: dict | None, amp: str, tmp_path: Path, record_property
) -> None:
    if amp == "fp16" and not ON_GPU:
        pytest.skip("fp16 autocast with GradScaler is CUDA only")
    from models.frontends import build_frontend

    cfg = copy.deepcopy(recipe)
    name = cfg["model"]["name"]
    assert name in TINY_INPUT, f"add a small input shape for the registered model {name!r} to TINY_INPUT"
    frontend = None
    if frontend_cfg is not None:
        frontend = build_frontend(frontend_cfg, device=DEVICE)
        cfg["model"]["input_shape"] = [1, frontend.hidden_size, frontend.frames]
        shape: list[int] = [frontend.n_samples]
    else:
        cfg["model"]["input_shape"] = shape = TINY_INPUT[name]
    cfg["train"] = {**cfg["train"], "batch_size": 4, "grad_accum": 1, "amp": amp, "compile": False}
    trainer = device_trainer(cfg, DEVICE, tmp_path, frontend=frontend)
    before = snapshot(trainer.cm)
    loss = train_on_batches(trainer, random_batches(shape, 4, 3, DEVICE))
    record_property("loss", f"{loss:.4f}")
    assert math.isfinite(loss)
    assert trainer.global_step == 3
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    after = snapshot(trainer.cm)
    # float32 master weights, updated by the optimizer (GradScaler may skip a step, not all three)
    assert {v.dtype for v in after.values()} == {torch.float32}
    assert all(v.device.type == DEVICE.type for v in after.values())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} parameters changed"
    if frontend is not None:
        assert any(k.startswith("frontend.model.encoder") for k in changed), "the SSL model was not trained"


DDP_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
sys.path.insert(0, {repo!r} + "/tests")
import torch
import torch.distributed as dist
from torch import nn
from harness import device_trainer, random_batches, train_on_batches
from utils import distributed as du
from utils.config import load_config

info = du.init_distributed(sys.argv[1])  # one torchrun process: the toolkit joins no group by itself
cuda = info.device.type == "cuda"
if cuda:
    torch.cuda.set_device(info.device)
dist.init_process_group("nccl" if cuda else "gloo")
cfg = load_config(Path({repo!r}) / "configs" / "demo_xlsr_lcnn.yaml")
cfg["model"]["input_shape"] = [1, 64, 32]
cfg["train"].update(batch_size=4, amp="bf16")
trainer = device_trainer(cfg, info.device, Path(sys.argv[2]))
# what Trainer.setup wraps the countermeasure in when there are several processes
ids = [info.device.index] if cuda else None
trainer.step_module = nn.parallel.DistributedDataParallel(trainer.cm, device_ids=ids)
loss = train_on_batches(trainer, random_batches((1, 64, 32), 4, 2, info.device))
t = torch.full((2,), 3.0, device=info.device)
dist.all_reduce(t)
gathered = du.all_gather_objects({{"rank": dist.get_rank()}})
du.barrier()
print(f"OK backend={{dist.get_backend()}} loss={{loss:.6f}} sum={{t.tolist()}} gathered={{gathered}}")
du.cleanup()
"""


def test_ddp_one_process_under_torchrun(tmp_path: Path, record_property) -> None:
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_SCRIPT.format(repo=str(REPO)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
           str(free_port()), str(script), DEVICE.type, str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("OK "))
    record_property("ddp", line)
    backend = "nccl" if ON_GPU else "gloo"
    assert f"backend={backend}" in line and "sum=[3.0, 3.0]" in line and "{'rank': 0}" in line
    assert math.isfinite(float(line.split("loss=")[1].split()[0]))


def _items(shape: list[int], n: int, seed: int = 0) -> list[tuple[torch.Tensor, int, str, str]]:
    """Dataset items (features, label, utt_id, attack), labels alternating."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(*shape, generator=gen), i % 2, f"u{i:03d}", "-" if i % 2 == 0 else "A01")
        for i in range(n)
    ]


def _recipe(name: str, shape: list[int], **train: Any) -> dict:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    cfg["model"]["input_shape"] = shape
    cfg["train"].update(batch_size=4, eval_batch_size=8, num_workers=0, **train)
    return cfg


@pytest.mark.parametrize(
    ("name", "shape"), [("demo_xlsr_lcnn", [1, 64, 32]), ("demo_sr_la_res2net_f0", [1, 45, 64])]
)
def test_gpu_scores_match_cpu_float32(name: str, shape: list[int], record_property) -> None:
    from torch.utils.data import DataLoader

    from data.dataset import collate_batch
    from engine.score_batches import resolve_scoring_amp, score_loader
    from models import build_model
    from models.losses import build_loss

    cfg = _recipe(name, shape)
    torch.manual_seed(0)
    model, loss_fn = build_model(cfg["model"]).eval(), build_loss(cfg["loss"]).eval()
    for module in model.modules():  # non-trivial batch-norm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    loader = DataLoader(_items(shape, 32), batch_size=8, collate_fn=collate_batch)

    def scores(device: torch.device, amp: str) -> np.ndarray:
        net, loss = copy.deepcopy(model).to(device), copy.deepcopy(loss_fn).to(device)
        return score_loader(net, loss, loader, device, amp=amp, channels_last=True, progress=False).scores

    cpu = scores(torch.device("cpu"), "none")
    scale = float(np.abs(cpu).max())
    fp32 = np.abs(scores(DEVICE, "none") - cpu).max() / scale
    auto = resolve_scoring_amp("auto", DEVICE)[0] if ON_GPU else "bf16"  # the GPU default: bf16
    low = scores(DEVICE, auto)
    low_diff = np.abs(low - cpu).max() / scale
    record_property("fp32_max_rel_diff", f"{fp32:.2e}")
    record_property(f"{auto}_max_rel_diff", f"{low_diff:.2e}")
    assert scale > 0 and fp32 <= 1e-2
    assert low_diff <= 0.05
    assert len(np.unique(low)) == len(low)  # float32 last layer: bf16 scores do not tie


def test_ssl_features_gpu_match_cpu(record_property) -> None:
    from models.frontends.ssl import SSLFrontEnd

    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 16000, 24000, 12345)]

    def features(device: torch.device, dtype: str) -> np.ndarray:
        fe = SSLFrontEnd("random:tiny", n_samples=16000, device=device, dtype=dtype, batch_size=2)
        return fe.extract(waves)

    cpu = features(torch.device("cpu"), "fp32")
    diff = np.abs(features(DEVICE, "fp32") - cpu)
    record_property("fp32_max_abs_diff", f"{diff.max():.2e}")
    record_property("fp32_mean_abs_diff", f"{diff.mean():.2e}")
    low = features(DEVICE, "bf16")
    flat_low, flat_cpu = low.reshape(len(waves), -1), cpu.reshape(len(waves), -1)
    cosine = (
        (flat_low * flat_cpu).sum(1) / np.linalg.norm(flat_low, axis=1) / np.linalg.norm(flat_cpu, axis=1)
    )
    low_mean = float(np.abs(low - cpu).mean())
    record_property("bf16_min_cosine", f"{cosine.min():.5f}")
    record_property("bf16_mean_abs_diff", f"{low_mean:.2e}")
    assert cpu.shape == (4, 1, 1024, 49) and np.abs(cpu).max() > 0.5
    assert diff.max() <= 0.05 and diff.mean() <= 5e-3
    assert cosine.min() >= 0.99 and low_mean <= 0.05


def _train_run(device: torch.device, out: Path, epochs: int, resume: bool) -> Any:
    from engine.trainer import Trainer
    from models import build_model
    from models.losses import build_loss
    from utils.distributed import DistInfo

    amp = "fp16" if device.type == "cuda" else "none"
    cfg = _recipe("demo_xlsr_lcnn", [1, 64, 32], epochs=epochs, amp=amp)
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_model(cfg["model"]), build_loss(cfg["loss"]), _items([1, 64, 32], 8),
                      _items([1, 64, 32], 6, seed=1), out, dist_info=DistInfo(device=device), resume=resume,
                      progress=False)  # fmt: skip
    return trainer.run()


@pytest.mark.parametrize("first", ["gpu", "cpu"])
def test_checkpoint_resumes_on_the_other_device(first: str, tmp_path: Path) -> None:
    from engine.scoring_model import load_scoring_model
    from utils.checkpoint import load_checkpoint

    devices = {"gpu": DEVICE, "cpu": torch.device("cpu")}
    a, b = devices[first], devices["cpu" if first == "gpu" else "gpu"]
    one = _train_run(a, tmp_path / "run", epochs=1, resume=False)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(t.device.type == "cpu" for t in saved["model"].values())  # map_location cpu
    two = _train_run(b, tmp_path / "run", epochs=2, resume=True)
    assert two.epochs_done == 2 and two.history[0] == one.history[0]
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 2 and state["global_step"] == 4  # 8 utterances, batch 4, two epochs
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    scorer = load_scoring_model(tmp_path / "run" / "best.pt", a)
    assert next(scorer.model.parameters()).device.type == a.type
