"""CM and ASV score files as found in the wild, read fast and checked line by line.

CM score file layouts (whitespace-separated, one trial per line; higher score = more bona fide):

- ``id-score``: ``utt_id score`` (no keys: evaluate it against a protocol);
- ``id-attack-key-score``: ``utt_id attack key score`` (official ASVspoof baselines, AASIST, ours);
- ``idattack-score-key``: ``uttid_attack score key`` as written by the published XLS-R-LCNN code,
  e.g. ``LA_E_2834763_A11 1.07e-08 spoof`` and ``LA_E_5849185_- 0.99 bonafide``; the attack is the
  part after the last underscore;
- ``asvspoof5``: the ASVspoof 5 evaluation package's tab-separated file with the header
  ``filename	cm-score`` (no keys, like ``id-score``).

ASV score files (the organisers' ``ASVspoof2019.LA.asv.*.gi.trl.scores.txt``): ``cm_key asv_key score``
with cm_key ``bonafide`` or an attack id and asv_key ``target``, ``nontarget`` or ``spoof``.

Parsing is vectorised (numpy converts a whole column at once); only when that fails does a slow
pass look for the offending line, so every error still names ``file:line``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import UserError, where
from utils.io import atomic_path

BONAFIDE, SPOOF = "bonafide", "spoof"
CM_KEYS = (BONAFIDE, SPOOF)
ASV_KEYS = ("target", "nontarget", "spoof")

#: layout name -> the columns of one line, as shown in error messages.
SCORE_LAYOUTS = {
    "id-score": "utt_id score",
    "id-attack-key-score": "utt_id attack key score",
    "idattack-score-key": "uttid_attack score key",
    "asvspoof5": "filename cm-score (header line, tab-separated)",
}
#: the header of the ASVspoof 5 evaluation package's CM score files
ASVSPOOF5_SCORE_HEADER = ("filename", "cm-score")
SCORE_FORMATS = ("auto", *SCORE_LAYOUTS)

#: Attack names of the pre-release 2019 LA dev protocol, still found in baseline score files (e.g. the
#: CQCC-GMM dev scores), and the released names they correspond to (checked against the dev protocol).
LEGACY_ATTACK_IDS = {"SS_1": "A01", "SS_2": "A02", "SS_4": "A03", "US_1": "A04", "VC_1": "A05", "VC_4": "A06"}


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """Read a UTF-8 text file; a missing, unreadable or non-text file raises `UserError`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a {what}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from exc


@dataclass(frozen=True)
class Table:
    """Whitespace-separated columns of a text file, blank lines skipped."""

    path: Path
    columns: list[Sequence[str]]
    line_numbers: np.ndarray  # (n_rows,) 1-based line number of each row


#: characters that str.splitlines() or str.split() treat specially beyond space, tab and newline
_ODD_WHITESPACE = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")


def token_counts(text: str) -> np.ndarray | None:
    """Whitespace-separated tokens on each line of ``text`` as ``str.splitlines()`` counts lines, (n_lines,);
    computed on the bytes with numpy (a million lines in a fraction of a second). None for text that
    is not plain ASCII with spaces, tabs and newlines (the caller splits the lines itself)."""
    if not text.isascii() or any(c in text for c in _ODD_WHITESPACE):
        return None
    b = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    is_space = (b == 32) | (b == 9) | (b == 10)
    starts = ~is_space
    starts[1:] &= is_space[:-1]
    edges = np.concatenate(([0], np.flatnonzero(b == 10) + 1))
    if edges[-1] == b.size:  # a final newline ends the last line, it does not open another
        edges = edges[:-1]
    # Tokens starting before each line's first byte, then differences: one count per line.
    before = np.searchsorted(np.flatnonzero(starts), np.append(edges, b.size))
    return np.diff(before).astype(np.int64)


