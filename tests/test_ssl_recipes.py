"""The recipes of Nes2Net-X, XLS-R-SLS and XLSR-Mamba end to end on the tiny generated corpus (train one
epoch, score, evaluate), checkpoint averaging (train.average, avg.pt, python -m engine.average), and exact
resume after SIGKILL with averaging on.

Sizes are cut for CPU: the random ``narrow`` SSL model (hidden 64, 1 layer) at 16,000 samples (49 frames);
SLS then has the matching flatten size (49 // 3) · (64 // 3) = 336 (its 201-frame rule is checked on the
full-size back end in test_ssl_backends.py). The frozen recipe reads the tiny corpus's random:narrow store
(64,600 samples, as configs/demo_xlsr_lcnn.yaml made it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, train_until_first_checkpoint_then_kill
from test_waveform_systems import _items, _TinyNet, score_and_evaluate, trainer_scores

import main_train
from engine.average import epoch_path
from engine.average import main as average_main
from engine.trainer import Trainer
from models.losses import build_loss
from utils.checkpoint import load_checkpoint

NARROW = ("frontend.model=random:narrow", "frontend.n_samples=16000")
SMALL = {
    "xlsr_nes2net_x_la": (*NARROW, "model.input_shape=[1,64,49]"),
    "xlsr_nes2net_x_df": (*NARROW, "model.input_shape=[1,64,49]"),
    "xlsr_sls_df": (*NARROW, "model.input_shape=[1,49,64]"),
    "xlsr_mamba_la": (*NARROW, "model.input_shape=[49,64]", "model.emb_size=16"),
    "xlsr_mamba_df": (*NARROW, "model.input_shape=[49,64]", "model.emb_size=16"),
}
COMMON = (
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.num_workers=0",
    "--no-progress",
    "--device",
    "cpu",
)
FROZEN = ("frontend.model=random:narrow", "model.input_shape=[1,64,201]")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_fine_tuned_recipe_trains_scores_and_evaluates(name: str, tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "--config",
        str(CONFIGS / f"{name}.yaml"),
        "--data-root",
        str(tiny_corpus / "LA"),
        "--out",
        str(out),
        *SMALL[name],
        *COMMON,
        "train.epochs=1",
        "optim.lr=1e-3",
        "train.average.top_k=2",
    ]
    average = "average" in load_checkpoint_cfg(name)
    if not average:
        args.remove("train.average.top_k=2")
    assert main_train.main(args) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["frontend_settings"]["architecture"]["hidden_size"] == 64
    if name == "xlsr_sls_df":
        assert state["frontend_settings"]["layers"] == "all"
    scored_path = out / ("avg.pt" if average else "best.pt")
    if average:  # eval scores come from avg.pt, which scores like best.pt
        assert load_checkpoint(scored_path)["averaged_epochs"] == [
            r["epoch"] for r in state["average"]["kept"]
        ]
    scored = score_and_evaluate(scored_path, tiny_corpus, tmp_path)
    assert scored == pytest.approx(trainer_scores(out / "scores_eval.txt"), abs=1e-5)


def load_checkpoint_cfg(name: str) -> dict:
    from utils.config import load_config

    return load_config(CONFIGS / f"{name}.yaml")["train"]


def test_average_is_the_mean_of_the_kept_epochs_and_bn_is_recomputed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train_set, dev_set = _items(16, 1), _items(12, 2)
    cfg = {
        "optim": {"name": "sgd", "lr": 0.5, "momentum": 0.0},
        "loss": {"name": "weighted_ce"},
        "train": {"epochs": 5, "batch_size": 16, "average": {"top_k": 2, "by": "dev_loss"}},
    }
    snapshots: list[dict[str, torch.Tensor]] = []

    def keep(_epoch: int) -> None:
        snapshots.append(load_checkpoint(tmp_path / "last.pt")["model"])

    trainer = Trainer(
        cfg,
        _TinyNet(),
        build_loss(cfg["loss"]),
        train_set,
        dev_set,
        tmp_path,
        progress=False,
        on_epoch_end=keep,
    )
    trainer.run()
    losses = [row["dev_loss"] for row in trainer.history]
    best_two = sorted(range(5), key=lambda i: (losses[i], i))[:2]
    kept = [r["epoch"] for r in load_checkpoint(tmp_path / "last.pt")["average"]["kept"]]
    assert kept == [i + 1 for i in best_two]
    assert sorted(p.name for p in (tmp_path / "average").iterdir()) == sorted(
        epoch_path(tmp_path, e).name for e in kept
    )
    avg = load_checkpoint(tmp_path / "avg.pt")
    assert avg["averaged_epochs"] == kept
    for key in ("fc.weight", "fc.bias", "bn.weight", "bn.bias"):
        mean = torch.stack([snapshots[i][key] for i in best_two]).mean(0)
        torch.testing.assert_close(avg["model"][key], mean, rtol=1e-6, atol=1e-7)
    x = torch.stack([item[0] for item in train_set])  # fresh BN statistics: one batch of all 16
    torch.testing.assert_close(avg["model"]["bn.running_mean"], x.mean(0))
    torch.testing.assert_close(avg["model"]["bn.running_var"], x.var(0, unbiased=True))
    # the CLI on the finished run: the single best by dev loss, BN statistics averaged (= that epoch's)
    assert average_main([str(tmp_path), "--top-k", "1", "--by", "dev_loss"]) == 0
    again = load_checkpoint(tmp_path / "avg.pt")
    assert again["averaged_epochs"] == [best_two[0] + 1]
    for key, value in snapshots[best_two[0]].items():
        assert torch.equal(again["model"][key], value), key


def test_nes2net_x_frozen_with_averaging_resumes_bit_identically_after_sigkill(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    args = [
        "--config",
        str(CONFIGS / "nes2net_x_frozen.yaml"),
        "--features",
        str(tiny_corpus / "feats"),
        *FROZEN,
        "train.epochs=2",
        "train.batch_size=4",
        "train.eval_batch_size=8",
        "train.num_workers=0",
        "train.average.top_k=2",
        "optim.lr=1e-2",
        "--no-progress",
        "--deterministic",
        "--device",
        "cpu",
    ]
    killed = tmp_path / "killed"
    train_until_first_checkpoint_then_kill(args, killed, timeout=180)
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1
    assert main_train.main([*args, "--out", str(killed), "--resume"]) == 0
    assert main_train.main([*args, "--out", str(tmp_path / "straight")]) == 0
    straight = tmp_path / "straight"
    for name in ("last.pt", "avg.pt"):
        resumed, clean = load_checkpoint(killed / name), load_checkpoint(straight / name)
        assert resumed["model"].keys() == clean["model"].keys()
        for key in resumed["model"]:
            assert torch.equal(resumed["model"][key], clean["model"][key]), (name, key)
        assert resumed["average"] == clean["average"]
    assert sorted(p.name for p in (killed / "average").iterdir()) == sorted(
        p.name for p in (straight / "average").iterdir()
    )
    assert (killed / "scores_eval.txt").read_text() == (straight / "scores_eval.txt").read_text()
