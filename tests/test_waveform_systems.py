"""AASIST, AASIST-L and XLS-R-AASIST recipes end to end on the tiny generated corpus (raw waveforms,
fine-tuned SSL front end, SWA, RawBoost), the waveform dataset's crops, and exact resume after SIGKILL.

Sizes are cut for CPU (``SMALL``): AASIST costs ~2 s per training sample at 64,600 samples here, so the
raw-waveform recipes run on 2,400-sample crops and XLS-R-AASIST on a random ``narrow`` SSL model at
4,000 samples; everything else is the published recipe.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import CONFIGS, N_EVAL, recipe, train_until_first_checkpoint_then_kill
from official_asvspoof2019 import score_file_eer

import evaluate_tDCF_asvspoof19
import generate_score
import main_train
from data.corpora import get_corpus
from data.corpora.la2019 import asv_score_path
from data.protocols import ProtocolRow
from data.waveform_dataset import WaveformDataset, crop_start
from engine.trainer import Trainer
from models.frontends.ssl import build_random_model
from models.losses import build_loss
from utils.checkpoint import load_checkpoint
from utils.scorefiles import read_scores

AASIST_SMALL = ("frontend.n_samples=2400", "model.input_shape=[2400]")
XLSR_SMALL = ("frontend.model=random:narrow", "frontend.n_samples=4000", "model.input_shape=[12,64]")
SMALL = {"aasist": AASIST_SMALL, "aasist_l": AASIST_SMALL, "xlsr_aasist_la": XLSR_SMALL,
         "xlsr_aasist_df": XLSR_SMALL}
COMMON = ("train.batch_size=4", "train.eval_batch_size=8", "train.num_workers=0")


def train(config: Path, corpus: Path, out: Path, *extra: str) -> int:
    return main_train.main(["--config", str(config), "--data-root", str(corpus / "LA"), "--out", str(out),
                            "--no-progress", "--device", "cpu", *extra])


def score_and_evaluate(checkpoint: Path, corpus: Path, out: Path) -> dict[str, float]:
    """generate_score.py on the eval partition and on one file, then the evaluator: {utt_id: score}."""
    scores = out / "eval_scores.txt"
    common = ["--checkpoint", str(checkpoint), "--no-progress", "--device", "cpu", "--batch-size", "8"]
    assert generate_score.main([*common, "--data-root", str(corpus / "LA"), "--output", str(scores)]) == 0
    by_utt = dict(zip(read_scores(scores).utt_ids, read_scores(scores).scores.tolist(), strict=True))
    assert len(by_utt) == N_EVAL
    # one recording, its first window: the same input as the partition score
    utt = next(iter(by_utt))
    flac = corpus / "LA" / "ASVspoof2019_LA_eval" / "flac" / f"{utt}.flac"
    result = out / "one.json"
    one = ["--audio", str(flac), "--crop", "first", "--output", str(result)]
    assert generate_score.main([*common, *one]) == 0
    assert json.loads(result.read_text())[0]["score"] == pytest.approx(by_utt[utt], abs=1e-5)
    report = out / "report.json"
    assert evaluate_tDCF_asvspoof19.main([
        str(scores), "--protocol", str(get_corpus("la2019").protocol_path(corpus / "LA", "eval")),
        "--asv-scores", str(asv_score_path(corpus / "LA", "eval")), "--json", str(report),
    ]) == 0
    summary = json.loads(report.read_text())
    assert summary["n_bonafide"] + summary["n_spoof"] == N_EVAL
    assert summary["eer"] == pytest.approx(score_file_eer(scores), rel=1e-9)
    return by_utt


def trainer_scores(path: Path) -> dict[str, float]:
    found = read_scores(path)
    return dict(zip(found.utt_ids, found.scores.tolist(), strict=True))


# --- the recipes --------------------------------------------------------------------------------------


def test_aasist_recipe_trains_with_swa_and_cosine_schedule_scores_and_evaluates(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert train(CONFIGS / "aasist.yaml", tiny_corpus, out, *AASIST_SMALL, *COMMON, "train.epochs=1") == 0
    state = load_checkpoint(out / "swa.pt")
    assert state["swa_snapshots"] == 1 and "swa" in load_checkpoint(out / "last.pt")
    # cosine per optimizer step over 2 steps (8 utterances, batch 4): the logged lr is step 1's
    history = (out / "history.csv").read_text().splitlines()
    assert float(history[1].split(",")[5]) == pytest.approx(1e-4 * (0.05 + 0.95 * 0.5), rel=1e-12)
    # eval scores are the SWA model's (raw bona fide logit), and generate_score.py reproduces them
    scored = score_and_evaluate(out / "swa.pt", tiny_corpus, tmp_path)
    expected = trainer_scores(out / "scores_eval.txt")
    assert scored == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name", ["xlsr_aasist_la", "xlsr_aasist_df"])
def test_xlsr_aasist_recipe_fine_tunes_the_front_end_scores_and_evaluates(
    name: str, tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # the DF recipe also runs with the memory savers: gradient checkpointing, frozen CNN feature encoder
    savers = ("train.grad_checkpoint=true", "frontend.freeze_feature_encoder=true")
    extra = savers if name.endswith("df") else ()
    assert train(CONFIGS / f"{name}.yaml", tiny_corpus, out, *XLSR_SMALL, *COMMON, "train.epochs=1",
                 "optim.lr=1e-3", *extra) == 0
    state = load_checkpoint(out / "best.pt")
    assert state["frontend_settings"]["architecture"]["hidden_size"] == 64
    initial = build_random_model("narrow").state_dict()
    tuned = state["frontend_state"]
    # the transformer is fine-tuned; the CNN feature encoder too unless frozen
    assert not torch.equal(tuned["model.encoder.layers.0.feed_forward.output_dense.weight"],
                           initial["encoder.layers.0.feed_forward.output_dense.weight"])
    conv = "feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(tuned["model." + conv], initial[conv]) == name.endswith("df")
    assert state["config"]["augment"]["rawboost"]["algo"] == (5 if name.endswith("la") else 3)
    scored = score_and_evaluate(out / "best.pt", tiny_corpus, tmp_path)
    assert scored == pytest.approx(trainer_scores(out / "scores_eval.txt"), abs=1e-5)


# --- SWA through the trainer --------------------------------------------------------------------------


class _TinyNet(torch.nn.Module):
    """BatchNorm on the input, then a linear layer: the SWA BN update has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(4)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.bn(x)
        return embedding, self.classify(embedding)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.fc(embedding)


