"""Resumable, sharded, memory-mapped feature store (numpy only, no torch).

One store holds one front end's features for one partition, one row per utterance: of one fixed shape,
or (a ``None`` axis in the front end's feature shape, e.g. decoded waveforms) of its own length.
Several writers (``--shard i/n`` or torchrun ranks) fill the same store at once without sharing a
file: shard ``i`` of ``n`` owns the contiguous protocol rows ``[i*N//n, (i+1)*N//n)``. The reader
presents all shards as one array.

Layout of a store directory (``<out>/<front end tag>/<corpus's store name>/``, `store_dir`),
``S = shard-IIII-of-NNNN``:

``index.tsv``
    One line per row, in row order: ``utt_id`` then optional tab-separated columns given by the
    writer (preprocess.py writes ``speaker attack key`` from the protocol). Every writer writes the
    same content atomically, so concurrent writers cannot corrupt it.
``S.meta.json``
    The shard's metadata: front-end settings, ``feature_shape``, ``dtype``, ``n_rows``, ``n_shards``,
    its row range and SHA-256 digests of the utt ids and of the index. Written atomically and LAST
    when a shard is created, so it is the shard's commit marker: a shard without it is recreated.
    Each writer writes only its own; the reader checks that all of them agree.
``S.data.npy`` (fixed shape)
    ``(rows in shard, *feature_shape)`` array in ``dtype`` (float16 for SSL hidden states, float32
    for F0), a standard ``.npy`` file, preallocated (sparse) at creation.
``S.data.bin`` and ``S.extents.npy`` (variable length)
    The rows' values in ``dtype``, each row C-contiguous, appended one batch after another to one flat
    file; ``(rows in shard, 2)`` int64 extents: the row's first item in the flat file and its length
    on the variable axis.
``S.status.npy``
    ``(rows in shard,)`` uint8 completion record: 0 pending, 1 done, 2 bad (unreadable input).
``S.bad.tsv``
    Append-only report of bad rows: ``utt_id<TAB>path<TAB>reason``.

Crash safety: a batch's rows are written to the data file and ``fdatasync``'ed BEFORE their status
bytes are set and synced (variable length: data appended and synced, then extents, then status); bad rows
are logged (and synced) before they are marked. A writer killed at
any moment and rerun therefore recomputes only rows whose status is still pending, and never trusts a
row that is not fully on disk. Pending rows are processed in blocks aligned to ``batch_size`` from the
start of the shard, so an interrupted and an uninterrupted run put the same rows in each batch and
(in fp32 on CPU, with the same batch size and thread count) produce byte-identical fixed-shape files.
A variable-length shard resumed after a kill reads back the same rows, but its flat file may also hold
the unrecorded bytes of the killed batch (appended behind, never pointed to).

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


def store_dir(out: str | os.PathLike, frontend_tag: str, name: str) -> Path:
    """Where preprocess.py puts a store: ``<out>/<front end tag>/<name>``. The tag comes from the front end
    (`models.frontends.store_tag`), the name from the corpus (`data.corpora.Corpus.store_name`)."""
    return Path(out) / frontend_tag / name


def variable_axis(feature_shape: Sequence[int | None]) -> int | None:
    """The axis of ``feature_shape`` whose length varies per row (``None`` in the shape), or None when every
    row has the same shape. More than one variable axis is a `ValueError`."""
    axes = [k for k, d in enumerate(feature_shape) if d is None]
    if len(axes) > 1:
        raise ValueError(f"feature shape {tuple(feature_shape)}: at most one variable (None) axis")
    return axes[0] if axes else None


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


def _npy_file(tmp: Path, array: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # np.save on a path would append ".npy" to the temp name
        np.save(f, array)


def _pwrite_synced(path: Path, chunks: Iterable[tuple[int, bytes]]) -> None:
    """Write (offset, bytes) chunks into an existing file and sync its data."""
    with open(path, "r+b") as f:
        for offset, blob in chunks:
            os.pwrite(f.fileno(), blob, offset)
        os.fdatasync(f.fileno())


class ShardWriter:
    """Writes one shard of a store; creates it, or reopens it to resume.

    ``index`` holds one entry per row of the WHOLE store (all shards): an utt id, or a tuple whose
    first item is the utt id and whose other items are extra index columns (e.g. speaker, attack, key).
    ``feature_shape`` with a ``None`` axis makes a variable-length store (one flat data file and each row's
    extent; see the module docstring). Reopening with different settings, shape, dtype, index or shard
    count raises `UserError`.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        index: Sequence[str | Sequence[str]],
        frontend_settings: Mapping[str, Any],
        feature_shape: Sequence[int | None],
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
        self.feature_shape = tuple(None if d is None else int(d) for d in feature_shape)
        self.variable_axis = variable_axis(self.feature_shape)
        self.shard, self.n_shards = int(shard), int(n_shards)
        self.start, self.stop = shard_range(len(lines), self.shard, self.n_shards)
        self.stem = stem = shard_name(self.shard, self.n_shards)
        self.meta_path = self.store_dir / f"{stem}.meta.json"
        self.data_path = self.store_dir / f"{stem}.{'data.npy' if self.variable_axis is None else 'data.bin'}"
        self.extents_path = self.store_dir / f"{stem}.extents.npy"
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
        n = self.stop - self.start
        if self.variable_axis is None:

            def make_data(tmp: Path) -> None:
                # open_memmap only writes the header and the last byte: the file is sparse until filled.
                shape = (n, *self.feature_shape)
                data = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=shape)
                del data

            _write_durable(self.data_path, make_data)
        else:
            _write_durable(self.data_path, lambda tmp: tmp.write_bytes(b""))
            _write_durable(self.extents_path, lambda tmp: _npy_file(tmp, np.zeros((n, 2), np.int64)))
        _write_durable(self.status_path, lambda tmp: _npy_file(tmp, np.zeros(n, np.uint8)))
        self.bad_path.unlink(missing_ok=True)  # left over from a run killed before its metadata existed
        _write_durable(self.meta_path, lambda tmp: tmp.write_text(json.dumps(self.meta, indent=1) + "\n"))

    def _open(self) -> None:
        n = self.stop - self.start
        try:
            status = np.load(self.status_path, mmap_mode="r")
            if self.variable_axis is None:
                data = np.load(self.data_path, mmap_mode="r")
                shape_ok = data.shape == (n, *self.feature_shape) and data.dtype == self.dtype
                self._data_offset, what = data.offset, f"shape {data.shape} {data.dtype}"
            else:
                data = np.load(self.extents_path, mmap_mode="r")
                shape_ok = data.shape == (n, 2) and data.dtype == np.int64 and self.data_path.is_file()
                self._extents_offset, what = data.offset, f"extents {data.shape}"
                self.extents = np.array(data)  # private copy, like the status
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.data_path}: damaged shard file ({exc})") from exc
        if not shape_ok or status.shape != (n,):
            raise UserError(f"{self.data_path}: {what} does not match its metadata")
        fixed = [d for d in self.feature_shape if d is not None]
        self._row_bytes = int(np.prod(fixed)) * self.dtype.itemsize  # per step of the variable axis, if any
        self._status_offset = status.offset
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
        _pwrite_synced(self.status_path, [(self._status_offset + lo, self.status[lo:hi].tobytes())])

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

    def _check_rows(self, rows: Sequence[int], features: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        """Local row indices and the features as C-contiguous arrays of the store dtype, checked."""
        local = np.asarray(rows, dtype=np.int64) - self.start
        if len(local) and (local.min() < 0 or local.max() >= self.stop - self.start):
            raise ValueError("rows outside this shard")
        if self.variable_axis is None:
            features = np.asarray(features)
            if features.shape != (len(local), *self.feature_shape):
                raise ValueError(f"features shape {features.shape} != {(len(local), *self.feature_shape)}")
            return local, [np.ascontiguousarray(features, dtype=self.dtype)]
        feats = [np.ascontiguousarray(f, dtype=self.dtype) for f in features]
        fixed = tuple(d for d in self.feature_shape if d is not None)
        wrong = [f.shape for f in feats if f.ndim != len(self.feature_shape)
                 or tuple(np.delete(f.shape, self.variable_axis)) != fixed]
        if len(feats) != len(local) or wrong:
            raise ValueError(
                f"features {wrong[:1] or len(feats)} do not fit {self.feature_shape} x {len(local)}"
            )
        return local, feats

    def _write_variable(self, local: np.ndarray, feats: list[np.ndarray]) -> None:
        """Append the rows to the flat data file, sync, then record their extents and sync those."""
        lengths = np.array([f.shape[self.variable_axis] for f in feats], dtype=np.int64)
        item = self.dtype.itemsize
        with open(self.data_path, "r+b") as f:
            fd = f.fileno()
            # after a killed run the file may end in unrecorded bytes: append behind them, item-aligned
            start = -(-os.fstat(fd).st_size // item)
            os.pwrite(fd, b"".join(x.tobytes() for x in feats), start * item)
            os.fdatasync(fd)
        per_step = self._row_bytes // item
        offsets = start + np.concatenate([[0], np.cumsum(lengths * per_step)[:-1]]).astype(np.int64)
        self.extents[local] = np.stack([offsets, lengths], axis=1)
        lo, hi = int(local.min()), int(local.max()) + 1
        _pwrite_synced(self.extents_path, [(self._extents_offset + 16 * lo, self.extents[lo:hi].tobytes())])

    def commit(
        self, rows: Sequence[int], features: Any, bad: Mapping[int, tuple[str, str]] | None = None
    ) -> None:
        """Store ``features`` for global ``rows`` and mark them done: an array (len(rows), *feature_shape),
        or for a variable-length store a sequence of len(rows) arrays of ``feature_shape`` with any length
        on its ``None`` axis.

        ``bad`` maps global rows that could not be computed to ``(path, reason)``; they are logged to
        the shard's ``bad.tsv`` and marked bad. Data reaches the disk before the completion record.
        """
        bad = dict(bad or {})
        local, feats = self._check_rows(rows, features)
        if self.variable_axis is not None:
            if len(local):
                self._write_variable(local, feats)
        else:
            blob = feats[0]
            chunks = ((self._data_offset + int(row) * self._row_bytes, blob[j].tobytes())
                      for j, row in enumerate(local))
            _pwrite_synced(self.data_path, chunks)
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


class _VariableRows:
    """One shard of a variable-length store: the flat data file (mapped read-only) and the row extents."""

    def __init__(self, data_path: str, extents: np.ndarray, dtype: np.dtype, shape: tuple, axis: int) -> None:
        self.filename, self.extents, self.dtype = data_path, extents, dtype
        self.shape, self.axis = shape, axis
        n_items = os.path.getsize(data_path) // dtype.itemsize
        # np.memmap cannot map an empty file (a shard whose rows are all bad or pending)
        self.flat = np.memmap(data_path, dtype, mode="r", shape=(n_items,)) if n_items else np.empty(0, dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "flat"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["filename"], state["extents"], state["dtype"], state["shape"], state["axis"])

    def __getitem__(self, j: int) -> np.ndarray:
        start, length = (int(v) for v in self.extents[j])
        shape = tuple(length if d is None else d for d in self.shape)
        return self.flat[start:start + int(np.prod(shape))].reshape(shape)


class FeatureStore:
    """Zero-copy reader of a store directory, all shards presented as one array of rows.

    ``utt_ids`` (list), ``status`` (uint8, 0 pending / 1 done / 2 bad), ``valid`` (bool: done),
    ``feature_shape`` (``None`` on the variable axis of a variable-length store), ``dtype``, ``settings``
    (front end). ``store[i]`` is a read-only memmap view of row ``i``; ``get_batch(indices)`` gathers rows
    into a new array (a list of arrays for a variable-length store). An incomplete store (rows still
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
        self.variable_axis = variable_axis(self.feature_shape)
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
        self._data: list[Any] = []
        missing = [k for k in range(self.n_shards) if not self._open_shard(k)]
        self.valid = self.status == DONE
        self.complete = not missing and not (self.status == PENDING).any()
        if not self.complete and not allow_partial:
            n_pending = int((self.status == PENDING).sum())
            what = f"{len(missing)} of {self.n_shards} shards not started, " if missing else ""
            raise UserError(f"{self.store_dir}: incomplete store ({what}{n_pending} of {n_rows} rows "
                            "pending); rerun preprocess.py to finish it")

    def _open_shard(self, k: int) -> bool:
        """Map shard ``k`` and read its status into ``self.status``; False when it has not been created."""
        stem = self.store_dir / shard_name(k, self.n_shards)
        if not Path(f"{stem}.meta.json").exists():
            self._data.append(None)
            return False
        data_file = f"{stem}.data.npy" if self.variable_axis is None else f"{stem}.data.bin"
        try:
            if self.variable_axis is None:
                self._data.append(np.load(data_file, mmap_mode="r"))
            else:
                self._data.append(_VariableRows(data_file, np.load(f"{stem}.extents.npy"), self.dtype,
                                                self.feature_shape, self.variable_axis))
            self.status[self.bounds[k]:self.bounds[k + 1]] = np.load(f"{stem}.status.npy")
        except (OSError, ValueError) as exc:
            raise UserError(f"{data_file}: damaged shard ({exc})") from exc
        return True

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with "spawn" pickle the dataset: send file names, not the mapped data.
        state = self.__dict__.copy()
        state["_data"] = [d.filename if isinstance(d, np.memmap) else d for d in self._data]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._data = [np.load(d, mmap_mode="r") if isinstance(d, str) else d for d in self._data]

    def _locate(self, i: int) -> tuple[Any, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for a store of {len(self)} rows")
        i %= len(self)
        k = int(np.searchsorted(self.bounds, i, side="right")) - 1
        data = self._data[k]
        if data is None:
            raise IndexError(f"row {i} belongs to shard {k}, which has not been created")
        return data, i - int(self.bounds[k])

    def __getitem__(self, i: int) -> np.ndarray:
        """Row ``i`` as a read-only view, shape ``feature_shape`` (its own length on a variable axis)."""
        data, j = self._locate(int(i))
        return data[j]

    def get_batch(
        self, indices: Sequence[int] | np.ndarray, dtype: Any = None
    ) -> np.ndarray | list[np.ndarray]:
        """Rows ``indices`` gathered into a new array (len, *feature_shape), optionally cast to ``dtype``;
        a list of new arrays for a variable-length store."""
        if self.variable_axis is not None:
            return [np.array(self[int(i)], dtype=dtype or self.dtype) for i in indices]
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
