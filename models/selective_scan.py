"""Mamba's selective scan in plain PyTorch: runs on CPU and on any GPU, no custom kernels.

The recurrence (Gu & Dao 2023; `selective_scan_ref` of state-spaces/mamba), per batch row, channel d and
state n, with Δ = softplus(delta + delta_bias):

    h_t = exp(Δ_t · A) ⊙ h_{t-1} + Δ_t · B_t · u_t          (state (d, n))
    y_t = C_t · h_t + D · u_t,   out_t = y_t · SiLU(z_t)

`selective_scan` evaluates it chunk-parallel instead of one time step after another: within a chunk of T
steps the states are a cumulative sum in log space, h_t = e^{L_t} Σ_{s≤t} e^{-L_s} b_s with L_t the
running sum of Δ·A from the chunk's first step (`_chunk_states`); a short loop over the chunks then
carries each chunk's last state into the next. The chunk length is chosen per call so that e^{-L}
stays far from float32 overflow (`chunk_length`), which keeps the result equal to the
step-by-step loop to float32 rounding whatever the decay. At XLSR-Mamba's 201 frames and 16-step
chunks that is a few tensor passes and a 12-step loop instead of 201 steps.

On CUDA with ``mamba_ssm`` installed, ``impl="auto"`` uses its fused kernel instead (same inputs).
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F

#: Largest log-decay magnitude spanned by one chunk: e^60 ≈ 1e26, far from float32's 3e38 overflow.
MAX_LOG_SPAN = 60.0
#: Longest chunk: longer chunks cut the carry loop further but cost more rounding in the cumulative sums.
MAX_CHUNK = 16
IMPLS = ("auto", "torch", "mamba_ssm")


def chunk_length(delta: torch.Tensor, A: torch.Tensor, max_chunk: int = MAX_CHUNK) -> int:
    """Steps per chunk such that the log decay over a chunk's last chunk − 1 steps cannot exceed
    `MAX_LOG_SPAN`: the largest per-step |Δ·A| bounds it. delta: (B, D, L) after softplus; A: (D, N) ≤ 0."""
    if delta.device.type == "meta":  # shape-only runs (FLOP counts) have no values to bound
        return max_chunk
    if torch.compiler.is_exporting():
        # an exported graph cannot branch on values: the plain recurrence is exact for any decay
        return 1
    step = float((delta.detach().amax(dim=(0, 2)) * A.detach().abs().amax(dim=1)).max())
    if not math.isfinite(step):
        return 1
    return int(max(1, min(max_chunk, 1 + MAX_LOG_SPAN // max(step, 1e-30))))


def _chunk_states(
    log_decay: torch.Tensor, inputs: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """States of the recurrence h_t = e^{log_decay_t} h_{t-1} + inputs_t with h_{-1} = 0.

    log_decay, inputs: (B, D, L, N) -> (states (B, D, L, N), log decay running sums within chunks).
    """
    b, d, length, n = inputs.shape
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    if pad:  # padded steps come after the real ones, so they change nothing before them
        log_decay, inputs = F.pad(log_decay, (0, 0, 0, pad)), F.pad(inputs, (0, 0, 0, pad))
    cum = log_decay.view(b, d, n_chunks, chunk, n).cumsum(3)
    # relative to the chunk's first step, whose decay never applies to a state born in the chunk: the
    # exponents then span chunk − 1 steps, and a chunk of 1 is the plain recurrence without any exp
    rel = cum - cum[:, :, :, :1]
    local = torch.exp(rel) * (inputs.view(b, d, n_chunks, chunk, n) * torch.exp(-rel)).cumsum(3)
    if n_chunks > 1:
        # carry: the state entering chunk k is chunk k-1's last local state plus its decayed carry
        decay_last, local_last = torch.exp(cum[:, :, :, -1]), local[:, :, :, -1]
        carried = [torch.zeros_like(local_last[:, :, 0])]
        for k in range(n_chunks - 1):
            carried.append(decay_last[:, :, k] * carried[-1] + local_last[:, :, k])
        local = local + torch.exp(cum) * torch.stack(carried, 2).unsqueeze(3)
    return local.reshape(b, d, n_chunks * chunk, n)[:, :, :length], cum


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    chunk: int | None = None,
) -> torch.Tensor:
    """The selective scan, chunk-parallel in float32 (see the module docstring).

    u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L); D, delta_bias: (D,) -> (B, D, L) in u's dtype.
    ``chunk``: steps per chunk (None: `chunk_length`; 1 is the plain step-by-step recurrence).
    """
    dtype = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    chunk = chunk or chunk_length(delta, A)
    log_decay = delta.unsqueeze(-1) * A[:, None, :]  # (B, D, L, N)
    inputs = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (B, D, L, N)
    states, _ = _chunk_states(log_decay, inputs, chunk)
    y = torch.einsum("bdln,bnl->bdl", states, C)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def mamba_ssm_available() -> bool:
    """Whether the ``mamba_ssm`` package (CUDA kernels) can be imported."""
    return importlib.util.find_spec("mamba_ssm") is not None


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    impl: str = "auto",
) -> torch.Tensor:
    """`selective_scan_torch`, or ``mamba_ssm``'s fused CUDA kernel (``impl="mamba_ssm"``, or ``auto``
    on a CUDA tensor when the package is installed). Shapes as in `selective_scan_torch`."""
    if impl not in IMPLS:
        raise ValueError(f"selective scan: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if impl == "mamba_ssm" or (impl == "auto" and u.is_cuda and mamba_ssm_available()):
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        return selective_scan_fn(u, delta, A, B, C, D, z=z, delta_bias=delta_bias,
                                 delta_softplus=delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
