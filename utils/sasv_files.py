"""ASVspoof 5 Track 2 (SASV) score and key files, read fast and checked line by line (docs/evaluation.md).

Both have a header line and whitespace-separated columns (the official files use tabs; the package's
full key table uses spaces):

- scores: ``spk filename cm-score asv-score sasv-score``; ``-`` for every cm-score (or asv-score)
  when a system gives only a SASV score;
- keys: ``spk filename cm-label asv-label`` with cm-label ``bonafide``/``spoof`` and asv-label
  ``target``/``nontarget``/``spoof``; the package's full key table names the first two columns
  ``tar_spk_anon trial_anon`` and adds ``attack_anon``, ``codec`` and ``track_2_tag`` (rows tagged
  ``dummy`` are not evaluated), which give the per attack × codec tables.

A trial is identified by (spk, filename); scores and keys must hold the same trials.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from utils.errors import UserError, where
from utils.scorefiles import (
    ASV_KEYS,
    CM_KEYS,
    Table,
    check_unique,
    check_values,
    parse_scores,
    read_text,
    split_table,
)

SCORE_HEADER = ("spk", "filename", "cm-score", "asv-score", "sasv-score")
KEY_HEADER = ("spk", "filename", "cm-label", "asv-label")
#: Column names of the package's files -> ours.
ALIASES = {
    "tar_spk_anon": "spk",
    "trial_anon": "filename",
    "cm_label": "cm-label",
    "asv_label": "asv-label",
    "attack_anon": "attack",
}
DUMMY_TAG = ("track_2_tag", "dummy")


@dataclass(frozen=True)
class HeaderTable:
    """A headed table: column name -> values of the data rows, and the rows' 1-based line numbers."""

    path: Path
    columns: dict[str, list[str]]
    line_numbers: np.ndarray

    def table(self, name: str) -> Table:
        """One column as a `Table`, for the shared checks of utils/scorefiles.py."""
        return Table(self.path, [self.columns[name]], self.line_numbers)


def read_header_table(path: str | os.PathLike, required: tuple[str, ...], what: str) -> HeaderTable:
    """A whitespace-separated file with a header naming at least `required`; every row as wide as it."""
    path = Path(path)
    text = read_text(path, what)
    first = text.split("\n", 1)[0].split()
    names = [ALIASES.get(name, name) for name in first]
    missing = [name for name in required if name not in names]
    if missing:
        raise UserError(
            f"{where(path, 1)}: the header must name the columns '{' '.join(required)}' "
            f"(missing {', '.join(missing)}; got '{' '.join(first)}')"
        )
    # Millions of short-lived token lists: the cyclic garbage collector would rescan them over and
    # over (half the parse time) and can find no cycles among strings.
    gc.disable()
    try:
        table = split_table(path, text, len(names), " ".join(first))
    finally:
        gc.enable()
    if table.line_numbers.size < 2:
        raise UserError(f"{path}: no trials after the header")
    # (numpy str arrays from the byte tokenizer become lists of plain str)
    columns = {name: np.asarray(col[1:]).tolist() for name, col in zip(names, table.columns, strict=True)}
    return HeaderTable(path, columns, table.line_numbers[1:])


def trial_index(table: HeaderTable) -> dict[str, int]:
    """'spk filename' -> row of every row; a trial given twice raises `UserError` naming both lines."""
    ids = [f"{spk} {name}" for spk, name in zip(table.columns["spk"], table.columns["filename"], strict=True)]
    index = {trial: k for k, trial in enumerate(ids)}
    if len(index) < len(ids):
        check_unique(table.path, ids, table.line_numbers, what="trial (spk, filename)")
    return index


@dataclass(frozen=True)
class SasvTrials:
    """Scores joined to keys, in key-file order, dummy rows dropped: arrays of shape (n,).

    `cm` and `asv` are None when the score file gives only SASV scores; `attack` and `codec` are None
    when the key file has no such columns.
    """

    asv_label: np.ndarray
    cm_label: np.ndarray
    sasv: np.ndarray
    cm: np.ndarray | None
    asv: np.ndarray | None
    attack: np.ndarray | None
    codec: np.ndarray | None


