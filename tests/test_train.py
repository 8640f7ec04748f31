"""Training end to end on a tiny generated corpus: run folder contents, checkpoints, λ counter, resume.

`tiny_corpus` (conftest.py; also used by test_score.py and test_distributed.py) generates 8 train / 7 dev /
7 eval utterances with data.demo and F0 and random:narrow SSL feature stores with preprocess.py, once per
session. Resume after a real SIGKILL and one-line input errors are in test_reliability.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, N_DEV, N_EVAL, RUN_FILES, recipe

import main_train
from engine.evaluation import fit_file_calibration
from utils.calibration import Calibration
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.metrics import compute_eer
from utils.scorefiles import read_scores


def train(config: Path | str, corpus: Path, out: Path, *extra: str) -> int:
    return main_train.main(
        [
            "--config",
            str(config),
            "--features",
            str(corpus / "feats"),
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
            *extra,
        ]
    )


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_one_epoch_of_the_f0_recipe_end_to_end(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        train(
            CONFIGS / "demo_sr_la_res2net_f0.yaml",
            tiny_corpus,
            out,
            "train.epochs=1",
            "train.batch_size=4",
            "train.eval_batch_size=8",
        )
        == 0
    )
    names = {p.name for p in out.iterdir()}
    assert RUN_FILES | {"scores_eval.txt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    state = torch.load(out / "best.pt", weights_only=True)  # plain containers only: no pickled classes
    assert state["epoch"] == 1 and state["global_step"] == 2  # 8 utterances, batch 4
    assert state["config"]["train"]["batch_size"] == 4
    assert int(state["loss"]["it"]) == 2  # one A-Softmax λ step per training forward pass
    assert {"python", "numpy", "torch", "cuda"} <= set(state["rng"][0])
    # the saved threshold is the dev EER threshold of the saved dev scores
    dev = read_scores(out / "scores_dev.txt")
    eer, thr = compute_eer(dev.scores[dev.keys == "bonafide"], dev.scores[dev.keys == "spoof"])
    assert (state["dev_eer"], state["threshold"]) == (eer, thr)
    assert len(dev.scores) == N_DEV and len(read_scores(out / "scores_eval.txt").scores) == N_EVAL
    # train.calibrate: true (the recipes' setting) stored the calibration fitted on best.pt's dev scores
    calibration = fit_file_calibration(out / "scores_dev.txt")[0]
    assert Calibration.from_dict(state["calibration"]) == calibration
    assert json.loads((out / "summary.json").read_text())["calibration"] == calibration.as_dict()
    assert "torch" in (out / "environment.json").read_text()
    history = (out / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,dev_loss,dev_eer,dev_threshold,lr,time_s" and len(history) == 2
    # Noam: the epoch's last (second) optimizer step ran at 0.2 · 64^-0.5 · 2 · 40^-1.5
    assert float(history[1].split(",")[5]) == pytest.approx(0.2 * 64**-0.5 * 2 * 40**-1.5, rel=1e-9)


def test_one_epoch_of_the_xlsr_lcnn_recipe_end_to_end(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        train(CONFIGS / "demo_xlsr_lcnn.yaml", tiny_corpus, out, "train.epochs=1", "train.batch_size=4") == 0
    )
    state = load_checkpoint(out / "best.pt")
    assert state["model"]["out.1.weight"].shape == (160, 32 * 4 * 12)  # LCNN flatten size at (1, 64, 201)
    assert math.isfinite(state["dev_eer"]) and state["optimizer"]["param_groups"][0]["lr"] == 1e-3
    with pytest.raises(UserError, match="already holds a checkpoint"):
        train(CONFIGS / "demo_xlsr_lcnn.yaml", tiny_corpus, out, "train.epochs=1")


def _asoftmax_lcnn(tmp_path: Path) -> Path:
    return recipe(tmp_path, "demo_xlsr_lcnn", loss={"name": "a_softmax", "margin": 4})


def test_lambda_counter_continues_across_epochs_and_after_resume(tiny_corpus: Path, tmp_path: Path) -> None:
    config = _asoftmax_lcnn(tmp_path)
    common = ("train.batch_size=4", "train.amp=none", "--no-eval", "--deterministic")
    assert train(config, tiny_corpus, tmp_path / "full", "train.epochs=2", *common) == 0
    assert train(config, tiny_corpus, tmp_path / "resumed", "train.epochs=1", *common) == 0
    assert int(load_checkpoint(tmp_path / "resumed" / "last.pt")["loss"]["it"]) == 2
    assert train(config, tiny_corpus, tmp_path / "resumed", "train.epochs=2", "--resume", *common) == 0
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert int(full["loss"]["it"]) == int(resumed["loss"]["it"]) == 4  # 2 epochs × 2 batches, never reset
    assert_same_weights(full["model"], resumed["model"])
    assert full["history"][1]["dev_eer"] == resumed["history"][1]["dev_eer"]


def test_select_by_dev_loss_and_early_stopping(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        train(
            CONFIGS / "demo_xlsr_lcnn.yaml",
            tiny_corpus,
            out,
            "train.epochs=5",
            "train.batch_size=4",
            "train.select_by=dev_loss",
            "train.patience=1",
            "--no-eval",
        )
        == 0
    )
    state = load_checkpoint(out / "last.pt")
    losses = [row["dev_loss"] for row in state["history"]]
    best = int(np.argmin(losses)) + 1
    assert state["best"]["epoch"] == best and state["best"]["metric"] == min(losses)
    assert load_checkpoint(out / "best.pt")["epoch"] == best
    # patience 1: stop at the first epoch that does not improve on the best so far
    first_worse = next((i + 1 for i in range(1, len(losses)) if losses[i] >= min(losses[:i])), None)
    assert state["epoch"] == (first_worse or 5) and state["stopped_early"] == (first_worse is not None)


def test_grad_accumulation_counts_optimizer_steps(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        train(
            CONFIGS / "demo_xlsr_lcnn.yaml",
            tiny_corpus,
            out,
            "train.epochs=1",
            "train.batch_size=8",
            "train.grad_accum=2",
            "--no-eval",
        )
        == 0
    )
    assert load_checkpoint(out / "last.pt")["global_step"] == 1  # 8 utterances = 2 micro-batches = 1 step


def test_multi_seed_summary(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    assert (
        train(
            CONFIGS / "demo_xlsr_lcnn.yaml",
            tiny_corpus,
            tmp_path,
            "train.epochs=1",
            "train.batch_size=4",
            "--seeds",
            "0",
            "1",
        )
        == 0
    )
    import json

    summary = json.loads((tmp_path / "summary_seeds.json").read_text())
    dev = summary["dev_eer"]
    assert summary["dev_eer_mean"] == pytest.approx(np.mean(dev))
    assert summary["dev_eer_std"] == pytest.approx(np.std(dev, ddof=1))
    assert (tmp_path / "seed0" / "best.pt").exists() and (tmp_path / "seed1" / "best.pt").exists()
    assert "2 seeds: dev EER" in capsys.readouterr().out
