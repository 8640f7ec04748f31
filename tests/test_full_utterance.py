"""Scoring whole utterances (``data.score_crop: full``, ``data.score_crop_by_dataset``, generate_score.py
``--crop``): fine-tuned Nes2Net-X and XLSR-Mamba checkpoints score each In-the-Wild utterance at its own
length, exactly (fp32) as the front end and back end run by hand on the whole waveform; models with a fixed
frame count refuse in one line before anything is scored; the key travels in the checkpoint's recipe.

Tiny: the random ``narrow`` SSL model, n_samples 4,000 (12 frames), utterances of 250 (under the 400 samples
one XLS-R frame needs: tiled up to 400), 2,300, 4,000 and 6,100 samples in a generated In-the-Wild layout
(meta.csv + WAVs); the two checkpoints and their scores by hand are made once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_package import tiny_checkpoint, tiny_recipe

import generate_score
from data.audio import load_audio
from engine.cross_corpus import Corpus, run_cross_corpus
from engine.partitions import score_crop
from engine.scorer import load_scorer, score_partition
from models import build_model
from models.frontends import build_frontend
from models.losses import build_loss
from utils.checkpoint import load_checkpoint
from utils.errors import UserError, run_cli
from utils.scorefiles import read_scores
from utils.tiling import fix_length

LENGTHS = (250, 2300, 4000, 6100)
N_SAMPLES = 4000
SMALL = {"n_samples": N_SAMPLES}
ITW_FULL = {"score_crop_by_dataset": {"itw": "full"}}


@pytest.fixture(scope="module")
def itw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated In-the-Wild root: meta.csv and one WAV per length in `LENGTHS` (16 kHz PCM_16)."""
    root = tmp_path_factory.mktemp("itw")
    rng = np.random.default_rng(3)
    lines = ["file,speaker,label"]
    for i, n in enumerate(LENGTHS):
        sf.write(root / f"{i}.wav", 0.2 * rng.standard_normal(n), 16000, subtype="PCM_16")
        lines.append(f"{i}.wav,spk{i % 2},{'bona-fide' if i % 2 else 'spoof'}")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root


def by_hand(checkpoint: Path, root: Path) -> dict[str, float]:
    """{utt_id: score}: the checkpoint's front end (rebuilt from its weights) and back end on each whole
    waveform (tiled to 400 samples when shorter), one utterance at a time, in float32."""
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    frontend = build_frontend({**state["frontend_settings"], "trainable": True}, device="cpu")
    frontend.load_state_dict(state["frontend_state"])
    model, loss = build_model(cfg["model"]), build_loss(cfg["loss"])
    model.load_state_dict(state["model"])
    model = model.eval().to(memory_format=torch.channels_last)  # the scorer's layout
    scores = {}
    with torch.inference_mode():
        for i in range(len(LENGTHS)):
            wave = load_audio(root / f"{i}.wav")
            x = torch.from_numpy(fix_length(wave, max(len(wave), 400)))[None]
            embedding, logits = model(frontend.eval()(x))
            scores[str(i)] = float(loss.eval().score(embedding, logits).double()[0])
    return scores


@pytest.fixture(scope="module")
def tuned(itw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, float]]]:
    """{model: (untrained fine-tuned checkpoint with ``score_crop_by_dataset: {itw: full}``, its scores of
    the In-the-Wild utterances by hand)} for Nes2Net-X and XLSR-Mamba."""
    made = {}
    for model_name, recipe, model in (("nes2net_x", "xlsr_nes2net_x_la", {}),
                                      ("xlsr_mamba", "xlsr_mamba_la", {"emb_size": 16, "num_encoders": 2})):
        checkpoint = tiny_checkpoint(model_name, tmp_path_factory.mktemp(model_name), recipe, frontend=SMALL,
                                     model=model, data=ITW_FULL)
        made[model_name] = (checkpoint, by_hand(checkpoint, itw))
    return made


