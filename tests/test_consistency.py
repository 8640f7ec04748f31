"""Consistency checks over the whole repository, in the spirit of SpeechBrain's tests/consistency.

Every recipe builds its model and loss; every script's --help runs; every Python file
passes ruff's parse (ruff itself runs in `make test`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["preprocess.py", "main_train.py", "generate_score.py", "evaluate_tDCF_asvspoof19.py"]
MODULES = ["data.demo", "models.import_released", "utils.run_demo"]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_runs(script: str) -> None:
    out = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


@pytest.mark.parametrize("module", MODULES)
def test_module_help_runs(module: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_every_recipe_is_present() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"xlsr_lcnn", "sr_la_res2net_f0", "demo_xlsr_lcnn", "demo_sr_la_res2net_f0"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_builds_its_model_and_loss(config: Path) -> None:
    import torch

    from models import build_model
    from models.losses import build_loss
    from utils.config import load_config

    cfg = load_config(config)
    model = build_model(cfg["model"]).eval()
    loss = build_loss(cfg["loss"])
    shape = tuple(cfg["model"]["input_shape"])
    x = torch.randn(2, *shape)
    with torch.no_grad():
        emb, logits = model(x)
    assert logits.shape == (2, 2)
    assert loss.score(emb, logits).shape == (2,)
