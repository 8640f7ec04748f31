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

import codecs
import os
import re
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


def read_padded(path: str | os.PathLike, what: str = "file") -> np.ndarray | None:
    """A regular file's bytes followed by 8 zero bytes, (n_bytes + 8,) uint8, read straight into one array
    (no decoding: `tokenize` takes it as it is); None for other files (pipes: read them with `read_text`).
    A missing or unreadable file raises `UserError` as in `read_text`."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        read_text(path, what)  # raises the same message
    if not path.is_file():
        return None  # (not read: a pipe gives its bytes once)
    try:
        with path.open("rb", buffering=0) as handle:
            n = os.fstat(handle.fileno()).st_size
            data = np.empty(n + 8, dtype=np.uint8)
            data[n:] = 0
            got = handle.readinto(memoryview(data)[:n])
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    return data if got == n else None


def read_head(path: str | os.PathLike, what: str = "file", chunk: int = 1 << 16) -> str:
    """The start of a UTF-8 text file: the chunks read until its first non-blank line has ended (all of it
    if there is none), enough to tell a file's format without reading a million lines. A missing or
    unreadable file, or bytes that are not UTF-8 in that part, raise `UserError` as in `read_text`."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        read_text(path, what)  # raises the same message
    decoder = codecs.getincrementaldecoder("utf-8")()
    text = ""
    try:
        with path.open("rb") as handle:
            while True:
                data = handle.read(chunk)
                text += decoder.decode(data, final=not data)
                span = first_line_span(text)
                if not data or (span is not None and span[1] < len(text)):
                    return text
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        return read_text(path, what)  # raises, naming the first byte that is not UTF-8


_NONBLANK = re.compile(r"\S")


def first_line_span(text: str, start: int = 0) -> tuple[int, int] | None:
    """(start, end) offsets of the first newline-delimited line of ``text`` from ``start`` on that is not
    blank (end excludes the newline), without splitting the rest; None if there is none."""
    found = _NONBLANK.search(text, start)
    if found is None:
        return None
    end = text.find("\n", found.start())
    return text.rfind("\n", 0, found.start()) + 1, len(text) if end < 0 else end


@dataclass(frozen=True)
class Tokens:
    """The whitespace-separated tokens of a plain ASCII text, located on its bytes (no Python strings)."""

    data: np.ndarray  # (n_bytes + 8,) uint8: the text, zero-padded
    starts: np.ndarray  # (n_tokens,) offset of each token's first byte
    ends: np.ndarray  # (n_tokens,) offset just past each token's last byte
    newlines: np.ndarray  # (n_newlines,) offset of each newline

    @property
    def counts(self) -> np.ndarray:
        """Tokens on each line (n_lines,), lines as str.splitlines() counts them."""
        lines = np.append(0, self.newlines + 1)
        if lines[-1] == self.data.size - 8:  # a final newline ends the last line, it does not open another
            lines = lines[:-1]
        # Tokens starting before each line's first byte, then differences: one count per line.
        return np.diff(np.searchsorted(self.starts, np.append(lines, self.data.size - 8))).astype(np.int64)

    def row_lines(self, ncols: int) -> np.ndarray | None:
        """1-based line number of each row (n_rows,) when every non-blank line has exactly ``ncols`` tokens,
        else None. Checked on the rows' first and last tokens only: each row on one line, one row a line."""
        if self.starts.size % ncols:
            return None
        consecutive = self._consecutive_rows(ncols)
        if consecutive is not None:
            return consecutive
        first = np.searchsorted(self.newlines, self.starts[::ncols])
        last = np.searchsorted(self.newlines, self.ends[ncols - 1 :: ncols] - 1)
        if not np.array_equal(first, last) or np.any(first[1:] == first[:-1]):
            return None
        return first + 1

    def _consecutive_rows(self, ncols: int) -> np.ndarray | None:
        """`row_lines` when the rows fill consecutive lines (blank lines only before the first and after
        the last), checked with one comparison per row: row r lies between newlines r−1 and r counted from
        the first row's line; None otherwise."""
        n_rows = self.starts.size // ncols
        skip = int(np.searchsorted(self.newlines, self.starts[0]))  # newlines before the first row
        after = self.newlines[skip : skip + n_rows]
        if n_rows == 0 or after.size < n_rows - 1:
            return None
        opens_after = np.all(self.starts[ncols::ncols] > after[: n_rows - 1])
        if not opens_after or not np.all(self.ends[ncols - 1 :: ncols][: after.size] <= after):
            return None
        return np.arange(skip + 1, skip + n_rows + 1)


