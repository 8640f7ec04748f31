"""CM protocols (ASVspoof 2019 LA, ASVspoof 2021 LA/DF, In-the-Wild) and the dataset folder layouts.

Every reader returns `ProtocolRow`s with `attack` = ``-`` for bona fide rows and `key` =
``bonafide`` or ``spoof``. Formats:

- ``la2019``: ``speaker utt_id - attack key`` (ASVspoof2019.LA.cm.*.txt);
- ``la2021`` / ``df2021``: the keys' ``trial_metadata.txt``, 8 or more columns
  ``speaker trial codec transmission attack key trim subset [...]`` (DF adds vocoder type and
  VCC task/team columns, ignored here);
- ``itw``: In-the-Wild ``meta.csv`` with header ``file,speaker,label``, label ``bona-fide``/``spoof``;
  utt_id is the file name without extension and spoof rows get attack ``unknown``.

No torch here: `python -m data.protocols FILE` prints a protocol's counts per key and attack.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.conditions import LAYOUTS
from utils.errors import UserError, run_cli, where
from utils.io import atomic_write_text
from utils.scorefiles import (
    ASV_KEYS,
    BONAFIDE,
    CM_KEYS,
    SPOOF,
    ASVTrialScores,
    check_unique,
    check_values,
    read_text,
    split_table,
)

DATASETS = ("la2019", "la2021", "df2021", "itw")
PROTOCOL_FORMATS = ("auto", *DATASETS)
PARTITIONS = {"la2019": ("train", "dev", "eval"), "la2021": ("eval",), "df2021": ("eval",), "itw": ("eval",)}
ITW_UNKNOWN_ATTACK = "unknown"

_LA2019_FILES = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
_LA2019_LAYOUT = "speaker utt_id - attack key"
_TRIAL_METADATA_LAYOUT = "speaker trial codec transmission attack key trim subset"
_ITW_LABELS = {"bona-fide": BONAFIDE, "spoof": SPOOF}


@dataclass(frozen=True, slots=True)
class ProtocolRow:
    """One protocol trial; `attack` is ``-`` for bona fide, `key` is ``bonafide`` or ``spoof``."""

    speaker: str
    utt_id: str
    attack: str
    key: str

    @property
    def label(self) -> int:
        """Class index: 0 = bona fide, 1 = spoof."""
        return 0 if self.key == BONAFIDE else 1


def format_protocol_line(row: ProtocolRow) -> str:
    """One row in the 2019 LA protocol layout ``speaker utt_id - attack key`` (no newline)."""
    return f"{row.speaker} {row.utt_id} - {row.attack} {row.key}"


def write_protocol(path: str | os.PathLike, rows: Sequence[ProtocolRow]) -> None:
    """Write ``rows`` as a 2019 LA protocol file (`format_protocol_line` per line), atomically."""
    atomic_write_text(path, "".join(f"{format_protocol_line(row)}\n" for row in rows))


def _rows_from_columns(
    speakers: Sequence[str], ids: Sequence[str], attacks: Sequence[str], keys: Sequence[str]
) -> list[ProtocolRow]:
    # Bona fide rows get attack "-" whatever the file says (2021 metadata writes "bonafide" there).
    attacks = ["-" if key == BONAFIDE else attack for attack, key in zip(attacks, keys, strict=True)]
    return list(map(ProtocolRow, speakers, ids, attacks, keys))


def _read_whitespace_protocol(path: Path, text: str, fmt: str) -> list[ProtocolRow]:
    if fmt == "la2019":
        table = split_table(path, text, 5, _LA2019_LAYOUT)
    else:
        table = split_table(path, text, 8, _TRIAL_METADATA_LAYOUT, min_cols=8)
    key_col, attack_col = (4, 3) if fmt == "la2019" else (5, 4)
    check_values(table, key_col, CM_KEYS, "key")
    check_unique(path, table.columns[1], table.line_numbers)
    return _rows_from_columns(
        table.columns[0], table.columns[1], table.columns[attack_col], table.columns[key_col]
    )


def _read_itw(path: Path, text: str) -> list[ProtocolRow]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise UserError(f"{path}: the file is empty")
    if [h.strip().lower() for h in header] != ["file", "speaker", "label"]:
        raise UserError(
            f"{where(path, 1)}: expected the header 'file,speaker,label', got '{','.join(header)}'"
        )
    rows: list[ProtocolRow] = []
    line_numbers: list[int] = []
    for fields in reader:
        line = reader.line_num
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) != 3:
            raise UserError(
                f"{where(path, line)}: expected 3 columns 'file,speaker,label', got {len(fields)}"
            )
        file, speaker, label = (f.strip() for f in fields)
        key = _ITW_LABELS.get(label.lower())
        if key is None:
            raise UserError(f"{where(path, line)}: label '{label}' is not one of {', '.join(_ITW_LABELS)}")
        utt_id = os.path.splitext(file)[0]
        if not utt_id:
            raise UserError(f"{where(path, line)}: empty file name")
        rows.append(ProtocolRow(speaker, utt_id, "-" if key == BONAFIDE else ITW_UNKNOWN_ATTACK, key))
        line_numbers.append(line)
    if not rows:
        raise UserError(f"{path}: no trials after the header")
    check_unique(path, [r.utt_id for r in rows], line_numbers)
    return rows


def detect_protocol_format(path: Path, text: str) -> str:
    """Guess the protocol format: CSV -> ``itw``; 5 columns -> ``la2019``; 8 or more -> ``la2021``."""
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise UserError(f"{path}: the file is empty")
    if path.suffix.lower() == ".csv" or "," in first:
        return "itw"
    n = len(first.split())
    if n == 5:
        return "la2019"
    if n >= 8:
        # DF trial_metadata.txt has 13 columns (vocoder, task, team, gender pair, language follow).
        return "df2021" if n >= 13 else "la2021"
    raise UserError(
        f"{path}: cannot tell the protocol format from {n} columns; expected '{_LA2019_LAYOUT}' (2019 LA), "
        f"'{_TRIAL_METADATA_LAYOUT}' (2021 trial_metadata.txt) or a 'file,speaker,label' CSV (In-the-Wild)"
    )


def read_protocol(path: str | os.PathLike, fmt: str = "auto") -> list[ProtocolRow]:
    """Read a CM protocol in one of `PROTOCOL_FORMATS`; malformed lines, duplicate ids raise `UserError`."""
    path = Path(path)
    if fmt not in PROTOCOL_FORMATS:
        raise UserError(f"unknown protocol format '{fmt}'; expected one of {', '.join(PROTOCOL_FORMATS)}")
    text = read_text(path, "protocol file")
    if fmt == "auto":
        fmt = detect_protocol_format(path, text)
    if fmt == "itw":
        return _read_itw(path, text)
    return _read_whitespace_protocol(path, text, fmt)


def protocol_summary(rows: Sequence[ProtocolRow]) -> dict:
    """Counts: ``{"n": total, "keys": {key: n}, "attacks": {attack: n}, "speakers": n_speakers}`` (sorted)."""
    return {
        "n": len(rows),
        "keys": dict(sorted(Counter(r.key for r in rows).items())),
        "attacks": dict(sorted(Counter(r.attack for r in rows).items())),
        "speakers": len({r.speaker for r in rows}),
    }


def format_summary(summary: dict, title: str = "protocol") -> str:
    """The summary as a small plain-text table."""
    lines = [f"{title}: {summary['n']:,} trials, {summary['speakers']:,} speakers"]
    lines += [f"  {key:<10} {n:>9,}" for key, n in summary["keys"].items()]
    lines.append("  attack     trials")
    lines += [f"  {attack:<10} {n:>9,}" for attack, n in summary["attacks"].items()]
    return "\n".join(lines)


def _check_partition(partition: str, dataset: str) -> None:
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset '{dataset}'; expected one of {', '.join(DATASETS)}")
    if partition not in PARTITIONS[dataset]:
        raise UserError(
            f"unknown partition '{partition}' for {dataset}; expected one of {', '.join(PARTITIONS[dataset])}"
        )


def protocol_path(data_root: str | os.PathLike, partition: str, dataset: str = "la2019") -> Path:
    """Where a partition's protocol lives under the dataset root (as distributed)."""
    _check_partition(partition, dataset)
    root = Path(data_root)
    if dataset == "la2019":
        return root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{_LA2019_FILES[partition]}.txt"
    if dataset in ("la2021", "df2021"):
        return root / "keys" / dataset[:2].upper() / "CM" / "trial_metadata.txt"
    return root / "meta.csv"


