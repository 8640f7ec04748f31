"""Speed of the plain-PyTorch selective scan against a per-time-step loop, and XLSR-Mamba's back end next
to XLS-R in a fine-tuning step (CPU or GPU; ratios measured in this run, on this machine).

1. Scan, forward + backward, at the recipe's shape (batch 20, 201 frames, d_inner 288, d_state 16):
   `models.selective_scan.selective_scan_torch` (chunk-parallel) vs the naive loop over time steps
   (state-spaces/mamba's ``selective_scan_ref`` order of operations, written here). Inputs as in a freshly
   initialised Mamba layer (S4D-real A, Δ from the dt_proj initialisation).
2. The XLSR-Mamba back end (1,936,950 parameters), forward + backward at batch 20 × 201 × 1024: measured
   time, and its share of the forward FLOPs next to XLS-R 300M at 64,600 samples (counted on the meta
   device, `utils.flops.module_flops`; matrix products only; the backward pass scales both alike).

    python bench/bench_mamba_scan.py               # best of 3 repetitions
    python bench/bench_mamba_scan.py --device cuda
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

from models.selective_scan import selective_scan_torch  # noqa: E402
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


def best_time(fn, inputs: list[torch.Tensor], device: torch.device, repeats: int) -> float:
    """Best wall time of forward + backward of ``fn(*inputs).sum()`` over ``repeats`` runs (1 warm-up)."""
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*inputs).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the toolkit's CLIs do (utils/allocator.py); both scans share this process
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_facts().describe()
    print(f"torch {torch.__version__}; {where}; {args.threads} threads")
    inputs = scan_inputs(device)
    with torch.no_grad():
        diff = (selective_scan_torch(*inputs) - naive_scan(*inputs)).abs().max().item()
    naive = best_time(naive_scan, inputs, device, args.repeats)
    ours = best_time(selective_scan_torch, inputs, device, args.repeats)
    print(f"selective scan, forward + backward, batch {SHAPE[0]} x {SHAPE[2]} frames, d_inner {SHAPE[1]}, "
          f"d_state {SHAPE[3]} (best of {args.repeats}):")
    print(f"  naive per-step loop {1000 * naive:9.1f} ms")
    print(f"  torch chunked scan  {1000 * ours:9.1f} ms   {naive / ours:.1f}x faster (max |diff| {diff:.1e})")
    seconds, back_gflop, ssl_gflop = backend_share(device, args.repeats)
    print(f"XLSR-Mamba back end forward + backward at batch {SHAPE[0]}: {1000 * seconds:.1f} ms; "
          f"forward {back_gflop:.3f} GFLOP per utterance vs XLS-R 300M {ssl_gflop:.1f} GFLOP "
          f"({100 * back_gflop / (back_gflop + ssl_gflop):.2f} % of the step's FLOPs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
