"""Memory and speed of fine-tuning XLS-R-AASIST (or XLS-R-SLS, ``--backend sls``: all 24 layer maps kept
for the back end; or XLSR-Mamba, ``--backend xlsr_mamba``), with and without gradient checkpointing (CPU).

The model is the full XLS-R 300M architecture with random weights (``random:xlsr-300m``, 315.4 M
parameters; no download) fine-tuned with the 447,242-parameter AASIST back end, Adam, fp32, the CNN
feature encoder frozen (``frontend.freeze_feature_encoder``), exactly as main_train.py builds them
(`engine.partitions`-style SSL front end in a `models.countermeasure.Countermeasure`). Each variant runs in
its own process. Reported per variant:

- s/step: mean wall time of the timed optimizer steps (forward, backward, Adam) after one warm-up step;
- weights / grads / Adam: bytes of the parameters, of the gradients of the trainable ones and of Adam's
  two moments (these do not shrink with checkpointing);
- activations: bytes allocated during the forward pass and still alive when it ends (what the backward
  pass needs), from torch's CPU allocator events (``torch.profiler`` with ``profile_memory``);
- step peak: the most bytes alive at once during a step on top of weights and Adam state (activations,
  gradients, temporaries), same source; total peak = weights + Adam + step peak;
- max RSS of the process (includes the Python/torch runtime and allocator caching).

    python bench/bench_finetune.py                        # batch 2, 16,000 samples (1 s), 2 timed steps
    python bench/bench_finetune.py --n-samples 64600      # the recipe's 4.04 s input (slower)
    python bench/bench_finetune.py --backend sls --n-samples 64600 --batch 5   # XLS-R-SLS (201 frames)
    python bench/bench_finetune.py --backend xlsr_mamba --n-samples 64600 --variants plain

``back end alone``: forward + backward of the back end (and loss) by itself on the front end's output of
the same batch, timed after the steps: its share of a whole step (XLSR-Mamba: `--backend xlsr_mamba`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GB = 1024**3


def _allocations(prof) -> tuple[list[tuple[int, int]], dict[str, tuple[int, int]]]:
    """Allocator events (time ns, +bytes allocated / -bytes freed) in time order, and the (start, end) ns
    of each ``bench.*`` record_function range."""
    from torch._C._profiler import _EventType

    allocs: list[tuple[int, int]] = []
    ranges: dict[str, tuple[int, int]] = {}
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            allocs.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
        elif node.name.startswith("bench."):
            ranges[node.name] = (node.start_time_ns, node.end_time_ns)
        stack.extend(node.children)
    allocs.sort(key=lambda a: a[0])
    return allocs, ranges


def run_variant(
    checkpoint: bool, n_samples: int, batch: int, steps: int, threads: int, ssl_model: str,
    backend_name: str = "xlsr_aasist",
) -> dict[str, float]:
    """One variant in this process -> its measurements (bytes, seconds)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from engine.optim import build_optimizer
    from models import build_model
    from models.countermeasure import Countermeasure
    from models.frontends import build_frontend
    from models.losses import build_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    frontend = build_frontend(
        {"name": "ssl", "model": ssl_model, "n_samples": n_samples, "trainable": True,
         "do_normalize": False, "freeze_feature_encoder": True,
         **({"layers": "all"} if backend_name == "sls" else {})},
        "cpu",
    )
    if checkpoint:
        frontend.set_grad_checkpointing(True)
    shape = list(frontend.feature_shape) if backend_name == "sls" else [frontend.frames, frontend.hidden_size]
    backend = build_model({"name": backend_name, "input_shape": shape})
    cm = Countermeasure(backend, build_loss({"name": "weighted_ce", "weights": [0.9, 0.1]}), frontend).train()
    trainable = [p for p in cm.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, {"name": "adam", "lr": 1e-6, "weight_decay": 1e-4})
    gen = torch.Generator().manual_seed(1)
    waves = torch.randn(batch, n_samples, generator=gen) * 0.1
    labels = torch.tensor([0, 1] * (batch // 2) + [1] * (batch % 2))

    def step(profiled: bool = False) -> None:
        with record_function("bench.forward") if profiled else _null():
            loss = cm(waves, labels)
        with record_function("bench.backward") if profiled else _null():
            loss.backward()
        with record_function("bench.step") if profiled else _null():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: Adam state allocated
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(profiled=True)
    events, ranges = _allocations(prof)
    live, peak, at_forward_end = 0, 0, None
    forward_end = ranges["bench.forward"][1]
    for t, delta in events:
        if at_forward_end is None and t > forward_end:
            at_forward_end = live
        live += delta
        peak = max(peak, live)
    backend_s = _backend_seconds(Countermeasure(backend, cm.loss), frontend, waves, labels, steps)
    n_params = sum(p.numel() for p in cm.parameters())
    n_trainable = sum(p.numel() for p in trainable)
    return {
        "checkpoint": checkpoint,
        "s_per_step": sum(times) / len(times),
        "backend_s": backend_s,
        "params": n_params,
        "trainable": n_trainable,
        "weights_bytes": 4 * n_params,
        "grads_bytes": 4 * n_trainable,
        "adam_bytes": 2 * 4 * n_trainable,
        "activation_bytes": at_forward_end if at_forward_end is not None else live,
        "step_peak_bytes": peak,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _backend_seconds(back, frontend, waves, labels, steps: int) -> float:
    """Mean wall time of forward + backward of the back end alone (``back``: a countermeasure without
    front end) on the front end's output for ``waves``, after one warm-up."""
    import torch

    with torch.no_grad():
        features = frontend(waves)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        back(features, labels).backward()
        times.append(time.perf_counter() - t0)
    back.zero_grad(set_to_none=True)
    return sum(times[1:]) / steps


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-samples", type=int, default=16000, help="input length (default 16,000 = 1 s)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ssl-model", default="random:xlsr-300m", help="default random:xlsr-300m")
    parser.add_argument("--backend", choices=("xlsr_aasist", "sls", "xlsr_mamba"), default="xlsr_aasist")
    parser.add_argument("--variants", choices=("both", "plain", "checkpoint"), default="both")
    parser.add_argument("--variant", choices=("plain", "checkpoint"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant is not None:  # child process: one variant, JSON on stdout
        result = run_variant(
            args.variant == "checkpoint", args.n_samples, args.batch, args.steps, args.threads,
            args.ssl_model, args.backend,
        )
        print(json.dumps(result))
        return 0

    import platform

    import torch

    back = {"xlsr_aasist": "AASIST", "sls": "SLS (all layers)", "xlsr_mamba": "XLSR-Mamba"}[args.backend]
    print(f"XLS-R + {back} fine-tuning step on CPU ({platform.processor() or platform.machine()}, "
          f"{args.threads} threads, torch {torch.__version__}): {args.ssl_model} + {back} back end, fp32, "
          f"Adam, CNN feature encoder frozen, batch {args.batch} x {args.n_samples} samples "
          f"({args.n_samples / 16000:.2f} s), {args.steps} timed steps")
    results = []
    for variant in ("plain", "checkpoint") if args.variants == "both" else (args.variants,):
        cmd = [sys.executable, __file__, "--variant", variant, "--n-samples", str(args.n_samples),
               "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads),
               "--ssl-model", args.ssl_model, "--backend", args.backend]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = results[0]
    print(f"parameters {first['params']:,} (trainable {first['trainable']:,}): weights "
          f"{first['weights_bytes'] / GB:.2f} GiB, gradients {first['grads_bytes'] / GB:.2f} GiB, Adam state "
          f"{first['adam_bytes'] / GB:.2f} GiB (the same with and without checkpointing)")
    header = f"{'variant':<22}{'s/step':>8}{'activations':>13}{'step peak':>11}{'total peak':>12}"
    print(header + f"{'max RSS':>10}{'back end alone':>16}")
    for r in results:
        total = r["weights_bytes"] + r["adam_bytes"] + r["step_peak_bytes"]
        name = "grad checkpointing" if r["checkpoint"] else "plain"
        print(f"{name:<22}{r['s_per_step']:>8.1f}{r['activation_bytes'] / GB:>11.3f}Gi"
              f"{r['step_peak_bytes'] / GB:>9.3f}Gi{total / GB:>10.3f}Gi{r['max_rss_bytes'] / GB:>8.2f}Gi"
              f"{r['backend_s']:>8.2f}s ({100 * r['backend_s'] / r['s_per_step']:.1f} %)")
    if len(results) < 2:
        return 0
    plain, ckpt = results
    print(f"activation memory {plain['activation_bytes'] / max(ckpt['activation_bytes'], 1):.1f}x lower with "
          f"checkpointing; step {ckpt['s_per_step'] / plain['s_per_step']:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
