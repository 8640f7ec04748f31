"""Training from audio with on-the-fly augmentation (data/augment wired into data/dataset.py and
engine/partitions.py): the training partition only, fresh every epoch, the same in DataLoader workers,
recorded in the run folder. Resume after SIGKILL with augmentation is in test_reliability.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS
from torch.utils.data import DataLoader

import main_train
from data.audio import load_audio
from data.augment import Augmenter
from data.dataset import AudioDataset, StoreDataset, collate_batch
from engine.partitions import open_partition
from engine.recipe_schema import load_recipe
from utils.checkpoint import load_checkpoint

F0 = CONFIGS / "demo_sr_la_res2net_f0.yaml"


def features(dataset: AudioDataset, indices: list[int]) -> torch.Tensor:
    return torch.stack([item[0] for item in dataset.__getitems__(indices)])


def test_train_partition_is_augmented_per_seed_and_epoch_dev_never(tiny_corpus: Path) -> None:
    cfg = load_recipe(F0, ["augment.preset=la"])
    where = {"data_root": tiny_corpus / "LA", "on_the_fly": True}
    train = open_partition(cfg, "train", **where, augment_seed=3)
    dev = open_partition(cfg, "dev", **where)
    assert isinstance(train.augment, Augmenter) and train.augment.algo == 5 and dev.augment is None
    assert dev.augment_settings is None and train.augment_settings["rawboost"]["algo"] == 5

    # what the front end sees is Augmenter.apply of the loaded audio, keyed (run seed, epoch, row index)
    train.set_epoch(1)
    wave = load_audio(Path(train.rows[2].path))  # the rows carry their audio files
    expected = train.frontend.extract([Augmenter.from_config({"preset": "la"}).apply(wave, (3, 1, 2))])
    np.testing.assert_array_equal(features(train, [2])[0].numpy(), expected[0])
    clean = train.frontend.extract([wave])[0]
    assert np.abs(expected[0] - clean).max() > 0.1

    epoch1 = features(train, [0, 1, 2, 3])
    assert torch.equal(epoch1, features(train, [0, 1, 2, 3]))  # nothing random outside the key
    assert torch.equal(epoch1[2], features(train, [5, 2])[1])  # independent of the batch it is in
    train.set_epoch(0)
    assert not torch.equal(epoch1, features(train, [0, 1, 2, 3]))  # fresh every epoch
    other_seed = open_partition(cfg, "train", **where, augment_seed=4)
    other_seed.set_epoch(1)
    assert not torch.equal(epoch1, features(other_seed, [0, 1, 2, 3]))

    # DataLoader workers (non-persistent) get the dataset with the epoch set before iterating
    train.set_epoch(1)
    loader = DataLoader(train, batch_size=2, num_workers=2, collate_fn=collate_batch)
    from_workers = torch.cat([x for x, *_ in loader])
    assert torch.equal(from_workers[:4], epoch1)


def test_inactive_augmentation_changes_nothing_and_a_store_refuses_an_active_one(tiny_corpus: Path) -> None:
    cfg = load_recipe(F0, ["augment.preset=la", "augment.p=0"])
    train = open_partition(cfg, "train", features=tiny_corpus / "feats", augment_seed=0)
    assert isinstance(train, StoreDataset)  # p=0 can never change a wave: the store is fine
    train = open_partition(cfg, "train", data_root=tiny_corpus / "LA", on_the_fly=True, augment_seed=0)
    assert train.augment is None


def test_f0_recipe_trains_from_audio_with_la_augmentation(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["--config", str(F0), "--on-the-fly", "--data-root", str(tiny_corpus / "LA"), "--out", str(out),
            "train.epochs=1", "train.batch_size=4", "augment.preset=la", "--no-eval", "--no-progress",
            "--device", "cpu"]  # fmt: skip
    assert main_train.main(argv) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and state["global_step"] == 2  # 8 utterances, batch 4
    assert state["config"]["augment"] == {"preset": "la"}
    record = json.loads((out / "environment.json").read_text())["augment"]
    assert record["rawboost"]["algo"] == 5 and record["rawboost"]["name"] == "LnL>ISD"
    assert record["rawboost"]["params"]["N_f"] == 5 and record["codecs"] == []
    assert "SeedSequence([run_seed, epoch, index])" in record["seeding"]


def test_a_recipe_without_augment_records_none(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = load_recipe(F0)
    assert "augment" not in cfg
    train = open_partition(cfg, "train", data_root=tiny_corpus / "LA", on_the_fly=True, augment_seed=0)
    assert train.augment is None and train.augment_settings is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["augment.preset=la", "augment.rawboost.p=0.5"], {"algo": 5, "p": 0.5}),
        (["augment.preset=df"], {"algo": 3, "p": 1.0}),
        (["augment={preset: la, rawboost: {algo: 3}}"], {"algo": 3, "p": 1.0}),
    ],
)
def test_overrides_switch_augmentation_on_in_any_recipe(overrides: list[str], expected: dict) -> None:
    for name in ("demo_sr_la_res2net_f0", "sr_la_res2net_f0", "xlsr_lcnn"):
        cfg = load_recipe(CONFIGS / f"{name}.yaml", overrides)
        aug = Augmenter.from_config(cfg["augment"])
        assert (aug.algo, aug.rawboost_p) == (expected["algo"], expected["p"])
