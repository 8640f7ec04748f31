"""Consistency checks over the whole repository, in the spirit of SpeechBrain's tests/consistency.

Every recipe builds its model and loss; every script's --help runs; every Python file
passes ruff's parse (ruff itself runs in `make test`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from official_asvspoof2019 import evaluate

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "preprocess.py", "main_train.py", "generate_score.py", "evaluate_tDCF_asvspoof19.py", "run_recipe.py"
]
MODULES = ["data.demo", "data.augment", "data.corpora", "models.import_released", "engine.demo",
           "engine.calibrate_checkpoint", "engine.cross_corpus", "engine.package", "engine.export",
           "engine.average", "engine.recipe_schema"]
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


def test_the_whole_chain_runs_on_a_tiny_corpus(tmp_path: Path) -> None:
    """preprocess → train → score → evaluate for both recipes, each step a real CLI process."""
    from engine.demo import SYSTEMS, run_demo

    results = run_demo(tmp_path / "demo", progress=False, sizes=(8, 6, 12),
                       overrides=("train.epochs=1", "train.batch_size=8"))
    for system in SYSTEMS:
        report = results[system.name]
        assert report["n_bonafide"] + report["n_spoof"] == 12
        assert (tmp_path / "demo" / "eval" / f"{system.name}_eval.png").stat().st_size > 10_000
        score_file = tmp_path / "demo" / "scores" / f"{system.name}_eval.txt"
        scores = score_file.read_text().splitlines()
        assert len(scores) == 12 and len(scores[0].split()) == 4
        # the reported numbers are the official script's on the written score and ASV files
        asv = next((tmp_path / "demo").rglob("ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"))
        official = evaluate(str(score_file), str(asv))
        assert report["eer"] == pytest.approx(official["eer"], rel=1e-9)
        assert report["min_tdcf"] == pytest.approx(official["min_tdcf"], rel=1e-9)


def test_recipe_runner_bad_stages_are_one_line_errors(tmp_path: Path, capsys) -> None:
    """Unknown or reversed stages, and scoring before training, stop with one line and exit 2."""
    import run_recipe
    from utils.errors import run_cli

    base = ["--config", str(REPO / "configs" / "aasist.yaml"), "--data-root", str(tmp_path), "--out",
            str(tmp_path / "out")]
    cases = [
        (["--stage", "tune"], "unknown stage 'tune'"),
        (["--stage", "score", "--stop-stage", "train"], "comes after stop stage"),
        (["--stage", "score"], "no trained checkpoint to score"),
    ]
    for extra, message in cases:
        assert run_cli(run_recipe.main, [*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "out" / "scores").exists()
