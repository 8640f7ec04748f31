"""Evaluating a CM score file, as library calls: what evaluate_tDCF_asvspoof19.py and the cross-corpus runner
(engine/cross_corpus.py) both do, so the two give identical numbers.

- pooled and per attack (2019 LA, In-the-Wild): keys and attacks from the score file or a protocol, EER and
  legacy 2019 / revised 2021 min t-DCF (`evaluate_2019`);
- per condition (2021 LA/DF: corpora of `data.corpora` with `conditions`): one phase of the metadata, the
  attack × codec tables, min t-DCF with ASV scores joined to their keys (`evaluate_conditions`);
- ASVspoof 5 measures (minDCF, actDCF, Cllr, minCllr) and an affine calibration fitted on a development score
  file (`fit_file_calibration`), applied to the scores before every measure.

No torch: the evaluator imports this module and must stay numpy-only. Messages name the inputs by
`EvalRequest.names` (the evaluator passes its flags, e.g. ``--asv-scores``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.corpora import Corpus, all_corpora, default_corpus, detect_corpus, get_corpus, read_protocol
from data.corpora.base import TrialColumns
from data.corpora.trial_metadata import (
    align_asv_scores,
    align_scores,
    require_scores,
    subset_mask,
    subset_name,
)
from data.protocols import ProtocolRow, first_ids
from utils.calibration import Calibration, SeparableScoresWarning, fit_calibration
from utils.conditions import AsvTrials, Trials, condition_tables
from utils.errors import UserError
from utils.groups import group_tables
from utils.metrics import CostModel, MetricError, asvspoof5_measures, compute_eer, evaluate_cm
from utils.report import score_histogram
from utils.scorefiles import (
    ASV_KEYS,
    BONAFIDE,
    LEGACY_ATTACK_IDS,
    CMScores,
    read_asv_scores,
    read_asv_trial_scores,
    read_head,
    read_scores,
    read_text,
    rename_legacy_attacks,
)
from utils.track1 import track1_tables

if TYPE_CHECKING:
    from data.corpora.trial_metadata import TrialMetadata

#: How messages name the inputs when the caller gives no names (the evaluator passes its flags).
DEFAULT_NAMES = {
    "protocol": "a CM protocol",
    "subset": "a subset",
    "asv_scores": "ASV scores",
    "asv_metadata": "ASV metadata",
    "allow_negated": "allow_negated",
    "group_by": "group_by",
}


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate: a CM score file (higher = more bona fide), where its keys and ASV scores come from.

    ``protocol``: a protocol of a `data.corpora` corpus (2019 LA protocol, 2021 trial_metadata.txt,
    In-the-Wild meta.csv, ...; None: keys from the score file) and ``protocol_format`` its corpus name
    (``auto``: detected); ``subset``: the 2021 phase (None = eval); ``asv_scores``: 2019 LA
    'cm_key asv_key score' or 2021 LA 'model trial score' (with ``asv_metadata``, the 2021 ASV keys);
    ``metrics``: ``asvspoof2019`` or ``asvspoof5`` (adds minDCF, actDCF, Cllr, minCllr); ``calibration``:
    applied to the scores first, its ``calibration_source`` recorded in the result; ``group_by``: protocol
    columns to give measures per value of (`utils.groups`; the result's ``groups``); ``workers``: processes
    for the ASVspoof 5 Track 1 cell tables (`utils.parallel.fork_workers`; the same values with any number).
    """

    scores: Path
    score_format: str = "auto"
    protocol: Path | None = None
    protocol_format: str = "auto"
    subset: str | None = None
    asv_scores: Path | None = None
    asv_metadata: Path | None = None
    metrics: str = "asvspoof2019"
    allow_negated: bool = False
    costs: CostModel = field(default_factory=CostModel)
    calibration: Calibration | None = None
    calibration_source: str | None = None
    group_by: tuple[str, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    workers: int = 1

    def name(self, key: str) -> str:
        """How messages call input ``key`` (a field name)."""
        return self.names.get(key, DEFAULT_NAMES.get(key, key))


@dataclass
class Evaluation:
    """The result dict (the evaluator's JSON), the bona fide and spoof scores it was computed on (after
    calibration and negation), the spoof trials' groups (attack, condition-table row; None without attack
    labels), the protocol's corpus (None without a protocol) and notes for the user."""

    result: dict
    bonafide: np.ndarray
    spoof: np.ndarray
    spoof_groups: np.ndarray | None
    corpus: Corpus | None
    notes: list[str]


def matched_rows(
    scores_path: Path, protocol: Path, protocol_format: str, utt_ids: list[str]
) -> list[ProtocolRow]:
    """The protocol row of every scored trial, in score-file order; ids missing from either side raise
    `UserError` (every protocol trial must have exactly one score)."""
    rows = {row.utt_id: row for row in read_protocol(protocol, protocol_format)}
    unknown = [utt for utt in utt_ids if utt not in rows]
    if unknown:
        raise UserError(
            f"{scores_path}: {len(unknown)} utt_ids are not in the protocol {protocol} "
            f"(first: {first_ids(unknown)})"
        )
    if len(rows) != len(utt_ids):
        scored = set(utt_ids)
        unscored = [utt for utt in rows if utt not in scored]
        raise UserError(
            f"{protocol}: {len(unscored)} of {len(rows)} protocol trials have no score in "
            f"{scores_path} (first: {first_ids(unscored)})"
        )
    return [rows[utt] for utt in utt_ids]


def keys_and_attacks(
    scores_path: Path,
    protocol: Path | None,
    protocol_format: str,
    utt_ids: list[str],
    keys: np.ndarray | None,
    attacks: np.ndarray | None,
    notes: list[str],
    protocol_name: str = DEFAULT_NAMES["protocol"],
) -> tuple[np.ndarray, np.ndarray]:
    """The key and attack of every scored trial, from `protocol` if given, else from the score file."""
    if protocol is None:
        if keys is None or attacks is None:
            raise UserError(
                f"{scores_path}: the 'utt_id score' layout has no keys; "
                f"pass {protocol_name} to take them from a CM protocol"
            )
        attacks, renamed = rename_legacy_attacks(attacks)
        if renamed:
            notes.append(
                "note: renamed the pre-release 2019 LA attack names "
                + ", ".join(f"{a}->{LEGACY_ATTACK_IDS[a]}" for a in renamed)
            )
        return keys, attacks
    matched = matched_rows(scores_path, protocol, protocol_format, utt_ids)
    protocol_keys = np.array([row.key for row in matched])
    if keys is not None:
        n_differ = int(np.count_nonzero(protocol_keys != keys))
        if n_differ:
            notes.append(
                f"note: {n_differ} keys in the score file differ from the protocol; the protocol's are used"
            )
    return protocol_keys, np.array([row.attack for row in matched])


def maybe_negate(
    bonafide: np.ndarray, spoof: np.ndarray, notes: list[str], name: str = "allow_negated"
) -> bool:
    """Whether negating the scores lowers the EER (evaluator flag --allow-negated); adds a note either way."""
    eer = compute_eer(bonafide, spoof)[0]
    eer_negated = compute_eer(-bonafide, -spoof)[0]
    if eer_negated < eer:
        notes.append(
            f"note: {name} NEGATED the scores (higher = more spoof in this file): "
            f"EER {100 * eer:.4f} % as given, {100 * eer_negated:.4f} % negated; "
            "the results above are for the negated scores"
        )
        return True
    notes.append(f"note: {name} kept the scores as given (negated EER would be {100 * eer_negated:.4f} %)")
    return False


def two_classes(is_bona: np.ndarray, what: str) -> None:
    """Raise `UserError` unless both bona fide and spoof trials are present."""
    for name, mask in (("bona fide", is_bona), ("spoof", ~is_bona)):
        if not mask.any():
            raise UserError(f"{what}: no {name} trials; the EER needs both classes")


def fit_file_calibration(
    dev_scores: str | Path, protocol: str | Path | None = None, protocol_name: str = "a CM protocol"
) -> tuple[Calibration, list[str]]:
    """Fit the affine score-to-LLR calibration (docs/evaluation.md#calibration) on a development score file.

    Keys come from the file or from ``protocol``. Returns the calibration and warnings for the user
    (separable classes). A file without both classes or with constant scores raises `UserError`.
    """
    dev_scores = Path(dev_scores)
    dev = read_scores(dev_scores)
    keys, _ = keys_and_attacks(
        dev_scores,
        None if protocol is None else Path(protocol),
        "auto",
        dev.utt_ids.tolist(),
        dev.keys,
        dev.attacks,
        [],
        protocol_name,
    )
    is_bona = keys == BONAFIDE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SeparableScoresWarning)
        try:
            calibration = fit_calibration(dev.scores[is_bona], dev.scores[~is_bona])
        except MetricError as exc:
            raise UserError(f"{dev_scores}: {exc}") from None
    return calibration, [f"{dev_scores}: {w.message}" for w in caught]


