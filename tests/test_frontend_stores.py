"""Stores for any front end: a frozen front end registered in this file (one class, nothing else edited) runs
preprocess -> train -> score -> evaluate with its stores named by `FrontEnd.store_tag`, and a front end whose
output length varies per utterance fills a variable-length store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import recipe

import generate_score
import main_train
import preprocess
from data.audio import load_audio
from data.corpora import get_corpus
from data.store import FeatureStore
from evaluate_tDCF_asvspoof19 import main as evaluate_main
from models.frontends import FRONTENDS, FrontEnd, check_waves, register_frontend
from models.frontends.base import store_tag
from utils.errors import run_cli
from utils.metrics import compute_eer
from utils.scorefiles import read_scores
from utils.tiling import fix_length

COMMON = ["--no-progress"]


@pytest.fixture
def toy_frontends():
    """Two frozen front ends registered with @register_frontend, removed afterwards: ``toy_bands`` (fixed
    (1, bands, frames) log band energies) and ``toy_frames`` ((frames, 2) log energy and zero-crossing rate
    per frame, as many frames as the utterance has)."""

    @register_frontend("toy_bands")
    class ToyBands(FrontEnd):
        name = "toy_bands"
        store_dtype = np.float32

        def __init__(self, n_bands: int = 16, n_frames: int = 16, hop: int = 400) -> None:
            super().__init__()
            self.n_bands, self.n_frames, self.hop = int(n_bands), int(n_frames), int(hop)
            self.feature_shape = (1, self.n_bands, self.n_frames)
            self.n_samples = self.n_frames * self.hop

        def settings(self) -> dict:
            return {"name": self.name, "n_bands": self.n_bands, "n_frames": self.n_frames, "hop": self.hop}

        def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
            out = []
            for wave in check_waves(waves):
                frames = fix_length(wave, self.n_samples).reshape(self.n_frames, self.hop)
                spectrum = np.abs(np.fft.rfft(frames, axis=1))[:, 1:]
                bands = np.stack([b.mean(axis=1) for b in np.array_split(spectrum, self.n_bands, axis=1)])
                out.append(np.log(bands + 1e-6)[None])
            return np.stack(out).astype(np.float32)

    @register_frontend("toy_frames")
    class ToyFrames(FrontEnd):
        name = "toy_frames"
        store_dtype = np.float32

        def __init__(self, hop: int = 400) -> None:
            super().__init__()
            self.hop = int(hop)
            self.feature_shape = (None, 2)
            self.n_samples = self.hop

        def settings(self) -> dict:
            return {"name": self.name, "hop": self.hop}

        def extract(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
            out = []
            for wave in check_waves(waves):
                frames = wave[: len(wave) // self.hop * self.hop].reshape(-1, self.hop)
                energy = np.log((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-8)
                crossings = (np.diff(np.signbit(frames), axis=1) != 0).mean(axis=1)
                out.append(np.stack([energy, crossings], axis=1).astype(np.float32))
            return out

    yield ToyBands, ToyFrames
    del FRONTENDS["toy_bands"], FRONTENDS["toy_frames"]


def test_store_tags_come_from_the_front_end(toy_frontends) -> None:
    bands, frames = toy_frontends
    # defaults (given or not, compute-only settings aside) -> the name alone; otherwise a digest of the rest
    assert store_tag({"name": "toy_bands"}) == "toy_bands"
    assert store_tag({"name": "toy_bands", "n_frames": 16, "batch_size": 4}) == "toy_bands"
    assert bands.store_tag(bands(hop=320).settings()) == store_tag({"name": "toy_bands", "hop": 320}) == (
        "toy_bands-" + hashlib.sha256(b'{"hop": 320}').hexdigest()[:10]
    )
    assert store_tag({"name": "toy_frames", "hop": 160}) != store_tag({"name": "toy_frames", "hop": 320})
    with pytest.raises(Exception, match="unknown front end 'nope'; known front ends: "):
        store_tag({"name": "nope"})


def test_a_frozen_front_end_of_ones_own_runs_the_whole_chain(
    toy_frontends, tiny_corpus: Path, tmp_path: Path, two_threads
) -> None:
    la = tiny_corpus / "LA"
    frontend = {"name": "toy_bands", "hop": 320}
    model = {"name": "lcnn", "input_shape": [1, 16, 16]}
    config = recipe(tmp_path, "demo_xlsr_lcnn", frontend=frontend, model=model)
    feats, run = tmp_path / "feats", tmp_path / "run"
    argv = ["--config", str(config), "--data-root", str(la), "--out", str(feats), "--num-workers", "0"]
    argv += COMMON
    assert run_cli(preprocess.main, argv) == 0
    tag = "toy_bands-" + hashlib.sha256(b'{"hop": 320}').hexdigest()[:10]
    built = toy_frontends[0](hop=320)
    for partition in ("train", "dev", "eval"):
        store = FeatureStore(feats / tag / partition)  # the default corpus keeps plain partition names
        rows = get_corpus("la2019").read(la, partition)
        assert store.complete and store.utt_ids == [r.utt_id for r in rows]
        assert store.settings == built.settings()
        np.testing.assert_array_equal(store[0], built.extract([load_audio(rows[0].path)])[0])

    overrides = ["train.epochs=1", "train.batch_size=4", "train.amp=none", "train.compile=false"]
    argv = ["--config", str(config), "--features", str(feats), "--out", str(run), "--no-eval", *overrides]
    assert run_cli(main_train.main, [*argv, *COMMON]) == 0
    scores = tmp_path / "eval.txt"
    argv = ["--checkpoint", str(run / "best.pt"), "--features", str(feats), "--partition", "eval",
            "--output", str(scores), "--device", "cpu"]
    assert run_cli(generate_score.main, [*argv, *COMMON]) == 0
    result_path = tmp_path / "eval.json"
    corpus = get_corpus("la2019")
    argv = [str(scores), "--protocol", str(corpus.protocol_path(la, "eval")),
            "--asv-scores", str(corpus.asv_paths(la, "eval").scores), "--json", str(result_path)]
    assert run_cli(evaluate_main, argv) == 0
    result, cm = json.loads(result_path.read_text()), read_scores(scores)
    eval_rows = corpus.read(la, "eval")
    assert cm.utt_ids.tolist() == [r.utt_id for r in eval_rows]
    assert cm.keys.tolist() == [r.key for r in eval_rows]
    bona, spoof = cm.scores[cm.keys == "bonafide"], cm.scores[cm.keys == "spoof"]
    assert (result["n_bonafide"], result["n_spoof"]) == (bona.size, spoof.size)
    assert bona.size + spoof.size == 7 and result["eer"] == compute_eer(bona, spoof)[0]
    assert result["min_tdcf"] is not None


def test_a_variable_length_front_end_fills_a_variable_length_store(
    toy_frontends, corpus: Path, tmp_path: Path
) -> None:
    config = recipe(tmp_path, "demo_xlsr_lcnn", frontend={"name": "toy_frames"})
    argv = ["--config", str(config), "--data-root", str(corpus), "--partitions", "train",
            "--out", str(tmp_path), "--batch-size", "3", "--num-workers", "0", *COMMON]
    assert run_cli(preprocess.main, argv) == 0
    store = FeatureStore(tmp_path / "toy_frames" / "train")
    assert store.complete and store.feature_shape == (None, 2)
    extract = toy_frontends[1]().extract
    for i, row in enumerate(get_corpus("la2019").read(corpus, "train")):
        wave = load_audio(row.path)
        assert store[i].shape == (len(wave) // 400, 2)
        np.testing.assert_array_equal(store[i], extract([wave])[0])
    assert run_cli(preprocess.main, argv) == 0  # rerun: everything done already, nothing recomputed
    assert (tmp_path / "toy_frames" / "train" / "shard-0000-of-0001.data.bin").stat().st_size == 4 * sum(
        store[i].size for i in range(len(store))
    )
