"""``python -m data.demo --out DIR``: generate the demo corpus (see `data.demo`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from data.demo.corpus import (
    DEFAULT_BONAFIDE_FRACTION,
    DEFAULT_COUNTS,
    PARTITIONS,
    format_summary,
    generate_demo_corpus,
)
from utils.errors import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``python -m data.demo --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m data.demo",
        description="Generate a small SYNTHETIC corpus in the ASVspoof 2019 LA layout (protocols, "
        "ASV scores, 16 kHz FLAC) for trying the toolkit. Deterministic for a seed; an identical "
        "existing corpus is reused.",
    )
    parser.add_argument("--out", required=True, type=Path, help="corpus root to create (e.g. demo_out/LA)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    for part in PARTITIONS:
        parser.add_argument(
            f"--n-{part}",
            type=int,
            default=DEFAULT_COUNTS[part],
            help=f"{part} utterances (default %(default)s)",
        )
    parser.add_argument(
        "--bonafide-fraction",
        type=float,
        default=DEFAULT_BONAFIDE_FRACTION,
        help="share of bona fide utterances per partition (default %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: min(2, CPUs))")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = generate_demo_corpus(
        args.out,
        args.seed,
        args.n_train,
        args.n_dev,
        args.n_eval,
        args.bonafide_fraction,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
