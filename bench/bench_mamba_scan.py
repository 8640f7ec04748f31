"""Speed of the plain-PyTorch selective scan against a per-time-step loop, and XLSR-Mamba's back end next
to XLS-R in a fine-tuning step (CPU or GPU; ratios measured in this run, on this machine).

1. Scan, forward + backward, at the recipe's shape (batch 20, 201 frames, d_inner 288, d_state 16):
   `models.selective_scan.selective_scan_torch` as it runs on this device (on a CPU the blocked
   recurrence) and its chunk-parallel log-space scan (``chunk=chunk_length(...)``, the GPU default) vs
   the naive loop over time steps (state-spaces/mamba's ``selective_scan_ref`` order of operations,
   written here). Inputs as in a freshly initialised Mamba layer (S4D-real A, Δ from the dt_proj
   initialisation). The three run interleaved, best of ``--repeats`` each, so load from other jobs on a
   shared machine hits them alike.
2. The XLSR-Mamba back end (1,936,950 parameters), forward + backward at batch 20 × 201 × 1024: measured
   time, and its share of the forward FLOPs next to XLS-R 300M at 64,600 samples (counted on the meta
   device, `utils.flops.module_flops`; matrix products only; the backward pass scales both alike).

    python bench/bench_mamba_scan.py               # best of 3 repetitions
    python bench/bench_mamba_scan.py --device cuda
    python bench/bench_mamba_scan.py --scan-only --threads 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models.selective_scan import chunk_length, selective_scan_torch  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402
from utils.precision import cpu_facts  # noqa: E402

SHAPE = (20, 288, 201, 16)  # batch, d_inner, frames, d_state


def naive_scan(u, delta, A, B, C, D, z, delta_bias):
    """One time step after another (the baseline)."""
    delta = F.softplus(delta + delta_bias[:, None])
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        decay = torch.exp(delta[:, :, t, None] * A)
        state = decay * state + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((state * C[:, None, :, t]).sum(-1))
    return (torch.stack(ys, 2) + u * D[:, None]) * F.silu(z)


def scan_inputs(device: torch.device) -> list[torch.Tensor]:
    """Inputs of one Mamba layer's scan at `SHAPE`, as right after initialisation."""
    b, d, length, n = SHAPE
    g = torch.Generator().manual_seed(0)
    dt = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    tensors = [torch.randn(b, d, length, generator=g), 0.1 * torch.randn(b, d, length, generator=g),
               -torch.arange(1, n + 1.0).repeat(d, 1), torch.randn(b, n, length, generator=g),
               torch.randn(b, n, length, generator=g), torch.ones(d), torch.randn(b, d, length, generator=g),
               dt + torch.log(-torch.expm1(-dt))]
    return [t.to(device).requires_grad_() for t in tensors]


def _timed(fn, inputs: list[torch.Tensor], device: torch.device) -> float:
    """Wall time of forward + backward of ``fn(*inputs).sum()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(*inputs).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def best_times(fns: dict, inputs: list[torch.Tensor], device: torch.device, repeats: int) -> dict[str, float]:
    """Best wall time of forward + backward of each ``fn(*inputs).sum()``, the functions interleaved,
    ``repeats`` rounds after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats + 1):
        for name, fn in fns.items():
            times[name].append(_timed(fn, inputs, device))
    return {name: min(ts[1:]) for name, ts in times.items()}


def best_time(fn, inputs: list[torch.Tensor], device: torch.device, repeats: int) -> float:
    """Best wall time of forward + backward of ``fn(*inputs).sum()`` over ``repeats`` runs (1 warm-up)."""
    return best_times({"fn": fn}, inputs, device, repeats)["fn"]


def chunked_scan(u, delta, A, B, C, D, z, delta_bias):
    """The chunk-parallel log-space scan whatever the device (the GPU default)."""
    chunk = chunk_length(F.softplus(delta.detach() + delta_bias.detach()[:, None]), A.detach())
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, chunk=chunk)


def backend_share(device: torch.device, repeats: int) -> tuple[float, float, float]:
    """(measured s of the back end fwd+bwd at batch 20, its forward GFLOP per utterance, XLS-R's)."""
    from models.frontends.ssl import random_model_config
    from models.xlsr_mamba import XLSRMambaBackEnd
    from utils.flops import module_flops

    torch.manual_seed(0)
    backend = XLSRMambaBackEnd().to(device).train()
    x = torch.randn(SHAPE[0], 201, 1024, device=device)
    seconds = best_time(lambda h: backend(h)[1], [x], device, repeats)
    # forward counts (XLS-R's backward does not run on the meta device); backward ≈ 2x forward for both
    ours = module_flops(XLSRMambaBackEnd, (201, 1024), train=False).forward

    def xlsr():
        from transformers import Wav2Vec2Model

        return Wav2Vec2Model(random_model_config("xlsr-300m"))

    theirs = module_flops(xlsr, (64600,), train=False).forward
    return seconds, ours / 1e9, theirs / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scan-only", action="store_true", help="skip part 2 (the back end)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the toolkit's CLIs do (utils/allocator.py); both scans share this process
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_facts().describe()
    print(f"torch {torch.__version__}; {where}; {args.threads} threads")
    inputs = scan_inputs(device)
    fns = {"naive per-step loop": naive_scan, "chunked log-space scan": chunked_scan,
           f"default on {device.type}": selective_scan_torch}
    with torch.no_grad():
        expected = naive_scan(*inputs)
        diffs = {name: (fn(*inputs) - expected).abs().max().item() for name, fn in fns.items()}
    times = best_times(fns, inputs, device, args.repeats)
    naive = times["naive per-step loop"]
    print(f"selective scan, forward + backward, batch {SHAPE[0]} x {SHAPE[2]} frames, d_inner {SHAPE[1]}, "
          f"d_state {SHAPE[3]} (best of {args.repeats}, interleaved):")
    for name, seconds in times.items():
        print(f"  {name:<24}{1000 * seconds:9.1f} ms   {naive / seconds:5.1f}x the loop's speed "
              f"(max |diff| {diffs[name]:.1e})")
    if args.scan_only:
        return 0
    seconds, back_gflop, ssl_gflop = backend_share(device, args.repeats)
    print(f"XLSR-Mamba back end forward + backward at batch {SHAPE[0]}: {1000 * seconds:.1f} ms; "
          f"forward {back_gflop:.3f} GFLOP per utterance vs XLS-R 300M {ssl_gflop:.1f} GFLOP "
          f"({100 * back_gflop / (back_gflop + ssl_gflop):.2f} % of the step's FLOPs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
