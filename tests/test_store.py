"""The sharded, resumable, memory-mapped feature store (data/store.py) and the datasets over it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.store import BAD, DONE, PENDING, FeatureStore, ShardWriter, shard_range, store_dir
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 3, 4)
SETTINGS = {"name": "f0", "tiling": "mirror", "n_bins": 3}
INDEX = [(f"LA_T_{i:07d}", f"LA_{i % 2:04d}", "-", "bonafide") if i % 3 == 0 else
         (f"LA_T_{i:07d}", f"LA_{i % 2:04d}", "A01", "spoof") for i in range(7)]


def feature(row: int) -> np.ndarray:
    """Deterministic stand-in features for a row, (1, 3, 4) float32."""
    return (np.arange(12, dtype=np.float32).reshape(SHAPE) + 100 * row) / 7


def fill(writer: ShardWriter, batch_size: int = 2, bad: dict[int, tuple[str, str]] | None = None) -> None:
    bad = bad or {}
    for block in writer.pending_blocks(batch_size):
        good = [r for r in block if r not in bad]
        writer.commit(good, np.stack([feature(r) for r in good]) if good else np.empty((0, *SHAPE)),
                      {r: bad[r] for r in block if r in bad})


def make_store(path: Path, n_shards: int = 1, **kw) -> Path:
    for k in range(n_shards):
        fill(ShardWriter(path, INDEX, SETTINGS, SHAPE, np.float32, k, n_shards), **kw)
    return path


def test_shard_ranges_are_contiguous_and_cover_all_rows() -> None:
    assert [shard_range(7, k, 3) for k in range(3)] == [(0, 2), (2, 4), (4, 7)]
    assert [shard_range(2, k, 4) for k in range(4)] == [(0, 0), (0, 1), (1, 1), (1, 2)]
    with pytest.raises(ValueError):
        shard_range(7, 3, 3)


def test_frontend_tags() -> None:
    from engine.partitions import store_dir_for
    from models.frontends.base import store_tag

    # the tags stores have always had: existing stores still open
    assert store_tag({"name": "f0"}) == "f0"
    assert store_tag({"name": "f0", "tiling": "repeat"}) == "f0-repeat"
    assert store_tag({"name": "f0", "n_frames": 200}) == "f0-200frames"
    assert store_tag({"name": "ssl", "model": "facebook/wav2vec2-xls-r-300m"}) == "ssl-wav2vec2-xls-r-300m"
    assert store_tag({"name": "ssl", "model": "/models/xlsr/", "layer": 12}) == "ssl-xlsr-layer12"
    assert store_tag({"name": "ssl", "model": "random:tiny", "layer": -1}) == "ssl-random-tiny"
    # every transformer layer (XLS-R-SLS's input) is another store
    assert store_tag({"name": "ssl", "model": "random:tiny", "layers": "all"}) == "ssl-random-tiny-all-layers"
    assert store_dir("feat", "f0", "dev") == Path("feat/f0/dev")
    assert store_dir_for("feat", {"name": "f0"}, "dev") == Path("feat/f0/dev")
    assert store_dir_for("feat", {"name": "f0"}, "eval", "la2021") == Path("feat/f0/la2021-eval")


def test_layout_and_zero_copy_reading(tmp_path) -> None:
    store_dir = make_store(tmp_path / "s", n_shards=3)
    names = sorted(p.name for p in store_dir.iterdir())
    assert names == ["index.tsv"] + [f"shard-{k:04d}-of-0003.{ext}" for k in range(3)
                                     for ext in ("data.npy", "meta.json", "status.npy")]
    assert (store_dir / "index.tsv").read_text().splitlines()[0] == "LA_T_0000000\tLA_0000\t-\tbonafide"
    meta = json.loads((store_dir / "shard-0002-of-0003.meta.json").read_text())
    assert (meta["start"], meta["stop"], meta["n_rows"], meta["dtype"]) == (4, 7, 7, "<f4")
    # a standard .npy file: shard 2 holds rows 4..6
    np.testing.assert_array_equal(np.load(store_dir / "shard-0002-of-0003.data.npy"),
                                  np.stack([feature(r) for r in (4, 5, 6)]))

    store = FeatureStore(store_dir)
    assert store.complete and store.valid.all() and len(store) == 7 and store.n_shards == 3
    assert store.utt_ids == [row[0] for row in INDEX] and store.settings == SETTINGS
    view = store[5]
    assert isinstance(view, np.memmap) and not view.flags.writeable  # a view into the file, no copy
    np.testing.assert_array_equal(view, feature(5))
    np.testing.assert_array_equal(store[-1], feature(6))
    batch = store.get_batch([6, 0, 3, 3])
    np.testing.assert_array_equal(batch, np.stack([feature(r) for r in (6, 0, 3, 3)]))
    assert store.get_batch([1], dtype=np.float64).dtype == np.float64
    assert store.row_of("LA_T_0000004") == 4 and "LA_T_0000004" in store and "nope" not in store
    with pytest.raises(IndexError):
        store[7]
    # DataLoader workers may receive the store pickled: file names travel, not the data
    blob = pickle.dumps(store)
    assert len(blob) < 4000
    np.testing.assert_array_equal(pickle.loads(blob).get_batch(range(7)), store.get_batch(range(7)))


def test_any_shard_count_presents_the_same_array(tmp_path) -> None:
    one = FeatureStore(make_store(tmp_path / "one", batch_size=3))
    for n in (2, 3, 9):  # 9 shards: some hold no row at all
        many = FeatureStore(make_store(tmp_path / f"n{n}", n_shards=n))
        assert many.utt_ids == one.utt_ids
        np.testing.assert_array_equal(many.get_batch(range(7)), one.get_batch(range(7)))


def test_float16_store(tmp_path) -> None:
    writer = ShardWriter(tmp_path, ["a", "b"], {"name": "ssl"}, (1, 2, 3), np.float16)
    writer.commit([0, 1], np.stack([np.full((1, 2, 3), 1 / 3, np.float32), np.zeros((1, 2, 3), np.float32)]))
    store = FeatureStore(tmp_path)
    assert store.dtype == np.float16 and store[0].dtype == np.float16
    assert store[0][0, 0, 0] == np.float16(1 / 3)
    assert (tmp_path / "shard-0000-of-0001.data.npy").stat().st_size - np.load(
        tmp_path / "shard-0000-of-0001.data.npy", mmap_mode="r").offset == 2 * 6 * 2


def test_reopen_resumes_pending_rows_only_in_aligned_blocks(tmp_path) -> None:
    writer = ShardWriter(tmp_path, INDEX, SETTINGS, SHAPE, np.float32)
    blocks = writer.pending_blocks(3)
    assert [b.tolist() for b in blocks] == [[0, 1, 2], [3, 4, 5], [6]]
    writer.commit([3, 4, 5], np.stack([feature(r) for r in (3, 4, 5)]))
    writer.commit([0], feature(0)[None])  # a batch cut short (e.g. an earlier run with batch size 1)

    again = ShardWriter(tmp_path, INDEX, SETTINGS, SHAPE, np.float32)
    assert again.status.tolist() == [DONE, PENDING, PENDING, DONE, DONE, DONE, PENDING]
    # the same block boundaries as an uninterrupted run, minus the finished rows
    assert [b.tolist() for b in again.pending_blocks(3)] == [[1, 2], [6]]
    with pytest.raises(UserError, match="incomplete store .*3 of 7 rows pending"):
        FeatureStore(tmp_path)
    partial = FeatureStore(tmp_path, allow_partial=True)
    assert partial.valid.tolist() == [True, False, False, True, True, True, False] and not partial.complete
    fill(again, batch_size=3)
    assert FeatureStore(tmp_path).complete


def test_rows_written_but_not_recorded_are_recomputed(tmp_path) -> None:
    """A kill between the data write and the completion record leaves the row pending."""
    writer = ShardWriter(tmp_path, INDEX, SETTINGS, SHAPE, np.float32)
    garbage = np.lib.format.open_memmap(writer.data_path, mode="r+")
    garbage[2] = -1.0  # written, then "killed" before the status byte was set
    garbage.flush()
    del garbage
    again = ShardWriter(tmp_path, INDEX, SETTINGS, SHAPE, np.float32)
    assert again.n_pending == 7
    fill(again)
    np.testing.assert_array_equal(FeatureStore(tmp_path)[2], feature(2))


def test_shard_killed_before_its_metadata_is_recreated(tmp_path) -> None:
    writer = ShardWriter(tmp_path, INDEX, SETTINGS, SHAPE, np.float32)
    writer.commit([0, 1], np.stack([feature(0), feature(1)]))
    writer.meta_path.unlink()  # as if killed while creating the shard
    (tmp_path / ".shard-0000-of-0001.data.npy.x1y2.tmp").write_bytes(b"half")
    again = ShardWriter(tmp_path, INDEX, SETTINGS, SHAPE, np.float32)
    assert again.n_pending == 7
    assert not list(tmp_path.glob(".*.tmp"))
    assert not np.load(again.data_path).any()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frontend_settings": {**SETTINGS, "tiling": "repeat"}},
         "frontend.tiling (store: 'mirror', requested: 'repeat')"),
        ({"frontend_settings": {"name": "f0"}}, "frontend.n_bins (store: 3, requested: None)"),
        ({"index": INDEX[:6]}, "n_rows (store: 7, requested: 6); utt_ids (different utterance list)"),
        ({"index": [INDEX[1], INDEX[0], *INDEX[2:]]}, "utt_ids (different utterance list)"),
        ({"n_shards": 2}, "n_shards (store: 3, requested: 2)"),
        ({"dtype": np.float16}, "dtype (store: '<f4', requested: '<f2')"),
        ({"feature_shape": (1, 4, 3)}, "feature_shape (store: [1, 3, 4], requested: [1, 4, 3])"),
    ],
)
def test_reopen_with_other_settings_is_a_user_error(tmp_path, change, message) -> None:
    store_dir = make_store(tmp_path / "s", n_shards=3)
    kw = {"index": INDEX, "frontend_settings": SETTINGS, "feature_shape": SHAPE, "dtype": np.float32,
          "shard": 0, "n_shards": 3, **change}
    before = {p.name: p.read_bytes() for p in store_dir.iterdir()}
    with pytest.raises(UserError) as info:
        ShardWriter(store_dir, **kw)
    text = str(info.value)
    assert text.startswith(f"{store_dir}: ") and message in text and "\n" not in text
    assert {p.name: p.read_bytes() for p in store_dir.iterdir()} == before  # nothing touched


def test_missing_shard_and_damaged_files(tmp_path) -> None:
    store_dir = tmp_path / "s"
    fill(ShardWriter(store_dir, INDEX, SETTINGS, SHAPE, np.float32, 1, 2))
    with pytest.raises(UserError, match=r"incomplete store \(1 of 2 shards not started, 3 of 7 rows"):
        FeatureStore(store_dir)
    partial = FeatureStore(store_dir, allow_partial=True)
    assert partial.valid.tolist() == [False] * 3 + [True] * 4
    np.testing.assert_array_equal(partial[4], feature(4))
    with pytest.raises(IndexError, match="shard 0"):
        partial[0]

    with pytest.raises(UserError, match="not a feature store"):
        FeatureStore(tmp_path / "empty")
    (store_dir / "shard-0001-of-0002.meta.json").write_text("{not json")
    with pytest.raises(UserError, match=r"shard-0001-of-0002.meta.json: unreadable store metadata"):
        FeatureStore(store_dir)


def test_bad_rows_are_reported_and_excluded(tmp_path) -> None:
    bad = {1: ("/data/LA_T_0000001.flac", "/data/LA_T_0000001.flac: audio file is empty (0 bytes)"),
           5: ("/data/LA_T_0000005.flac", "cannot read\taudio")}
    store_dir = make_store(tmp_path / "s", n_shards=2, bad=bad)
    store = FeatureStore(store_dir)
    assert store.complete  # every row is done or bad
    assert store.status.tolist() == [DONE, BAD, DONE, DONE, DONE, BAD, DONE]
    assert store.valid.tolist() == [True, False, True, True, True, False, True]
    assert store.bad_files() == [("LA_T_0000001", "/data/LA_T_0000001.flac",
                                  "/data/LA_T_0000001.flac: audio file is empty (0 bytes)"),
                                 ("LA_T_0000005", "/data/LA_T_0000005.flac", "cannot read audio")]
    assert not store[1].any()  # never written

    import torch

    from data.dataset import StoreDataset, collate_batch
    from data.protocols import ProtocolRow

    dataset = StoreDataset(store_dir)  # labels from the protocol columns in the store index
    assert [r.utt_id for r in dataset.rows] == [INDEX[i][0] for i in (0, 2, 3, 4, 6)]
    assert [r.utt_id for r in dataset.excluded] == ["LA_T_0000001", "LA_T_0000005"]
    feat, label, utt, attack = dataset[1]
    assert feat.dtype == torch.float32 and feat.shape == SHAPE
    assert (label, utt, attack) == (1, "LA_T_0000002", "A01")
    np.testing.assert_array_equal(feat.numpy(), feature(2))
    assert dataset[0][1:] == (0, "LA_T_0000000", "-")

    x, y, ids, attacks = collate_batch(dataset.__getitems__([4, 1, 2]))
    assert x.shape == (3, *SHAPE) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [0, 1, 0] and ids == ["LA_T_0000006", "LA_T_0000002", "LA_T_0000003"]
    assert attacks == ["-", "A01", "-"]
    np.testing.assert_array_equal(x[0].numpy(), dataset[4][0].numpy())
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_batch)
    assert [len(b[2]) for b in loader] == [2, 2, 1]

    # with explicit protocol rows: a subset, in the caller's order; rows missing from the store are an error
    rows = [ProtocolRow(*INDEX[i][1:2], INDEX[i][0], *INDEX[i][2:]) for i in (6, 5, 2)]
    subset = StoreDataset(store_dir, rows)
    assert [r.utt_id for r in subset.rows] == ["LA_T_0000006", "LA_T_0000002"]
    np.testing.assert_array_equal(subset[0][0].numpy(), feature(6))
    with pytest.raises(UserError, match=r"1 protocol utterance\(s\) not in the store \(first: LA_X\)"):
        StoreDataset(store_dir, [*rows, ProtocolRow("LA_0000", "LA_X", "-", "bonafide")])


def test_store_module_does_not_import_torch() -> None:
    code = "import sys, data.store; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# --- variable-length rows (a None axis in the feature shape) ------------------------------------------------

VAR_SHAPE = (2, None)  # e.g. 2 channels x any number of frames
VAR_INDEX = [f"U{i}" for i in range(7)]


def var_feature(row: int) -> np.ndarray:
    """Deterministic stand-in features of row ``row``: (2, 3 + row % 4) float32 (one row has 0 frames)."""
    n = 0 if row == 5 else 3 + row % 4
    return (np.arange(2 * n, dtype=np.float32).reshape(2, n) + 10 * row) / 3


def var_fill(writer: ShardWriter, batch_size: int = 2) -> None:
    for block in writer.pending_blocks(batch_size):
        writer.commit(block, [var_feature(r) for r in block])


def test_variable_length_rows_write_and_read_back(tmp_path) -> None:
    for k in range(2):
        var_fill(ShardWriter(tmp_path, VAR_INDEX, SETTINGS, VAR_SHAPE, np.float16, k, 2))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["index.tsv"] + [f"shard-{k:04d}-of-0002.{ext}" for k in range(2)
                                     for ext in ("data.bin", "extents.npy", "meta.json", "status.npy")]
    # shard 1 holds rows 3..6: its extents are (first item, frames) in its flat file
    extents = np.load(tmp_path / "shard-0001-of-0002.extents.npy")
    assert extents.tolist() == [[0, 6], [12, 3], [18, 0], [18, 5]]
    assert (tmp_path / "shard-0001-of-0002.data.bin").stat().st_size == 2 * (12 + 6 + 0 + 10)
    store = FeatureStore(tmp_path)
    assert store.complete and store.feature_shape == VAR_SHAPE and store.dtype == np.float16
    for i in range(7):
        assert store[i].shape == var_feature(i).shape and not store[i].flags.writeable
        np.testing.assert_array_equal(store[i], var_feature(i).astype(np.float16))
    batch = store.get_batch([6, 0, 5], dtype=np.float32)
    assert [b.dtype for b in batch] == [np.float32] * 3
    for got, row in zip(batch, (6, 0, 5), strict=True):
        np.testing.assert_array_equal(got, var_feature(row).astype(np.float16).astype(np.float32))
    again = pickle.loads(pickle.dumps(store))  # DataLoader workers: file names travel, not the data
    np.testing.assert_array_equal(again[4], store[4])

    import torch

    from data.dataset import StoreDataset

    dataset = StoreDataset(tmp_path, [_row(u) for u in VAR_INDEX])
    items = dataset.__getitems__([3, 5])
    assert [tuple(item[0].shape) for item in items] == [(2, 6), (2, 0)]
    assert items[0][0].dtype == torch.float16 and torch.equal(items[0][0], dataset[3][0])


def _row(utt: str):
    from data.protocols import ProtocolRow

    return ProtocolRow("S", utt, "-", "bonafide")


def test_variable_length_store_resumes_after_a_kill_with_the_same_rows(tmp_path) -> None:
    reference = tmp_path / "ref"
    var_fill(ShardWriter(reference, VAR_INDEX, SETTINGS, VAR_SHAPE, np.float32), batch_size=3)
    killed = tmp_path / "killed"
    writer = ShardWriter(killed, VAR_INDEX, SETTINGS, VAR_SHAPE, np.float32)
    writer.commit([0, 1, 2], [var_feature(r) for r in (0, 1, 2)])
    # killed while appending the next batch: 7 bytes on disk, not item-aligned, never recorded
    with open(writer.data_path, "ab") as f:
        f.write(b"garbage")
    again = ShardWriter(killed, VAR_INDEX, SETTINGS, VAR_SHAPE, np.float32)
    assert again.status.tolist() == [DONE] * 3 + [PENDING] * 4
    assert [b.tolist() for b in again.pending_blocks(3)] == [[3, 4, 5], [6]]
    var_fill(again, batch_size=3)
    one, two = FeatureStore(reference), FeatureStore(killed)
    for i in range(7):
        np.testing.assert_array_equal(two[i], one[i])
    # the unrecorded bytes stay behind, padded to the item size; the resumed rows start after them:
    # rows 0..2 hold 2 x (3 + 4 + 5) = 24 float32 items, the 7 stray bytes take 2 more
    assert np.load(again.extents_path)[3].tolist() == [24 + 2, 6]
    assert again.data_path.stat().st_size == 4 * (26 + 2 * (6 + 3 + 0 + 5))  # rows 3..6: 6, 3, 0, 5 frames


def test_variable_length_rows_are_checked(tmp_path) -> None:
    writer = ShardWriter(tmp_path, VAR_INDEX, SETTINGS, VAR_SHAPE, np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        writer.commit([0], [np.zeros((3, 4), np.float32)])  # 3 channels, not 2
    with pytest.raises(ValueError, match="do not fit"):
        writer.commit([0, 1], [var_feature(0)])
    with pytest.raises(UserError, match=r"feature_shape \(store: \[2, None\], requested: \[2, 5\]\)"):
        ShardWriter(tmp_path, VAR_INDEX, SETTINGS, (2, 5), np.float32)
    with pytest.raises(ValueError, match="at most one variable"):
        ShardWriter(tmp_path / "two", VAR_INDEX, SETTINGS, (None, None), np.float32)
    assert FeatureStore(tmp_path, allow_partial=True).get_batch([]) == []  # no row written yet: empty file


def test_store_tags_need_no_prior_import_of_the_front_ends() -> None:
    """Front ends register on first use: a fresh process asking for a tag finds them."""
    import subprocess
    import sys

    code = "from models.frontends.base import store_tag; print(store_tag({'name': 'f0', 'tiling': 'repeat'}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "f0-repeat"