def tokenize(text: str | np.ndarray) -> Tokens | None:
    """`Tokens` of ``text`` (a str, or a file's bytes as `read_padded` gives them), computed with numpy (a
    million lines in a fraction of a second); None for text that is not plain ASCII with spaces, tabs and
    newlines (the caller splits the lines itself)."""
    if isinstance(text, np.ndarray):
        data, n = text, text.size - 8
    elif text.isascii():
        n = len(text)  # (one byte per character)
        data = np.empty(n + 8, dtype=np.uint8)  # zero padding: a column reads whole 8-byte words from a token
        data[n:] = 0
    else:
        return None
    offset = np.int32 if n < 2**31 - 8 else np.int64
    # Chunks small enough for the cache, through buffers reused: no temporaries the size of the text, and
    # the token edges written straight into one array (pages it does not reach are never touched).
    chunk = min(_TOKENIZE_CHUNK, max(n, 1))
    space = np.empty(chunk + 1, dtype=bool)  # space[0]: whether the byte before the chunk is whitespace
    mask = np.empty(chunk, dtype=bool)
    edge = np.empty(n + 1, dtype=offset)
    n_edges, newlines, controls = 0, [], 0
    space[0] = True
    for lo in range(0, n, chunk):
        part = data[lo : min(lo + chunk, n)]
        m, hit = part.size, mask[: part.size]
        if data is not text:
            part[:] = np.frombuffer(text[lo : lo + m].encode("ascii"), dtype=np.uint8)  # encoded in place
        elif np.count_nonzero(np.greater(part, 127, out=hit)):
            return None  # not ASCII
        # Control characters other than tab and newline (\r, \x0b, \x1c, NUL, ...) are whitespace or line
        # breaks to str.split()/splitlines() in some cases and not others: leave such text to them.
        controls += np.count_nonzero(np.less(part, 32, out=hit))
        found = np.flatnonzero(np.equal(part, 10, out=hit))
        newlines.append((found + lo).astype(offset))
        controls -= found.size + np.count_nonzero(np.equal(part, 9, out=hit))
        # Bounded by whitespace on both sides, a change of class marks a token's start, then its end.
        np.less_equal(part, 32, out=space[1 : m + 1])
        found = np.flatnonzero(np.not_equal(space[1 : m + 1], space[:m], out=hit))
        np.add(found, lo, out=edge[n_edges : n_edges + found.size], casting="unsafe")
        n_edges += found.size
        space[0] = space[m]
    if controls:
        return None
    if not space[0]:  # a token running to the end closes there
        edge[n_edges] = n
        n_edges += 1
    edge = edge[:n_edges]
    return Tokens(data, edge[0::2], edge[1::2], np.concatenate([np.zeros(0, offset), *newlines]))


#: bytes of text per tokenizer pass
_TOKENIZE_CHUNK = 1 << 18


def token_counts(text: str) -> np.ndarray | None:
    """Whitespace-separated tokens on each line of ``text`` as ``str.splitlines()`` counts lines, (n_lines,);
    None where `tokenize` gives None."""
    tokens = tokenize(text)
    return None if tokens is None else tokens.counts