def _items(n: int, seed: int) -> list[tuple[torch.Tensor, int, str, str]]:
    gen = torch.Generator().manual_seed(seed)
    labels = [i % 2 for i in range(n)]
    x = torch.randn(n, 4, generator=gen) * 0.5 + torch.tensor([[3.0, -1.0, 0.0, 2.0]])
    x[:, 0] += torch.tensor(labels, dtype=torch.float32)  # separable enough to learn a little
    return [(x[i], labels[i], f"u{seed}_{i}", "-" if labels[i] == 0 else "A01") for i in range(n)]


def test_swa_average_is_the_mean_of_the_snapshots_and_bn_is_recomputed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train_set, dev_set = _items(16, 1), _items(12, 2)
    cfg = {"optim": {"name": "sgd", "lr": 0.5, "momentum": 0.0}, "loss": {"name": "weighted_ce"},
           "train": {"epochs": 4, "batch_size": 16, "swa": True, "select_by": "dev_eer"}}
    snapshots: list[dict[str, torch.Tensor]] = []

    def keep(_epoch: int) -> None:
        snapshots.append(load_checkpoint(tmp_path / "last.pt")["model"])

    trainer = Trainer(cfg, _TinyNet(), build_loss(cfg["loss"]), train_set, dev_set, tmp_path,
                      progress=False, on_epoch_end=keep)
    trainer.run()
    # snapshots: every epoch whose dev EER is <= the best before it (ties too, as published)
    eers = [row["dev_eer"] for row in trainer.history]
    chosen = [i for i, eer in enumerate(eers) if eer <= min(eers[:i], default=math.inf)]
    assert trainer.swa.count == len(chosen) >= 2
    swa = load_checkpoint(tmp_path / "swa.pt")["model"]
    for key in ("fc.weight", "fc.bias", "bn.weight", "bn.bias"):
        mean = torch.stack([snapshots[i][key] for i in chosen]).mean(0)
        torch.testing.assert_close(swa[key], mean, rtol=1e-6, atol=1e-7)
    # BN statistics recomputed over the training set (one batch of 16: its mean and unbiased variance)
    x = torch.stack([item[0] for item in train_set])
    torch.testing.assert_close(swa["bn.running_mean"], x.mean(0))
    torch.testing.assert_close(swa["bn.running_var"], x.var(0, unbiased=True))


# --- waveform dataset ---------------------------------------------------------------------------------


