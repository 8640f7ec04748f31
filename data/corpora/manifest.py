"""Your own recordings as a corpus: one manifest file (CSV or TSV with a header) per partition.

    path,label,attack,speaker,codec            (columns in any order; tab-separated if the header has tabs)
    clips/a.wav,bonafide,-,alice,mp3
    /data/b.flac,spoof,tts1,bob,none

Required columns: ``path`` (absolute, or relative to the manifest's own folder; ``file`` is accepted in its
place, as in In-the-Wild's ``meta.csv``) and ``label`` (`LABELS`, case-insensitive). Optional: ``attack``
(without it spoof rows get attack ``unknown``), ``speaker``, ``utt_id`` (default: the path without its
extension, relative to the manifest folder). Any other column (``codec``, ``language``, ...) is carried in
`ProtocolRow.extra` and can be grouped by in evaluation. Column names are read lower-cased.

The registered corpus ``manifest`` knows no files: `ManifestCorpus.bind` gives an unregistered copy bound to
``{partition: manifest file}``; recipes bind it from ``data.manifests`` (`recipe_corpus`), the scripts from
``--manifest PART=FILE`` (`manifest_overrides`). `read_manifest` is also In-the-Wild's reader (itw.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data.corpora.base import Corpus, all_corpora, audio_state, first_line, register_corpus
from data.protocols import ProtocolRow, extra_fields, rows_from_columns
from utils.errors import UserError, where
from utils.scorefiles import BONAFIDE, SPOOF, check_unique, read_text

NAME = "manifest"
#: The attack of spoof rows whose manifest has no attack column.
UNKNOWN_ATTACK = "unknown"
#: Accepted labels (compared lower-cased, surrounding spaces stripped).
LABELS = {"bonafide": BONAFIDE, "bona-fide": BONAFIDE, "bona fide": BONAFIDE, "real": BONAFIDE,
          "spoof": SPOOF, "fake": SPOOF}
#: Columns the reader interprets; any other is an extra field.
PATH_COLUMNS = ("path", "file")
KNOWN_COLUMNS = (*PATH_COLUMNS, "label", "attack", "speaker", "utt_id")
#: Missing audio files a read lists by name.
SHOW_MISSING = 5


def header_columns(line: str) -> list[str]:
    """The column names of a header line: split at tabs if it has any, else at commas; lower-cased."""
    delimiter = "\t" if "\t" in line else ","
    return [name.strip().lower() for name in next(csv.reader([line], delimiter=delimiter), [])]


def read_manifest(
    path: Path, text: str, audio_root: Path | None = None, labels: Mapping[str, str] = LABELS
) -> list[ProtocolRow]:
    """The rows of manifest file ``path`` (content ``text``); with ``audio_root`` each row carries its audio
    path (relative paths joined to it). utt_ids default to the path without extension relative to the
    manifest's folder. A bad header or row raises a one-line `UserError` naming ``path`` and the line."""
    lines = io.StringIO(text)
    header_line = next((line for line in lines if line.strip()), None)
    if header_line is None:
        raise UserError(f"{path}: the file is empty")
    header_at = text[: text.index(header_line)].count("\n") + 1
    delimiter = "\t" if "\t" in header_line else ","
    columns = header_columns(header_line)
    path_column = _check_header(path, header_at, columns, delimiter)
    reader = csv.reader(lines, delimiter=delimiter)
    values: dict[str, list[str]] = {name: [] for name in columns}
    numbers: list[int] = []
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        number = header_at + reader.line_num
        if len(fields) != len(columns):
            raise UserError(f"{where(path, number)}: expected {len(columns)} columns "
                            f"'{delimiter.join(columns)}', got {len(fields)}")
        for name, value in zip(columns, fields, strict=True):
            values[name].append(value.strip())
        numbers.append(number)
    if not numbers:
        raise UserError(f"{path}: no trials after the header")
    return _rows(path, values, numbers, path_column, audio_root, labels)


def _check_header(path: Path, line: int, columns: Sequence[str], delimiter: str) -> str:
    """The path column's name; a missing required column or a repeated one raises `UserError`."""
    seen = set()
    for name in columns:
        if name in seen:
            raise UserError(f"{where(path, line)}: column '{name}' appears twice in the header")
        seen.add(name)
    path_column = next((name for name in PATH_COLUMNS if name in seen), None)
    for missing in ("path" if path_column is None else None, None if "label" in seen else "label"):
        if missing is not None:
            raise UserError(f"{where(path, line)}: the header '{delimiter.join(columns)}' has no "
                            f"'{missing}' column (required: path, label)")
    return str(path_column)