def describe_calibration(calibration: Calibration, source: str) -> str:
    """One line: the affine map and what it was fitted on."""
    return (
        f"{calibration.scale:.6g} * score {'-' if calibration.offset < 0 else '+'} "
        f"{abs(calibration.offset):.6g}, "
        f"fitted on {source} ({calibration.n_bonafide:,} bona fide, {calibration.n_spoof:,} spoof)"
    )


def protocol_corpus(req: EvalRequest) -> Corpus | None:
    """The corpus of the protocol (detected unless given), or None without a protocol; checks input
    combinations (phases, ASV keys and ASV scores only where the corpus has them)."""
    corpus = None
    if req.protocol is not None:
        if req.protocol_format == "auto":
            corpus = detect_corpus(req.protocol, read_head(req.protocol, "protocol file"))
        else:
            corpus = get_corpus(req.protocol_format)
        corpus = corpus.of_file(req.protocol)  # a manifest's columns come from its header
    if req.group_by and corpus is None:
        raise UserError(f"{req.name('group_by')} needs {req.name('protocol')}: the columns come from it")
    if req.subset is not None and (corpus is None or not corpus.subsets):
        kinds = " or ".join(dict.fromkeys(c.protocol_name for c in all_corpora() if c.subsets))
        raise UserError(f"{req.name('subset')} applies to {kinds} given with {req.name('protocol')}")
    if req.asv_metadata is not None and (corpus is None or corpus.asv_metadata_hint is None):
        where = " or ".join(
            f"{c.display} (with {req.name('protocol')} {c.protocol_path(Path(), c.partitions[-1])})"
            for c in all_corpora()
            if c.asv_metadata_hint is not None
        )
        raise UserError(f"{req.name('asv_metadata')} applies to {where}")
    no_asv = corpus is not None and corpus.conditions is None and corpus.asv_scores_hint is None
    if no_asv and req.asv_scores is not None:
        raise UserError(
            f"{req.protocol}: {corpus.display} has no ASV trials, so no t-DCF; drop {req.name('asv_scores')}"
        )
    subset_name(req.subset or "eval")
    return corpus