def _optional_scores(scores: HeaderTable, name: str) -> np.ndarray | None:
    """Column `name` as float64, or None when every value is '-'."""
    if all(value == "-" for value in scores.columns[name]):
        return None
    return parse_scores(scores.table(name), 0)


def _join(scores: HeaderTable, keys: HeaderTable) -> np.ndarray:
    """Row of `scores` for each row of `keys`: int array (n_keys,); a trial in one file only is an error
    naming its line."""
    score_index, key_index = trial_index(scores), trial_index(keys)
    rows = np.fromiter(map(score_index.get, key_index, repeat(-1)), dtype=np.int64, count=len(key_index))
    if (rows < 0).any():
        k = int(np.argmax(rows < 0))
        trial = list(key_index)[k]
        line = where(keys.path, keys.line_numbers[k])
        raise UserError(f"{line}: trial '{trial}' has no score in {scores.path}")
    if len(score_index) != len(key_index):
        extra = np.ones(len(score_index), dtype=bool)
        extra[rows] = False
        k = int(np.argmax(extra))
        trial = list(score_index)[k]
        line = where(scores.path, scores.line_numbers[k])
        raise UserError(f"{line}: trial '{trial}' is not in {keys.path}")
    return rows


def _evaluated(keys: HeaderTable) -> np.ndarray:
    """Rows of the key file that are evaluated (not tagged dummy): bool (n,)."""
    if DUMMY_TAG[0] not in keys.columns:
        return np.ones(keys.line_numbers.size, dtype=bool)
    return np.array(keys.columns[DUMMY_TAG[0]]) != DUMMY_TAG[1]


def _labels(keys: HeaderTable) -> tuple[np.ndarray, np.ndarray]:
    """(asv-label, cm-label), checked: a trial is spoof for both or for neither."""
    asv = check_values(keys.table("asv-label"), 0, ASV_KEYS, "asv-label")
    cm = check_values(keys.table("cm-label"), 0, CM_KEYS, "cm-label")
    clash = (asv == "spoof") != (cm == "spoof")
    if clash.any():
        k = int(np.argmax(clash))
        raise UserError(
            f"{where(keys.path, keys.line_numbers[k])}: asv-label '{asv[k]}' contradicts cm-label '{cm[k]}'"
        )
    return asv, cm


def read_sasv(score_path: str | os.PathLike, key_path: str | os.PathLike) -> SasvTrials:
    """Read and join a SASV score file and its key file (module docstring for the layouts)."""
    scores = read_header_table(score_path, SCORE_HEADER, "SASV score file")
    keys = read_header_table(key_path, KEY_HEADER, "SASV key file")
    rows = _join(scores, keys)
    keep = _evaluated(keys)
    rows = rows[keep]
    asv_label, cm_label = _labels(keys)
    sasv = parse_scores(scores.table("sasv-score"), 0)
    cm, asv = _optional_scores(scores, "cm-score"), _optional_scores(scores, "asv-score")
    optional = {
        name: np.array(keys.columns[name])[keep] if name in keys.columns else None
        for name in ("attack", "codec")
    }
    return SasvTrials(
        asv_label=asv_label[keep],
        cm_label=cm_label[keep],
        sasv=sasv[rows],
        cm=None if cm is None else cm[rows],
        asv=None if asv is None else asv[rows],
        **optional,
    )


def read_asv_only(
    score_path: str | os.PathLike, key_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """The organisers' ASV scores (a headed file with spk, filename, asv-score) joined to the SASV keys.

    Returns (asv-label, asv-score) in key-file order, dummy rows dropped: arrays (n,).
    """
    scores = read_header_table(score_path, ("spk", "filename", "asv-score"), "ASV score file")
    keys = read_header_table(key_path, KEY_HEADER, "SASV key file")
    rows = _join(scores, keys)
    keep = _evaluated(keys)
    labels, _ = _labels(keys)
    return labels[keep], parse_scores(scores.table("asv-score"), 0)[rows[keep]]
