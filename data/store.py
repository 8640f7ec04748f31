"""Resumable, sharded, memory-mapped feature store (numpy only, no torch).

One store holds one front end's features for one partition, one fixed-shape row per utterance.
Several writers (``--shard i/n`` or torchrun ranks) fill the same store at once without sharing a
file: shard ``i`` of ``n`` owns the contiguous protocol rows ``[i*N//n, (i+1)*N//n)``. The reader
presents all shards as one array.

Layout of a store directory (``<out>/<front end tag>/<partition>/``), ``S = shard-IIII-of-NNNN``:

``index.tsv``
    One line per row, in row order: ``utt_id`` then optional tab-separated columns given by the
    writer (preprocess.py writes ``speaker attack key`` from the protocol). Every writer writes the
    same content atomically, so concurrent writers cannot corrupt it.
``S.meta.json``
    The shard's metadata: front-end settings, ``feature_shape``, ``dtype``, ``n_rows``, ``n_shards``,
    its row range and SHA-256 digests of the utt ids and of the index. Written atomically and LAST
    when a shard is created, so it is the shard's commit marker: a shard without it is recreated.
    Each writer writes only its own; the reader checks that all of them agree.
``S.data.npy``
    ``(rows in shard, *feature_shape)`` array in ``dtype`` (float16 for SSL hidden states, float32
    for F0), a standard ``.npy`` file, preallocated (sparse) at creation.
``S.status.npy``
    ``(rows in shard,)`` uint8 completion record: 0 pending, 1 done, 2 bad (unreadable input).
``S.bad.tsv``
    Append-only report of bad rows: ``utt_id<TAB>path<TAB>reason``.

Crash safety: a batch's rows are written to the data file and ``fdatasync``'ed BEFORE their status
bytes are set and synced; bad rows are logged (and synced) before they are marked. A writer killed at
any moment and rerun therefore recomputes only rows whose status is still pending, and never trusts a
row that is not fully on disk. Pending rows are processed in blocks aligned to ``batch_size`` from the
start of the shard, so an interrupted and an uninterrupted run put the same rows in each batch and
(in fp32 on CPU, with the same batch size and thread count) produce byte-identical files.

Reopening a store with other front-end settings, feature shape, dtype, utterance list or shard count
raises `UserError` naming the store and the differing keys; nothing is mixed. `FeatureStore` reads a
store zero-copy (``np.load(mmap_mode="r")``); a store is complete when every row is done or bad, and
an incomplete one is refused unless ``allow_partial``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UserError
from utils.io import atomic_path

FORMAT = "antispoof-feature-store"
VERSION = 1
PENDING, DONE, BAD = 0, 1, 2
INDEX_FILE = "index.tsv"
_META_RE = re.compile(r"^shard-(\d+)-of-(\d+)\.meta\.json$")
# Keys that must agree between every shard of a store (the others describe one shard).
_STORE_KEYS = ("format", "version", "frontend", "feature_shape", "dtype", "n_rows", "n_shards",
               "utt_ids_sha256", "index_sha256")


def shard_name(shard: int, n_shards: int) -> str:
    """File-name stem of shard ``shard`` of ``n_shards``, e.g. ``shard-0001-of-0004``."""
    return f"shard-{shard:04d}-of-{n_shards:04d}"


def shard_range(n_rows: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Contiguous row range ``[start, stop)`` of shard ``shard`` (0-based) among ``n_shards``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard index {shard} out of range for {n_shards} shards")
    return shard * n_rows // n_shards, (shard + 1) * n_rows // n_shards


def frontend_tag(settings: Mapping[str, Any]) -> str:
    """Directory name of a front end's stores, from the user's front-end settings.

    ``f0`` (mirror tiling, 600 frames), ``f0-repeat``, ``f0-200frames``; ``ssl-<model name>`` plus
    ``-layer<L>`` when not the last layer. Settings not in the tag (e.g. compute dtype) are still
    recorded and checked on reopen.
    """
    name = str(settings.get("name", "")).lower()
    if name == "f0":
        tiling = settings.get("tiling", "mirror")
        frames = int(settings.get("n_frames", 600))
        suffix = ("" if tiling == "mirror" else f"-{tiling}") + ("" if frames == 600 else f"-{frames}frames")
        return "f0" + suffix
    if name == "ssl":
        model = str(settings.get("model", "ssl")).rstrip("/\\")
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", model.replace(":", "-").split("/")[-1]) or "model"
        layer = settings.get("layer", -1)
        return f"ssl-{model}" if layer in (-1, None) else f"ssl-{model}-layer{layer}"
    raise ValueError(f"unknown front end name {name!r}")


def store_dir_for(out: str | os.PathLike, settings: Mapping[str, Any], partition: str,
                  dataset: str = "la2019") -> Path:
    """Where preprocess.py puts a partition's store: ``<out>/<front end tag>/<partition>``
    (``<dataset>-<partition>`` for datasets other than la2019, whose partition names would collide)."""
    name = partition if dataset == "la2019" else f"{dataset}-{partition}"
    return Path(out) / frontend_tag(settings) / name


def _sha256_lines(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _write_durable(path: Path, write: Any) -> None:
    """Atomically create ``path`` with ``write(tmp_path)``; the content is fsync'ed before the rename."""
    with atomic_path(path, durable=True) as tmp:
        write(tmp)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable store metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a feature-store metadata file")
    if meta.get("version") != VERSION:
        raise UserError(f"{path}: store format version {meta.get('version')}, this code reads {VERSION}")
    return meta