def evaluate_2019(
    req: EvalRequest, corpus: Corpus | None, cm: CMScores, scores: np.ndarray, notes: list[str]
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray | None]:
    """Result dict of a pooled and per-attack evaluation (2019 LA, In-the-Wild, a score file with keys) and
    its bona fide, spoof, spoof attack arrays."""
    utt_ids = cm.utt_ids.tolist()
    keys, attacks = keys_and_attacks(
        req.scores,
        req.protocol,
        req.protocol_format,
        utt_ids,
        cm.keys,
        cm.attacks,
        notes,
        req.name("protocol"),
    )
    is_bona = keys == BONAFIDE
    two_classes(is_bona, str(req.scores))
    # Without attack labels (In-the-Wild) the one "unknown" group would repeat the pooled numbers.
    bonafide, spoof = scores[is_bona], scores[~is_bona]
    spoof_attacks = attacks[~is_bona] if corpus is None or corpus.has_attacks else None
    negated = req.allow_negated and maybe_negate(bonafide, spoof, notes, req.name("allow_negated"))
    if negated:
        bonafide, spoof = -bonafide, -spoof

    asv_arrays: dict[str, np.ndarray] = {}
    if req.asv_scores is not None:
        asv = read_asv_scores(req.asv_scores)
        is_asv_spoof = asv.asv_keys == "spoof"
        asv_arrays = {
            "asv_tar": asv.of("target"),
            "asv_non": asv.of("nontarget"),
            "asv_spoof": asv.scores[is_asv_spoof],
            "asv_spoof_attacks": asv.cm_keys[is_asv_spoof],
        }
    elif corpus is not None and corpus.asv_scores_hint is None:
        notes.append(f"note: {corpus.display} has no ASV scores, so EER only")
    else:
        hint = corpus or default_corpus()  # a score file with keys: 2019 LA style
        notes.append(
            f"note: no {req.name('asv_scores')} given, so EER only: the t-DCF needs the ASV scores of the "
            f"same partition ({hint.display}: {hint.asv_scores_hint})"
        )
    try:
        result = evaluate_cm(bonafide, spoof, spoof_attacks, cost=req.costs, **asv_arrays)
    except MetricError as exc:
        if exc.source == "asv":
            raise UserError(f"{req.asv_scores}: {exc}") from None
        raise UserError(f"{req.scores}: {exc}") from None
    result = {
        "cm_scores": str(req.scores),
        "asv_scores": None if req.asv_scores is None else str(req.asv_scores),
        "protocol": None if req.protocol is None else str(req.protocol),
        "format": cm.fmt,
        "negated": negated,
        **result,
    }
    return result, bonafide, spoof, spoof_attacks


