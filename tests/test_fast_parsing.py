"""The evaluator's vectorised fast paths give what their plain definitions give: the byte-level tokenizer
and columns (utils/scorefiles.py) against str.split, the bytes-to-float conversion against float(), the
string hashing uses (uniqueness, few distinct values) against sets and np.unique, and the sort-free merge
(utils/metrics.py) against a stable sort, ties and empty groups included."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from utils import scorefiles
from utils.errors import UserError
from utils.metrics import SortedTrials, stable_merge
from utils.scorefiles import (
    CM_KEYS,
    TokenColumns,
    check_unique,
    check_unique_column,
    check_values,
    first_line_span,
    parse_scores,
    read_head,
    read_padded,
    read_scores,
    split_padded,
    split_table,
    token_counts,
    tokenize,
)
from utils.track1 import few_unique

PATH = Path("t.txt")


def random_table(rng: np.random.Generator, n_rows: int, ncols: int) -> str:
    """Rows of tokens 1..20 characters long (across the 8-byte words the columns are read in), separated by
    spaces and tabs, with blank and whitespace-only lines between them."""
    alphabet = np.array(list("abcXYZ019_-.+"))
    lines = []
    for _ in range(n_rows):
        tokens = ["".join(rng.choice(alphabet, rng.integers(1, 21))) for _ in range(ncols)]
        lines.append(" \t"[rng.integers(2)].join(tokens) + " " * int(rng.integers(3)))
        if rng.random() < 0.2:
            lines.append(" \t "[: rng.integers(4)])
    return "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")


def test_token_columns_equal_str_split() -> None:
    rng = np.random.default_rng(0)
    for ncols in (1, 2, 3, 10):
        text = random_table(rng, 300, ncols)
        table = split_table(PATH, text, ncols, "layout")
        assert isinstance(table.columns, TokenColumns)
        rows = [line.split() for line in text.splitlines()]
        expected_lines = [i + 1 for i, row in enumerate(rows) if row]
        assert table.line_numbers.tolist() == expected_lines
        for c in range(ncols):
            assert table.columns[c].tolist() == [row[c] for row in rows if row]
            assert table.columns.raw(c).tolist() == [row[c].encode() for row in rows if row]
        assert token_counts(text).tolist() == [len(row) for row in rows]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_tokenize_in_chunks_equals_str_split(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # Tokens, lines and control characters that straddle the tokenizer's chunk boundaries.
    monkeypatch.setattr(scorefiles, "_TOKENIZE_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    for text in (random_table(rng, 40, 3), "  ab\tcd \n\nefgh", "x", "", "\n \n", "abcdefghij klm\n"):
        tokens = tokenize(text)
        words = text.split()
        assert [text[a:b] for a, b in zip(tokens.starts, tokens.ends, strict=True)] == words
        assert tokens.newlines.tolist() == [i for i, ch in enumerate(text) if ch == "\n"]
        assert token_counts(text).tolist() == [len(line.split()) for line in text.splitlines()]
    for odd in ("abcdefgh ij\rk\n", "abcdefghijkl\x0b"):
        assert tokenize(odd) is None


def test_file_bytes_split_as_the_text_is(tmp_path: Path) -> None:
    # read_padded + split_padded (no decoding) give split_table's table; a header row can be skipped;
    # anything the fast path cannot take (not ASCII, a bad row, a pipe) gives None for the text path.
    rng = np.random.default_rng(5)
    body = random_table(rng, 200, 3)
    path = tmp_path / "t.txt"
    path.write_text("\n  h1 h2\th3\n" + body)
    table = split_padded(path, read_padded(path), 3, skip_rows=1)
    expected = split_table(path, body, 3, "x y z")
    assert table.line_numbers.tolist() == (expected.line_numbers + 2).tolist()
    for c in range(3):
        assert table.columns[c].tolist() == expected.columns[c].tolist()
    assert read_padded(path)[-8:].tolist() == [0] * 8
    for bad in ("a b c\nd e\n", "a b é\n", "a b\rc\n"):
        path.write_text(bad)
        assert split_padded(path, read_padded(path), 3) is None
    if hasattr(os, "mkfifo"):  # not read (a pipe's bytes come once): None, for the text path
        os.mkfifo(tmp_path / "fifo")
        assert read_padded(tmp_path / "fifo") is None
    with pytest.raises(UserError, match="not found"):
        read_padded(tmp_path / "missing.txt")


def test_score_file_read_from_bytes_or_text_alike(tmp_path: Path) -> None:
    # The package's score format (header row skipped on the bytes), and a non-ASCII id (the text path).
    path = tmp_path / "s.tsv"
    path.write_text("filename\tcm-score\nE_01\t0.5\n\nE_02\t-1.25\n")
    scores = read_scores(path)
    assert (scores.fmt, scores.utt_ids.tolist(), scores.scores.tolist()) == ("asvspoof5", ["E_01", "E_02"],
                                                                           [0.5, -1.25])  # fmt: skip
    assert scores.line_numbers.tolist() == [2, 4]
    path.write_text("filename\tcm-score\nE_é\t0.5\nE_02\tx\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:3: score 'x' is not a number$"):
        read_scores(path)
    path.write_text("E_01 0.5\nE_02 0.25 extra\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:2: expected 2 columns"):
        read_scores(path)


@pytest.mark.parametrize("leading, trailing", [("", ""), ("\n \n", "\n\n  \n"), ("", "\n")])
def test_rows_on_consecutive_lines_keep_their_line_numbers(leading: str, trailing: str) -> None:
    # The one-comparison-per-row check (rows between consecutive newlines) and the general search agree.
    rng = np.random.default_rng(2)
    body = random_table(rng, 200, 3).replace("\n \t \n", "\n").replace("\n \t\n", "\n")
    lines = [line for line in body.splitlines() if line.strip()]
    text = leading + "\n".join(lines) + trailing
    table = split_table(PATH, text, 3, "layout")
    first = leading.count("\n") + 1
    assert table.line_numbers.tolist() == list(range(first, first + len(lines)))
    assert table.columns[2].tolist() == [line.split()[2] for line in lines]
    # two rows on one line, or a row broken over two lines, still fail on the right line
    with pytest.raises(UserError, match=r"^t\.txt:2: expected 3 columns 'layout', got 2$"):
        split_table(PATH, "a b c\nd e\nf\ng h i\n", 3, "layout")


def test_token_columns_fall_back_and_name_the_same_line() -> None:
    # A wrong count on line 3 (after a blank line), a final line without newline, odd whitespace.
    bad = "a b c\n\nd e\nf g h"
    with pytest.raises(UserError, match=r"^t\.txt:3: expected 3 columns 'x y z', got 2$"):
        split_table(PATH, bad, 3, "x y z")
    two_rows_on_a_line = "a b c d e f\n"
    with pytest.raises(UserError, match=r"^t\.txt:1: expected 3 columns 'x y z', got 6$"):
        split_table(PATH, two_rows_on_a_line, 3, "x y z")
    for odd in ("a b\rc d\n", "a b\x0bc\n", "a\x00 b\n", "a b\x1cc d\n", "é b\n"):
        assert tokenize(odd) is None
        rows = [line.split() for line in odd.splitlines() if line.split()]
        if all(len(r) == 2 for r in rows):
            table = split_table(PATH, odd, 2, "x y")
            assert [list(c) for c in table.columns] == [[r[0] for r in rows], [r[1] for r in rows]]


def test_bytes_to_float_equals_float() -> None:
    tokens = ["1.07e-08", "-0.0", "0", ".5", "5.", "+3", "1E5", "-2.5e+3", "1_0", "0.30000000000000004",
              "0.1000000000000000055511151231257827", "2.2250738585072014e-308", "4.9e-324",
              "1797693134862315700000000000000000000000000000000000", "-123456789.123456789"]  # fmt: skip
    table = split_table(PATH, "".join(f"u{i} {t}\n" for i, t in enumerate(tokens)), 2, "utt_id score")
    got = parse_scores(table, 1)
    expected = [float(t) for t in tokens]
    assert [x.hex() for x in got.tolist()] == [x.hex() for x in expected]
    # Plain decimals take the digits / 10^k path; every kind of token must still round like float().
    rng = np.random.default_rng(3)
    x = rng.normal(size=3000) * 10.0 ** rng.integers(-9, 9, 3000)
    digits = rng.integers(0, 20, 3000)
    tokens = [f"{v:.{d}f}" for v, d in zip(x.tolist(), digits.tolist(), strict=True)]
    tokens += [repr(v) for v in x.tolist()]
    tokens += ["-0", "+0.5", "9007199254740993", "9007199254740992.5", "0.0000000000000000000000012",
               "123456789012345678901", "-.25", "00000000000000000001.5"]  # fmt: skip
    table = split_table(PATH, "".join(f"u{i} {t}\n" for i, t in enumerate(tokens)), 2, "utt_id score")
    got = parse_scores(table, 1)
    assert [v.hex() for v in got.tolist()] == [float(t).hex() for t in tokens]
    for bad in ("1..2", "--1", "1-", ".", "-", "1e", "+-1"):
        with pytest.raises(UserError, match=rf"^t\.txt:2: score '{re.escape(bad)}' is not a number$"):
            parse_scores(split_table(PATH, f"a 1.5\nb {bad}\n", 2, "utt_id score"), 1)
    with pytest.raises(UserError, match=r"^t\.txt:2: score '0x10' is not a number$"):
        parse_scores(split_table(PATH, "a 1.5\nb 0x10\n", 2, "utt_id score"), 1)
    with pytest.raises(UserError, match=r"^t\.txt:1: score 'nan' is not finite$"):
        parse_scores(split_table(PATH, "a nan\nb 1\n", 2, "utt_id score"), 1)


def test_split_last_equals_rsplit_and_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    ids = ["LA_E_1_A07", "LA_E_22_-", "x_y", "LA_E_12345678901234_A19"]
    path.write_text("".join(f"{u} {k / 10} {'bonafide' if u.endswith('-') else 'spoof'}\n" for k, u in
                            enumerate(ids)))  # fmt: skip
    cm = read_scores(path)
    assert cm.fmt == "idattack-score-key"
    assert cm.utt_ids.tolist() == [u.rsplit("_", 1)[0] for u in ids]
    assert cm.attacks.tolist() == [u.rsplit("_", 1)[1] for u in ids]
    for bad in ("LA_E_9_", "_A01", "nounderscore"):
        path.write_text(f"LA_E_1_A07 0.1 spoof\n{bad} 0.2 spoof\n")
        with pytest.raises(UserError, match=rf"^{path}:2: utt_id '{bad}' has no '_attack' suffix"):
            read_scores(path, "idattack-score-key")


def test_check_unique_on_str_arrays_names_both_lines() -> None:
    ids = np.array([f"E_{i:06d}" for i in range(1000)] + ["E_000017"])
    lines = np.arange(1, ids.size + 1) * 2
    check_unique(PATH, ids[:-1], lines[:-1])
    with pytest.raises(UserError, match=r"^t\.txt:2002: duplicate utt_id 'E_000017' \(first on line 36\)$"):
        check_unique(PATH, ids, lines)


def test_check_unique_column_hashes_the_bytes_and_names_both_lines() -> None:
    # Ids of 1 to 20 characters (one to three 8-byte words), a duplicate differing from others only in
    # its last word, and a blank line: the same error as the str check, at the file's own lines.
    ids = [f"LA_E_{i:0{1 + i % 15}d}" for i in range(500)]
    text = "".join(f"{u} 0.5\n" for u in ids) + "\n" + f"{ids[123]} 0.7\n"
    table = split_table(PATH, text, 2, "utt_id score")
    assert isinstance(table.columns, TokenColumns)
    message = rf"^t\.txt:502: duplicate utt_id '{ids[123]}' \(first on line 124\)$"
    with pytest.raises(UserError, match=message):
        check_unique_column(table, 0)
    check_unique_column(split_table(PATH, text.rsplit("\n\n", 1)[0], 2, "utt_id score"), 0)
    hashes = table.columns.hashes(0)
    assert np.unique(hashes).size == len(set(ids)) and hashes[123] == hashes[-1]


def test_few_unique_equals_np_unique() -> None:
    rng = np.random.default_rng(1)
    cases = [np.array([], dtype="U3"), np.array(["b", "a", "b", ""]), np.array(["é", "e", "ée", "e"]),
             np.array([f"A{i}" for i in range(17, 33)])[rng.integers(0, 16, 5000)],
             np.array([f"c{i}" for i in range(300)])[rng.integers(0, 300, 3000)],
             np.array(["A01"] * 50_000 + ["B"] + ["-"] * 20_001),  # a value the sample does not see
             np.array(["A01"] * 5 + ["ab\u0100"]),  # not Latin-1
             np.array(["-"] * 20_000 + ["C03"] + ["longer than 8"])]  # fmt: skip
    for values in cases:
        names, codes = few_unique(values)
        expected_names, expected_codes = np.unique(values, return_inverse=True)
        assert names.tolist() == expected_names.tolist() and codes.tolist() == expected_codes.tolist()


def test_first_line_span_skips_blank_lines_only() -> None:
    text = "\n  \t\n \r\n  header line \r\nrest\n"
    start, end = first_line_span(text)
    assert text[start:end] == "  header line \r"
    assert first_line_span(text, end) == (end + 1, end + 5)
    assert first_line_span(" \n\t\n") is None


def test_stable_merge_equals_a_stable_sort_with_ties_and_empty_groups() -> None:
    rng = np.random.default_rng(2)
    for sizes in ((50, 70), (0, 5), (5, 0), (40, 0, 30), (30, 60, 45)):
        groups = [np.round(rng.normal(0, 1, n), 1) for n in sizes]
        values, labels = stable_merge(tuple(np.sort(g) for g in groups))
        order = np.argsort(np.concatenate(groups), kind="mergesort")
        all_labels = np.repeat(np.arange(len(sizes)), sizes)
        assert values.tolist() == np.concatenate(groups)[order].tolist()
        assert labels.tolist() == all_labels[order].tolist()
    bona, spoof = np.array([1.0, 0.5, 0.5, 2.0]), np.array([0.5, 1.0, -1.0, 0.5])
    trials = SortedTrials(bona, spoof)
    assert trials.scores.tolist() == [-1.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 2.0]
    assert trials.is_pos.tolist() == [False, True, True, False, False, True, False, True]


@pytest.mark.parametrize("seed", range(3))
def test_teer_row_pruning_keeps_the_winner(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact t-EER with the lower-bound pruning of ASV thresholds equals the search over all of them
    (same value, same threshold pair), on enough trials for many stretches to be dropped; ties included."""
    import utils.sasv as sasv

    rng = np.random.default_rng(300 + seed)
    sizes = (3000, 3000, 12000)
    cm = [np.round(rng.normal(m, 1.5, n), 2) for m, n in zip((3.0, 3.0, -2.0), sizes, strict=True)]
    asv = [np.round(rng.normal(m, 1.5, n), 2) for m, n in zip((3.0, -3.0, 1.0), sizes, strict=True)]
    curves = sasv.TandemTrials(*cm, *asv).curves()
    a, b, c = curves[1].pmiss, curves[1].pfa_non, curves[1].pfa_spf
    rows = np.flatnonzero((a < 0.5 * b + 0.5 * c) & (c > 0))
    assert sasv._rows_that_can_win(*curves, rows).size < rows.size / 5
    pruned = sasv.teer_search(*curves)
    monkeypatch.setattr(sasv, "_rows_that_can_win", lambda cm, asv, rows: rows)
    assert pruned == sasv.teer_search(*curves)


