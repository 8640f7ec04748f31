"""Train a countermeasure from a recipe (configs/*.yaml) on cached features or raw audio.

Examples:
    python main_train.py --config configs/sr_la_res2net_f0.yaml --features feats --data-root LA --out runs/f0
    python main_train.py --config configs/xlsr_lcnn.yaml train.batch_size=32 --features feats --out runs/x
    python main_train.py --config configs/sr_la_res2net_f0.yaml --on-the-fly --data-root LA --out runs/f0
    python main_train.py --config configs/aasist.yaml --data-root LA --out runs/aasist     # raw waveforms
    python main_train.py --config configs/xlsr_aasist_la.yaml --data-root LA --out runs/xa  # fine-tunes XLS-R
    python main_train.py ... --on-the-fly --data-root LA augment.preset=la   # RawBoost algo 5 (README)
    python main_train.py ... --out runs/f0 --resume           # continue a killed run
    python main_train.py ... --seeds 0 1 2                     # runs/f0/seed0 ... and mean ± std
    torchrun --nproc_per_node 4 main_train.py ...              # several GPUs (DDP)
    python main_train.py --config configs/sr_la_res2net_f0.yaml --on-the-fly --out runs/mine \
        --manifest train=lists/train.csv --manifest dev=lists/dev.csv   # your recordings (docs/data.md)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data.corpora.manifest import add_manifest_argument, manifest_overrides
from utils.errors import UserError, run_cli
from utils.io import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main_train.py",
        description="Train a countermeasure (XLS-R-LCNN, SR-LA-Res2Net, AASIST, AASIST-L, XLS-R-AASIST) from "
        "a recipe. Each epoch computes the dev EER; best.pt holds the epoch with the lowest dev EER "
        "(train.select_by=dev_loss for the published choice), last.pt the latest epoch, swa.pt the weight "
        "average with train.swa. Recipes with a 'waveform' or trainable front end read raw audio from "
        "--data-root. Under torchrun every process trains its share of each batch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("Examples:", 1)[1],
    )
    parser.add_argument("--config", required=True, help="recipe YAML, e.g. configs/sr_la_res2net_f0.yaml")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override recipe values with dotted keys, e.g. train.epochs=10 optim.lr=1e-4",
    )
    parser.add_argument(
        "--features", help="feature store root written by preprocess.py (holds <front-end tag>/<partition>/)"
    )
    parser.add_argument(
        "--data-root",
        help="corpus root (protocols and audio; the recipe's data.dataset, ASVspoof 2019 LA by default); "
        "needed with --on-the-fly and for raw-waveform and fine-tuning recipes (unless --manifest gives the "
        "recordings)",
    )
    add_manifest_argument(parser)
    parser.add_argument(
        "--on-the-fly",
        action="store_true",
        help="compute features from raw audio while training instead of reading a store",
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, config, logs, scores)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train one run per seed in OUT/seed<N> and report mean ± std of dev and eval EER",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels: a resumed run ends with the same weights (CPU)",
    )
    parser.add_argument(
        "--no-eval", action="store_true", help="do not score the eval partition after training"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # Test hook: pause after each epoch's checkpoint, so a test can reliably kill the run between epochs.
    parser.add_argument("--throttle", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser


def _eval_available(args: argparse.Namespace, cfg: dict, partition: str | None) -> bool:
    from data.corpora import recipe_corpus
    from engine.partitions import FEATURES, input_mode, store_dir_for

    if partition is None or args.no_eval:
        return False
    corpus = recipe_corpus(cfg)
    if partition not in corpus.partitions:
        return False
    if args.on_the_fly or input_mode(cfg) != FEATURES:
        return corpus.protocol_path(args.data_root, partition).is_file()
    return store_dir_for(args.features, cfg["frontend"], partition, corpus).is_dir()


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (NaN, NaN when there are none)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def _report_seeds(out: Path, seeds: list[int], results: list) -> None:
    """summary_seeds.json and the printed mean ± std of dev and eval EER over the seeds."""
    dev_m, dev_s = _mean_std([r.best_dev_eer for r in results])
    ev_m, ev_s = _mean_std([r.eval_eer for r in results if r.eval_eer is not None])
    summary = {
        "seeds": seeds,
        "dev_eer": [r.best_dev_eer for r in results],
        "eval_eer": [r.eval_eer for r in results],
        "dev_eer_mean": dev_m,
        "dev_eer_std": dev_s,
        "eval_eer_mean": ev_m,
        "eval_eer_std": ev_s,
        "runs": [str(r.out_dir) for r in results],
    }
    atomic_write_text(out / "summary_seeds.json", json.dumps(summary, indent=2) + "\n")
    print(f"{len(seeds)} seeds: dev EER {100 * dev_m:.3f} ± {100 * dev_s:.3f}%", end="")
    print(f", eval EER {100 * ev_m:.3f} ± {100 * ev_s:.3f}%" if math.isfinite(ev_m) else "")


def main(argv: Sequence[str] | None = None) -> int:
    # intermixed: key=value overrides may come before, between or after the flags
    args = build_parser().parse_intermixed_args(argv)
    from engine.recipe_schema import load_recipe  # the recipe's model keys need the model registry (torch)

    # --manifest PART=FILE: data.dataset=manifest data.manifests.PART=FILE, recorded in the run's recipe
    cfg = load_recipe(args.config, [*args.overrides, *manifest_overrides(args.manifest)])
    for section in ("frontend", "model", "loss", "train"):
        if not isinstance(cfg.get(section), dict):
            raise UserError(f"{args.config}: recipe has no '{section}' section")

    # Heavy imports (data, training) after the recipe is checked; --help stays instant.
    from engine.partitions import open_sources, training_frontend
    from engine.scorer import open_run_partition
    from engine.trainer import fit
    from models import build_model
    from models.losses import build_loss
    from utils import distributed as du
    from utils.seed import seed_everything

    data = cfg.get("data", {}) or {}
    dist_info = du.init_distributed(args.device)
    try:
        where = {"features": args.features, "data_root": args.data_root, "on_the_fly": args.on_the_fly}
        # the training partition gets the recipe's crop and augmentation, drawn per (seed, epoch, utterance);
        # data.train and data.dev may also list several sources (data/mixture.py)
        train_set = open_sources(cfg, data.get("train", "train"), training=True, **where)
        dev_set = open_sources(cfg, data.get("dev", "dev"), key="dev", **where)
        eval_name = data.get("eval")
        with_eval = _eval_available(args, cfg, eval_name)
        if not with_eval and dist_info.is_main and not args.no_eval and eval_name:
            print(f"note: no '{eval_name}' partition found; eval scoring skipped", file=sys.stderr)

        seeds = args.seeds or [args.seed]
        results = []
        for seed in seeds:
            out = Path(args.out) if args.seeds is None else Path(args.out) / f"seed{seed}"
            seed_everything(seed, args.deterministic)
            model = build_model(cfg["model"])
            loss_fn = build_loss(cfg["loss"])
            frontend = training_frontend(cfg, dist_info.device)  # None unless the front end is trained
            # eval as generate_score.py scores best.pt: data.score_crop (whole utterances need the model)
            eval_set = open_run_partition(cfg, str(eval_name), model, frontend, source=str(args.config),
                                          **where) if with_eval else None
            result = fit(
                cfg,
                model,
                loss_fn,
                train_set,
                dev_set,
                out,
                frontend=frontend,
                seed=seed,
                dist_info=dist_info,
                resume=args.resume,
                deterministic=args.deterministic,
                eval_set=eval_set,
                command=["main_train.py", *argv] if argv is not None else None,
                progress=not args.no_progress,
                on_epoch_end=(lambda _epoch: time.sleep(args.throttle)) if args.throttle > 0 else None,
            )
            results.append(result)
            if dist_info.is_main:
                eval_text = f", eval EER {100 * result.eval_eer:.3f}%" if result.eval_eer is not None else ""
                print(
                    f"seed {seed}: best epoch {result.best_epoch} of {result.epochs_done}, dev EER "
                    f"{100 * result.best_dev_eer:.3f}% (threshold {result.threshold:.6g}){eval_text}; "
                    f"checkpoint {result.best_path}"
                )
        if len(seeds) > 1 and dist_info.is_main:
            _report_seeds(Path(args.out), seeds, results)
    finally:
        du.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
