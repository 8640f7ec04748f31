"""Cross-corpus evaluation: score one checkpoint on every corpus given (any of `data.corpora`: ASVspoof 2019
LA eval, 2021 LA eval, 2021 DF eval, In-the-Wild) and write the table papers print.

    python -m engine.cross_corpus --checkpoint runs/f0/best.pt --corpus la2019=LA \\
        --corpus la2021=ASVspoof2021_LA --corpus df2021=ASVspoof2021_DF --corpus itw=release_in_the_wild \\
        --out runs/f0/cross_corpus

Your own recordings take part as ``--corpus manifest=FILE``: the manifest (`data.corpora.manifest`) lists the
eval trials and their audio files, and its extra columns stay available to the evaluator's ``--group-by``.

For each corpus the eval partition is scored (from raw audio under the corpus root, or from a feature store
made by ``preprocess.py --dataset`` when ``features`` holds one; corpora the checkpoint's recipe scores whole,
``data.score_crop_by_dataset: {itw: full}``, always from audio) and evaluated by `engine.evaluation`, the
code behind evaluate_tDCF_asvspoof19.py, with the ASVspoof 5 measures: EER, min t-DCF where the organisers'
ASV scores are under the root (`data.corpora.Corpus.asv_files`; 2019 LA: the legacy 2019 t-DCF; 2021 LA: the
revised 2021 one with the keys' ASV scores), minDCF, actDCF, Cllr, and the number of trials (corpora with
evaluation phases, 2021: the chosen phase). When the checkpoint carries a calibration
(`engine.calibrate_checkpoint`) the scores are mapped to LLRs first, so actDCF and Cllr judge calibrated LLRs;
otherwise they are computed on the raw scores and the table says so.

Files in ``out``: ``scores_<corpus>.txt`` (raw scores of every trial, ``utt_id attack key score``),
``<corpus>.json`` (the evaluator's JSON), ``results.md`` and ``results.csv`` (`utils.report`). Every input
is checked before the model is loaded; each file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from data.corpora import Corpus as CorpusSpec
from data.corpora import corpus_names, get_corpus
from data.corpora.trial_metadata import subset_name
from engine.evaluation import EvalRequest, describe_calibration, evaluate_scores
from engine.partitions import score_crop, store_dir_for
from engine.score_batches import write_partition_scores
from utils.errors import UserError, run_cli
from utils.io import atomic_write_text
from utils.report import results_markdown, results_row, write_results_table

PARTITION = "eval"


@dataclass(frozen=True)
class Corpus:
    """One corpus to score: its `data.corpora` name and its root folder, or for a corpus without a root
    (``manifest``) the file that lists its eval trials."""

    name: str
    root: Path

    @property
    def spec(self) -> CorpusSpec:
        """The registered corpus (layout, title, ASV files); one without a root bound to its file."""
        spec = get_corpus(self.name)
        return spec if spec.needs_root else spec.of_file(self.root)

    @property
    def manifests(self) -> dict[str, str] | None:
        """``{eval: FILE}`` for a manifest corpus (the scorer reads its audio paths from it), else None."""
        return None if self.spec.needs_root else {PARTITION: str(self.root)}

    @property
    def label(self) -> str:
        """The corpus's name in the results table: its title, for a manifest with the file's name."""
        spec = self.spec
        return spec.title if spec.needs_root else f"{spec.title} {self.root.name}"

    @classmethod
    def parse(cls, text: str) -> Corpus:
        """``NAME=ROOT`` (e.g. ``itw=release_in_the_wild``, ``manifest=lists/eval.csv``); an unknown name
        raises `UserError`."""
        name, sep, root = text.partition("=")
        name = name.strip().lower()
        names = ", ".join(corpus_names())
        if not sep or not root:
            raise UserError(f"corpus '{text}': expected NAME=ROOT (or manifest=FILE) with NAME one of "
                            f"{names}")
        if name not in corpus_names():
            raise UserError(f"corpus '{text}': unknown corpus '{name}'; expected one of {names}")
        return cls(name, Path(root))


@dataclass(frozen=True)
class CorpusInputs:
    """The files a corpus is evaluated with (ASV files None where absent) and the store, if one is used."""

    corpus: Corpus
    protocol: Path
    asv_scores: Path | None
    asv_metadata: Path | None
    store: Path | None
    n_trials: int


@dataclass
class CrossCorpusResult:
    """What `run_cross_corpus` wrote: the table rows (`utils.report` rows), each corpus's evaluator result
    dict, and the paths (``markdown``, ``csv``, ``scores`` and ``json`` per corpus name)."""

    rows: list[dict[str, Any]]
    results: dict[str, dict[str, Any]]
    markdown: Path
    csv: Path
    scores: dict[str, Path]
    json: dict[str, Path]


def corpus_inputs(corpus: Corpus) -> CorpusInputs:
    """The protocol and ASV files of a corpus; a missing root or protocol raises `UserError` naming it."""
    spec = corpus.spec
    rows = spec.read(corpus.root, PARTITION)
    asv = spec.asv_files(corpus.root, PARTITION)
    return CorpusInputs(
        corpus,
        spec.protocol_path(corpus.root, PARTITION),
        None if asv is None else asv.scores,
        None if asv is None else asv.metadata,
        None,
        len(rows),
    )


def with_source(
    item: CorpusInputs, frontend_cfg: dict[str, Any], features: str | os.PathLike | None = None
) -> CorpusInputs:
    """``item`` scored from the eval store under ``features`` for the front end ``frontend_cfg`` if there is
    one, else from audio: then every trial's audio file must exist (`UserError` naming the first missing)."""
    corpus = item.corpus
    if features is not None:
        store = store_dir_for(features, frontend_cfg, PARTITION, corpus.spec)
        if store.is_dir():
            return replace(item, store=store)
    rows = corpus.spec.read(corpus.root, PARTITION)  # a manifest's missing files: `UserError` here
    missing = [Path(r.path) for r in rows if not os.path.isfile(r.path)]
    if missing:
        raise UserError(
            f"{missing[0]}: audio file not found ({len(missing)} of {len(rows)} {corpus.name} trials have "
            f"no audio under {corpus.root})"
        )
    return item