def test_read_head_stops_after_the_first_non_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"\n  \n" + "é".encode() * 40_000 + b" header\n" + b"row 1\n" * 1000 + b"\xff" * 10)
    head = read_head(path, "protocol file", chunk=1000)  # é split across chunks, \xff never read
    assert " header\n" in head and len(head) < 40_004 + 8 + 1000  # the chunks read, no more
    assert first_line_span(head) == first_line_span(path.read_bytes().decode("utf-8", "replace"))
    path.write_bytes(b"\n\n only line, no newline")
    assert read_head(path, chunk=4) == "\n\n only line, no newline"
    path.write_bytes(b"\xfe first line\n")
    with pytest.raises(UserError, match=r": not a text file \(byte 0 is not UTF-8\)$"):
        read_head(path, "protocol file")
    with pytest.raises(UserError, match=r"protocol file not found$"):
        read_head(tmp_path / "missing.txt", "protocol file")


def test_check_values_compares_whole_words() -> None:
    # 'spoo' and 'spoofx' share bytes with 'spoof'; 'bonafide' fills the 8-byte word exactly.
    text = "a bonafide\nb spoof\n\nc spoof\n"
    assert check_values(split_table(PATH, text, 2, "id key"), 1, CM_KEYS, "key").tolist() == [
        "bonafide", "spoof", "spoof"]  # fmt: skip
    for bad, line in (("spoo", 2), ("spoofx", 2), ("bonafide1", 2), ("é", 2)):
        table = split_table(PATH, f"a spoof\nb {bad}\n", 2, "id key")
        with pytest.raises(UserError, match=rf"^t\.txt:{line}: key '{bad}' is not one of bonafide, spoof$"):
            check_values(table, 1, CM_KEYS, "key")
