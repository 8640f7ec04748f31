"""Compute front-end features for whole partitions into resumable, memory-mapped feature stores.

Each store is <out>/<front end tag>/<store name>: the partition for the default corpus (ASVspoof 2019
LA), <corpus>-<partition> for the others, e.g. features/f0/train or features/ssl-wav2vec2-xls-r-300m/dev;
see data/store.py for the files. Rerunning the same command after an interruption (even kill -9)
computes only what is missing. Several processes can fill one store at once: --shard i/n per process,
or torchrun, where each rank takes its own shard (no process group is needed).

Examples:
  python preprocess.py --data-root LA --frontend f0 --out features
  python preprocess.py --data-root LA --frontend ssl --ssl-model facebook/wav2vec2-xls-r-300m --out features
  torchrun --nproc_per_node 4 preprocess.py --data-root LA --frontend ssl --ssl-model /models/xlsr
  # your own recordings, listed in CSV/TSV manifests (docs/data.md): no --data-root
  python preprocess.py --frontend f0 --manifest train=lists/train.csv --manifest dev=lists/dev.csv
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data.corpora import Corpus, corpus_names, default_corpus, get_corpus, recipe_corpus
from data.corpora.manifest import add_manifest_argument, manifest_corpus
from utils.errors import UserError, run_cli

DEFAULT_SSL_MODEL = "facebook/wav2vec2-xls-r-300m"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preprocess.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    default = default_corpus()
    add("--data-root", type=Path, default=None,
        help="corpus root (e.g. the LA folder of 2019 LA); required unless --manifest is given")
    add_manifest_argument(parser)
    add("--dataset", choices=corpus_names(), default=None,
        help=f"corpus (data/corpora/; default: the --config recipe's data.dataset, else {default.name})")
    add("--partitions", nargs="+", default=None, metavar="PARTITION",
        help=f"partitions to process (default: every partition of the corpus, e.g. "
             f"{' '.join(default.partitions)} for {default.name})")
    add("--frontend", choices=("ssl", "f0"), default=None,
        help="ssl: wav2vec2-family hidden states (XLS-R-LCNN); f0: F0 subband (SR-LA-Res2Net)")
    add("--config", type=Path, default=None,
        help="take the front end from a recipe's 'frontend' section (e.g. configs/xlsr_lcnn.yaml), so the "
             "stores match what main_train.py --config reads; --ssl-model/--layer/--dtype still override")
    add("--ssl-model", default=None,
        help="SSL model: local directory, Hugging Face hub id, or random:tiny / random:narrow / "
             f"random:xlsr-300m (random weights, for tests) (default: {DEFAULT_SSL_MODEL})")
    add("--layer", type=int, default=None,
        help="SSL hidden layer: -1 = last hidden state (default), k = hidden_states[k]")
    add("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default=None,
        help="SSL compute dtype (default auto: bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere; "
             "the choice is printed); stored as float16 anyway")
    add("--compile", action="store_true",
        help="SSL: torch.compile the model first (~1 min; then ~5-10%% faster on CPU; needs a C++ "
             "compiler, goes on without it if compiling fails)")
    add("--tiling", choices=("mirror", "repeat"), default="mirror",
        help="F0: how clips shorter than 600 frames are extended in time (default: mirror)")
    add("--out", type=Path, default=Path("features"),
        help="store root; stores go to <out>/<front end tag>/<partition> (default: features)")
    add("--batch-size", type=int, default=16, help="utterances per front-end call (default: 16)")
    add("--device", default=None, help="torch device for SSL models (default: cuda if available)")
    add("--shard", default=None, metavar="I/N",
        help="fill only shard I of N (0-based), e.g. 0/4; run the others anywhere, in any order")
    add("--skip-bad", action="store_true",
        help="list unreadable audio files in <store>/shard-*.bad.tsv and mark them bad instead of "
             "stopping (bad rows are left out of training and scoring)")
    add("--retry-bad", action="store_true",
        help="compute rows an earlier --skip-bad run marked bad again (after fixing the files)")
    add("--num-workers", type=int, default=2,
        help="threads reading audio ahead of the front end (0 = read in the main thread; default: 2)")
    add("--limit", type=int, default=None, metavar="N",
        help="only the first N protocol rows of each partition (for quick tries; this makes a store "
             "with its own index, so use another --out than for the full run)")
    add("--no-progress", action="store_true", help="no progress bar")
    # Test hook: pause after each committed batch, so a test can reliably kill the process mid-run.
    add("--throttle", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser


def parse_shard(text: str | None) -> tuple[int, int]:
    """--shard value and the torchrun environment -> (shard index, number of shards)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if text is None:
        return int(os.environ.get("RANK", "0")), world
    if world > 1:
        raise UserError(f"--shard {text}: cannot be combined with torchrun (WORLD_SIZE={world})")
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise UserError(f"--shard {text}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(match[1]), int(match[2])


def frontend_settings(args: argparse.Namespace) -> dict:
    """The front-end settings dict (models.frontends.build_frontend) chosen by the flags or the recipe."""
    settings = _chosen_settings(args)
    if args.compile:
        if settings.get("name") != "ssl":
            raise UserError("--compile applies to the SSL front end only (the F0 front end is numpy)")
        settings["compile"] = True
    return settings


def _chosen_settings(args: argparse.Namespace) -> dict:
    if args.config is not None:
        from engine.recipe_schema import load_recipe

        settings = {k: v for k, v in load_recipe(args.config)["frontend"].items() if v is not None}
        explicit = {"model": args.ssl_model, "layer": args.layer, "dtype": args.dtype}
        if settings.get("name") == "ssl":
            settings.update({k: v for k, v in explicit.items() if v is not None})
            settings.setdefault("dtype", "auto")
        return settings
    if args.frontend is None:
        raise UserError("give --frontend {ssl,f0} or --config RECIPE.yaml")
    if args.frontend == "f0":
        return {"name": "f0", "tiling": args.tiling}
    settings = {"name": "ssl", "model": args.ssl_model or DEFAULT_SSL_MODEL,
                "layer": -1 if args.layer is None else args.layer}
    settings["dtype"] = args.dtype or "auto"
    return settings


def chosen_corpus(args: argparse.Namespace) -> Corpus:
    """--manifest, else --dataset, else the --config recipe's ``data.dataset``, else the default corpus."""
    manifests = manifest_corpus(args.manifest)
    if manifests is not None:
        if args.dataset is not None:
            raise UserError(f"--dataset {args.dataset}: not with --manifest (the manifests are the corpus)")
        return manifests
    if args.dataset is not None:
        return get_corpus(args.dataset)
    if args.config is not None:
        from engine.recipe_schema import load_recipe

        return recipe_corpus(load_recipe(args.config))
    return default_corpus()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    shard, n_shards = parse_shard(args.shard)
    corpus = chosen_corpus(args)
    if args.data_root is None and corpus.needs_root:
        raise UserError("--data-root is required (the corpus root), unless --manifest PART=FILE lists "
                        "your recordings")
    partitions = args.partitions or list(corpus.partitions)
    for partition in partitions:
        corpus.check_partition(partition)

    from engine.extract import extract_partition
    from models.frontends import build_frontend
    from utils.distributed import place_process

    # torchrun: one GPU per local rank, or a fair share of the CPU cores; ranks never communicate.
    device = place_process(args.device or "auto").device
    frontend = build_frontend(frontend_settings(args), device=device)
    if getattr(frontend, "dtype_reason", None):
        print(frontend.dtype_reason, file=sys.stderr)
    started = time.perf_counter()
    for partition in partitions:
        extract_partition(
            frontend, args.data_root, partition, corpus, args.out, shard=shard, n_shards=n_shards,
            limit=args.limit, retry_bad=args.retry_bad, skip_bad=args.skip_bad, batch_size=args.batch_size,
            num_workers=args.num_workers, progress=not args.no_progress, pause=args.throttle,
        )
    print(f"done: {len(partitions)} partition(s) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
