"""The ASVspoof 2021 keys' ``trial_metadata.txt``, shared by the 2021 LA and DF corpora (`la2021`,
`df2021`): the CM protocol, the per-trial codecs and evaluation phases of the per-condition tables, and
the joins of score files to it (Liu et al., "ASVspoof 2021: Towards spoofed and deepfake speech detection
in the wild", IEEE/ACM TASLP 31, 2023; the organisers' eval-package).

Columns (space-separated): ``speaker trial codec transmission attack key trim subset`` and, in DF, the
vocoder type, task, team, gender pair and language after them. ``subset`` is the evaluation phase
(``eval``, ``progress``, ``hidden``); ``key`` is bonafide/spoof in the CM keys and target/nontarget/spoof
in the LA ASV keys (``keys/LA/ASV/trial_metadata.txt``, where trial ids repeat across enrolment models).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from data.corpora.base import AsvFiles, Corpus, first_line
from data.protocols import ProtocolRow, extra_fields, first_ids, rows_from_columns
from utils.errors import UserError, where
from utils.scorefiles import (
    ASV_KEYS,
    CM_KEYS,
    ASVTrialScores,
    check_unique,
    check_unique_column,
    check_values,
    read_text,
    split_table,
)

LAYOUT = "speaker trial codec transmission attack key trim subset"
PROTOCOL_NAME = "2021 LA/DF trial_metadata.txt"
SUBSETS = ("eval", "progress", "hidden")
#: accepted subset names: the three phases, the stage-1 scripts' name for hidden, and all of them.
SUBSET_CHOICES = (*SUBSETS, "hidden_track", "all")


@dataclass(frozen=True)
class TrialMetadata:
    """A 2021 LA/DF trial_metadata.txt (CM or ASV keys) as columns of shape (n,).

    `rows` is what the per-condition tables group spoof trials by: the attack (LA) or the vocoder type
    (DF); `codecs` are the metadata's codec values (``none``, ``low_mp3``, ...); `keys` are
    ``bonafide``/``spoof`` (CM) or ``target``/``nontarget``/``spoof`` (ASV); `track` is the corpus name.
    """

    path: Path
    track: str
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


class TrialMetadataCorpus(Corpus):
    """A 2021 corpus: eval audio in ``ASVspoof2021_<track>_eval/flac/``, CM keys in
    ``keys/<track>/CM/trial_metadata.txt``; `track` is ``LA`` or ``DF`` and `conditions` holds the codec
    column's values (what tells the two apart). `row_column` is the column the tables' rows come from,
    `metadata_layout` the columns `read_metadata` requires."""

    track: ClassVar[str] = ""
    row_column: ClassVar[int] = 4
    metadata_layout: ClassVar[str] = LAYOUT
    partitions = ("eval",)
    fields = ("speaker", "attack", "codec", "subset")
    layout = LAYOUT
    protocol_name = PROTOCOL_NAME
    subsets = SUBSETS

    def protocol_path(self, root: str | os.PathLike, partition: str) -> Path:
        self.check_partition(partition)
        return Path(root) / "keys" / self.track / "CM" / "trial_metadata.txt"

    def audio_dir(self, root: str | os.PathLike, partition: str) -> Path:
        self.check_partition(partition)
        return Path(root) / f"ASVspoof2021_{self.track}_eval" / "flac"

    def detect(self, path: Path, first_line: str) -> bool:
        tokens = first_line.split()
        return len(tokens) >= 8 and "," not in first_line and tokens[2] in self.conditions.codec_ids()

    def parse(
        self, path: Path, text: str, root: Path | None = None, partition: str | None = None
    ) -> list[ProtocolRow]:
        table = split_table(path, text, 8, LAYOUT, min_cols=8)
        check_values(table, 5, CM_KEYS, "key")
        check_unique_column(table, 1)
        ids = table.columns[1]
        paths = None if root is None or partition is None else self.audio_paths(root, partition, ids)
        shared: dict = {}
        extra = [
            extra_fields({"codec": c, "subset": s}, shared)
            for c, s in zip(table.columns[2], table.columns[7], strict=True)
        ]
        return rows_from_columns(table.columns[0], ids, table.columns[4], table.columns[5], paths, extra)

    def read_metadata(self, path: str | os.PathLike, asv: bool = False) -> TrialMetadata:
        """Read a trial_metadata.txt of this track. With `asv` the keys are target/nontarget/spoof and a
        (model, trial) pair may occur once; otherwise bonafide/spoof and trial ids are unique. A codec of the
        other track, a wrong key or a short line raises `UserError` naming the line."""
        path = Path(path)
        text = read_text(path, "metadata file")
        _check_first_line(path, text)
        ncols = len(self.metadata_layout.split())
        table = split_table(path, text, ncols, self.metadata_layout, min_cols=ncols)
        check_values(table, 2, tuple(self.conditions.codec_ids()), f"codec ({self.conditions.label})")
        keys = check_values(table, 5, ASV_KEYS if asv else CM_KEYS, "ASV key" if asv else "key")
        speakers, trials = np.array(table.columns[0]), np.array(table.columns[1])
        if asv:
            pairs = np.char.add(np.char.add(speakers, " "), trials)
            check_unique(path, pairs.tolist(), table.line_numbers, what="(model, trial)")
        else:
            check_unique_column(table, 1, what="trial")
        return TrialMetadata(
            path=path,
            track=self.name,
            speakers=speakers,
            trials=trials,
            codecs=np.array(table.columns[2]),
            rows=np.array(table.columns[self.row_column]),
            keys=keys,
            subsets=np.array(table.columns[7]),
            line_numbers=table.line_numbers,
        )

    def asv_paths(self, root: str | os.PathLike, partition: str) -> AsvFiles | None:
        if self.asv_scores_hint is None or self.asv_metadata_hint is None or partition not in self.partitions:
            return None
        return AsvFiles(Path(root) / self.asv_scores_hint, Path(root) / self.asv_metadata_hint)


def _check_first_line(path: Path, text: str) -> None:
    line = first_line(text)
    if line is None:
        raise UserError(f"{path}: the file is empty")
    tokens = line.split()
    if len(tokens) < 8:
        number = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.strip())
        raise UserError(
            f"{where(path, number)}: expected at least 8 columns '{LAYOUT}' (2021 trial_metadata.txt), "
            f"got {len(tokens)}"
        )


# --- evaluation phases and the joins of score files to the metadata -------------------------------------


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