def _phase(corpus: Corpus, meta: TrialMetadata, subset: str) -> np.ndarray:
    """Mask of the metadata rows in evaluation phase ``subset`` (every row for corpora without phases)."""
    return subset_mask(meta, subset) if corpus.subsets else np.ones(len(meta), dtype=bool)


def _asv_trials(req: EvalRequest, corpus: Corpus, subset: str) -> AsvTrials:
    """The ASV scores of one phase joined to the ASV keys (2021 LA), split by ASV key."""
    asv_meta = corpus.read_metadata(req.asv_metadata, asv=True)
    asv_aligned = align_asv_scores(asv_meta, read_asv_trial_scores(req.asv_scores))
    asv_mask = _phase(corpus, asv_meta, subset)
    asv_sub = asv_meta.select(asv_mask)
    asv_scores = require_scores(asv_sub, asv_aligned[asv_mask], req.asv_scores)
    parts = {}
    for key in ASV_KEYS:
        k = asv_sub.keys == key
        if not k.any():
            raise UserError(f"{req.asv_metadata}: no ASV '{key}' trials in subset {subset}")
        parts[key] = Trials(asv_scores[k], asv_sub.rows[k], asv_sub.codecs[k])
    return AsvTrials(parts["target"], parts["nontarget"], parts["spoof"])


