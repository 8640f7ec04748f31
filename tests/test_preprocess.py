"""preprocess.py end to end on a tiny generated corpus in the 2019 LA layout (SPEC §1).

Resume after a real SIGKILL, shards vs one run, torchrun ranks, settings mismatches, bad audio.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data.audio import load_audio
from data.store import BAD, DONE, FeatureStore
from preprocess import main
from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt"


def write_corpus(root: Path, specs: list[tuple[str, str]], partition: str = "train") -> list[str]:
    """Write FLACs and a 2019 LA CM protocol; ``specs`` = [(utt_id, kind)], kind in
    ``16k`` (1-2.5 s mono), ``short`` (0.2 s), ``8k-stereo``, ``empty``, ``truncated``, ``text``."""
    flac = root / f"ASVspoof2019_LA_{partition}" / "flac"
    flac.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (utt, kind) in enumerate(specs):
        rng = np.random.default_rng(i)
        path = flac / f"{utt}.flac"
        t = np.arange(int(16000 * (1.0 + 0.5 * (i % 4)))) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (120 + 10 * i) * t) + 0.05 * rng.standard_normal(t.size)
        if kind == "16k":
            sf.write(path, wave, 16000, format="FLAC", subtype="PCM_16")
        elif kind == "short":
            sf.write(path, wave[:3200], 16000, format="FLAC", subtype="PCM_16")
        elif kind == "8k-stereo":
            stereo = np.stack([wave[::2], 0.5 * wave[::2]], axis=1)
            sf.write(path, stereo, 8000, format="FLAC", subtype="PCM_16")
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "truncated":
            sf.write(path, wave, 16000, format="FLAC", subtype="PCM_16")
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        elif kind == "text":
            path.write_text("this is not audio\n")
        else:
            raise ValueError(kind)
        key = "bonafide" if i % 3 == 0 else "spoof"
        lines.append(f"LA_{i % 2:04d} {utt} - {'-' if key == 'bonafide' else f'A0{1 + i % 6}'} {key}\n")
    (root / PROTOCOL).parent.mkdir(parents=True, exist_ok=True)
    (root / PROTOCOL).write_text("".join(lines))
    return [utt for utt, _ in specs]


GOOD = [(f"LA_T_{i:07d}", "16k") for i in range(6)]
GOOD += [("LA_T_0000006", "short"), ("LA_T_0000007", "8k-stereo")]


@pytest.fixture
def two_threads():
    """Pin torch to 2 threads (restored afterwards): fp32 CPU results may depend on the thread count, and
    other tests (or preprocess.py under torchrun) change it for the whole pytest process."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield {**os.environ, "OMP_NUM_THREADS": "2"}
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, GOOD)
    return root


def run(argv: list[str], capsys=None) -> tuple[int, str, str]:
    code = run_cli(main, argv)
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


def f0_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-root", str(root), "--partitions", "train", "--frontend", "f0", "--out", str(out),
            "--no-progress", *extra]


def store_files(store_dir: Path) -> dict[str, bytes]:
    """Every file of a store except the bad-file reports (content compared byte by byte)."""
    return {p.name: p.read_bytes() for p in sorted(store_dir.iterdir()) if not p.name.endswith(".bad.tsv")}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """An uninterrupted one-process F0 run with batch size 2: the store every other run must equal."""
    out = tmp_path_factory.mktemp("ref")
    assert run_cli(main, f0_args(corpus, out, "--batch-size", "2")) == 0
    return out / "f0" / "train"


def test_f0_store_holds_the_front_end_output_for_every_file(corpus, reference) -> None:
    from data.features import build_frontend

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


def test_reopen_with_other_settings_is_a_user_error(corpus, reference, tmp_path, capsys) -> None:
    assert run_cli(main, f0_args(corpus, tmp_path, "--shard", "0/2")) == 0
    capsys.readouterr()
    store_dir = tmp_path / "f0" / "train"
    for extra, key in [(["--shard", "0/3"], "n_shards"), (["--limit", "5", "--shard", "0/2"], "utt_ids")]:
        code, out, err = run(f0_args(corpus, tmp_path, *extra), capsys)
        assert code == 2, err
        assert err.startswith(f"error: {store_dir}:") and key in err and err.count("\n") == 1
    code, _, err = run(f0_args(corpus, tmp_path, "--shard", "2/2"), capsys)
    assert code == 2 and "--shard 2/2" in err


@pytest.mark.parametrize(
    ("frontend", "extra", "n_rows"),
    [("f0", [], len(GOOD)), ("ssl-random-tiny", ["--ssl-model", "random:tiny", "--limit", "4"], 4)],
)
def test_resume_after_sigkill_is_byte_identical_and_recomputes_nothing(
    corpus, tmp_path, capsys, two_threads, frontend, extra, n_rows
) -> None:
    """Kill -9 a real preprocess.py process after some rows are done, rerun, compare with a clean run."""

    def args(out: Path, *more: str) -> list[str]:
        return ["--data-root", str(corpus), "--partitions", "train", "--frontend", frontend.split("-")[0],
                "--out", str(out), "--no-progress", "--batch-size", "2", *extra, *more]

    assert run_cli(main, args(tmp_path / "clean")) == 0
    store_dir = tmp_path / "killed" / frontend / "train"
    status_file = store_dir / "shard-0000-of-0001.status.npy"
    # --throttle pauses 1 s after each committed batch of 2, so the kill lands mid-run even on a slow box.
    cmd = [sys.executable, "preprocess.py", *args(tmp_path / "killed", "--throttle", "1")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=two_threads)
    done = 0
    try:
        deadline = time.monotonic() + 300
        while done == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
            if status_file.exists():
                done = int((np.load(status_file) == DONE).sum())
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    done = int((np.load(status_file) == DONE).sum())
    assert 0 < done < n_rows
    capsys.readouterr()

    code, out, err = run(args(tmp_path / "killed"), capsys)
    assert code == 0, err
    assert f"({done} already done, {n_rows - done} computed, 0 bad)" in out
    assert store_files(store_dir) == store_files(tmp_path / "clean" / frontend / "train")
    # a third run has nothing left to do
    code, out, _ = run(args(tmp_path / "killed"), capsys)
    assert code == 0 and f"({n_rows} already done, 0 computed, 0 bad)" in out