def split_table(path: Path, text: str, ncols: int, layout: str, min_cols: int | None = None) -> Table:
    """Split `text` into `ncols` columns (rows with fewer than `min_cols`, or a different count, are errors).

    With `min_cols`, rows may have any count ≥ `min_cols` and only the first `ncols` columns are kept.
    """
    counts = None if min_cols is not None else token_counts(text)
    if counts is None:
        # map() keeps the per-line work in C.
        rows = list(map(str.split, text.splitlines()))
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    else:
        rows, lengths = [], counts
    line_numbers = np.flatnonzero(lengths) + 1
    if line_numbers.size == 0:
        raise UserError(f"{path}: the file is empty")
    if line_numbers.size < lengths.size:
        rows = [rows[i - 1] for i in line_numbers] if rows else rows
        lengths = lengths[line_numbers - 1]
    bad = lengths < min_cols if min_cols is not None else lengths != ncols
    if bad.any():
        k = int(np.argmax(bad))
        expected = f"at least {min_cols}" if min_cols is not None else f"{ncols}"
        raise UserError(
            f"{where(path, line_numbers[k])}: expected {expected} columns '{layout}', got {lengths[k]}"
        )
    if min_cols is not None:
        return Table(path, list(zip(*(tokens[:ncols] for tokens in rows), strict=True)), line_numbers)
    # Every row has exactly ncols tokens, so column c is every ncols-th token of the whole text.
    tokens = text.split()
    return Table(path, [tokens[c::ncols] for c in range(ncols)], line_numbers)


def parse_scores(table: Table, col: int) -> np.ndarray:
    """Column `col` as float64; a non-numeric or non-finite value raises `UserError` naming its line."""
    values = table.columns[col]
    try:
        scores = np.array(values, dtype=np.float64)
    except ValueError:
        for k, value in enumerate(values):
            try:
                float(value)
            except ValueError:
                raise UserError(
                    f"{where(table.path, table.line_numbers[k])}: score '{value}' is not a number"
                ) from None
        raise  # numpy and float() disagree on some value: not a user error
    finite = np.isfinite(scores)
    if not finite.all():
        k = int(np.argmin(finite))
        raise UserError(f"{where(table.path, table.line_numbers[k])}: score '{values[k]}' is not finite")
    return scores


def check_values(table: Table, col: int, allowed: Sequence[str], name: str) -> np.ndarray:
    """Column `col` as a str array whose values must all be in `allowed`."""
    values = np.array(table.columns[col])
    ok = np.isin(values, allowed)
    if not ok.all():
        k = int(np.argmin(ok))
        raise UserError(
            f"{where(table.path, table.line_numbers[k])}: {name} '{values[k]}' "
            f"is not one of {', '.join(allowed)}"
        )
    return values


def check_unique(path: Path, ids: Sequence[str], line_numbers: np.ndarray, what: str = "utt_id") -> None:
    """Raise `UserError` naming both lines if an id occurs twice."""
    if len(set(ids)) == len(ids):
        return
    first: dict[str, int] = {}
    for k, utt in enumerate(ids):
        if utt in first:
            raise UserError(
                f"{where(path, line_numbers[k])}: duplicate {what} '{utt}' "
                f"(first on line {line_numbers[first[utt]]})"
            )
        first[utt] = k


@dataclass(frozen=True)
class CMScores:
    """A CM score file: arrays of shape (n,); `attacks`/`keys` are None for the ``id-score`` layout."""

    path: Path
    fmt: str
    utt_ids: np.ndarray
    scores: np.ndarray  # float64, higher = more bona fide
    attacks: np.ndarray | None
    keys: np.ndarray | None
    line_numbers: np.ndarray

    def __len__(self) -> int:
        return self.scores.size


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def detect_format(path: Path, first_line: int, tokens: list[str]) -> str:
    """Guess the CM score layout from the first non-blank line's tokens."""
    if tuple(tokens) == ASVSPOOF5_SCORE_HEADER:
        return "asvspoof5"
    if len(tokens) == 2:
        return "id-score"
    if len(tokens) == 4:
        return "id-attack-key-score"
    if len(tokens) == 3 and tokens[2] in CM_KEYS and _is_number(tokens[1]):
        return "idattack-score-key"
    layouts = "; ".join(f"'{cols}'" for cols in SCORE_LAYOUTS.values())
    raise UserError(
        f"{where(path, first_line)}: cannot tell the score layout from {len(tokens)} columns "
        f"'{' '.join(tokens)}'; expected one of {layouts} (or pass the format explicitly)"
    )