def evaluate_conditions(
    req: EvalRequest, corpus: Corpus, cm: CMScores, scores: np.ndarray, notes: list[str]
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Result dict of a per-condition evaluation (2021 LA/DF) of one phase and its (bona fide, spoof, spoof
    row) arrays."""
    meta = corpus.read_metadata(req.protocol)
    layout = corpus.conditions
    subset = subset_name(req.subset or "eval")
    given = [req.name(key) for key in ("asv_scores", "asv_metadata") if getattr(req, key) is not None]
    if given and not layout.tdcf:
        raise UserError(
            f"{req.protocol}: {corpus.display} is evaluated by EER only (no t-DCF); "
            f"drop {' and '.join(given)}"
        )
    if len(given) == 1:
        raise UserError(
            f"the {corpus.display} t-DCF needs both {req.name('asv_scores')} ({corpus.asv_scores_hint}) "
            f"and {req.name('asv_metadata')} ({corpus.asv_metadata_hint})"
        )
    mask = _phase(corpus, meta, subset)
    utt_ids = cm.utt_ids.tolist()
    aligned = align_scores(meta, utt_ids, scores, req.scores)
    if cm.keys is not None:
        key_of = dict(zip(meta.trials.tolist(), meta.keys.tolist(), strict=True))
        n_differ = sum(key_of[u] != k for u, k in zip(utt_ids, cm.keys.tolist(), strict=True))
        if n_differ:
            notes.append(
                f"note: {n_differ} keys in the score file differ from the metadata; the metadata's are used"
            )
    sub = meta.select(mask)
    sub_scores = require_scores(sub, aligned[mask], req.scores)
    is_bona = sub.keys == BONAFIDE
    two_classes(is_bona, f"{req.protocol} (subset {subset})")
    bonafide, spoof = sub_scores[is_bona], sub_scores[~is_bona]
    negated = req.allow_negated and maybe_negate(bonafide, spoof, notes, req.name("allow_negated"))
    if negated:
        bonafide, spoof = -bonafide, -spoof

    asv = None
    if given:
        asv = _asv_trials(req, corpus, subset)
    elif layout.tdcf:
        notes.append(
            f"note: no {req.name('asv_scores')}/{req.name('asv_metadata')} given, so EER only: the "
            f"{corpus.display} t-DCF needs {corpus.asv_scores_hint} and {corpus.asv_metadata_hint}"
        )
    bona_trials = Trials(bonafide, sub.rows[is_bona], sub.codecs[is_bona])
    spoof_trials = Trials(spoof, sub.rows[~is_bona], sub.codecs[~is_bona])
    try:
        tables = condition_tables(layout, bona_trials, spoof_trials, asv, req.costs)
    except MetricError as exc:
        raise UserError(f"{req.asv_scores if exc.source == 'asv' else req.scores}: {exc}") from None
    result = {
        "cm_scores": str(req.scores),
        "asv_scores": None if req.asv_scores is None else str(req.asv_scores),
        "asv_metadata": None if req.asv_metadata is None else str(req.asv_metadata),
        "protocol": str(req.protocol),
        "format": cm.fmt,
        "track": meta.track,
        "subset": subset if corpus.subsets else None,
        "negated": negated,
        "eer": tables["eer"],
        "eer_threshold": tables["eer_threshold"],
        # per-condition tables report the revised 2021 t-DCF only (docs/evaluation.md); both keys hold it.
        "min_tdcf": tables["min_tdcf"],
        "min_tdcf_2021": tables["min_tdcf"],
        "n_bonafide": int(bonafide.size),
        "n_spoof": int(spoof.size),
        "asv": tables["asv"],
        "per_condition": tables["per_condition"],
        "per_cell": tables["per_cell"],
    }
    return result, bonafide, spoof, spoof_trials.rows


def protocol_order(
    scores_path: Path, protocol: Path, protocol_format: str, scored: np.ndarray, listed: np.ndarray
) -> np.ndarray | slice:
    """Index into the protocol's trials (``listed``) of every scored utt_id (``scored``), (n,), or the whole
    slice when both list the same ids in the same order (no copies); ids missing from either side raise
    `UserError` as in `matched_rows`."""
    if scored.shape == listed.shape and np.array_equal(scored, listed):
        return slice(None)
    index = dict(zip(listed.tolist(), range(listed.size), strict=True))
    found = [index.get(utt, -1) for utt in scored.tolist()]
    if -1 in found or len(found) != listed.size:
        matched_rows(scores_path, protocol, protocol_format, scored.tolist())  # raises the detailed error
    return np.array(found)


def evaluate_track1(
    req: EvalRequest, trials: TrialColumns, cm: CMScores, scores: np.ndarray, notes: list[str]
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Result dict of an ASVspoof 5 Track 1 evaluation (`utils.track1`: pooled measures and
    ``per_cell[attack][codec]``) of the protocol's ``trials`` and its bona fide, spoof, spoof attack
    arrays."""
    order = protocol_order(req.scores, req.protocol, req.protocol_format, cm.utt_ids, trials.utt_ids)
    is_bona = trials.keys[order] == BONAFIDE
    two_classes(is_bona, str(req.scores))
    attacks = trials.attacks[order]
    codecs = None if trials.codecs is None else trials.codecs[order]
    negated = req.allow_negated and maybe_negate(
        scores[is_bona], scores[~is_bona], notes, req.name("allow_negated")
    )
    if negated:
        scores = -scores
    try:
        tables = track1_tables(scores, is_bona, attacks, codecs, workers=req.workers)
    except MetricError as exc:
        raise UserError(f"{req.scores}: {exc}") from None
    result = {
        "cm_scores": str(req.scores),
        "protocol": str(req.protocol),
        "format": cm.fmt,
        "track": "asvspoof5-track1",
        "negated": negated,
        "n_bonafide": int(np.count_nonzero(is_bona)),
        "n_spoof": int(np.count_nonzero(~is_bona)),
        **tables["pooled"],
        "attacks": tables["attacks"],
        "codecs": tables["codecs"],
        "per_cell": tables["per_cell"],
    }
    return result, scores[is_bona], scores[~is_bona], attacks[~is_bona]


def group_columns(corpus: Corpus, rows: list[ProtocolRow], names: tuple[str, ...], what: str) -> dict:
    """{column: values (n,)} of ``rows`` for each of ``names``; a column the corpus's rows do not carry
    raises `UserError` naming ``what`` and listing those they do."""
    for name in names:
        if name not in corpus.fields:
            carried = ", ".join(corpus.fields)
            raise UserError(f"{what}: no column '{name}' to group by; its rows carry: {carried}")
    direct = {"speaker": lambda r: r.speaker, "attack": lambda r: r.attack}
    return {name: np.array([direct[name](r) if name in direct else r.extra.get(name, "") for r in rows])
            for name in names}


def protocol_groups(
    req: EvalRequest, corpus: Corpus, utt_ids: np.ndarray, scores: np.ndarray, asvspoof5: bool
) -> dict:
    """`utils.groups.group_tables` of the evaluated trials (the chosen phase of corpora with phases) by the
    protocol columns ``req.group_by``; ``scores`` (n,) in score-file order (``utt_ids``), as evaluated."""
    rows = corpus.parse(req.protocol, read_text(req.protocol, "protocol file"))
    subset = subset_name(req.subset or "eval")
    if corpus.subsets and subset != "all":
        rows = [r for r in rows if r.extra.get("subset") == subset]
    columns = group_columns(corpus, rows, req.group_by, str(req.protocol))
    position = dict(zip(utt_ids.tolist(), range(utt_ids.size), strict=True))
    taken = scores[[position[r.utt_id] for r in rows]]  # every trial has a score: the evaluation checked
    return group_tables(taken, np.array([r.key == BONAFIDE for r in rows]), columns, asvspoof5)


def evaluate_scores(req: EvalRequest, corpus: Corpus | None = None) -> Evaluation:
    """Evaluate ``req`` (``corpus``: from `protocol_corpus`, which runs first when not given).

    The result dict has the keys of the evaluator's JSON: ``eer``, ``eer_threshold``, ``min_tdcf`` (None
    without ASV scores), ``n_bonafide``, ``n_spoof``, per attack or per condition, with ``asvspoof5`` the
    measures of `utils.metrics.asvspoof5_measures`, ``calibration`` when calibrated and ``histogram`` for
    corpora without attack labels (In-the-Wild). Bad input raises `UserError` naming the file.
    """
    if corpus is None:
        corpus = protocol_corpus(req)
    notes: list[str] = []
    if req.calibration is not None:
        notes.append(
            "note: scores calibrated to LLRs as "
            + describe_calibration(req.calibration, req.calibration_source or "development scores")
        )
    track1 = corpus is not None and corpus.track1_tables
    if track1:
        # The protocol (up to a million rows) is read in a second thread while this one reads the scores:
        # numpy releases the GIL in most of the splitting. A bad score file is still reported first.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="protocol") as pool:
            protocol = pool.submit(corpus.trial_columns, req.protocol)
            cm = read_scores(req.scores, req.score_format)
            trials = protocol.result()
    else:
        cm = read_scores(req.scores, req.score_format)
    scores = cm.scores if req.calibration is None else req.calibration.apply(cm.scores)
    if track1:
        result, bonafide, spoof, groups = evaluate_track1(req, trials, cm, scores, notes)
    elif corpus is not None and corpus.conditions is not None:
        result, bonafide, spoof, groups = evaluate_conditions(req, corpus, cm, scores, notes)
    else:
        result, bonafide, spoof, groups = evaluate_2019(req, corpus, cm, scores, notes)
    # Track 1 results hold the ASVspoof 5 measures already.
    if req.metrics == "asvspoof5" and not track1:
        try:
            result.update(asvspoof5_measures(bonafide, spoof))
        except MetricError as exc:
            raise UserError(f"{req.scores}: {exc}") from None
    if req.group_by:
        result["groups"] = protocol_groups(req, corpus, cm.utt_ids, -scores if result["negated"] else scores,
                                           req.metrics == "asvspoof5" or track1)
    if req.calibration is not None:
        result["calibration"] = {**req.calibration.as_dict(), "dev_scores": req.calibration_source}
    if corpus is not None and not corpus.has_attacks:
        result["histogram"] = score_histogram(bonafide, spoof)
    return Evaluation(result, bonafide, spoof, groups, corpus, notes)