def _existing_metas(store_dir: Path) -> dict[Path, dict[str, Any]]:
    if not store_dir.is_dir():
        return {}
    return {p: _read_meta(p) for p in sorted(store_dir.iterdir()) if _META_RE.match(p.name)}


def _differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ, with front-end settings compared key by key (``frontend.layer``)."""
    out = []
    for key in _STORE_KEYS:
        va, vb = a.get(key), b.get(key)
        if key == "frontend" and isinstance(va, dict) and isinstance(vb, dict):
            out += [f"frontend.{k}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        elif va != vb:
            out.append(key)
    return out


def _describe(diffs: list[str], have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    def value(meta: Mapping[str, Any], key: str) -> Any:
        if key.startswith("frontend."):
            return meta.get("frontend", {}).get(key.split(".", 1)[1])
        return meta.get(key)

    parts = []
    for key in diffs:
        if key == "utt_ids_sha256":
            parts.append("utt_ids (different utterance list)")
        elif key == "index_sha256":
            if "utt_ids_sha256" not in diffs:
                parts.append("index (same utterances, different protocol columns)")
        else:
            parts.append(f"{key} (store: {value(have, key)!r}, requested: {value(want, key)!r})")
    return "; ".join(parts)


def _read_index(store_dir: Path) -> list[list[str]]:
    path = store_dir / INDEX_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the store index ({exc.strerror or exc})") from exc
    return [line.split("\t") for line in text.splitlines()]


class ShardWriter:
    """Writes one shard of a store; creates it, or reopens it to resume.

    ``index`` holds one entry per row of the WHOLE store (all shards): an utt id, or a tuple whose
    first item is the utt id and whose other items are extra index columns (e.g. speaker, attack, key).
    Reopening with different settings, shape, dtype, index or shard count raises `UserError`.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        index: Sequence[str | Sequence[str]],
        frontend_settings: Mapping[str, Any],
        feature_shape: Sequence[int],
        dtype: Any,
        shard: int = 0,
        n_shards: int = 1,
    ) -> None:
        self.store_dir = Path(store_dir)
        lines = ["\t".join([entry] if isinstance(entry, str) else [str(x) for x in entry]) for entry in index]
        self.utt_ids = [line.split("\t", 1)[0] for line in lines]
        if len(set(self.utt_ids)) != len(self.utt_ids):
            raise UserError(f"{self.store_dir}: duplicate utterance ids in the store index")
        self.dtype = np.dtype(dtype)
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.shard, self.n_shards = int(shard), int(n_shards)
        self.start, self.stop = shard_range(len(lines), self.shard, self.n_shards)
        self.stem = stem = shard_name(self.shard, self.n_shards)
        self.meta_path = self.store_dir / f"{stem}.meta.json"
        self.data_path = self.store_dir / f"{stem}.data.npy"
        self.status_path = self.store_dir / f"{stem}.status.npy"
        self.bad_path = self.store_dir / f"{stem}.bad.tsv"
        self.meta = {
            "format": FORMAT,
            "version": VERSION,
            "frontend": json.loads(json.dumps(dict(frontend_settings))),
            "feature_shape": list(self.feature_shape),
            "dtype": self.dtype.str,
            "n_rows": len(lines),
            "n_shards": self.n_shards,
            "utt_ids_sha256": _sha256_lines(self.utt_ids),
            "index_sha256": _sha256_lines(lines),
            "shard": self.shard,
            "start": self.start,
            "stop": self.stop,
        }
        for path, meta in _existing_metas(self.store_dir).items():
            diffs = _differing_keys(meta, self.meta)
            if diffs:
                raise UserError(
                    f"{self.store_dir}: the existing store was made with other settings ({path.name}): "
                    f"{_describe(diffs, meta, self.meta)}; use another --out or delete the store"
                )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        index_text = "".join(line + "\n" for line in lines)
        index_path = self.store_dir / INDEX_FILE
        # Every writer writes the same bytes with an atomic rename, so concurrent writers are harmless.
        if not index_path.exists() or index_path.read_text(encoding="utf-8") != index_text:
            _write_durable(index_path, lambda tmp: tmp.write_text(index_text, encoding="utf-8"))
        if not self.meta_path.exists():
            self._create()
        self._open()

    def _remove_stale_temps(self) -> None:
        """Delete temp files a killed run of THIS shard left behind (other shards' may be in use)."""
        for path in self.store_dir.glob(f".{self.stem}.*.tmp"):
            path.unlink(missing_ok=True)

    def _create(self) -> None:
        self._remove_stale_temps()
        shape = (self.stop - self.start, *self.feature_shape)

        def make_data(tmp: Path) -> None:
            # open_memmap only writes the header and the last byte: the file is sparse until filled.
            data = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=shape)
            del data

        _write_durable(self.data_path, make_data)

        def make_status(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # np.save on a path would append ".npy" to the temp name
                np.save(f, np.zeros(shape[0], np.uint8))

        _write_durable(self.status_path, make_status)
        self.bad_path.unlink(missing_ok=True)  # left over from a run killed before its metadata existed
        _write_durable(self.meta_path, lambda tmp: tmp.write_text(json.dumps(self.meta, indent=1) + "\n"))

    def _open(self) -> None:
        n = self.stop - self.start
        try:
            data = np.load(self.data_path, mmap_mode="r")
            status = np.load(self.status_path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.data_path}: damaged shard file ({exc})") from exc
        if data.shape != (n, *self.feature_shape) or data.dtype != self.dtype or status.shape != (n,):
            raise UserError(f"{self.data_path}: shape {data.shape} {data.dtype} does not match its metadata")
        self._data_offset, self._status_offset = data.offset, status.offset
        self._row_bytes = int(np.prod(self.feature_shape)) * self.dtype.itemsize
        self.status = np.array(status)  # private copy; the file is updated with pwrite
        del data, status

    @property
    def n_done(self) -> int:
        return int((self.status == DONE).sum())

    @property
    def n_bad(self) -> int:
        return int((self.status == BAD).sum())

    @property
    def n_pending(self) -> int:
        return int((self.status == PENDING).sum())

    def retry_bad(self) -> int:
        """Mark this shard's bad rows pending again (e.g. after fixing the files); returns how many."""
        bad_local = np.flatnonzero(self.status == BAD)
        if bad_local.size:
            self.status[bad_local] = PENDING
            self._write_status(int(bad_local.min()), int(bad_local.max()) + 1)
        return int(bad_local.size)

    def _write_status(self, lo: int, hi: int) -> None:
        """Write local status bytes [lo, hi) to the file and sync them."""
        with open(self.status_path, "r+b") as f:
            os.pwrite(f.fileno(), self.status[lo:hi].tobytes(), self._status_offset + lo)
            os.fdatasync(f.fileno())

    def pending_blocks(self, batch_size: int) -> list[np.ndarray]:
        """Global row indices still to compute, in blocks aligned to ``batch_size`` from the shard start.

        Alignment keeps batch composition identical between interrupted and uninterrupted runs.
        """
        out = []
        for lo in range(0, self.stop - self.start, batch_size):
            local = np.flatnonzero(self.status[lo:lo + batch_size] == PENDING) + lo
            if local.size:
                out.append(local + self.start)
        return out

    def commit(
        self, rows: Sequence[int], features: np.ndarray, bad: Mapping[int, tuple[str, str]] | None = None
    ) -> None:
        """Store ``features`` (len(rows), *feature_shape) for global ``rows`` and mark them done.

        ``bad`` maps global rows that could not be computed to ``(path, reason)``; they are logged to
        the shard's ``bad.tsv`` and marked bad. Data reaches the disk before the completion record.
        """
        rows = np.asarray(rows, dtype=np.int64)
        bad = dict(bad or {})
        features = np.asarray(features)
        if features.shape != (len(rows), *self.feature_shape):
            raise ValueError(f"features shape {features.shape} != {(len(rows), *self.feature_shape)}")
        local = rows - self.start
        if len(rows) and (local.min() < 0 or local.max() >= self.stop - self.start):
            raise ValueError("rows outside this shard")
        blob = np.ascontiguousarray(features, dtype=self.dtype)
        with open(self.data_path, "r+b") as f:
            fd = f.fileno()
            for j, row in enumerate(local):
                os.pwrite(fd, blob[j].tobytes(), self._data_offset + int(row) * self._row_bytes)
            os.fdatasync(fd)
        if bad:
            with open(self.bad_path, "a", encoding="utf-8") as f:
                for row, (path, reason) in sorted(bad.items()):
                    reason = " ".join(str(reason).split())
                    f.write(f"{self.utt_ids[row]}\t{path}\t{reason}\n")
                f.flush()
                os.fdatasync(f.fileno())
        self.status[local] = DONE
        bad_local = np.asarray(sorted(bad), dtype=np.int64) - self.start
        self.status[bad_local] = BAD
        # Status bytes of one batch may be non-contiguous (bad rows, resumed blocks): rewrite their span.
        touched = np.concatenate([local, bad_local])
        if touched.size:
            self._write_status(int(touched.min()), int(touched.max()) + 1)


class FeatureStore:
    """Zero-copy reader of a store directory, all shards presented as one array of rows.

    ``utt_ids`` (list), ``status`` (uint8, 0 pending / 1 done / 2 bad), ``valid`` (bool: done),
    ``feature_shape``, ``dtype``, ``settings`` (front end). ``store[i]`` is a read-only memmap view of
    row ``i``; ``get_batch(indices)`` gathers rows into a new array. An incomplete store (rows still
    pending, or shards missing) raises `UserError` unless ``allow_partial``.
    """

    def __init__(self, store_dir: str | os.PathLike, allow_partial: bool = False) -> None:
        self.store_dir = Path(store_dir)
        metas = _existing_metas(self.store_dir)
        if not metas:
            raise UserError(f"{self.store_dir}: not a feature store no shard-*.meta.json; run preprocess.py")
        first_path, first = next(iter(metas.items()))
        for path, meta in metas.items():
            diffs = _differing_keys(first, meta)
            if diffs:
                raise UserError(f"{self.store_dir}: shards disagree ({first_path.name} vs {path.name}: "
                                f"{', '.join(diffs)}); delete the store and preprocess again")
        self.meta = first
        self.settings: dict[str, Any] = first["frontend"]
        self.feature_shape = tuple(first["feature_shape"])
        self.dtype = np.dtype(first["dtype"])
        self.n_shards = int(first["n_shards"])
        n_rows = int(first["n_rows"])
        self.index = _read_index(self.store_dir)
        self.utt_ids = [cols[0] for cols in self.index]
        index_digest = _sha256_lines("\t".join(cols) for cols in self.index)
        if len(self.utt_ids) != n_rows or index_digest != first["index_sha256"]:
            raise UserError(f"{self.store_dir / INDEX_FILE}: does not match the store metadata")
        self._row_of = {u: i for i, u in enumerate(self.utt_ids)}
        # bounds[k] is the first row of shard k; bounds[n_shards] == n_rows
        self.bounds = np.array([k * n_rows // self.n_shards for k in range(self.n_shards + 1)])
        self.status = np.zeros(n_rows, np.uint8)
        self._data: list[np.ndarray | None] = []
        missing = []
        for k in range(self.n_shards):
            stem = self.store_dir / shard_name(k, self.n_shards)
            if not Path(f"{stem}.meta.json").exists():
                missing.append(k)
                self._data.append(None)
                continue
            try:
                self._data.append(np.load(f"{stem}.data.npy", mmap_mode="r"))
                self.status[self.bounds[k]:self.bounds[k + 1]] = np.load(f"{stem}.status.npy")
            except (OSError, ValueError) as exc:
                raise UserError(f"{stem}.data.npy: damaged shard ({exc})") from exc
        self.valid = self.status == DONE
        self.complete = not missing and not (self.status == PENDING).any()
        if not self.complete and not allow_partial:
            n_pending = int((self.status == PENDING).sum())
            what = f"{len(missing)} of {self.n_shards} shards not started, " if missing else ""
            raise UserError(f"{self.store_dir}: incomplete store ({what}{n_pending} of {n_rows} rows "
                            "pending); rerun preprocess.py to finish it")

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with "spawn" pickle the dataset: send file names, not the mapped data.
        state = self.__dict__.copy()
        state["_data"] = [None if d is None else d.filename for d in self._data]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._data = [None if f is None else np.load(f, mmap_mode="r") for f in self._data]

    def _locate(self, i: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for a store of {len(self)} rows")
        i %= len(self)
        k = int(np.searchsorted(self.bounds, i, side="right")) - 1
        data = self._data[k]
        if data is None:
            raise IndexError(f"row {i} belongs to shard {k}, which has not been created")
        return data, i - int(self.bounds[k])

    def __getitem__(self, i: int) -> np.ndarray:
        """Row ``i`` as a read-only view, shape ``feature_shape``, store dtype."""
        data, j = self._locate(int(i))
        return data[j]

    def get_batch(self, indices: Sequence[int] | np.ndarray, dtype: Any = None) -> np.ndarray:
        """Rows ``indices`` gathered into a new array (len, *feature_shape), optionally cast to ``dtype``."""
        indices = np.asarray(indices, dtype=np.int64) % max(len(self), 1)
        out = np.empty((len(indices), *self.feature_shape), dtype=dtype or self.dtype)
        shard_of = np.searchsorted(self.bounds, indices, side="right") - 1
        for k in np.unique(shard_of):
            data = self._data[k]
            if data is None:
                raise IndexError(f"rows of shard {k} requested, which has not been created")
            sel = np.flatnonzero(shard_of == k)
            out[sel] = data[indices[sel] - self.bounds[k]]
        return out

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._row_of

    def row_of(self, utt_id: str) -> int:
        """Row index of ``utt_id``; `KeyError` if absent."""
        return self._row_of[utt_id]

    def bad_files(self) -> list[tuple[str, str, str]]:
        """``(utt_id, path, reason)`` of rows marked bad, from the shards' ``bad.tsv`` reports."""
        found: dict[str, tuple[str, str, str]] = {}
        for path in sorted(self.store_dir.glob(f"shard-*-of-{self.n_shards:04d}.bad.tsv")):
            for line in path.read_text(encoding="utf-8").splitlines():
                utt, _, rest = line.partition("\t")
                file, _, reason = rest.partition("\t")
                found[utt] = (utt, file, reason)  # a rerun after a kill may log a row twice
        return [found[u] for u in self.utt_ids if u in found and self.status[self._row_of[u]] == BAD]

    def nbytes_on_disk(self) -> int:
        """Bytes actually allocated by the store's files (sparse, unfilled rows take no space)."""
        return sum(p.stat().st_blocks * 512 for p in self.store_dir.iterdir() if p.is_file())