def _rows(
    path: Path, values: dict[str, list[str]], numbers: list[int], path_column: str,
    audio_root: Path | None, labels: Mapping[str, str],
) -> list[ProtocolRow]:
    """Rows from the columns read by `read_manifest`, each value checked."""
    keys = []
    for label, number in zip(values["label"], numbers, strict=True):
        key = labels.get(label.lower())
        if key is None:
            raise UserError(f"{where(path, number)}: label '{label}' is not one of {', '.join(labels)}")
        keys.append(key)
    files = values[path_column]
    for file, number in zip(files, numbers, strict=True):
        if not file:
            raise UserError(f"{where(path, number)}: empty {path_column}")
    folder = str(path.parent)
    ids = [os.path.splitext(os.path.relpath(os.path.join(folder, f), folder))[0] for f in files]
    if "utt_id" in values:
        ids = [given or default for given, default in zip(values["utt_id"], ids, strict=True)]
    check_unique(path, ids, numbers)
    n = len(files)
    attacks = [a or UNKNOWN_ATTACK for a in values.get("attack") or [""] * n]
    speakers = [s or "-" for s in values.get("speaker") or [""] * n]
    extra_names = [name for name in values if name not in KNOWN_COLUMNS]
    cache: dict = {}
    extra = [extra_fields({name: values[name][i] for name in extra_names}, cache) for i in range(n)]
    paths = None if audio_root is None else [os.path.join(audio_root, f) for f in files]
    return rows_from_columns(speakers, ids, attacks, keys, paths, extra if extra_names else None)


def missing_audio(source: Path, rows: Sequence[ProtocolRow], show: int = SHOW_MISSING) -> None:
    """`UserError` naming ``source`` when audio files of ``rows`` are missing or empty: the first ``show`` of
    them and how many (as ``python -m data.corpora check`` lists them)."""
    bad = [row.path or row.utt_id for row in rows if audio_state(row.path) != "ok"]
    if bad:
        more = f", ... ({len(bad) - show:,} more)" if len(bad) > show else ""
        raise UserError(f"{source}: {len(bad):,} of {len(rows):,} audio files missing or empty: "
                        f"{', '.join(bad[:show])}{more}")


def store_key(file: str | os.PathLike) -> str:
    """8 hex digits naming a manifest file by its resolved path (store names of different manifests)."""
    return hashlib.sha256(str(Path(file).resolve()).encode()).hexdigest()[:8]


