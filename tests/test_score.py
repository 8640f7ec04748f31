"""generate_score.py: partitions from the store, arbitrary recordings by windows, released weights.

The `checkpoint` and `clips` fixtures are in conftest.py; one-line errors for a mismatched checkpoint and
features are in test_reliability.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, THRESHOLD

import generate_score
from data.audio import load_audio
from engine.score_windows import window_starts
from models.frontends import build_frontend
from utils.config import load_config
from utils.scorefiles import read_scores


def test_window_starts() -> None:
    assert window_starts(4800, 64600, 32300) == [0]  # shorter than a window: one, tiled by the front end
    assert window_starts(64600, 64600, 32300) == [0]
    assert window_starts(160000, 64600, 32300) == [0, 32300, 64600, 95400]  # last window ends at the end
    assert window_starts(129200, 64600, 32300) == [0, 32300, 64600]
    assert window_starts(200000, 80000, 40000) == [0, 40000, 80000, 120000]


def manual_score(model: torch.nn.Module, loss: torch.nn.Module, wave: np.ndarray, starts: list[int]) -> float:
    frontend = build_frontend({"name": "ssl", "model": "random:narrow"}, device="cpu")
    with torch.no_grad():
        x = torch.from_numpy(frontend.extract([wave[s : s + 64600] for s in starts]))
        return float(loss.score(*model(x)).double().mean())


def test_audio_of_any_length_rate_and_channels(checkpoint, clips, tmp_path: Path, capsys) -> None:
    path, model, loss = checkpoint
    out = tmp_path / "results.csv"
    argv = [
        "--checkpoint",
        str(path),
        "--audio",
        *(str(p) for p in clips.values()),
        "--output",
        str(out),
        "--batch-size",
        "3",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert generate_score.main(argv) == 0
    rows = {Path(r["file"]).stem: r for r in csv.DictReader(out.open())}
    assert {k: int(r["windows"]) for k, r in rows.items()} == {"short": 1, "long": 4, "stereo": 1}
    assert float(rows["short"]["duration_s"]) == 0.3 and float(rows["long"]["duration_s"]) == 10.0
    long_wave = load_audio(clips["long"])
    expected = manual_score(model, loss, long_wave, [0, 32300, 64600, 95400])
    assert float(rows["long"]["score"]) == pytest.approx(expected, abs=1e-5)
    # stereo 44.1 kHz: mixed down and resampled to 16 kHz (40,000 samples, one tiled window)
    stereo = load_audio(clips["stereo"])
    assert stereo.shape == (40000,)
    assert float(rows["stereo"]["score"]) == pytest.approx(manual_score(model, loss, stereo, [0]), abs=1e-5)
    for row in rows.values():
        assert row["decision"] == ("bonafide" if float(row["score"]) >= THRESHOLD else "spoof")
        assert float(row["threshold"]) == THRESHOLD
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 3 and printed[1].split("\t")[2] in ("bonafide", "spoof")


def test_crop_first_and_json_output(checkpoint, clips, tmp_path: Path) -> None:
    path, model, loss = checkpoint
    out = tmp_path / "results.json"
    assert (
        generate_score.main(
            [
                "--checkpoint",
                str(path),
                "--audio",
                str(clips["long"].parent),
                "--crop",
                "first",
                "--output",
                str(out),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = {Path(r["file"]).stem: r for r in json.loads(out.read_text())}
    assert rows["long"]["windows"] == 1
    expected = manual_score(model, loss, load_audio(clips["long"]), [0])
    assert rows["long"]["score"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("flags", "rtol"),
    [([], 1e-5), (["--amp", "bf16"], 5e-2), (["--compile"], 1e-5)],
    ids=["fp32", "bf16", "compile"],
)
def test_partition_from_the_store(checkpoint, tiny_corpus: Path, tmp_path: Path, capsys, flags, rtol) -> None:
    """7 utterances in batches of 4: with --compile the short last batch is padded to the compiled shape."""
    from data.dataset import StoreDataset

    path, model, loss = checkpoint
    out = tmp_path / "eval.txt"
    argv = ["--checkpoint", str(path), "--features", str(tiny_corpus / "feats"), "--partition", "eval"]
    argv += ["--output", str(out), "--batch-size", "4", "--no-progress", *flags]
    assert generate_score.main(argv) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # --compile did compile
    assert "7 utterances scored" in captured.out
    scores = read_scores(out)
    store = StoreDataset(tiny_corpus / "feats" / "ssl-random-narrow" / "eval")
    x = torch.stack([store[i][0] for i in range(len(store))]).float()  # float16 SSL store rows
    with torch.no_grad():
        expected = loss.score(*model(x)).double().numpy()
    assert list(scores.utt_ids) == [r.utt_id for r in store.rows]
    np.testing.assert_allclose(scores.scores, expected, rtol=rtol, atol=1e-6)
    assert list(scores.keys) == [r.key for r in store.rows]
    assert len(np.unique(scores.scores)) == len(scores.scores)


def test_amp_logits_come_from_a_float32_last_layer_and_padding_is_dropped(checkpoint) -> None:
    from engine.score_batches import forward_for_scores

    _, model, _ = checkpoint
    shape = load_config(CONFIGS / "demo_xlsr_lcnn.yaml")["model"]["input_shape"]
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, bf16_logits = model(x)
        embedding, logits = forward_for_scores(model, x, cpu, "bf16")
        assert bf16_logits.dtype == torch.bfloat16 and logits.dtype == torch.float32
        torch.testing.assert_close(logits, model.classify(embedding), rtol=0, atol=0)
        assert not torch.equal(logits, logits.bfloat16().float())  # finer than the bf16 grid
        torch.testing.assert_close(logits, model(x)[1], rtol=0.05, atol=0.05)
        _, padded = forward_for_scores(model, x[:3], cpu, "none", fixed_batch=8)
        torch.testing.assert_close(padded, model(x[:3])[1], rtol=1e-5, atol=1e-6)


def test_released_safetensors_scores_like_our_checkpoint(checkpoint, clips, tmp_path: Path) -> None:
    from models.import_released import save_model_weights

    path, model, loss = checkpoint
    cfg = load_config(CONFIGS / "demo_xlsr_lcnn.yaml")
    weights = tmp_path / "model.safetensors"
    save_model_weights(
        weights, model.state_dict(), {"config": {k: cfg[k] for k in ("frontend", "model", "loss")}}
    )
    results = []
    for ckpt in (path, weights):
        out = tmp_path / f"{ckpt.stem}.json"
        assert (
            generate_score.main(
                [
                    "--checkpoint",
                    str(ckpt),
                    "--audio",
                    str(clips["short"]),
                    "--output",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
        results.append(json.loads(out.read_text())[0])
    assert results[0]["score"] == results[1]["score"]
    assert results[1]["decision"] == "n/a"  # no threshold in the imported file


