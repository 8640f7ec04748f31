"""Training and scoring speed on this machine, as ratios against baselines measured in the same run.

Training (per model, the published input shapes, recipe optimizer/schedule/loss, synthetic features):
  baseline  plain fp32 eager, default threads
  best      the fastest of bf16 autocast, channels_last, both (and bf16 + channels_last +
            train.compile with --compile; dropout masks then come from inductor's RNG, not eager's),
            chosen on a short trial; then both run the SAME 20 steps from the same weights and batches,
            and the per-step losses are compared (bf16 tolerance).
Scoring a partition from a feature store (scores compared):
  baseline  one utterance at a time, fp32, one torch.load'ed .pt file per utterance (published script)
  ours      engine.scoring.score_loader over the memory-mapped store with generate_score.py's CPU
            defaults (batch 1, channels_last, fp32), with --amp bf16 (float32 last layer), with
            --compile (inductor, frozen weights), and with both

    python bench/bench_train.py [--steps 20] [--batch 8] [--models lcnn sr_la_res2net] [--compile]
    python bench/bench_train.py --skip train         # scoring only, ~1 min
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.scoring import (  # noqa: E402
    autocast_context,
    compile_for_scoring,
    default_batch_size,
    score_loader,
)
from engine.trainer import TrainStep, build_optimizer, build_scheduler  # noqa: E402
from models import build_model  # noqa: E402
from models.losses import build_loss  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402
from utils.compile import compile_for_training  # noqa: E402
from utils.config import load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"lcnn": "xlsr_lcnn", "sr_la_res2net": "sr_la_res2net_f0"}


def make_batches(
    shape: tuple[int, ...], batch: int, steps: int, seed: int = 0
) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, *shape, generator=gen), torch.randint(0, 2, (batch,), generator=gen))
        for _ in range(steps)
    ]


class Trainer:
    """One training setting (amp, channels_last, compile) from weights ``init``; times its own steps."""

    def __init__(self, cfg: dict, init: dict, amp: str, channels_last: bool, compile_: bool) -> None:
        torch.manual_seed(0)
        model = build_model(cfg["model"])
        model.load_state_dict(init)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.step_module = TrainStep(model, build_loss(cfg["loss"])).train()
        if compile_:
            self.step_module = compile_for_training(self.step_module)
        self.optimizer = build_optimizer(list(model.parameters()), cfg["optim"])
        self.scheduler, self.interval = build_scheduler(self.optimizer, cfg["sched"])
        self.amp, self.channels_last = amp, channels_last
        self.seconds, self.samples, self.losses = 0.0, 0, []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        start = time.perf_counter()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(torch.device("cpu"), self.amp):
            loss = self.step_module(x, y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()
        self.seconds += time.perf_counter() - start
        self.samples += len(y)
        self.losses.append(float(loss.detach()))

    @property
    def speed(self) -> float:
        return self.samples / self.seconds


def run_lockstep(trainers: list[Trainer], batches: list) -> None:
    """Alternate the settings step by step, so that load from other processes hits them alike; each
    setting restarts the same dropout RNG stream at every step."""
    for i, (x, y) in enumerate(batches):
        for trainer in trainers:
            torch.manual_seed(1000 + i)
            trainer.step(x, y)


def bench_training(name: str, steps: int, batch: int, try_compile: bool) -> dict[str, float]:
    cfg = load_config(REPO / "configs" / f"{RECIPES[name]}.yaml")
    shape = tuple(cfg["model"]["input_shape"])
    torch.manual_seed(0)
    init = copy.deepcopy(build_model(cfg["model"]).state_dict())
    trial = make_batches(shape, batch, 3, seed=1)
    candidates = [("bf16", False, False), ("none", True, False), ("bf16", True, False)]
    if try_compile:
        candidates += [("bf16", True, True)]  # each compile takes minutes on 2 cores
    print(f"\n== training {name}: input {shape}, batch {batch}, threads {torch.get_num_threads()}")
    trial_speed = {}
    for amp, cl, comp in [("none", False, False), *candidates]:
        label = f"amp={amp} channels_last={cl} compile={comp}"
        try:
            trainer = Trainer(cfg, init, amp, cl, comp)
            trainer.step(*trial[0])  # warm-up: allocator, oneDNN primitives, compilation
            trainer.seconds, trainer.samples = 0.0, 0
            run_lockstep([trainer], trial[1:])
        except Exception as exc:  # torch.compile may be unavailable (no compiler, unsupported op)
            print(f"  trial {label}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
            continue
        trial_speed[(amp, cl, comp)] = trainer.speed
        print(f"  trial {label}: {trainer.speed:.2f} samples/s")
    best = max((c for c in candidates if c in trial_speed), key=trial_speed.__getitem__)
    batches = make_batches(shape, batch, steps, seed=2)
    base, fast = Trainer(cfg, init, "none", False, False), Trainer(cfg, init, *best)
    for trainer in (base, fast):  # warm up, then restart both from the same weights
        trainer.step(*trial[0])
    base, fast = Trainer(cfg, init, "none", False, False), Trainer(cfg, init, *best)
    run_lockstep([base, fast], batches)
    base_speed, base_losses, best_speed, best_losses = base.speed, base.losses, fast.speed, fast.losses
    rel = np.abs(np.array(best_losses) - np.array(base_losses)) / np.maximum(np.abs(base_losses), 1e-3)
    print(f"  baseline fp32 eager : {base_speed:8.2f} samples/s over {steps} steps")
    print(
        f"  best amp={best[0]} channels_last={best[1]} compile={best[2]}: {best_speed:8.2f} samples/s "
        f"-> {best_speed / base_speed:.2f}x"
    )
    print(
        f"  losses step 1/{steps}: fp32 {base_losses[0]:.4f} / {base_losses[-1]:.4f}, "
        f"best {best_losses[0]:.4f} / {best_losses[-1]:.4f}; max relative difference {rel.max():.3%}"
    )
    return {f"train {name}, best setting": best_speed / base_speed}


def bench_scoring(name: str, n_utts: int, batch: int, compile_too: bool = True) -> dict[str, float]:
    from data.dataset import StoreDataset, collate_batch
    from data.store import ShardWriter

    cfg = load_config(REPO / "configs" / f"{RECIPES[name]}.yaml")
    shape = tuple(cfg["model"]["input_shape"])
    torch.manual_seed(0)
    model, loss_fn = build_model(cfg["model"]).eval(), build_loss(cfg["loss"]).eval()
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((n_utts, *shape)).astype(np.float32)
    ids = [f"LA_E_{i:07d}" for i in range(n_utts)]
    print(f"\n== scoring {name}: {n_utts} utterances of {shape} from a store")
    with tempfile.TemporaryDirectory() as tmp:
        index = [
            (u, "LA_0000", "-" if i % 2 else "A07", "bonafide" if i % 2 else "spoof")
            for i, u in enumerate(ids)
        ]
        writer = ShardWriter(Path(tmp) / "store", index, {"name": "bench"}, shape, np.float32)
        writer.commit(np.arange(n_utts), feats)
        pt_dir = Path(tmp) / "pt"
        pt_dir.mkdir()
        for u, f in zip(ids, feats, strict=True):
            torch.save(torch.from_numpy(f), pt_dir / f"{u}.pt")

        store = StoreDataset(Path(tmp) / "store")

        def one_at_a_time() -> list[float]:
            with torch.inference_mode():
                return [float(loss_fn.score(*model(torch.load(pt_dir / f"{u}.pt")[None]))) for u in ids]

        # Ours as generate_score.py runs it: channels_last, then --amp and/or --compile.
        eager = copy.deepcopy(model).to(memory_format=torch.channels_last)
        example = torch.zeros(batch, *shape).contiguous(memory_format=torch.channels_last)
        variants: dict[str, tuple[torch.nn.Module, str, int | None]] = {
            "fp32 (default on CPU)": (eager, "none", None),
            "--amp bf16": (eager, "bf16", None),
        }
        if compile_too:
            for amp, label in (("none", "--compile"), ("bf16", "--compile --amp bf16")):
                start = time.perf_counter()
                compiled, why = compile_for_scoring(copy.deepcopy(eager), example, amp)
                note = f"failed: {why}" if why else f"{time.perf_counter() - start:.0f} s"
                print(f"  compiling for {label}: {note}")
                if not why:
                    variants[label] = (compiled, amp, batch)

        def ours(variant: str) -> np.ndarray:
            net, amp, fixed = variants[variant]
            loader = torch.utils.data.DataLoader(store, batch_size=batch, collate_fn=collate_batch)
            return score_loader(
                net, loss_fn, loader, torch.device("cpu"), amp=amp, channels_last=True, fixed_batch=fixed,
                progress=False,
            ).scores

        # alternate the variants, best of 3 rounds each: load from other processes hits them alike
        times: dict[str, list[float]] = {"baseline": [], **{v: [] for v in variants}}
        results: dict[str, np.ndarray] = {}
        for _ in range(3):
            start = time.perf_counter()
            base = np.array(one_at_a_time())
            times["baseline"].append(time.perf_counter() - start)
            for variant in variants:
                start = time.perf_counter()
                results[variant] = ours(variant)
                times[variant].append(time.perf_counter() - start)
    speed = {v: n_utts / min(t) for v, t in times.items()}
    print(f"  baseline: one .pt file per utterance, fp32, batch 1   : {speed['baseline']:8.2f} utt/s")
    for variant, scores in results.items():
        diff = float(np.max(np.abs(base - scores) / np.maximum(np.abs(base), 1e-3)))
        ties = n_utts - len(np.unique(scores))
        print(
            f"  ours {variant:22s} (store, batch {batch}) : {speed[variant]:8.2f} utt/s "
            f"-> {speed[variant] / speed['baseline']:.2f}x (max relative score difference {diff:.1e}, "
            f"{ties} tied scores)"
        )
    return {f"score {name}, {variant}": speed[variant] / speed["baseline"] for variant in results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps compared (default 20)")
    parser.add_argument("--batch", type=int, default=8, help="training batch (default 8)")
    parser.add_argument("--models", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile)")
    parser.add_argument("--score-utts", type=int, default=64, help="utterances scored (default 64)")
    parser.add_argument(
        "--score-batch", type=int, default=None, help="our scoring batch (default: generate_score.py's)"
    )
    parser.add_argument(
        "--no-score-compile", action="store_true", help="skip the generate_score.py --compile variants"
    )
    parser.add_argument("--skip", nargs="*", choices=("train", "score"), default=[], help="parts to skip")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the toolkit's CLIs do (utils/allocator.py); the baselines share this process
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 CPU support: "
        f"{torch.backends.mkldnn.is_available()}"
    )
    ratios: dict[str, float] = {}
    if "train" not in args.skip:
        for name in args.models:
            ratios.update(bench_training(name, args.steps, args.batch, args.compile))
    if "score" not in args.skip:
        batch = args.score_batch or default_batch_size(torch.device("cpu"))
        for name in args.models:
            ratios.update(bench_scoring(name, args.score_utts, batch, not args.no_score_compile))
    print("\n== Summary (ratios vs the baselines measured in this run; target >= 1.5x)")
    for what, ratio in ratios.items():
        print(f"  {what:48s} {ratio:6.2f}x")
    for part in ("train", "score"):
        for name in args.models:
            best = max((r for w, r in ratios.items() if w.startswith(f"{part} {name},")), default=None)
            if best is not None:
                print(f"  {part} {name}: best {best:.2f}x  {'PASS' if best >= 1.5 else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