def audio_path(data_root: str | os.PathLike, partition: str, utt_id: str, dataset: str = "la2019") -> Path:
    """Where one utterance's audio lives under the dataset root (FLAC, or WAV for In-the-Wild)."""
    _check_partition(partition, dataset)
    root = Path(data_root)
    if dataset == "la2019":
        return root / f"ASVspoof2019_LA_{partition}" / "flac" / f"{utt_id}.flac"
    if dataset in ("la2021", "df2021"):
        return root / f"ASVspoof2021_{dataset[:2].upper()}_eval" / "flac" / f"{utt_id}.flac"
    return root / f"{utt_id}.wav"


def asv_score_path(data_root: str | os.PathLike, partition: str) -> Path:
    """The organisers' 2019 LA ASV score file of the dev or eval partition."""
    if partition not in ("dev", "eval"):
        raise UserError(f"ASV scores exist for the dev and eval partitions only, not '{partition}'")
    return (
        Path(data_root) / "ASVspoof2019_LA_asv_scores" / f"ASVspoof2019.LA.asv.{partition}.gi.trl.scores.txt"
    )


def load_partition(
    data_root: str | os.PathLike, partition: str, dataset: str = "la2019"
) -> list[ProtocolRow]:
    """Read the protocol of one partition; a missing root or protocol raises `UserError` naming the path."""
    root = Path(data_root)
    path = protocol_path(root, partition, dataset)
    if not root.is_dir():
        raise UserError(f"{root}: data root not found (expected the {dataset} dataset folder)")
    if not path.is_file():
        raise UserError(f"{path}: protocol not found (the {partition} protocol of {dataset} under {root})")
    return read_protocol(path, "la2021" if dataset == "df2021" else dataset)


