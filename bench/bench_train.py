"""Training and scoring speed on this machine, as ratios against baselines measured in the same run.

Training (per model, the published input shapes, recipe optimizer/schedule/loss, synthetic features):
  baseline  fp32 eager with the models' original ops (torch.maximum max-feature-map, plain 1 -> 1 channel
            SR conv; see docs/PERFORMANCE.md), default threads
  variants  fp32 eager (current ops), channels_last, fused Adam, both; bf16 ones only where bf16 is native;
            with --compile also compiled ones (dropout masks then come from inductor's RNG, not eager's);
            and `auto` as utils/precision.py resolves it for a --run-steps run (compile only if it pays).
            Every setting runs the SAME --steps steps from the same weights and batches, interleaved step
            by step; per-step losses are compared with the baseline's. The run ratio counts the compile
            time (first step minus a plain step) over a --run-steps run.
Scoring a partition from a feature store (scores compared):
  baseline  one utterance at a time, fp32, one torch.load'ed .pt file per utterance (published script)
  ours      engine.score_batches.score_loader over the memory-mapped store with generate_score.py's CPU
            defaults (batch 1, channels_last, fp32), with --amp bf16 (float32 last layer), with
            --compile (inductor, frozen weights), and with both

    python bench/bench_train.py [--steps 20] [--batch 8] [--models lcnn sr_la_res2net] [--compile]
    python bench/bench_train.py --skip train         # scoring only, ~1 min
    python bench/bench_train.py --profile            # where fp32 training time goes, per op type
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/bench_train.py
                                                     # an AVX2-only CPU, emulated (docs/PERFORMANCE.md)
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import types
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.score_batches import (  # noqa: E402
    autocast_context,
    compile_for_scoring,
    default_batch_size,
    score_loader,
)
from engine.trainer import build_optimizer, build_scheduler  # noqa: E402
from models import build_model  # noqa: E402
from models.countermeasure import Countermeasure  # noqa: E402
from models.losses import build_loss  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402
from utils.compile import compile_for_training  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.precision import (  # noqa: E402
    cpu_facts,
    resolve_amp,
    resolve_channels_last,
    resolve_compile,
    resolve_fused_adam,
)

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


@dataclass(frozen=True)
class Setting:
    """One training setting: autocast, layout, compile, fused Adam, and the pre-2026 model ops (baseline)."""

    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    fused_adam: bool = False
    original_ops: bool = False

    def label(self) -> str:
        if self.original_ops:
            return "fp32 eager, original ops (baseline)"
        parts = ["fp32" if self.amp == "none" else self.amp]
        flags = {"channels_last": self.channels_last, "fused Adam": self.fused_adam, "compile": self.compile}
        parts += [name for name, on in flags.items() if on]
        return " + ".join(parts) if len(parts) > 1 else f"{parts[0]} eager"


def use_original_ops(model: torch.nn.Module) -> None:
    """Put back the ops the models used before the per-op profile (docs/PERFORMANCE.md): ``torch.maximum``
    max-feature-maps, plain 1 -> 1 channel SR convolutions and oneDNN for every convolution; the math is
    the same."""
    from models.conv import Conv2d
    from models.lcnn import MaxFeatureMap
    from models.sr_la_res2net import SpatialReconstruction

    def mfm(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(*x.chunk(2, dim=1))

    def sr(self: SpatialReconstruction, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.drop(self.conv(x.mean(dim=1, keepdim=True))))

    for module in model.modules():
        if isinstance(module, MaxFeatureMap):
            module.forward = types.MethodType(mfm, module)
        elif isinstance(module, SpatialReconstruction):
            module.forward = types.MethodType(sr, module)
        elif isinstance(module, Conv2d):
            module.uses_matmul = types.MethodType(lambda self, x: False, module)


class Trainer:
    """One training `Setting` from weights ``init``; times its own steps."""

    def __init__(self, cfg: dict, init: dict, setting: Setting) -> None:
        torch.manual_seed(0)
        self.cfg, self.init, self.setting = cfg, init, setting
        self.model = build_model(cfg["model"])
        if setting.original_ops:
            use_original_ops(self.model)
        if setting.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        loss = build_loss(cfg["loss"])
        self.loss_init = copy.deepcopy(loss.state_dict())
        self.step_module = Countermeasure(self.model, loss).train()
        if setting.compile:
            self.step_module = compile_for_training(self.step_module)
        self.amp, self.channels_last = setting.amp, setting.channels_last
        self.reset()

    def reset(self) -> None:
        """Back to the initial weights (in place: a compiled step stays compiled) with a fresh optimizer."""
        self.model.load_state_dict(self.init)
        unwrapped = getattr(self.step_module, "_orig_mod", self.step_module)
        unwrapped.loss.load_state_dict(self.loss_init)
        params = list(self.model.parameters())
        self.optimizer = build_optimizer(params, self.cfg["optim"])
        if self.setting.fused_adam:  # the recipe's optimizer, rebuilt with fused=True
            fused = {**self.optimizer.defaults, "foreach": None, "fused": True}
            self.optimizer = type(self.optimizer)(params, **fused)
        self.scheduler, self.interval = build_scheduler(self.optimizer, self.cfg["sched"])
        self.seconds, self.samples, self.losses = 0.0, 0, []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimizer step; returns its seconds."""
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
        took = time.perf_counter() - start
        self.seconds += took
        self.samples += len(y)
        self.losses.append(float(loss.detach()))
        return took

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


