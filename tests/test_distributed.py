"""Two gloo processes under torchrun: gradients averaged across ranks, only rank 0 writes, a recipe runs.

Each run is a real `python -m torch.distributed.run --nproc_per_node 2` process tree on the CPU.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RUN_FILES, free_port, recipe

from utils.checkpoint import load_checkpoint
from utils.scorefiles import read_scores

REPO = Path(__file__).resolve().parents[1]

# A model without batch statistics or dropout, so that one process on the global batch and two processes
# on half batches each must agree up to float rounding. Registered before main_train runs.
HELPER = """
import sys
sys.path.insert(0, {repo!r})
import torch
from torch import nn
from models.registry import register_model
from utils.errors import run_cli


@register_model("test_mlp")
class TestMLP(nn.Module):
    def __init__(self, input_shape=(1, 64, 201)):
        super().__init__()
        n = 1
        for v in input_shape:
            n *= int(v)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(n, 8), nn.Tanh())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        embedding = self.hidden(x)
        return embedding, self.head(embedding)


import main_train
sys.exit(run_cli(main_train.main))
"""


def run(script: Path, args: list[str], nproc: int) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, str(script)]
        if nproc == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(free_port()),
            str(script),
        ]
    )
    out = subprocess.run([*launcher, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_gradients_are_averaged_across_two_processes(tiny_corpus: Path, tmp_path: Path) -> None:
    helper = tmp_path / "train_with_test_mlp.py"
    helper.write_text(HELPER.format(repo=str(REPO)))
    config = recipe(
        tmp_path,
        "demo_xlsr_lcnn",
        model={"name": "test_mlp", "input_shape": [1, 64, 201]},
        loss={"name": "weighted_ce", "weights": [1.0, 1.0]},
        sched={"name": "none"},
        # SGD: Adam divides by sqrt(v), which blows float rounding of near-zero gradients up to lr-sized steps
        optim={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
    )
    # 8 utterances, global batch 4: 2 optimizer steps per epoch, 4 in all
    args = [
        "--config",
        str(config),
        "--features",
        str(tiny_corpus / "feats"),
        "train.epochs=2",
        "train.batch_size=4",
        "train.amp=none",
        "--no-eval",
        "--no-progress",
        "--device",
        "cpu",
    ]
    one = run(helper, [*args, "--out", str(tmp_path / "one")], nproc=1)
    two = run(helper, [*args, "--out", str(tmp_path / "two")], nproc=2)
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert a["global_step"] == b["global_step"] == 4
    # gradients flowed (non-zero momentum), so equal weights are not just equal initial weights
    assert float(a["optimizer"]["state"][0]["momentum_buffer"].abs().sum()) > 0
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-5, atol=1e-6)
    # rank 0 alone wrote: one history row per epoch, one summary line, one RNG state per rank saved
    assert len((tmp_path / "two" / "history.csv").read_text().splitlines()) == 3
    assert two.stdout.count("seed 0: best epoch") == 1 and one.stdout.count("seed 0: best epoch") == 1
    assert len(b["rng"]) == 2 and not torch.equal(b["rng"][0]["torch"], b["rng"][1]["torch"])
    # two epochs: last.pt replaced once, the one before it kept beside it
    assert {p.name for p in (tmp_path / "two").iterdir()} == RUN_FILES | {"last.prev.pt"}
    # dev scores gathered from both ranks: every utterance once (7 = 4 + 3, one padding duplicate dropped)
    assert len(set(read_scores(tmp_path / "two" / "scores_dev.txt").utt_ids)) == 7


@pytest.mark.slow
def test_a_real_recipe_trains_with_two_processes(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run(
        REPO / "main_train.py",
        [
            "--config",
            str(REPO / "configs" / "demo_xlsr_lcnn.yaml"),
            "--features",
            str(tiny_corpus / "feats"),
            "train.epochs=1",
            "train.batch_size=4",
            "--out",
            str(out),
            "--no-progress",
        ],
        nproc=2,
    )
    assert result.stdout.count("eval EER") == 1
    assert {p.name for p in out.iterdir()} == RUN_FILES | {"scores_eval.txt"}
    state = load_checkpoint(out / "best.pt")
    assert state["epoch"] == 1 and state["global_step"] == 2 and len(state["rng"]) == 2
    scores = read_scores(out / "scores_eval.txt")
    assert sorted(scores.utt_ids) == sorted(set(scores.utt_ids)) and len(scores.utt_ids) == 7
    env = (out / "environment.json").read_text()
    assert '"world_size": 2' in env