class TokenColumns(Sequence):
    """The columns of a table whose every row has ``ncols`` tokens, each gathered from the bytes on first
    use: ``columns[c]`` is a str array (n_rows,), `raw` the same as bytes (for numeric conversion)."""

    def __init__(self, tokens: Tokens, ncols: int):
        self._tokens = tokens
        self._ncols = ncols
        self._words: dict[int, np.ndarray] = {}  # (n_rows, n_words) little-endian uint64, zero-padded
        self._bytes: dict[int, np.ndarray] = {}
        self._str: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._ncols

    def _chars(self, c: int) -> np.ndarray:
        """Column c as a (n_rows, width) uint8 matrix, zero after each token's end."""
        if c not in self._bytes:
            t = self._tokens
            # contiguous copies: every pass below would otherwise read a cache line per token
            starts = np.ascontiguousarray(t.starts[c :: self._ncols])
            lengths = t.ends[c :: self._ncols] - starts
            width = max(int(lengths.max()) if lengths.size else 1, 1)
            n_words = (width + 7) // 8
            # Eight bytes at a time: a little-endian uint64 view of the bytes at every offset.
            at = np.ndarray((t.data.size - 7,), dtype="<u8", buffer=t.data, strides=(1,))
            words = np.empty((starts.size, n_words), dtype="<u8")
            for w in range(n_words):
                keep = _KEEP_BYTES[np.clip(lengths - 8 * w, 0, 8)]  # the token's bytes in word w
                # (a shorter token's word w is all masked: clip its offset into the text)
                offsets = starts if w == 0 else np.minimum(starts + 8 * w, at.size - 1)
                np.bitwise_and(at[offsets], keep, out=words[:, w])
            self._words[c] = words
            self._bytes[c] = words.view(np.uint8).reshape(starts.size, 8 * n_words)[:, :width]
        return self._bytes[c]

    def matches(self, c: int, allowed: Sequence[str]) -> np.ndarray | None:
        """Whether each token of column c is one of ``allowed`` (n_rows,) bool, compared as whole 8-byte
        words; None where a token or a value is longer than 8 bytes or a value is not ASCII."""
        if not all(v.isascii() and len(v) <= 8 for v in allowed):
            return None
        chars = self._chars(c)
        if chars.shape[1] > 8:
            return None
        word = self._words[c][:, 0]
        ok = np.zeros(word.size, dtype=bool)
        for value in allowed:
            ok |= word == int.from_bytes(value.encode().ljust(8, b"\0"), "little")
        return ok

    def split_last(self, c: int, sep: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Column c split at the last ``sep`` (one ASCII character): str arrays before and after it, as
        ``str.rsplit(sep, 1)``; None where a token has no ``sep`` or an empty side."""
        chars = self._chars(c)
        width = chars.shape[1]
        hit = chars == ord(sep)
        last = width - 1 - np.argmax(hit[:, ::-1], axis=1)
        lengths = np.count_nonzero(chars, axis=1)  # tokens hold no NUL
        if not hit.any(axis=1).all() or np.any(last == 0) or np.any(last == lengths - 1):
            return None
        cols = np.arange(width)
        before = np.where(cols < last[:, None], chars, 0)
        shifted = last[:, None] + 1 + cols
        after = np.take_along_axis(chars, np.minimum(shifted, width - 1), axis=1)
        after[shifted >= lengths[:, None]] = 0
        return _as_str(before), _as_str(after)

    def floats(self, c: int) -> np.ndarray:
        """Column c as float64 (n_rows,), each value the correctly rounded one `float()` gives; a token that
        is not a number raises ValueError. Plain decimals (``-12.5``) whose digits form an integer below 2^53
        are exactly ``digits / 10^k`` (one correctly rounded division, both operands exact: Clinger's fast
        path); other tokens (exponents, 17 significant digits, ``nan``) go through numpy's own conversion."""
        chars = self._chars(c)
        if chars.shape[1] > 64:  # (the counts below are uint8)
            return self.raw(c).astype(np.float64)
        t = np.ascontiguousarray(chars.T)  # (width, n_rows): one character position per row
        digit = (t >= 48) & (t <= 57)
        point = t == 46
        ok = digit | point | (t == 0)
        ok[0] |= (t[0] == 45) | (t[0] == 43)  # a sign, first only
        after_point = point.copy()
        for j in range(1, t.shape[0]):
            after_point[j] |= after_point[j - 1]
        n_digits = digit.sum(axis=0, dtype=np.uint8)
        n_after = (digit & after_point).sum(axis=0, dtype=np.uint8)  # digits after the point
        # Horner's rule over the digit positions; a point, sign or padding multiplies by 1 and adds 0.
        step = digit.view(np.uint8) * np.uint8(9) + np.uint8(1)
        units = t - np.uint8(48)
        units *= digit
        values = units[0].astype(np.int64)
        for j in range(1, t.shape[0]):
            values *= step[j]
            values += units[j]
        plain = ok.all(axis=0) & (point.sum(axis=0, dtype=np.uint8) <= 1) & (n_digits > 0) & (n_digits <= 18)
        plain &= (values <= 2**53) & (n_after < _POW10.size)
        out = values / _POW10[np.minimum(n_after, _POW10.size - 1)]
        out *= np.where(t[0] == 45, -1.0, 1.0)
        if not plain.all():
            out[~plain] = self.raw(c)[~plain].astype(np.float64)
        return out

    def hashes(self, c: int) -> np.ndarray:
        """A 64-bit hash (n_rows,) uint64 of each token of column c, from its 8-byte words: equal tokens have
        equal hashes (different ones almost never: callers check)."""
        self._chars(c)
        words = self._words[c]
        hashes = words[:, 0].copy()
        for w in range(1, words.shape[1]):
            hashes *= np.uint64(1_000_003)
            hashes += words[:, w]
        return hashes

    def raw(self, c: int) -> np.ndarray:
        """Column c as a bytes array (n_rows,)."""
        chars = np.ascontiguousarray(self._chars(c))
        return chars.view(f"S{chars.shape[1]}").ravel()

    def __getitem__(self, c):  # type: ignore[override]
        if isinstance(c, slice):
            return [self[k] for k in range(self._ncols)[c]]
        if not -self._ncols <= c < self._ncols:
            raise IndexError(c)
        c %= self._ncols
        if c not in self._str:
            self._str[c] = _as_str(self._chars(c))
        return self._str[c]


#: masks keeping the first k bytes (k = 0..8) of a little-endian uint64 word
_KEEP_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype="<u8")
#: the powers of ten that float64 holds exactly
_POW10 = 10.0 ** np.arange(23)