def whole_utterance_corpora(scorer: Any, names: Sequence[str]) -> set[str]:
    """The corpora among ``names`` that the checkpoint's recipe scores whole (``data.score_crop`` or its
    ``score_crop_by_dataset`` entry is ``full``), checked before any is scored: a model that cannot take
    whole utterances raises `UserError` (`engine.scorer.full_length_min_samples`)."""
    from engine.scorer import full_length_min_samples

    whole = set()
    for name in names:
        crop, key = score_crop(scorer.input_cfg, name)
        if crop == "full":
            full_length_min_samples(scorer, key)
            whole.add(name)
    return whole


def _table_notes(calibrated: str | None) -> str:
    if calibrated is not None:
        return f"\nScores calibrated to LLRs before every measure: LLR = {calibrated}.\n"
    return (
        "\nactDCF and Cllr are computed on the raw scores: the checkpoint carries no calibration "
        "(python -m engine.calibrate_checkpoint --checkpoint CKPT), so they do not judge calibrated LLRs.\n"
    )


def _check_corpora(corpora: Sequence[Corpus]) -> None:
    """At least one corpus, none twice."""
    if not corpora:
        raise UserError("no corpus given; expected NAME=ROOT (or manifest=FILE) with NAME one of "
                        + ", ".join(corpus_names()))
    names = [c.name for c in corpora]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"corpus {', '.join(repeated)} given more than once")