def read_scores(path: str | os.PathLike, fmt: str = "auto") -> CMScores:
    """Read a CM score file in any of `SCORE_FORMATS` (auto-detected from the first line by default)."""
    path = Path(path)
    if fmt not in SCORE_FORMATS:
        raise UserError(f"unknown score format '{fmt}'; expected one of {', '.join(SCORE_FORMATS)}")
    text = read_text(path, "score file")
    if fmt == "auto":
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                fmt = detect_format(path, i, line.split())
                break
        else:
            raise UserError(f"{path}: the file is empty")
    layout = SCORE_LAYOUTS[fmt]
    if fmt == "asvspoof5":
        text = _drop_header(path, text, ASVSPOOF5_SCORE_HEADER)
        layout = "\t".join(ASVSPOOF5_SCORE_HEADER)
    table = split_table(path, text, len(layout.split()), layout)
    if fmt in ("id-score", "asvspoof5"):
        ids, attacks, keys, scores = table.columns[0], None, None, parse_scores(table, 1)
    elif fmt == "id-attack-key-score":
        ids, attacks = table.columns[0], np.array(table.columns[1])
        keys, scores = check_values(table, 2, CM_KEYS, "key"), parse_scores(table, 3)
    else:
        parts = [utt.rsplit("_", 1) for utt in table.columns[0]]
        for k, part in enumerate(parts):
            if len(part) != 2 or not part[0] or not part[1]:
                raise UserError(
                    f"{where(path, table.line_numbers[k])}: utt_id '{table.columns[0][k]}' has no '_attack' "
                    f"suffix, expected '{layout}'"
                )
        ids = [part[0] for part in parts]
        attacks = np.array([part[1] for part in parts])
        scores, keys = parse_scores(table, 1), check_values(table, 2, CM_KEYS, "key")
    check_unique(path, ids, table.line_numbers)
    return CMScores(path, fmt, np.array(ids), scores, attacks, keys, table.line_numbers)


def _drop_header(path: Path, text: str, header: tuple[str, ...]) -> str:
    """``text`` with its first non-blank line, which must be ``header``, blanked (line numbers are kept)."""
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise UserError(f"{path}: the file is empty")
    if tuple(lines[first].split()) != header:
        raise UserError(f"{where(path, first + 1)}: expected the header '{chr(9).join(header)}'")
    lines[first] = ""
    if not any(line.strip() for line in lines):
        raise UserError(f"{where(path, first + 1)}: no scores after the header")
    return "\n".join(lines)