@pytest.mark.parametrize("model_name", ["nes2net_x", "xlsr_mamba"])
def test_full_scores_are_the_model_on_each_whole_waveform(
    model_name: str, tuned: dict[str, tuple[Path, dict[str, float]]], itw: Path
) -> None:
    checkpoint, expected = tuned[model_name]
    scorer = load_scorer(checkpoint, device="cpu", batch_size=4)
    full = score_partition(scorer, "eval", data_root=itw, dataset="itw", progress=False)
    assert full.utt_ids == ["0", "1", "2", "3"]
    assert dict(zip(full.utt_ids, full.scores.tolist(), strict=True)) == expected  # exact, fp32
    # the same partition scored as before (one per batch too): the first 4,000 samples, tiled, so only the
    # 4,000-sample utterance scores the same
    scorer.batch_size = 1
    first = score_partition(scorer, "eval", data_root=itw, dataset="itw", crop="first", progress=False)
    assert first.scores[2] == full.scores[2]
    assert all(first.scores[i] != full.scores[i] for i in (0, 1, 3))


def test_the_recipe_key_reaches_scoring_from_the_checkpoint(
    tuned: dict[str, tuple[Path, dict[str, float]]], itw: Path, tmp_path: Path
) -> None:
    checkpoint, expected = tuned["nes2net_x"]
    cfg = load_checkpoint(checkpoint)["config"]
    assert score_crop(cfg, "itw") == ("full", "data.score_crop_by_dataset.itw")
    assert score_crop(cfg) == ("first", "data.score_crop")  # the recipe's own corpus, 2019 LA
    assert score_crop(cfg, "itw", "first") == ("first", "--crop")
    out = tmp_path / "itw.txt"
    common = ["--checkpoint", str(checkpoint), "--data-root", str(itw), "--dataset", "itw", "--device", "cpu",
              "--no-progress"]
    assert generate_score.main([*common, "--batch-size", "3", "--output", str(out)]) == 0
    written = read_scores(out)
    assert dict(zip(written.utt_ids, written.scores.tolist(), strict=True)) == expected  # batch size ignored
    cross = run_cross_corpus(checkpoint, [Corpus("itw", itw)], tmp_path / "cross", device="cpu",
                             progress=False, log=lambda _: None)
    assert read_scores(cross.scores["itw"]).scores.tobytes() == written.scores.tobytes()