def _as_str(chars: np.ndarray) -> np.ndarray:
    """A (n, width) uint8 matrix of ASCII codes, zero-padded, as a str array (n,)."""
    return chars.astype(np.uint32).view(f"U{chars.shape[1]}").ravel()


@dataclass(frozen=True)
class Table:
    """Whitespace-separated columns of a text file, blank lines skipped."""

    path: Path
    columns: Sequence[Sequence[str]]
    line_numbers: np.ndarray  # (n_rows,) 1-based line number of each row


def split_padded(path: Path, data: np.ndarray | None, ncols: int, skip_rows: int = 0) -> Table | None:
    """The fast case of `split_table` on a file's bytes (`read_padded`): a `Table` of the rows after the
    first ``skip_rows`` (e.g. a header of ``ncols`` tokens) when the bytes are plain ASCII and every
    non-blank line holds ``ncols`` tokens; None otherwise (the caller splits the text, which names any bad
    line)."""
    tokens = None if data is None else tokenize(data)
    return None if tokens is None else _regular_table(path, tokens, ncols, skip_rows)


def _regular_table(path: Path, tokens: Tokens, ncols: int, skip_rows: int = 0) -> Table | None:
    """The rows of ``tokens`` after the first ``skip_rows`` when every row has ``ncols`` tokens on a line of
    its own (then column c is every ncols-th token of the whole text), at least one row left; else None."""
    rows_at = tokens.row_lines(ncols)
    if rows_at is None or rows_at.size <= skip_rows:
        return None
    if skip_rows:
        skip = skip_rows * ncols
        tokens = Tokens(tokens.data, tokens.starts[skip:], tokens.ends[skip:], tokens.newlines)
    return Table(path, TokenColumns(tokens, ncols), rows_at[skip_rows:])