BAD_SPECS = [("LA_T_1000000", "16k"), ("LA_T_1000001", "empty"), ("LA_T_1000002", "16k"),
             ("LA_T_1000003", "truncated"), ("LA_T_1000004", "text"), ("LA_T_1000005", "short")]


def test_bad_audio_stops_with_one_line_error_then_skip_bad_marks_it(tmp_path, capsys) -> None:
    root, out = tmp_path / "corpus", tmp_path / "out"
    write_corpus(root, BAD_SPECS)
    flac = root / "ASVspoof2019_LA_train" / "flac"
    proc = subprocess.run([sys.executable, "preprocess.py", *f0_args(root, out, "--batch-size", "1")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {flac / 'LA_T_1000001.flac'}:") and "Traceback" not in proc.stderr
    store_dir = out / "f0" / "train"
    status = np.load(store_dir / "shard-0000-of-0001.status.npy")
    assert status.tolist() == [DONE, 0, 0, 0, 0, 0]  # the finished row stays finished

    # each kind of bad file is reported by name
    for utt in ("LA_T_1000003", "LA_T_1000004"):
        bad_root = tmp_path / f"only_{utt}"
        write_corpus(bad_root, [s for s in BAD_SPECS if s[0] == utt])
        code, _, err = run(f0_args(bad_root, tmp_path / f"out_{utt}"), capsys)
        assert code == 2 and err.startswith(f"error: {bad_root}") and f"{utt}.flac" in err
        assert err.count("\n") == 1

    code, text, err = run(f0_args(root, out, "--batch-size", "1", "--skip-bad"), capsys)
    assert code == 0, err
    assert "(1 already done, 2 computed, 3 bad)" in text
    store = FeatureStore(store_dir)
    assert store.status.tolist() == [DONE, BAD, DONE, BAD, BAD, DONE]
    report = (store_dir / "shard-0000-of-0001.bad.tsv").read_text().splitlines()
    assert [line.split("\t")[:2] for line in report] == [
        [utt, str(flac / f"{utt}.flac")] for utt in ("LA_T_1000001", "LA_T_1000003", "LA_T_1000004")]
    assert [b[0] for b in store.bad_files()] == ["LA_T_1000001", "LA_T_1000003", "LA_T_1000004"]

    from data.dataset import StoreDataset

    dataset = StoreDataset(store_dir)
    assert [r.utt_id for r in dataset.rows] == ["LA_T_1000000", "LA_T_1000002", "LA_T_1000005"]
    assert len(dataset.excluded) == 3

    # bad rows stay bad on a plain rerun; --retry-bad recomputes them once the file is fixed
    code, text, _ = run(f0_args(root, out, "--batch-size", "1"), capsys)
    assert code == 0 and "(6 already done, 0 computed, 3 bad)" in text
    write_corpus(root, [(u, "16k" if u == "LA_T_1000004" else kind) for u, kind in BAD_SPECS])
    code, text, _ = run(f0_args(root, out, "--batch-size", "1", "--skip-bad", "--retry-bad"), capsys)
    assert code == 0 and "retrying 3 row(s)" in text and "(3 already done, 1 computed, 2 bad)" in text
    store = FeatureStore(store_dir)
    assert store.status.tolist() == [DONE, BAD, DONE, BAD, DONE, DONE]
    assert [b[0] for b in store.bad_files()] == ["LA_T_1000001", "LA_T_1000003"]


def test_ssl_random_tiny_store(corpus, tmp_path) -> None:
    from data.features import build_frontend

    argv = ["--data-root", str(corpus), "--partitions", "train", "--frontend", "ssl",
            "--ssl-model", "random:tiny", "--out", str(tmp_path), "--limit", "3", "--batch-size", "2",
            "--no-progress"]
    assert run_cli(main, argv) == 0
    store = FeatureStore(tmp_path / "ssl-random-tiny" / "train")
    assert store.feature_shape == (1, 1024, 201) and store.dtype == np.float16
    assert store.settings["model"] == "random:tiny" and store.settings["dtype"] == "fp32"
    # 1024 x 201 float16 = 411,648 bytes per utterance, as SPEC §2 says
    assert store[0].nbytes == 411_648
    frontend = build_frontend({"name": "ssl", "model": "random:tiny"}, device="cpu")
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

    from data.dataset import AudioDataset, StoreDataset, collate_batch
    from data.features import build_frontend
    from data.protocols import audio_path, load_partition

    rows = load_partition(corpus, "train")
    stored = StoreDataset(reference, rows)
    frontend = build_frontend({"name": "f0"})
    on_the_fly = AudioDataset(rows, lambda utt: audio_path(corpus, "train", utt), frontend)
    assert len(stored) == len(on_the_fly) == len(GOOD) and on_the_fly.feature_shape == (1, 45, 600)
    loaders = [torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_batch)
               for ds in (stored, on_the_fly)]
    for (xa, ya, ids_a, att_a), (xb, yb, ids_b, att_b) in zip(*loaders, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and ids_a == ids_b and att_a == att_b
    x, label, utt, attack = on_the_fly[3]
    assert (label, utt, attack) == (rows[3].label, rows[3].utt_id, rows[3].attack)
    assert torch.equal(x, stored[3][0])