def test_models_with_a_fixed_frame_count_refuse_full_in_one_line(
    itw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sls = tiny_checkpoint("sls", tmp_path, "xlsr_sls_df", frontend=SMALL, data=ITW_FULL)
    common = ["--data-root", str(itw), "--dataset", "itw", "--device", "cpu", "--no-progress",
              "--output", str(tmp_path / "s.txt")]
    assert run_cli(generate_score.main, ["--checkpoint", str(sls), *common]) == 2
    assert capsys.readouterr().err == (
        f"error: data.score_crop_by_dataset.itw: full: the sls model of {sls} takes inputs of exactly "
        "[1, 12, 64] (a fixed number of frames); score it with first\n"
    )
    assert not (tmp_path / "s.txt").exists()
    (tmp_path / "lcnn").mkdir()
    lcnn = tiny_checkpoint("lcnn", tmp_path / "lcnn")  # frozen XLS-R features from a store or on the fly
    with pytest.raises(UserError, match=r"^--crop: full: the lcnn model of .* reads ssl features of "
                                        r"frontend.n_samples samples, not raw waves; score it with first$"):
        score_partition(load_scorer(lcnn, device="cpu"), "eval", data_root=itw, dataset="itw", crop="full")
    # cross-corpus scoring refuses before the first corpus is scored
    with pytest.raises(UserError, match=r"^data.score_crop_by_dataset.itw: full: the sls model"):
        run_cross_corpus(sls, [Corpus("itw", itw)], tmp_path / "cross", device="cpu", progress=False)
    assert not (tmp_path / "cross").exists()


def test_crop_flags_and_keys_that_do_not_apply(itw: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tiny_checkpoint("nes2net_x", tmp_path, "xlsr_nes2net_x_la", frontend=SMALL)
    common = ["--checkpoint", str(checkpoint), "--device", "cpu", "--no-progress"]
    cases = {
        ("--data-root", str(itw), "--crop", "windows", "--output", "x.txt"):
            "--crop windows applies to --audio only; partitions take first or full",
        ("--audio", str(itw / "0.wav"), "--crop", "full"):
            "--crop full scores partitions (--data-root); --audio takes windows or first",
    }
    for args, message in cases.items():
        assert run_cli(generate_score.main, [*common, *args]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    cfg = {"data": {"score_crop_by_dataset": {"itw": "whole"}}}
    with pytest.raises(UserError, match=r"^data.score_crop_by_dataset.itw: 'whole' is not one of first, "):
        score_crop(cfg, "itw")
    with pytest.raises(UserError, match=r"^data.score_crop_by_dataset: unknown corpus 'wild'; expected one "):
        score_crop({"data": {"score_crop_by_dataset": {"wild": "full"}}}, "itw")


def test_the_ssl_front_end_takes_any_length() -> None:
    settings = {"name": "ssl", "model": "random:narrow", "n_samples": N_SAMPLES, "dtype": "fp32"}
    frontend = build_frontend(settings, device="cpu")
    assert (frontend.samples_for(1), frontend.samples_for(12), frontend.samples_for(27)) == (400, 3920, 8720)
    assert [frontend.frames_for(n) for n in (399, 400, 719, 720, N_SAMPLES, 9000)] == [0, 1, 1, 2, 12, 27]
    waves = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 9000)).astype(np.float32))
    assert tuple(frontend(waves).shape) == (2, 1, 64, 27)  # frozen path, at the waves' length
    fixed = build_frontend({**settings, "n_samples": 9000}, device="cpu")  # built for that length
    assert torch.equal(frontend(waves), torch.from_numpy(fixed.extract(list(waves.numpy()))))
    with pytest.raises(ValueError, match=r"expected \(B, n >= 400\) waves, got \(1, 399\)"):
        frontend(waves[:1, :399])


def test_training_scores_eval_as_generate_score_does_the_checkpoint(itw: Path, tmp_path: Path) -> None:
    """A fine-tuned Nes2Net-X recipe with ``data.score_crop: full`` trained one epoch: the trainer's eval
    scores (scores_eval.txt, summary.json's eval_eer) are generate_score.py --crop full's scores of best.pt,
    not the first 4,000 samples'; the In-the-Wild meta.csv serves as the manifest of every partition."""
    import main_train
    from utils.config import save_config
    from utils.metrics import compute_eer

    meta = str(itw / "meta.csv")
    cfg = tiny_recipe("nes2net_x", "xlsr_nes2net_x_la", frontend=SMALL,
                      data={"dataset": "manifest", "manifests": {p: meta for p in ("train", "dev", "eval")},
                            "score_crop": "full"})
    config, run = tmp_path / "full.yaml", tmp_path / "run"
    save_config(cfg, config)
    assert main_train.main(["--config", str(config), "--out", str(run), "train.epochs=1",
                            "train.batch_size=4", "train.average=null", "train.calibrate=false",
                            "train.amp=none", "train.compile=false", "train.num_workers=0", "--device", "cpu",
                            "--no-progress"]) == 0
    trained = read_scores(run / "scores_eval.txt")
    out = tmp_path / "full.txt"
    assert generate_score.main(["--checkpoint", str(run / "best.pt"), "--manifest", f"eval={meta}", "--crop",
                                "full", "--output", str(out), "--device", "cpu", "--no-progress"]) == 0
    full = read_scores(out)
    assert list(trained.utt_ids) == list(full.utt_ids) == ["0", "1", "2", "3"]
    # whole utterances (3 of the 4 score otherwise on the first 4,000 samples: the test above); fp32, the
    # trainer's memory layout may differ from the scorer's (channels_last): equal to 1e-5
    np.testing.assert_allclose(trained.scores, full.scores, rtol=1e-5, atol=0)
    keys = full.keys
    eer = compute_eer(full.scores[keys == "bonafide"], full.scores[keys == "spoof"])[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_eer"] == pytest.approx(eer, abs=1e-12)