def split_table(path: Path, text: str, ncols: int, layout: str, min_cols: int | None = None) -> Table:
    """Split `text` into `ncols` columns (rows with fewer than `min_cols`, or a different count, are errors).

    With `min_cols`, rows may have any count ≥ `min_cols` and only the first `ncols` columns are kept.
    Plain ASCII text without `min_cols` gives `TokenColumns` (str arrays), any other lists of str.
    """
    tokens = None if min_cols is not None else tokenize(text)
    if tokens is not None:
        table = _regular_table(path, tokens, ncols)
        if table is not None:
            return table
    if tokens is None:
        # map() keeps the per-line work in C.
        rows = list(map(str.split, text.splitlines()))
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    else:
        rows, lengths = [], tokens.counts
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
    words = text.split()
    return Table(path, [words[c::ncols] for c in range(ncols)], line_numbers)


def hash_strings(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash (n,) uint64 of each string of a str array (n,), from its characters: equal strings
    have equal hashes (different ones almost never: callers check)."""
    values = np.ascontiguousarray(values)
    if values.dtype.itemsize == 0:
        return np.zeros(values.size, dtype=np.uint64)
    # The characters read as 64-bit words (two UCS-4 characters each) where the width allows, so the
    # polynomial h·P + word, wrapping modulo 2^64, takes half as many passes.
    word = np.uint64 if values.dtype.itemsize % 8 == 0 else np.uint32
    chars = values.view(word).reshape(values.size, -1)
    hashes = chars[:, 0].astype(np.uint64)
    for k in range(1, chars.shape[1]):
        hashes *= np.uint64(1_000_003)
        hashes += chars[:, k]
    return hashes


def parse_scores(table: Table, col: int) -> np.ndarray:
    """Column `col` as float64; a non-numeric or non-finite value raises `UserError` naming its line."""
    values = table.columns[col]
    try:
        if isinstance(table.columns, TokenColumns):
            # bytes to float64 without Python objects: the same correctly rounded values as float()
            scores = table.columns.floats(col)
        else:
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
    values = np.asarray(table.columns[col])
    ok = table.columns.matches(col, allowed) if isinstance(table.columns, TokenColumns) else None
    if ok is None:
        ok = np.zeros(values.shape, dtype=bool)
        for value in allowed:  # a few allowed values: one comparison each (np.isin would sort the strings)
            ok |= values == value
    if not ok.all():
        k = int(np.argmin(ok))
        raise UserError(
            f"{where(table.path, table.line_numbers[k])}: {name} '{values[k]}' "
            f"is not one of {', '.join(allowed)}"
        )
    return values


def check_unique_column(table: Table, col: int, what: str = "utt_id") -> None:
    """`check_unique` of column ``col`` of ``table`` (hashed from its bytes when it has them)."""
    hashes = table.columns.hashes(col) if isinstance(table.columns, TokenColumns) else None
    check_unique(table.path, table.columns[col], table.line_numbers, what, hashes)


def check_unique(
    path: Path,
    ids: Sequence[str],
    line_numbers: np.ndarray,
    what: str = "utt_id",
    hashes: np.ndarray | None = None,
) -> None:
    """Raise `UserError` naming both lines if an id occurs twice (``hashes``: of the ids, if known)."""
    if hashes is None and isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
        hashes = hash_strings(ids)
    if hashes is not None:
        # Sorted hashes: no two equal means no two equal ids (equal hashes: the exact check below).
        hashes = np.sort(hashes)
        if not np.any(hashes[1:] == hashes[:-1]):
            return
        ids = np.asarray(ids).tolist()
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
    data = read_padded(path, "score file")
    # (a pipe is read once, as text)
    head = read_head(path, "score file") if data is not None else read_text(path, "score file")
    span = first_line_span(head)
    if fmt == "auto":
        if span is None:
            raise UserError(f"{path}: the file is empty")
        # Lines as str.splitlines() counts them, up to the first non-blank one only.
        i, line = next((i, ln) for i, ln in enumerate(head[: span[1]].splitlines(), 1) if ln.strip())
        fmt = detect_format(path, i, line.split())
    layout = SCORE_LAYOUTS[fmt]
    if fmt == "asvspoof5":
        layout = "\t".join(ASVSPOOF5_SCORE_HEADER)
    # The file's bytes split as they are when they are plain rows (the header a row of its own); the text,
    # which names any bad line, otherwise.
    header = fmt == "asvspoof5"
    ncols = len(layout.split())
    first = () if span is None else tuple(head[span[0] : span[1]].split())
    fast = not header or first == ASVSPOOF5_SCORE_HEADER
    table = split_padded(path, data, ncols, int(header)) if fast else None
    if table is None:
        text = head if data is None else read_text(path, "score file")
        text = _drop_header(path, text, ASVSPOOF5_SCORE_HEADER) if header else text
        table = split_table(path, text, ncols, layout)
    if fmt in ("id-score", "asvspoof5"):
        ids, attacks, keys, scores = table.columns[0], None, None, parse_scores(table, 1)
    elif fmt == "id-attack-key-score":
        ids, attacks = table.columns[0], np.array(table.columns[1])
        keys, scores = check_values(table, 2, CM_KEYS, "key"), parse_scores(table, 3)
    else:
        split = table.columns.split_last(0, "_") if isinstance(table.columns, TokenColumns) else None
        if split is None:
            ids, attacks = _split_attack_suffix(table, layout)
        else:
            ids, attacks = split
        scores, keys = parse_scores(table, 1), check_values(table, 2, CM_KEYS, "key")
    if ids is table.columns[0]:
        check_unique_column(table, 0)
    else:
        check_unique(path, ids, table.line_numbers)
    return CMScores(path, fmt, np.asarray(ids), scores, attacks, keys, table.line_numbers)


def _split_attack_suffix(table: Table, layout: str) -> tuple[list[str], np.ndarray]:
    """``uttid_attack`` tokens of column 0 split at the last underscore (utt_ids, attacks); a token without
    both parts raises `UserError` naming its line."""
    parts = [utt.rsplit("_", 1) for utt in table.columns[0]]
    for k, part in enumerate(parts):
        if len(part) != 2 or not part[0] or not part[1]:
            raise UserError(
                f"{where(table.path, table.line_numbers[k])}: utt_id '{table.columns[0][k]}' has no "
                f"'_attack' suffix, expected '{layout}'"
            )
    return [part[0] for part in parts], np.array([part[1] for part in parts])


def _drop_header(path: Path, text: str, header: tuple[str, ...]) -> str:
    """``text`` with its first non-blank line, which must be ``header``, blanked (line numbers are kept)."""
    span = first_line_span(text)
    if span is None:
        raise UserError(f"{path}: the file is empty")
    line = text.count("\n", 0, span[0]) + 1
    if tuple(text[span[0] : span[1]].split()) != header:
        raise UserError(f"{where(path, line)}: expected the header '{chr(9).join(header)}'")
    if first_line_span(text, span[1]) is None:
        raise UserError(f"{where(path, line)}: no scores after the header")
    return text[: span[0]] + text[span[1] :]


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