@register_corpus
class ManifestCorpus(Corpus):
    """Recordings listed in manifest files; registered unbound (no files), used bound (`bind`)."""

    name = NAME
    title = "Manifest"
    display = "manifest"
    partitions: tuple[str, ...] = ()
    layout = "path,label[,attack,speaker,utt_id,...]"
    protocol_name = "manifest (.csv or .tsv with path and label columns)"
    needs_root = False

    def __init__(self, files: Mapping[str, str | os.PathLike] | None = None) -> None:
        self.files = {part: Path(file) for part, file in (files or {}).items()}
        self.partitions = tuple(self.files)
        self._fields: tuple[str, ...] | None = None

    @classmethod
    def bind(cls, files: Mapping[str, str | os.PathLike]) -> ManifestCorpus:
        """An unregistered manifest corpus whose partitions are ``files``' keys, read from its values."""
        return cls(files)

    def from_recipe(self, data: Mapping[str, Any]) -> ManifestCorpus:
        manifests = data.get("manifests")
        if not manifests:
            raise UserError("data.dataset is manifest but no manifest files are given: "
                            "--manifest PART=FILE (or data.manifests: {train: FILE, ...} in the recipe)")
        return self.bind({str(part): os.path.abspath(str(file)) for part, file in manifests.items()})

    def of_file(self, path: Path) -> ManifestCorpus:
        return self.bind({"eval": path})

    def cli_arguments(self, root: str | os.PathLike | None) -> list[str]:
        return [arg for part, file in self.files.items() for arg in ("--manifest", f"{part}={file}")]

    @property
    def fields(self) -> tuple[str, ...]:  # type: ignore[override]
        """``speaker`` and ``attack`` if its manifests have them, then their other columns (unbound: both)."""
        if not self.files:
            return ("speaker", "attack")
        if self._fields is None:
            names: dict[str, None] = {}
            for file in self.files.values():
                line = first_line(read_text(file, "manifest")) or ""
                names.update(dict.fromkeys(header_columns(line)))
            ordered = [n for n in ("speaker", "attack") if n in names]
            self._fields = (*ordered, *(n for n in names if n not in KNOWN_COLUMNS))
        return self._fields

    def check_partition(self, partition: str) -> None:
        if partition not in self.files:
            given = f" (given: {', '.join(self.files)})" if self.files else ""
            raise UserError(f"no manifest for partition '{partition}'{given}: give --manifest "
                            f"{partition}=FILE (or data.manifests.{partition} in the recipe)")

    def protocol_path(self, root: str | os.PathLike | None, partition: str) -> Path:
        self.check_partition(partition)
        return self.files[partition]

    def detect(self, path: Path, first_line: str) -> bool:
        """A header with a path (or file) and a label column that no other corpus claims (In-the-Wild's
        exact ``file,speaker,label`` stays In-the-Wild's)."""
        columns = set(header_columns(first_line))
        if "label" not in columns or not columns & set(PATH_COLUMNS):
            return False
        return not any(c.detect(path, first_line) for c in all_corpora() if c.name != self.name)

    def parse(
        self, path: Path, text: str, root: Path | None = None, partition: str | None = None
    ) -> list[ProtocolRow]:
        return read_manifest(path, text, None if root is None else path.parent)

    def read(
        self, root: str | os.PathLike | None, partition: str, *, check_audio: bool = True
    ) -> list[ProtocolRow]:
        """The rows of a partition's manifest with their audio paths (``root`` is not used); with
        ``check_audio`` missing or empty audio files raise `UserError` (`missing_audio`)."""
        path = self.protocol_path(root, partition)
        rows = self.parse(path, read_text(path, "manifest"), path.parent, partition)
        if check_audio:
            missing_audio(path, rows)
        return rows

    def store_name(self, partition: str) -> str:
        """``manifest-<partition>-<8 hex of the manifest's resolved path>``."""
        return f"{self.name}-{partition}-{store_key(self.protocol_path(None, partition))}"


def parse_manifest_flags(values: Sequence[str] | None) -> dict[str, str]:
    """``--manifest PART=FILE`` values -> {partition: absolute file}; a malformed value, a partition given
    twice or a missing file raises `UserError`."""
    files: dict[str, str] = {}
    for value in values or ():
        part, sep, file = value.partition("=")
        part, file = part.strip(), file.strip()
        if not sep or not part or not file:
            raise UserError(f"--manifest {value}: expected PART=FILE, e.g. train=lists/train.csv")
        if part in files:
            raise UserError(f"--manifest {value}: partition '{part}' given twice")
        if not Path(file).is_file():
            raise UserError(f"{file}: manifest not found (--manifest {value})")
        files[part] = os.path.abspath(file)
    return files


def manifest_overrides(values: Sequence[str] | None) -> list[str]:
    """Recipe overrides equivalent to ``--manifest PART=FILE`` flags: ``data.dataset=manifest`` and
    ``data.manifests.PART=<absolute file>`` (none without flags)."""
    files = parse_manifest_flags(values)
    if not files:
        return []
    return ["data.dataset=manifest", *(f"data.manifests.{part}={file}" for part, file in files.items())]


def add_manifest_argument(parser: Any) -> None:
    """``--manifest PART=FILE`` (repeatable) on a script's argparse parser."""
    parser.add_argument(
        "--manifest", action="append", default=None, metavar="PART=FILE",
        help="your own recordings: partition PART (train, dev, eval) listed in a CSV/TSV manifest with "
        "path and label columns (docs/data.md); repeat per partition; replaces --data-root",
    )


def manifest_corpus(values: Sequence[str] | None) -> ManifestCorpus | None:
    """The manifest corpus bound to ``--manifest`` flags, None without them."""
    files = parse_manifest_flags(values)
    return ManifestCorpus.bind(files) if files else None