def test_waveform_crops_and_augmentation_are_seeded_and_exact_lengths_work(tmp_path: Path) -> None:
    lengths = {"a": 3000, "b": 1000, "c": 2000}  # longer, shorter, exactly n_samples
    for utt, n in lengths.items():
        sf.write(tmp_path / f"{utt}.wav", (np.arange(n) % 2000 / 4000).astype(np.float32), 16000,
                 subtype="FLOAT")
    rows = [ProtocolRow("S", utt, "-", "bonafide") for utt in lengths]

    def path_fn(utt: str) -> Path:
        return tmp_path / f"{utt}.wav"

    calls: list[tuple[int, int, int]] = []

    def augment(wave: np.ndarray, key: tuple[int, int, int]) -> np.ndarray:
        calls.append(key)
        return wave * 2.0

    data = WaveformDataset(rows, path_fn, 2000, crop="random", augment=augment, seed=7)
    data.set_epoch(3)
    waves = [data[i][0].numpy() for i in range(3)]
    assert calls == [(7, 3, 0), (7, 3, 1), (7, 3, 2)]
    ramp = 2.0 * (np.arange(3000) % 2000 / 4000).astype(np.float32)
    start = crop_start(3000, 2000, (7, 3, 0))
    np.testing.assert_array_equal(waves[0], ramp[start : start + 2000])  # augmented, then cropped
    np.testing.assert_array_equal(waves[1], np.tile(ramp[:1000], 2))  # shorter: tiled from the start
    np.testing.assert_array_equal(waves[2], ramp[:2000])  # exactly n_samples: the whole utterance
    # the crop depends on (seed, epoch, index) only: another epoch moves it, the same one repeats it
    starts = {crop_start(3000, 2000, (7, epoch, 0)) for epoch in range(20)}
    assert len(starts) > 10 and starts <= set(range(1001))
    # the run record gets the augmentation's settings, as for features computed on the fly
    assert data.augment_settings is None  # a plain function has no settings()
    from data.augment import Augmenter

    la = Augmenter.from_config({"preset": "la"})
    assert WaveformDataset(rows, path_fn, 2000, augment=la).augment_settings == la.settings()
    assert crop_start(3000, 2000, (7, 3, 0)) == start
    first = WaveformDataset(rows, path_fn, 2000, crop="first")
    np.testing.assert_array_equal(first[0][0].numpy(), ramp[:2000] / 2)


# --- kill -9 and --resume -----------------------------------------------------------------------------


def test_aasist_l_with_rawboost_resumes_bit_identically_after_sigkill_then_scores(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """Random crops, RawBoost in a DataLoader worker, SWA and the cosine schedule all continue exactly."""
    config = recipe(tmp_path, "aasist_l", augment={"rawboost": {"algo": 5}})
    args = ["--config", str(config), "--data-root", str(tiny_corpus / "LA"), *AASIST_SMALL,
            "train.epochs=2", "train.batch_size=8", "train.eval_batch_size=8", "train.num_workers=1",
            "--no-progress", "--deterministic", "--device", "cpu"]
    killed = tmp_path / "killed"
    train_until_first_checkpoint_then_kill(args, killed, timeout=180)
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1
    assert main_train.main([*args, "--out", str(killed), "--resume"]) == 0
    assert main_train.main([*args, "--out", str(tmp_path / "straight")]) == 0
    for name in ("last.pt", "swa.pt"):
        resumed, straight = load_checkpoint(killed / name), load_checkpoint(tmp_path / "straight" / name)
        assert resumed["model"].keys() == straight["model"].keys()
        for key in resumed["model"]:
            assert torch.equal(resumed["model"][key], straight["model"][key]), (name, key)
        for key, value in resumed["swa"]["average"].items():
            assert torch.equal(value, straight["swa"]["average"][key]), (name, key)
        assert resumed["swa"]["count"] == straight["swa"]["count"]
        assert resumed["scheduler"] == straight["scheduler"]
    assert (killed / "scores_eval.txt").read_text() == (tmp_path / "straight" / "scores_eval.txt").read_text()
    scored = score_and_evaluate(tmp_path / "straight" / "swa.pt", tiny_corpus, tmp_path)
    assert scored == pytest.approx(trainer_scores(tmp_path / "straight" / "scores_eval.txt"), abs=1e-5)


# --- released XLS-R-AASIST weights --------------------------------------------------------------------


def test_converted_xlsr_aasist_release_scores_a_recording_as_the_original(tmp_path: Path) -> None:
    """The SSL weights come from the converted file (no hub); score = the original's bona fide logit."""
    from test_import_released import make_ssl_release, tiny_architecture

    from models.import_released import convert_released

    src, converted = tmp_path / "LA_model.pth", tmp_path / "xlsr_aasist_la.safetensors"
    ssl, original = make_ssl_release(src, "layer", wrap=True)
    convert_released(src, converted, ssl_architecture=tiny_architecture("layer"))
    wave = (np.random.default_rng(0).standard_normal(64600) * 0.1).astype(np.float32)
    sf.write(tmp_path / "clip.wav", wave, 16000, subtype="FLOAT")
    result = tmp_path / "result.json"
    assert generate_score.main(["--checkpoint", str(converted), "--audio", str(tmp_path / "clip.wav"),
                                "--crop", "first", "--output", str(result), "--device", "cpu",
                                "--no-progress"]) == 0
    with torch.no_grad():  # published input: raw floats, no normalisation; bona fide = original class 1
        _, logits = original(ssl(torch.from_numpy(wave)[None]).last_hidden_state)
    assert json.loads(result.read_text())[0]["score"] == pytest.approx(float(logits[0, 1]), abs=1e-5)