def auto_setting(name: str, cfg: dict, run_steps: int, batch: int) -> tuple[Setting, list[str]]:
    """What ``auto`` resolves to through utils/precision.py for a run of ``run_steps`` steps (the trainer
    is not wired to it yet), with the reasons."""
    cpu = torch.device("cpu")
    shape = tuple(cfg["model"]["input_shape"])
    amp = resolve_amp("auto", cpu)
    cl = resolve_channels_last("auto", name, cpu, amp.value)
    comp = resolve_compile("auto", name, cpu, amp.value, run_steps, batch, shape)
    fused = resolve_fused_adam("auto", name, cpu, amp.value)
    return Setting(amp.value, cl.value, comp.value, fused.value), [c.reason for c in (amp, cl, comp, fused)]


def bench_training(name: str, steps: int, batch: int, try_compile: bool, run_steps: int) -> dict[str, float]:
    cfg = load_config(REPO / "configs" / f"{RECIPES[name]}.yaml")
    shape = tuple(cfg["model"]["input_shape"])
    torch.manual_seed(0)
    init = copy.deepcopy(build_model(cfg["model"]).state_dict())
    auto, reasons = auto_setting(name, cfg, run_steps, batch)
    base = Setting(original_ops=True)
    settings = [base, Setting(), Setting(channels_last=True), Setting(fused_adam=True)]
    if resolve_amp("auto", torch.device("cpu")).value == "bf16":  # bf16 variants only where bf16 is native
        settings += [Setting("bf16"), Setting("bf16", True), Setting("bf16", True, fused_adam=True)]
    if try_compile:  # each compile takes minutes on 2 cores
        settings += [replace(s, compile=True) for s in settings[1:] if s.amp == auto.amp and not s.fused_adam]
    if auto.compile or try_compile:
        settings.append(replace(auto, compile=True))
    settings.append(replace(auto, compile=False))
    settings = list(dict.fromkeys(settings))
    print(f"\n== training {name}: input {shape}, batch {batch}; auto ({run_steps}-step run): {auto.label()}")
    for reason in reasons:
        print(f"  {reason}")
    batches = make_batches(shape, batch, steps + 1, seed=2)
    trainers, first_step = {}, {}
    for setting in settings:
        try:
            trainer = Trainer(cfg, init, setting)
            first_step[setting] = trainer.step(*batches[0])  # warm-up: oneDNN primitives, compilation
        except Exception as exc:  # torch.compile may be unavailable (no compiler, unsupported op)
            print(f"  {setting.label()}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
            continue
        print(f"  warm-up step {setting.label()}: {first_step[setting]:.1f} s", flush=True)
        trainer.reset()
        trainers[setting] = trainer
    # The same steps from the same weights and batches for every setting, interleaved step by step.
    run_lockstep(list(trainers.values()), batches[1:])
    ref = trainers[base]
    auto_speed = trainers[auto].speed if auto in trainers else float("nan")
    head = f"{'samples/s':>9s} {'vs base':>8s} {'vs auto':>8s}  {'run ratio':>9s}  max loss diff"
    print(f"  {'setting':44s} {head}")
    ratios = {}
    for setting, trainer in trainers.items():
        rel = np.abs(np.array(trainer.losses) - ref.losses) / np.maximum(np.abs(ref.losses), 1e-3)
        step_s, base_step_s = trainer.seconds / steps, ref.seconds / steps
        # a run of run_steps steps including the compile time (first step minus a plain step)
        overhead = max(0.0, first_step[setting] - step_s) if setting.compile else 0.0
        run_ratio = run_steps * base_step_s / (run_steps * step_s + overhead)
        ratios[setting] = run_ratio
        note = f" (+{overhead:.0f} s compile)" if setting.compile else ""
        mark = " <- auto" if setting == auto else ""
        print(
            f"  {setting.label():44s} {trainer.speed:9.2f} {trainer.speed / ref.speed:7.2f}x "
            f"{trainer.speed / auto_speed:7.2f}x {run_ratio:8.2f}x  {rel.max():7.3%}{note}{mark}"
        )
    for setting, trainer in trainers.items():  # for utils/precision.py's COMPILE_COSTS table
        eager = trainers.get(replace(setting, compile=False))
        if setting.compile and eager is not None:
            print(
                f"  COMPILE_COSTS[{name!r}, <device class>, {setting.amp!r}] = CompileCost("
                f"{first_step[setting] - trainer.seconds / steps:.0f}, {eager.seconds / steps:.3f}, "
                f"{trainer.seconds / steps:.3f}, {batch}, {shape})"
            )
    best = max(ratios, key=ratios.__getitem__)
    print(
        f"  (run ratio: a {run_steps}-step run vs the baseline, compile time included; losses over the same "
        f"{steps} steps vs the baseline)"
    )
    return {
        f"train {name}, best ({best.label()})": ratios[best],
        f"train {name}, auto": ratios.get(auto, float("nan")),
    }


def profile_training(name: str, batch: int, steps: int = 3) -> None:
    """Self CPU time per op type of fp32 eager training steps (original ops and current), torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    cfg = load_config(REPO / "configs" / f"{RECIPES[name]}.yaml")
    shape = tuple(cfg["model"]["input_shape"])
    init = copy.deepcopy(build_model(cfg["model"]).state_dict())
    batches = make_batches(shape, batch, steps + 1, seed=3)
    for setting in (Setting(original_ops=True), Setting()):
        trainer = Trainer(cfg, init, setting)
        trainer.step(*batches[0])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_lockstep([trainer], batches[1:])
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n== profile {name}, {setting.label()}: {steps} steps of batch {batch}, "
              f"{trainer.speed:.2f} samples/s")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]:
            took = e.self_cpu_time_total
            print(f"  {e.key[:48]:48s} {took / 1e6:8.2f} s {took / total:6.1%}")


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
    parser.add_argument(
        "--run-steps", type=int, default=1000,
        help="run length for the training ratios, compile time included, and for compile=auto (default 1000)",
    )
    parser.add_argument("--score-utts", type=int, default=64, help="utterances scored (default 64)")
    parser.add_argument(
        "--score-batch", type=int, default=None, help="our scoring batch (default: generate_score.py's)"
    )
    parser.add_argument(
        "--no-score-compile", action="store_true", help="skip the generate_score.py --compile variants"
    )
    parser.add_argument("--skip", nargs="*", choices=("train", "score"), default=[], help="parts to skip")
    parser.add_argument("--profile", action="store_true", help="only print per-op profiles of fp32 training")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the toolkit's CLIs do (utils/allocator.py); the baselines share this process
    print(f"torch {torch.__version__}; {cpu_facts().describe()}")
    if args.profile:
        for name in args.models:
            profile_training(name, args.batch)
        return 0
    ratios: dict[str, float] = {}
    if "train" not in args.skip:
        for name in args.models:
            ratios.update(bench_training(name, args.steps, args.batch, args.compile, args.run_steps))
    if "score" not in args.skip:
        batch = args.score_batch or default_batch_size(torch.device("cpu"))
        for name in args.models:
            ratios.update(bench_scoring(name, args.score_utts, batch, not args.no_score_compile))
    print("\n== Summary (ratios vs the baselines measured in this run; target >= 1.5x)")
    for what, ratio in ratios.items():
        print(f"  {what:48s} {ratio:6.2f}x")
    for name in args.models:
        auto = ratios.get(f"train {name}, auto")
        if auto is not None:
            print(f"  train {name}: auto {auto:.2f}x ({args.run_steps}-step run, compile time included)  "
                  f"{'PASS' if auto >= 1.5 else 'MISS'}")
    for part in ("train", "score"):
        for name in args.models:
            best = max((r for w, r in ratios.items() if w.startswith(f"{part} {name},")), default=None)
            if best is not None:
                print(f"  {part} {name}: best {best:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