# --- 2021 trial_metadata.txt with codecs and subsets (the evaluation phases) ------------------------------

SUBSETS = ("eval", "progress", "hidden")
#: accepted subset names: the three phases, the stage-1 scripts' name for hidden, and all of them.
SUBSET_CHOICES = (*SUBSETS, "hidden_track", "all")


def first_ids(ids: Sequence[str], limit: int = 3) -> str:
    """The first few ids, for error messages."""
    ids = list(ids)
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")


@dataclass(frozen=True)
class TrialMetadata:
    """A 2021 LA/DF trial_metadata.txt (CM or ASV keys) as columns of shape (n,).

    `rows` is what the per-condition tables group spoof trials by: the attack (LA) or the vocoder type
    (DF); `codecs` are the metadata's codec values (``none``, ``low_mp3``, ...); `keys` are
    ``bonafide``/``spoof`` (CM) or ``target``/``nontarget``/``spoof`` (ASV).
    """

    path: Path
    track: str  # "la2021" or "df2021"
    speakers: np.ndarray  # the ASV enrolment model in the ASV metadata
    trials: np.ndarray
    codecs: np.ndarray
    rows: np.ndarray
    keys: np.ndarray
    subsets: np.ndarray
    line_numbers: np.ndarray

    def __len__(self) -> int:
        return self.trials.size

    def select(self, mask: np.ndarray) -> TrialMetadata:
        """The rows where `mask` is true."""
        arrays = {
            f.name: getattr(self, f.name)[mask]
            for f in dataclasses.fields(self)
            if f.name not in ("path", "track")
        }
        return TrialMetadata(path=self.path, track=self.track, **arrays)


def _metadata_track(path: Path, text: str, fmt: str) -> str:
    first = next(((i, line.split()) for i, line in enumerate(text.splitlines(), 1) if line.strip()), None)
    if first is None:
        raise UserError(f"{path}: the file is empty")
    line, tokens = first
    if len(tokens) < 8:
        raise UserError(
            f"{where(path, line)}: expected at least 8 columns '{_TRIAL_METADATA_LAYOUT}' "
            f"(2021 trial_metadata.txt), got {len(tokens)}"
        )
    if fmt in LAYOUTS:
        return fmt
    found = [track for track, layout in LAYOUTS.items() if tokens[2] in layout.codec_ids()]
    if not found:
        raise UserError(
            f"{where(path, line)}: codec '{tokens[2]}' is neither a 2021 LA nor a 2021 DF condition; "
            "is this a 2021 trial_metadata.txt?"
        )
    return found[0]


def read_trial_metadata(path: str | os.PathLike, fmt: str = "auto", asv: bool = False) -> TrialMetadata:
    """Read a 2021 trial_metadata.txt; `fmt` ``la2021``/``df2021`` or ``auto`` (from the codec column).

    With `asv` the keys are target/nontarget/spoof (keys/LA/ASV/trial_metadata.txt) and a
    (model, trial) pair may occur once; otherwise bonafide/spoof and trial ids are unique. A codec of the
    other track, a wrong key or a short line raises `UserError` naming the line.
    """
    path = Path(path)
    text = read_text(path, "metadata file")
    track = _metadata_track(path, text, fmt)
    ncols = 9 if track == "df2021" else 8  # DF: the vocoder type follows the subset
    layout = _TRIAL_METADATA_LAYOUT + (" vocoder" if track == "df2021" else "")
    table = split_table(path, text, ncols, layout, min_cols=ncols)
    codecs = dict(LAYOUTS[track].columns)
    check_values(table, 2, tuple(codecs), f"codec ({track[:2].upper()} 2021)")
    keys = check_values(table, 5, ASV_KEYS if asv else CM_KEYS, "ASV key" if asv else "key")
    speakers, trials = np.array(table.columns[0]), np.array(table.columns[1])
    if asv:
        pairs = np.char.add(np.char.add(speakers, " "), trials)
        check_unique(path, pairs.tolist(), table.line_numbers, what="(model, trial)")
    else:
        check_unique(path, table.columns[1], table.line_numbers, what="trial")
    return TrialMetadata(
        path=path,
        track=track,
        speakers=speakers,
        trials=trials,
        codecs=np.array(table.columns[2]),
        rows=np.array(table.columns[8 if track == "df2021" else 4]),
        keys=keys,
        subsets=np.array(table.columns[7]),
        line_numbers=table.line_numbers,
    )