def run_cross_corpus(
    checkpoint: str | os.PathLike,
    corpora: Sequence[Corpus],
    out_dir: str | os.PathLike,
    *,
    subset: str = "eval",
    features: str | os.PathLike | None = None,
    device: str = "auto",
    amp: str = "auto",
    batch_size: int | None = None,
    num_workers: int = 0,
    ssl_model: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> CrossCorpusResult:
    """Score ``checkpoint`` on the eval partition of every corpus and write the results table to ``out_dir``.

    ``subset``: the 2021 phase evaluated (every trial is scored); ``features``: a preprocess.py store root
    used for corpora it holds a store of; ``log``: progress lines (default: stderr). Device, precision and
    batch settings as in `engine.scorer.load_scorer`. Returns the rows and files written.
    """
    from engine.scorer import load_scorer, score_partition

    _check_corpora(corpora)
    subset = subset_name(subset)
    log = log or (lambda line: print(line, file=sys.stderr))
    inputs = [corpus_inputs(c) for c in corpora]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")

    scorer = load_scorer(checkpoint, device=device, amp=amp, batch_size=batch_size, ssl_model=ssl_model)
    whole = whole_utterance_corpora(scorer, [item.corpus.name for item in inputs])
    # whole utterances come from the audio: a store holds features of the first frontend.n_samples
    inputs = [with_source(item, scorer.cfg["frontend"], None if item.corpus.name in whole else features)
              for item in inputs]
    calibrated = None
    if scorer.calibration is not None:
        calibrated = describe_calibration(scorer.calibration, f"the dev scores stored with {checkpoint}")
    out.mkdir(parents=True, exist_ok=True)
    rows, results, score_paths, json_paths = [], {}, {}, {}
    for k, item in enumerate(inputs, 1):
        corpus = item.corpus
        source = f"store {item.store}" if item.store is not None else f"audio under {corpus.root}"
        source += ", whole utterances" if corpus.name in whole else ""
        log(f"[{k}/{len(inputs)}] {corpus.name}: scoring {item.n_trials:,} trials ({source})")
        scores = score_partition(scorer, PARTITION, features=item.store,
                                 data_root=None if item.store else corpus.root, dataset=corpus.name,
                                 manifests=corpus.manifests, num_workers=num_workers, progress=progress)
        score_paths[corpus.name] = out / f"scores_{corpus.name}.txt"
        write_partition_scores(scores, score_paths[corpus.name])
        req = EvalRequest(
            scores=score_paths[corpus.name],
            protocol=item.protocol,
            protocol_format=corpus.name,
            subset=subset if corpus.spec.subsets else None,
            asv_scores=item.asv_scores,
            asv_metadata=item.asv_metadata,
            metrics="asvspoof5",
            calibration=scorer.calibration,
            calibration_source=None if scorer.calibration is None else str(checkpoint),
        )
        result = evaluate_scores(req).result
        results[corpus.name] = result
        json_paths[corpus.name] = out / f"{corpus.name}.json"
        atomic_write_text(json_paths[corpus.name], json.dumps(result, indent=2) + "\n")
        label = corpus.label
        label = label if req.subset is None else label.replace(" eval", f" {subset}")  # the phase evaluated
        rows.append(results_row(label, result))
        tdcf = "" if result.get("min_tdcf") is None else f", min t-DCF {result['min_tdcf']:.4f}"
        log(f"[{k}/{len(inputs)}] {corpus.name}: EER {100 * result['eer']:.3f}%{tdcf}")
    markdown, csv_path = out / "results.md", out / "results.csv"
    write_results_table(rows, csv_path=csv_path)
    atomic_write_text(markdown, results_markdown(rows) + _table_notes(calibrated))
    return CrossCorpusResult(rows, results, markdown, csv_path, score_paths, json_paths)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.cross_corpus",
        description="Score one checkpoint on the eval partition of several corpora and write one results "
        "table (Markdown and CSV): EER, min t-DCF where ASV scores exist, minDCF, actDCF, Cllr (on "
        "calibrated LLRs if the checkpoint carries a calibration), trials. Corpus layouts as in the README.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python -m engine.cross_corpus --checkpoint runs/f0/best.pt --corpus la2019=LA "
        "--corpus la2021=ASVspoof2021_LA \\\n      --corpus df2021=ASVspoof2021_DF "
        "--corpus itw=release_in_the_wild --out runs/f0/cross_corpus",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="best.pt from main_train.py, or a .safetensors from models.import_released",
    )
    parser.add_argument(
        "--corpus",
        action="append",
        required=True,
        metavar="NAME=ROOT",
        help=f"a corpus root; NAME one of {', '.join(corpus_names())} (repeat the flag for several); "
        "your recordings as manifest=FILE, a CSV/TSV manifest of eval trials (docs/data.md)",
    )
    parser.add_argument("--out", required=True, help="folder for the score files, JSON results and the table")
    parser.add_argument(
        "--subset", default="eval", help="2021 LA/DF phase: eval (default), progress, hidden or all"
    )
    parser.add_argument(
        "--features",
        help="preprocess.py feature store root: corpora it holds an eval store of are scored from it",
    )
    parser.add_argument(
        "--ssl-model", default=None, help="SSL model replacing the one recorded in the checkpoint"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="utterances per batch (default as generate_score.py)"
    )
    parser.add_argument(
        "--amp", choices=("auto", "none", "bf16", "fp16"), default="auto", help="autocast (default auto)"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    corpora = [Corpus.parse(text) for text in args.corpus]
    done = run_cross_corpus(
        args.checkpoint,
        corpora,
        args.out,
        subset=args.subset,
        features=args.features,
        device=args.device,
        amp=args.amp,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        ssl_model=args.ssl_model,
        progress=not args.no_progress,
    )
    print(done.markdown.read_text(), end="")
    print(f"wrote {done.markdown} and {done.csv}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
