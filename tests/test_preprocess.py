"""preprocess.py end to end on a tiny generated corpus in the 2019 LA layout (docs/data.md).

Shards vs one run, torchrun ranks, SSL stores, datasets. Resume after a real SIGKILL, settings mismatches
and bad audio are in test_reliability.py; the corpus (`corpus`, `write_corpus`, GOOD) is in conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import GOOD

from data.audio import load_audio
from data.store import FeatureStore
from preprocess import main
from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str], capsys=None) -> tuple[int, str, str]:
    code = run_cli(main, argv)
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


def f0_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-root", str(root), "--partitions", "train", "--frontend", "f0", "--out", str(out),
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """An uninterrupted one-process F0 run with batch size 2: the store every other run must equal."""
    out = tmp_path_factory.mktemp("ref")
    assert run_cli(main, f0_args(corpus, out, "--batch-size", "2")) == 0
    return out / "f0" / "train"


def test_f0_store_holds_the_front_end_output_for_every_file(corpus, reference) -> None:
    from models.frontends import build_frontend

    store = FeatureStore(reference)
    assert store.complete and store.valid.all() and len(store) == len(GOOD)
    assert store.feature_shape == (1, 45, 600) and store.dtype == np.float32
    assert store.settings["tiling"] == "mirror"
    frontend = build_frontend({"name": "f0"})
    for i, (utt, _) in enumerate(GOOD):
        wave = load_audio(corpus / "ASVspoof2019_LA_train" / "flac" / f"{utt}.flac")
        np.testing.assert_array_equal(store[i], frontend.extract([wave])[0])
    assert np.isfinite(store.get_batch(range(len(GOOD)))).all()
    # the 0.2 s clip has 1 + 3200 // 130 = 25 frames, then mirror tiling: frames 25..49 = frames 24..0
    short = store[6][0]
    np.testing.assert_array_equal(short[:, 25:50], short[:, 24::-1])
    assert not np.array_equal(short[:, 25], short[:, 0])
    # the 8 kHz stereo file (2.5 s) is read as 16 kHz mono
    assert load_audio(corpus / "ASVspoof2019_LA_train" / "flac" / "LA_T_0000007.flac").shape == (40000,)
    # 108,000 bytes per row in the data file, plus the .npy header
    data = reference / "shard-0000-of-0001.data.npy"
    assert data.stat().st_size - np.load(data, mmap_mode="r").offset == len(GOOD) * 108_000


def test_two_shards_equal_one_run(corpus, reference, tmp_path, capsys) -> None:
    code, out, _ = run(f0_args(corpus, tmp_path, "--shard", "1/2"), capsys)
    assert code == 0 and "incomplete" in out
    with pytest.raises(Exception, match="incomplete store"):
        FeatureStore(tmp_path / "f0" / "train")
    code, out, _ = run(f0_args(corpus, tmp_path, "--shard", "0/2", "--batch-size", "3"), capsys)
    assert code == 0 and "complete" in out and "incomplete" not in out
    two, one = FeatureStore(tmp_path / "f0" / "train"), FeatureStore(reference)
    assert two.n_shards == 2 and two.utt_ids == one.utt_ids
    np.testing.assert_array_equal(two.get_batch(range(len(two))), one.get_batch(range(len(one))))
    assert sorted(p.name for p in two.store_dir.glob("*.data.npy")) == [
        "shard-0000-of-0002.data.npy", "shard-0001-of-0002.data.npy"]


def test_torchrun_ranks_fill_their_own_shards(corpus, reference, tmp_path, monkeypatch, two_threads) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        assert run_cli(main, f0_args(corpus, tmp_path)) == 0
    store = FeatureStore(tmp_path / "f0" / "train")
    assert store.n_shards == 2
    np.testing.assert_array_equal(store.get_batch(range(8)), FeatureStore(reference).get_batch(range(8)))
    assert run_cli(main, f0_args(corpus, tmp_path, "--shard", "0/2")) == 2  # --shard under torchrun


def test_ssl_random_tiny_store(corpus, tmp_path) -> None:
    from models.frontends import build_frontend
    from utils.precision import resolve_amp

    argv = ["--data-root", str(corpus), "--partitions", "train", "--frontend", "ssl",
            "--ssl-model", "random:tiny", "--out", str(tmp_path), "--limit", "3", "--batch-size", "2",
            "--no-progress"]
    assert run_cli(main, argv) == 0
    store = FeatureStore(tmp_path / "ssl-random-tiny" / "train")
    assert store.feature_shape == (1, 1024, 201) and store.dtype == np.float16
    # no --dtype: the machine's policy (bf16 where the CPU has native bf16, fp32 elsewhere)
    auto = resolve_amp("auto", "cpu").spelled
    assert store.settings["model"] == "random:tiny" and store.settings["dtype"] == auto
    # 1024 x 201 float16 = 411,648 bytes per utterance, as docs/features.md says
    assert store[0].nbytes == 411_648
    # the same batches as the store (batch 2): bf16 kernels may round differently for other shapes
    settings = {"name": "ssl", "model": "random:tiny", "dtype": auto, "batch_size": 2}
    frontend = build_frontend(settings, device="cpu")
    waves = [load_audio(corpus / "ASVspoof2019_LA_train" / "flac" / f"{u}.flac") for u, _ in GOOD[:3]]
    np.testing.assert_array_equal(store.get_batch([0, 1, 2], dtype=np.float32), frontend.extract(waves))
    assert run_cli(main, [*argv, "--layer", "1"]) == 0  # another layer is another store
    assert (tmp_path / "ssl-random-tiny-layer1" / "train").is_dir()


@pytest.mark.slow
def test_real_torchrun_two_ranks(corpus, reference, tmp_path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
           "preprocess.py", *f0_args(corpus, tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    store = FeatureStore(tmp_path / "f0" / "train")
    assert store.n_shards == 2
    np.testing.assert_array_equal(store.get_batch(range(8)), FeatureStore(reference).get_batch(range(8)))


def test_audio_dataset_equals_store_dataset(corpus, reference) -> None:
    import torch

    from data.corpora import get_corpus
    from data.dataset import AudioDataset, StoreDataset, collate_batch
    from models.frontends import build_frontend

    rows = get_corpus("la2019").read(corpus, "train")
    stored = StoreDataset(reference, rows)
    frontend = build_frontend({"name": "f0"})
    on_the_fly = AudioDataset(rows, None, frontend)  # the rows' own audio paths
    assert len(stored) == len(on_the_fly) == len(GOOD) and on_the_fly.feature_shape == (1, 45, 600)
    loaders = [torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_batch)
               for ds in (stored, on_the_fly)]
    for (xa, ya, ids_a, att_a), (xb, yb, ids_b, att_b) in zip(*loaders, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and ids_a == ids_b and att_a == att_b
    x, label, utt, attack = on_the_fly[3]
    assert (label, utt, attack) == (rows[3].label, rows[3].utt_id, rows[3].attack)
    assert torch.equal(x, stored[3][0])
