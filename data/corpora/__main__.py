"""``python -m data.corpora check NAME ROOT``: validate a corpus root before preprocessing or scoring.

For each partition: the protocol's counts (bona fide, spoof, attacks) and the audio files that are
missing or empty (the first few and how many). Exit 0 when all is well; 1 with the report when audio
files are missing or empty; 2 with a one-line error when a protocol is missing or malformed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data.corpora.base import Corpus, audio_state, corpus_names, get_corpus
from data.protocols import ProtocolRow
from utils.errors import UserError, run_cli
from utils.scorefiles import BONAFIDE

EXIT_AUDIO_PROBLEMS = 1


@dataclass
class PartitionCheck:
    """One partition's protocol counts and its audio files that are missing or empty (paths, in row order)."""

    partition: str
    protocol: Path
    n_bonafide: int
    n_spoof: int
    attacks: dict[str, int]
    missing: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.n_bonafide + self.n_spoof

    @property
    def ok(self) -> bool:
        return not self.missing and not self.empty


def inspect_partition(corpus: Corpus, root: str | os.PathLike, partition: str) -> PartitionCheck:
    """Read one partition's protocol (`UserError` if missing or malformed) and check every audio file."""
    rows: list[ProtocolRow] = corpus.read(root, partition)
    keys = Counter(r.key for r in rows)
    report = PartitionCheck(
        partition,
        corpus.protocol_path(root, partition),
        keys.get(BONAFIDE, 0),
        len(rows) - keys.get(BONAFIDE, 0),
        dict(sorted(Counter(r.attack for r in rows if r.key != BONAFIDE).items())),
    )
    for row in rows:
        state = audio_state(row.path)
        if state != "ok":
            getattr(report, state).append(row.path or row.utt_id)
    return report


def format_check(corpus: Corpus, report: PartitionCheck, show: int) -> str:
    """A partition's report as text: counts, then the audio files that are missing or empty."""
    head = (f"{report.partition}: {report.n:,} trials ({report.n_bonafide:,} bona fide, "
            f"{report.n_spoof:,} spoof)")
    if corpus.has_attacks:
        attacks = ", ".join(f"{a} {n:,}" for a, n in report.attacks.items())
        head += f"; {len(report.attacks)} attacks: {attacks}" if attacks else "; no attacks"
    lines = [head, f"  protocol {report.protocol}"]
    if report.ok:
        lines.append(f"  audio: all {report.n:,} files present")
        return "\n".join(lines)
    lines.append(f"  audio: {len(report.missing):,} missing, {len(report.empty):,} empty of {report.n:,}")
    for what, paths in (("missing", report.missing), ("empty", report.empty)):
        lines += [f"    {what:<8}{p}" for p in paths[:show]]
        if len(paths) > show:
            lines.append(f"    ... and {len(paths) - show:,} more {what}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data.corpora",
        description="Corpus tools. check: validate a corpus root - per partition the protocol's counts "
        "(bona fide, spoof, attacks) and the audio files that are missing or empty. Exit status 0: all "
        "well; 1: audio files missing or empty (listed); 2: a protocol missing or malformed (one-line "
        "error).",
        epilog="example:\n  python -m data.corpora check la2019 LA\n  python -m data.corpora check "
        "itw release_in_the_wild",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="validate a corpus root (protocols and audio files)",
                                description="Validate a corpus root: protocols and audio files.")
    check.add_argument("name", choices=corpus_names(), metavar="NAME",
                       help=f"corpus: {', '.join(corpus_names())}")
    check.add_argument("root", type=Path, help="corpus root (the folder holding its protocols and audio)")
    check.add_argument("--partitions", nargs="+", default=None, metavar="PARTITION",
                       help="partitions to check (default: all of the corpus's partitions)")
    check.add_argument("--show", type=int, default=5, metavar="N",
                       help="missing or empty files listed per partition (default: 5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    corpus = get_corpus(args.name)
    if not corpus.needs_root:
        raise UserError(f"{corpus.name}: has no corpus root to check; the scripts check a manifest's rows "
                        "and audio files when they read it (--manifest PART=FILE)")
    partitions = args.partitions or list(corpus.partitions)
    for partition in partitions:
        corpus.check_partition(partition)
    reports = [inspect_partition(corpus, args.root, p) for p in partitions]  # all protocols before printing
    print(f"{corpus.name} ({corpus.display}) under {args.root}")
    for report in reports:
        print(format_check(corpus, report, max(args.show, 0)))
    bad = [r for r in reports if not r.ok]
    if bad:
        n_missing = sum(len(r.missing) for r in bad)
        n_empty = sum(len(r.empty) for r in bad)
        print(f"problems: {n_missing:,} audio files missing and {n_empty:,} empty "
              f"in {', '.join(r.partition for r in bad)}")
        return EXIT_AUDIO_PROBLEMS
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
