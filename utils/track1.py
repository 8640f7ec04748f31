"""ASVspoof 5 Track 1 tables: minDCF, actDCF, Cllr, minCllr and EER pooled and per attack x codec cell.

The official evaluation package (asvspoof-challenge/asvspoof5, ``evaluation-package/``, full mode) fills one
table per measure: rows ``pooled`` + each attack (sorted), columns ``pooled`` + each codec value (sorted,
``-`` = uncoded included). Cell (attack a, codec c): every bona fide trial with codec c against the spoof
trials of attack a with codec c; a cell without bona fide or without spoof trials is empty (None).
The measures are those of `utils.metrics` (docs/evaluation.md), with the package's tie rule (bona fide
first among equal scores, from a stable sort of bona fide then spoof).

Vectorised: the trials are grouped once by (codec, attack or bona fide) with a radix sort of small integer
keys and each group's scores are sorted on their own; a cell's measures come from the count of bona fide
scores ranked before each of its spoof scores (`cells_measures`: no merged curve, cells in batches, the
batches split over forked processes), and each Cllr half-sum is computed once per group. No pandas.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from utils.metrics import (
    ASVSPOOF5_COSTS,
    DcfCosts,
    hull_candidates,
    min_cllr_from_blocks,
    normalised_dcf,
)
from utils.parallel import fork_map

POOLED = "pooled"
MEASURES = ("min_dcf", "act_dcf", "cllr", "min_cllr", "eer")


class SortedSide:
    """The sorted scores (n,) of one class of one cell; its Cllr sum is computed once however many cells
    share it (bona fide: ln(1 + e^−s) summed, spoof: ln(1 + e^s)). A side made of groups (``scores``
    None, ``parts`` given: a pooled row or column) sorts their scores together on first use, in whichever
    process of `cells_measures` needs them, and adds up their Cllr sums."""

    def __init__(self, scores: np.ndarray | None, bona: bool, parts: list[SortedSide] | None = None):
        self._scores = scores
        self.bona = bona
        self._parts = parts
        self.size = scores.size if scores is not None else sum(part.size for part in parts or [])

    @property
    def work(self) -> int:
        """Trials to go through to use this side: its size, twice while it is still to be sorted."""
        return self.size * (2 if self._scores is None else 1)

    @property
    def scores(self) -> np.ndarray:
        if self._scores is None:
            self._scores = np.sort(np.concatenate([part.scores for part in self._parts or []]))
        return self._scores

    @cached_property
    def cllr_sum(self) -> float:
        if self._parts is not None:
            return float(sum(part.cllr_sum for part in self._parts))
        return float(np.logaddexp(0, -self.scores if self.bona else self.scores).sum())


def cells_measures(
    cells: list[tuple[SortedSide, SortedSide]], costs: DcfCosts = ASVSPOOF5_COSTS, workers: int = 1
) -> list[dict[str, float] | None]:
    """The Track 1 measures of many cells (bona fide side, spoof side) at once, each None without both;
    ``workers`` > 1: the cells split over that many processes (`utils.parallel.fork_map`).

    The merged ranking is never built. ``before[j]`` counts the bona fide trials ranked before spoof trial
    j (bona fide first on ties), which fixes every DET point: after k spoof trials the curve walks through
    the bona fide counts ``before[k-1] .. before[k]`` at a constant false-alarm rate. So minDCF is reached
    at the start of such a run, the EER crossing lies in the first run that ends at or above frr = far, and
    the convex hull that minCllr's PAV pooling follows has its corners only where a run of spoof values
    ends; the same floating-point operations as on the whole curve, on n_spoof points. Cells are taken in
    batches whose spoof trials lie one after another in one array (segment k: cell k), so each step is a
    few numpy passes over a batch rather than a few per cell.
    """
    live = [k for k, (b, s) in enumerate(cells) if b.size and s.size]
    # Batches of consecutive cells small enough for the cache (one cell alone may be larger).
    batches: list[list[int]] = []
    size = 0
    for k in live:
        if not batches or size + cells[k][1].size > _BATCH_TRIALS:
            batches.append([])
            size = 0
        batches[-1].append(k)
        size += cells[k][1].size
    # work ~ the trials of a batch, plus those of the pooled sides it sorts first
    weights = [sum(side.work for k in batch for side in cells[k]) for batch in batches]

    def measure(batch: list[int]) -> list[dict[str, float]]:
        return _batch_measures([cells[k] for k in batch], costs)

    measured = fork_map(measure, batches, workers, weights)
    out: list[dict[str, float] | None] = [None] * len(cells)
    for batch, measures in zip(batches, measured, strict=True):
        for k, m in zip(batch, measures, strict=True):
            out[k] = m
    return out


#: spoof trials per batch of cells in `cells_measures`
_BATCH_TRIALS = 1 << 18


def _batch_measures(cells: list[tuple[SortedSide, SortedSide]], costs: DcfCosts) -> list[dict[str, float]]:
    """`cells_measures` of cells that all have both classes.

    Along a cell's sorted spoof trials, ``before`` rises only where bona fide trials are ranked between two
    of them; within a stretch of equal ``before`` the false-alarm rate falls while the miss rate stays, so
    the DCF falls (to its stretch's last trial), the EER condition turns true at most once, and no point but
    the last can be a corner of minCllr's hull (a flat segment follows it). Only the stretches' last
    trials are looked at, the EER crossing searched within its stretch.
    """
    n_bona = np.array([b.size for b, _ in cells])
    n_spoof = np.array([s.size for _, s in cells])
    seg = np.concatenate(([0], np.cumsum(n_spoof)))  # cell i's spoof trials: seg[i] .. seg[i+1]
    before = np.concatenate([_bona_before(b.scores, s.scores) for b, s in cells])
    ends = np.ones(before.size, dtype=bool)
    np.not_equal(before[1:], before[:-1], out=ends[:-1])
    ends[seg[1:] - 1] = True
    last = np.flatnonzero(ends)  # each stretch's last spoof trial
    cell = np.searchsorted(seg, last, side="right") - 1
    opens = np.searchsorted(last, seg)  # cell i's stretches: last[opens[i]] .. last[opens[i+1] - 1]
    j = last - seg[cell]  # index in its cell
    b_at, nb, ns = before[last], n_bona[cell], n_spoof[cell]
    c = (costs.pspoof, costs.cmiss, costs.cfa)
    # DET point k (k = 0..n_spoof): bona fide count before[k-1] (0 for k = 0), far = (n_spoof − k)/n_spoof
    min_dcf = np.minimum(np.minimum.reduceat(normalised_dcf(b_at / nb, (ns - j - 1) / ns, *c), opens[:-1]),
                         normalised_dcf(0 / 1, 1.0, *c))  # fmt: skip
    # actual DCF at the Bayes threshold; each bona fide side is searched once
    threshold = -np.log(costs.cmiss * (1 - costs.pspoof) / (costs.cfa * costs.pspoof))
    below = {id(b): int(np.searchsorted(b.scores, threshold, side="left")) for b, _ in cells}
    pmiss = np.array([below[id(b)] for b, _ in cells]) / n_bona
    spoof_below = np.array([np.searchsorted(s.scores, threshold, side="left") for _, s in cells])
    pfa = (n_spoof - spoof_below) / n_spoof
    act_dcf = normalised_dcf(pmiss, pfa, *c)
    # run k (after k spoof trials) ends at or above the EER crossing where before[k]/n_bona >= far_k
    crossed = np.append(np.flatnonzero(b_at / nb >= (ns - j) / ns), last.size)  # (last.size: none)
    eer = _eers(before, seg, last, opens, crossed[np.searchsorted(crossed, opens[:-1])], n_bona, n_spoof)
    min_cllr = _min_cllrs(b_at + j + 1, b_at, opens, n_bona, n_spoof)
    cllr = [0.5 * (b.cllr_sum / b.size + s.cllr_sum / s.size) / np.log(2) for b, s in cells]
    return [{"min_dcf": float(min_dcf[i]), "act_dcf": float(act_dcf[i]), "cllr": float(cllr[i]),
             "min_cllr": min_cllr[i], "eer": eer[i]} for i in range(len(cells))]  # fmt: skip


def _bona_before(bona: np.ndarray, spoof: np.ndarray) -> np.ndarray:
    """For each of the sorted ``spoof`` scores (n,), how many of the sorted ``bona`` scores are at or below
    it (``np.searchsorted(bona, spoof, side="right")``): merged (a stable sort of the two runs, bona fide
    first on ties) when the spoof side is not much the smaller, else binary searches."""
    if 4 * spoof.size < bona.size:
        return np.searchsorted(bona, spoof, side="right")
    order = np.argsort(np.concatenate((bona, spoof)), kind="stable")
    return np.flatnonzero(order >= bona.size) - np.arange(spoof.size)


def _eers(
    before: np.ndarray,
    seg: np.ndarray,
    last: np.ndarray,
    opens: np.ndarray,
    first_crossed: np.ndarray,
    n_bona: np.ndarray,
    n_spoof: np.ndarray,
) -> list[float]:
    """`utils.metrics.eer_from_det` of each cell, from its DET curve in runs: run k (far_k = (n_spoof −
    k)/n_spoof) covers the bona fide counts before[k-1] .. before[k] (0 before the first, n_bona after the
    last); frr − far only grows along the curve, so the crossing lies in the first run k that ends at or
    above frr = far (the last run always does), and the EER is the mean of the two points around it (the
    first of them on a tie). ``first_crossed[i]``: the index into ``last`` of cell i's first stretch whose
    last run has crossed (or some later cell's); k is found by bisection within that stretch."""
    eers = []
    for i, stretch in enumerate(first_crossed.tolist()):
        n_b, n_s, base = int(n_bona[i]), int(n_spoof[i]), int(seg[i])

        def far_of(run: int, n_s: int = n_s) -> float:
            return (n_s - run % (n_s + 1)) / n_s  # (run −1: the last, as numpy indexes)

        def start_of(run: int, n_b: int = n_b, base: int = base) -> int:
            return 0 if run == 0 else int(before[base + run - 1])

        if opens[i] <= stretch < opens[i + 1]:
            lo_k = int(last[stretch - 1]) - base + 1 if stretch > opens[i] else 0
            k, b_k = int(last[stretch]) - base, int(before[last[stretch]])
            while lo_k < k:  # the first run of the stretch with b_k / n_b >= far_k
                mid = (lo_k + k) // 2
                lo_k, k = (lo_k, mid) if b_k / n_b >= far_of(mid) else (mid + 1, k)
        else:
            k = n_s
        lo, hi = start_of(k), (int(before[base + k]) if k < n_s else n_b)
        guess = n_b * far_of(k)
        counts = range(max(lo, int(guess) - 1), max(min(hi, int(guess) + 2), lo) + 1)
        at = next((count for count in counts if count / n_b >= far_of(k)), counts[0])
        points = [(at - 1, k) if at > lo else (lo, k - 1), (at, k)]
        rates = [(count / n_b, far_of(run)) for count, run in points]
        gaps = [abs(frr - fa) for frr, fa in rates]
        frr, fa = rates[0] if gaps[0] <= gaps[1] else rates[1]
        eers.append(float((frr + fa) / 2))
    return eers


def _min_cllrs(
    x_inner: np.ndarray, y_inner: np.ndarray, opens: np.ndarray, n_bona: np.ndarray, n_spoof: np.ndarray
) -> list[float]:
    """`utils.metrics.min_cllr` of each cell from the candidate corners of its cumulative (trials, bona fide)
    diagram: (0, 0), the points (x_inner, y_inner) of cell i at opens[i] .. opens[i+1] - 1, and
    (n_bona + n_spoof, n_bona)."""
    m = np.diff(opens)
    starts = np.concatenate(([0], np.cumsum(m + 2)))  # where each cell's diagram starts
    x = np.empty(starts[-1], dtype=np.int64)
    y = np.empty(starts[-1], dtype=np.int64)
    inner = np.arange(x_inner.size) + 2 * np.repeat(np.arange(m.size), m) + 1
    x[inner], y[inner] = x_inner, y_inner
    x[starts[:-1]], y[starts[:-1]] = 0, 0
    x[starts[1:] - 1], y[starts[1:] - 1] = n_bona + n_spoof, n_bona
    fixed = np.zeros(x.size, dtype=bool)
    fixed[starts[:-1]] = fixed[starts[1:] - 1] = True
    kept = hull_candidates(x, y, fixed)
    # the kept points of cell i lie between its two fixed ends; its blocks are their differences
    bounds = np.searchsorted(kept, starts).tolist()
    block_all, block_bona = np.diff(x[kept]).tolist(), np.diff(y[kept]).tolist()  # (lo..hi-2: within a cell)
    return [min_cllr_from_blocks(block_bona[lo : hi - 1], block_all[lo : hi - 1])
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]  # fmt: skip


def few_unique(values: np.ndarray, limit: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for a str array (n,) with few distinct values (attacks,
    codecs) without sorting the strings: each string of at most 8 Latin-1 characters is packed into one
    integer (exactly), the distinct integers are found from a sample (all of them when the sample missed
    one) and each trial's is looked up in a perfect hash table of those few, checked against every trial;
    only the few are sorted as strings. Longer strings, more than ``limit`` values or another dtype:
    `np.unique` itself."""
    values = np.ascontiguousarray(values)
    width = values.dtype.itemsize // 4 if values.dtype.kind == "U" else 0
    if not 0 < width <= 8 or values.size == 0:
        return np.unique(values, return_inverse=True)
    chars = values.view(np.uint32).reshape(values.size, width)
    if int(chars.max()) > 255:
        return np.unique(values, return_inverse=True)
    packed = np.zeros((values.size, 8), dtype=np.uint8)
    packed[:, :width] = chars
    key = packed.view("<u8").ravel()
    codes = None
    for keys in (_distinct(key[:: max(1, values.size // 4096)]), None):
        keys = _distinct(key) if keys is None else keys  # the second try: the sample missed a value
        if keys.size > limit:
            return np.unique(values, return_inverse=True)
        codes = _perfect_hash_codes(keys, key)
        if codes is not None:
            break
    found = keys.view(np.uint8).reshape(keys.size, 8).astype(np.uint32).view("U8").ravel()
    rank = np.empty(found.size, dtype=np.int64)
    rank[np.argsort(found, kind="stable")] = np.arange(found.size)
    return np.sort(found).astype(values.dtype), rank[codes]


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array (n,), sorted (`np.unique` without its masked-array import)."""
    values = np.sort(values)
    return values[np.append(True, values[1:] != values[:-1])] if values.size else values


def _perfect_hash_codes(keys: np.ndarray, key: np.ndarray) -> np.ndarray | None:
    """The index (n,) of each of ``key`` (n,) uint64 in the distinct ``keys`` (k,), through a multiplicative
    hash without collisions among ``keys`` (a table of ≥ 4k slots); None when a value is not in ``keys``."""
    bits = max(4, int(keys.size * 4 - 1).bit_length())
    table = np.full(1 << bits, -1, dtype=np.int64)
    shift = np.uint64(64 - bits)
    for multiplier in _HASH_MULTIPLIERS:
        slot = (keys * multiplier) >> shift
        if _distinct(slot).size == keys.size:
            break
    else:  # no multiplier separates them: a sorted lookup instead
        codes = np.minimum(np.searchsorted(keys, key), keys.size - 1)
        return codes if np.array_equal(keys[codes], key) else None
    table[slot] = np.arange(keys.size)
    codes = table[(key * multiplier) >> shift]
    return codes if np.all(codes >= 0) and np.array_equal(keys[codes], key) else None


#: odd 64-bit multipliers, tried in turn: odd multiples of Fibonacci hashing's 2^64/φ
_HASH_MULTIPLIERS = [np.uint64(0x9E3779B97F4A7C15 * (2 * i + 1) % 2**64) for i in range(32)]


def _grouped(scores: np.ndarray, key: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """The scores of each group 0..n_groups-1 of ``key`` (n,), each sorted ascending."""
    # Small integer keys: numpy's stable sort is a radix sort; then each group sorts its own slice.
    dtype = np.int16 if n_groups < 2**15 else np.int64
    by_group = scores[np.argsort(key.astype(dtype), kind="stable")]
    bounds = np.concatenate(([0], np.cumsum(np.bincount(key, minlength=n_groups))))
    groups = [by_group[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    for group in groups:
        group.sort()
    return groups


def _sides(groups: list[SortedSide], bona: bool) -> SortedSide:
    """One side made of several groups (a pooled row or column), sorted when first used; its Cllr sum the
    sum of theirs (each trial's term computed once)."""
    return SortedSide(None, bona, groups)


def track1_tables(
    scores: np.ndarray,
    is_bona: np.ndarray,
    attacks: np.ndarray,
    codecs: np.ndarray | None = None,
    costs: DcfCosts = ASVSPOOF5_COSTS,
    workers: int = 1,
) -> dict:
    """Track 1 measures of CM scores (n,) (LLR-like, higher = bona fide) with each trial's class (n,) bool,
    attack (n,) str (ignored for bona fide) and codec (n,) str (None: no codec columns); the cells'
    measures computed in ``workers`` processes (`utils.parallel`; the same values with any number).

    Returns ``{"pooled": measures, "attacks": [...], "codecs": [...], "per_cell": {row: {col: measures or
    None}}}``; rows ``pooled`` then the attacks, columns ``pooled`` then the codecs, each sorted; measures
    are the `MEASURES` keys (rates and DCFs as fractions, Cllr in bits).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_bona = np.asarray(is_bona, dtype=bool).ravel()
    attack_names, attack_code = few_unique(np.asarray(attacks)[~is_bona])
    n_att = attack_names.size
    cls = np.full(scores.size, n_att)  # class n_att = bona fide
    cls[~is_bona] = attack_code
    codec_names, codec_code = few_unique(np.asarray(codecs) if codecs is not None else np.zeros(scores.size))
    n_codec = codec_names.size
    groups = _grouped(scores, codec_code * (n_att + 1) + cls, n_codec * (n_att + 1))
    # cell[c][a]: sorted scores of codec c and class a (a = n_att: bona fide)
    cell = [[SortedSide(g, a == n_att) for a, g in enumerate(groups[c * (n_att + 1) : (c + 1) * (n_att + 1)])]
            for c in range(n_codec)]  # fmt: skip
    bona_of = [cell[c][n_att] for c in range(n_codec)]
    bona_all = _sides(bona_of, True)
    spoof_by_codec_all = [_sides(cell[c][:n_att], False) for c in range(n_codec)]
    spoof_all = _sides(spoof_by_codec_all, False)
    row_labels = [POOLED, *attack_names.tolist()]
    col_labels = [POOLED, *codec_names.tolist()] if codecs is not None else [POOLED]
    # every cell of the table, row by row, then their measures in one batch
    pairs, places = [], []
    for r, row in enumerate(row_labels):
        if r == 0:
            spoof_pooled, spoof_by_codec = spoof_all, spoof_by_codec_all
        else:
            spoof_by_codec = [cell[c][r - 1] for c in range(n_codec)]
            spoof_pooled = _sides(spoof_by_codec, False)
        pairs.append((bona_all, spoof_pooled))
        places.append((row, POOLED))
        if codecs is not None:
            pairs += zip(bona_of, spoof_by_codec, strict=True)
            places += [(row, col) for col in col_labels[1:]]
    per_cell: dict[str, dict[str, dict[str, float] | None]] = {row: {} for row in row_labels}
    for (row, col), measures in zip(places, cells_measures(pairs, costs, workers), strict=True):
        per_cell[row][col] = measures
    return {
        "pooled": per_cell[POOLED][POOLED],
        "attacks": attack_names.tolist(),
        "codecs": codec_names.tolist() if codecs is not None else [],
        "per_cell": per_cell,
    }


def _fmt(x: float | None, scale: float, digits: int) -> str:
    return "-" if x is None else f"{scale * x:.{digits}f}"


def format_track1_tables(tables: dict) -> str:
    """The per-cell tables as plain text, one per measure (EER in %, the others as they are)."""
    cols = [POOLED, *tables["codecs"]]
    width = max(len(r) for r in tables["per_cell"]) + 1
    lines: list[str] = []
    for measure, title, scale in (
        ("min_dcf", "minDCF", 1.0),
        ("act_dcf", "actDCF", 1.0),
        ("cllr", "Cllr (bits)", 1.0),
        ("min_cllr", "minCllr (bits)", 1.0),
        ("eer", "EER %", 100.0),
    ):
        lines += ["", f"{title}: attack x codec", f"{'':<{width}}" + "".join(f"{c:>8}" for c in cols)]
        for row, cells in tables["per_cell"].items():
            values = (None if cells[c] is None else cells[c][measure] for c in cols)
            lines.append(f"{row:<{width}}" + "".join(f"{_fmt(v, scale, 4):>8}" for v in values))
    return "\n".join(lines)