def write_asvspoof5_scores(path: str | os.PathLike, utt_ids: Sequence[str], scores: np.ndarray) -> None:
    """Write the ASVspoof 5 evaluation package's CM score file atomically: the header ``filename	cm-score``
    then ``utt_id<TAB>score`` lines (full float64 precision)."""
    values = _score_strings(utt_ids, scores)
    lines = ["\t".join(ASVSPOOF5_SCORE_HEADER)]
    lines += [f"{u}\t{s}" for u, s in zip(utt_ids, values, strict=True)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def rename_legacy_attacks(attacks: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map pre-release 2019 LA attack names (SS_1, ...) to the released ones (A01, ...).

    Returns the new attack array and the legacy names that were found (empty if none).
    """
    found = sorted(set(np.unique(attacks).tolist()) & LEGACY_ATTACK_IDS.keys())
    if not found:
        return attacks, []
    return np.array([LEGACY_ATTACK_IDS.get(a, a) for a in attacks.tolist()]), found


def _score_strings(utt_ids: Sequence[str], scores: Sequence[float] | np.ndarray) -> list[str]:
    """The scores as shortest round-trip strings; one per utt_id, all finite."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(utt_ids) != scores.size:
        raise ValueError(f"{len(utt_ids)} utt_ids but {scores.size} scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError("refusing to write NaN or inf scores")
    return [repr(s) for s in scores.tolist()]


def write_scores(
    path: str | os.PathLike,
    utt_ids: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    attacks: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> None:
    """Write a CM score file atomically: ``utt_id attack key score`` lines, or ``utt_id score`` without keys.

    Scores are written with full float64 precision (shortest round-trip repr).
    """
    lines = score_lines(utt_ids, scores, attacks, keys)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def score_lines(
    utt_ids: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    attacks: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> list[str]:
    """The lines of `write_scores` (without newlines): ``utt_id attack key score``, or ``utt_id score``."""
    values = _score_strings(utt_ids, scores)
    if (attacks is None) != (keys is None):
        raise ValueError("give both attacks and keys, or neither")
    if attacks is None or keys is None:
        return [f"{u} {s}" for u, s in zip(utt_ids, values, strict=True)]
    return [f"{u} {a} {k} {s}" for u, a, k, s in zip(utt_ids, attacks, keys, values, strict=True)]


@dataclass(frozen=True)
class ASVScores:
    """An ASV score file: arrays of shape (n,)."""

    path: Path
    cm_keys: np.ndarray  # "bonafide" or the attack id
    asv_keys: np.ndarray  # "target", "nontarget" or "spoof"
    scores: np.ndarray  # float64

    def of(self, asv_key: str) -> np.ndarray:
        """Scores of one ASV trial type: "target", "nontarget" or "spoof"."""
        return self.scores[self.asv_keys == asv_key]

    def spoof_of(self, attack: str) -> np.ndarray:
        """ASV scores of the spoof trials of one attack."""
        return self.scores[(self.asv_keys == "spoof") & (self.cm_keys == attack)]


def read_asv_scores(path: str | os.PathLike) -> ASVScores:
    """Read an ASV score file ``cm_key asv_key score``; it must have target and nontarget trials."""
    path = Path(path)
    table = split_table(path, read_text(path, "ASV score file"), 3, "cm_key asv_key score")
    asv_keys = check_values(table, 1, ASV_KEYS, "asv_key")
    scores = parse_scores(table, 2)
    for needed in ("target", "nontarget"):
        if not np.any(asv_keys == needed):
            raise UserError(f"{path}: no '{needed}' trials; the ASV EER needs target and nontarget scores")
    return ASVScores(path, np.array(table.columns[0]), asv_keys, scores)


@dataclass(frozen=True)
class ASVTrialScores:
    """A 2021 ASV score file ``model trial score`` (keys/LA/ASV/ASVTorch_Kaldi/score.txt); arrays (n,)."""

    path: Path
    models: np.ndarray  # enrolment model (claimed speaker)
    trials: np.ndarray
    scores: np.ndarray  # float64
    line_numbers: np.ndarray


def read_asv_trial_scores(path: str | os.PathLike) -> ASVTrialScores:
    """Read a 2021 ASV score file ``model trial score``; a (model, trial) pair may occur once."""
    path = Path(path)
    table = split_table(path, read_text(path, "ASV score file"), 3, "model trial score")
    scores = parse_scores(table, 2)
    models, trials = np.array(table.columns[0]), np.array(table.columns[1])
    pairs = np.char.add(np.char.add(models, " "), trials)
    check_unique(path, pairs.tolist(), table.line_numbers, what="(model, trial)")
    return ASVTrialScores(path, models, trials, scores, table.line_numbers)