def subset_name(subset: str) -> str:
    """The canonical subset name (``hidden_track`` -> ``hidden``); an unknown name raises `UserError`."""
    if subset not in SUBSET_CHOICES:
        raise UserError(f"unknown subset '{subset}'; expected one of {', '.join(SUBSET_CHOICES)}")
    return "hidden" if subset == "hidden_track" else subset


def subset_mask(meta: TrialMetadata, subset: str) -> np.ndarray:
    """Mask (len(meta),) of one evaluation phase (or all); a phase the file lacks raises `UserError`."""
    subset = subset_name(subset)
    if subset == "all":
        return np.ones(len(meta), dtype=bool)
    mask = meta.subsets == subset
    if not mask.any():
        present = ", ".join(sorted(set(meta.subsets.tolist())))
        raise UserError(
            f"{meta.path}: no trials of subset '{subset}' (this file has: {present}); "
            "is it the metadata of another phase?"
        )
    return mask


def require_scores(meta: TrialMetadata, aligned: np.ndarray, score_path: str | os.PathLike) -> np.ndarray:
    """`aligned` (one score per trial of `meta`, NaN = none) if every trial has a score, else `UserError`."""
    missing = np.isnan(aligned)
    if missing.any():
        raise UserError(
            f"{meta.path}: {int(missing.sum())} of {len(meta)} trials have no score in {score_path} "
            f"(first: {first_ids(meta.trials[missing][:4].tolist())})"
        )
    return aligned


def align_scores(
    meta: TrialMetadata, utt_ids: Sequence[str], scores: np.ndarray, score_path: str | os.PathLike
) -> np.ndarray:
    """The score of every metadata trial, shape (len(meta),), from a score file's (utt_ids, scores).

    A scored id that is not a trial of `meta` raises `UserError`; unscored trials are NaN (see
    `require_scores`).
    """
    index = dict(zip(meta.trials.tolist(), range(len(meta)), strict=True))
    positions = np.fromiter((index.get(u, -1) for u in utt_ids), dtype=np.int64, count=len(utt_ids))
    unknown = np.flatnonzero(positions < 0)
    if unknown.size:
        raise UserError(
            f"{score_path}: {unknown.size} utt_ids are not in the metadata {meta.path} "
            f"(first: {first_ids([utt_ids[k] for k in unknown[:4]])})"
        )
    aligned = np.full(len(meta), np.nan)
    aligned[positions] = np.asarray(scores, dtype=np.float64)
    return aligned


def align_asv_scores(meta: TrialMetadata, asv: ASVTrialScores) -> np.ndarray:
    """ASV scores joined to the ASV metadata on (model, trial), shape (len(meta),); NaN where unscored.

    A scored pair that is not in the metadata raises `UserError` (the files belong to different tracks).
    """
    index = {pair: k for k, pair in enumerate(zip(meta.speakers.tolist(), meta.trials.tolist(), strict=True))}
    pairs = zip(asv.models.tolist(), asv.trials.tolist(), strict=True)
    positions = np.fromiter((index.get(pair, -1) for pair in pairs), dtype=np.int64, count=asv.scores.size)
    unknown = np.flatnonzero(positions < 0)
    if unknown.size:
        k = int(unknown[0])
        raise UserError(
            f"{where(asv.path, asv.line_numbers[k])}: ({asv.models[k]}, {asv.trials[k]}) and "
            f"{unknown.size - 1} more (model, trial) pairs are not in the ASV metadata {meta.path}"
        )
    aligned = np.full(len(meta), np.nan)
    aligned[positions] = asv.scores
    return aligned


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.protocols",
        description="Print the counts per key and attack of CM protocol files.",
    )
    parser.add_argument(
        "protocols", nargs="+", type=Path, help="protocol files (2019 LA, 2021 trial_metadata, ITW)"
    )
    parser.add_argument(
        "--format", default="auto", choices=PROTOCOL_FORMATS, help="file format (default: auto)"
    )
    args = parser.parse_args(argv)
    for path in args.protocols:
        print(format_summary(protocol_summary(read_protocol(path, args.format)), title=str(path)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
