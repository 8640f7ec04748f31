"""Run a whole recipe: preprocess → train → score → evaluate, or any contiguous part of it.

Each stage runs the command you would type yourself (printed before it runs) and reuses what an earlier
run finished, so rerunning after an interruption continues where it stopped.

Examples:
    # the full ASVspoof 2019 LA recipe of one system, into runs/xlsr_lcnn/
    python run_recipe.py --config configs/xlsr_lcnn.yaml --data-root LA --out runs
    # only train and score (features already there), with recipe overrides
    python run_recipe.py --config configs/sr_la_res2net_f0.yaml --data-root LA --out runs \\
        --stage train --stop-stage score train.epochs=10
    # score and evaluate the dev partition instead of eval
    python run_recipe.py --config configs/sr_la_res2net_f0.yaml --data-root LA --out runs --stage score \\
        --partition dev
    # your own recordings, one CSV/TSV manifest per partition (docs/data.md): no --data-root
    python run_recipe.py --config configs/sr_la_res2net_f0.yaml --out runs \\
        --manifest train=lists/train.csv --manifest dev=lists/dev.csv --manifest eval=lists/eval.csv
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from data.corpora.manifest import add_manifest_argument, manifest_overrides
from utils.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recipe.py",
        description="Run the stages preprocess, train, score, evaluate of one recipe on one corpus.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("Examples:", 1)[1],
    )
    parser.add_argument("--config", required=True, type=Path, help="recipe YAML, e.g. configs/xlsr_lcnn.yaml")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. train.epochs=10"
    )
    parser.add_argument("--data-root", type=Path, default=None,
                        help="corpus root (protocols and audio); required unless --manifest is given")
    add_manifest_argument(parser)
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: runs/<name>/, features/, scores/, eval/ below it")
    parser.add_argument("--name", default=None, help="run name (default: the recipe file's name)")
    parser.add_argument("--stage", default="preprocess", help="first stage (default preprocess)")
    parser.add_argument("--stop-stage", default="evaluate", help="last stage (default evaluate)")
    parser.add_argument("--partition", default="eval", help="partition to score and evaluate (default eval)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from engine.recipe import Recipe, StageLog, run_stages, stage_range

    stages = stage_range(args.stage, args.stop_stage)
    if not args.config.is_file():
        raise UserError(f"{args.config}: recipe not found")
    root = None if args.data_root is None else args.data_root.resolve()
    overrides = (*args.overrides, *manifest_overrides(args.manifest))  # recorded in the trained run's recipe
    recipe = Recipe(args.config, root, args.out.resolve(), args.name or args.config.stem,
                    partition=args.partition, seed=args.seed, overrides=overrides,
                    quiet=("--no-progress",) if args.no_progress else ())
    log = StageLog()
    result = run_stages(recipe, stages, log)
    print("\nStage times:")
    for shown, seconds in log.steps:
        print(f"  {seconds:7.1f} s  {shown[:110]}")
    if result is not None:
        print(f"\n{recipe.name} on {args.partition}: EER {100 * result['eer']:.3f} %"
              + (f", min t-DCF {result['min_tdcf']:.4f}" if result.get("min_tdcf") is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
