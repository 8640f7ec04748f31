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

On a CPU the scan is instead the step-by-step recurrence itself in a custom autograd function
(`_Recurrence`): states of RECURRENCE_BLOCK time steps at a time are built, run through the recurrence
in place and reduced against C while they are still in cache; the backward pass is the reverse
recurrence of the state gradient, block by block, with the reductions for u, Δ, A, B and C fused into
the same blocks, each block's decays and states recomputed from its saved first state. No (B, D, L, N)
tensor ever goes to memory, where the chunked scan makes tens of passes over such tensors
(docs/PERFORMANCE.md); it is exact for any decay, so no chunk length is needed.

On CUDA with ``mamba_ssm`` installed, ``impl="auto"`` uses its fused kernel instead (same inputs).
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

#: Largest log-decay magnitude spanned by one chunk: e^60 ≈ 1e26, far from float32's 3e38 overflow.
MAX_LOG_SPAN = 60.0
#: Longest chunk: longer chunks cut the carry loop further but cost more rounding in the cumulative sums.
MAX_CHUNK = 16
IMPLS = ("auto", "torch", "mamba_ssm")
#: Time steps per block of the CPU recurrence: 8 × (batch 20 × 288 × 16) float32 states are 2.9 MB, which
#: stay in cache between the recurrence and its reductions (bench/bench_mamba_scan.py, docs/PERFORMANCE.md).
RECURRENCE_BLOCK = 8


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


class _Recurrence(torch.autograd.Function):
    """y_t = Σ_n C_t h_t with h_t = e^{Δ_t A} h_{t-1} + Δ_t u_t B_t, one step after another in blocks.

    delta (Δ after softplus), u: (B, D, L); A: (D, N); B, C: (B, N, L) -> y (B, D, L); float32.
    Decays and states live only in per-block buffers laid out (steps, B, N, D), so that every product
    runs along the contiguous channel axis D; only each block's last state is saved, and the backward
    pass recomputes a block's decays and states from it (cheaper than a trip to memory and back).
    """

    @staticmethod
    def forward(ctx, delta, u, A, B, C, block: int):  # noqa: ANN001, ANN205 (autograd signature)
        with torch.autocast(delta.device.type, enabled=False):
            dt = delta.permute(2, 0, 1).contiguous()  # (L, B, D)
            du = dt * u.permute(2, 0, 1)
            At = A.t().contiguous()  # (N, D)
            Bt, Ct = B.permute(2, 0, 1).contiguous(), C.permute(2, 0, 1).contiguous()  # (L, B, N)
            length, b, d = dt.shape
            n_blocks = -(-length // block)
            # ends[i] = the state before block i (ends[0] = 0)
            ends = dt.new_zeros(n_blocks, b, At.shape[0], d)
            decay, states = dt.new_empty(block, b, At.shape[0], d), dt.new_empty(block + 1, b, At.shape[0], d)
            y = dt.new_empty(length, b, d)
            for i in range(n_blocks):
                t0, t1 = i * block, min(length, (i + 1) * block)
                _block_states(dt, du, At, Bt, t0, t1, ends[i], decay, states)
                k = t1 - t0
                torch.bmm(Ct[t0:t1].view(k * b, 1, -1), states[1 : k + 1].view(k * b, -1, d),
                          out=y[t0:t1].view(k * b, 1, d))
                if i + 1 < n_blocks:
                    ends[i + 1].copy_(states[k])
        ctx.block = block
        ctx.save_for_backward(dt, u, du, At, Bt, Ct, ends)
        return y.permute(1, 2, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):  # noqa: ANN001, ANN205 (autograd signature)
        with torch.autocast(dy.device.type, enabled=False):
            grads = _recurrence_backward(dy.float(), ctx.block, *ctx.saved_tensors)
        return (*grads, None)


def _block_states(
    dt: torch.Tensor, du: torch.Tensor, At: torch.Tensor, Bt: torch.Tensor, t0: int, t1: int,
    before: torch.Tensor, decay: torch.Tensor, states: torch.Tensor,
) -> None:
    """Steps t0..t1-1 of the recurrence into the block buffers: decay[j] = e^{Δ A} and states[j + 1] = h
    at step t0 + j, states[0] = ``before`` (the state at t0 − 1). (steps, B, N, D) layout."""
    k = t1 - t0
    torch.mul(dt[t0:t1, :, None], At, out=decay[:k]).exp_()
    states[0].copy_(before)
    torch.mul(du[t0:t1, :, None], Bt[t0:t1, :, :, None], out=states[1 : k + 1])
    for j in range(k):
        states[j + 1].addcmul_(decay[j], states[j])


def _recurrence_backward(
    dy: torch.Tensor, block: int, dt: torch.Tensor, u: torch.Tensor, du: torch.Tensor, At: torch.Tensor,
    Bt: torch.Tensor, Ct: torch.Tensor, ends: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Gradients of `_Recurrence` for (delta, u, A, B, C), last block first: the block's decays and states
    recomputed from its saved start, the state gradient g_t = C_t dy_t + e^{Δ_{t+1} A} g_{t+1} (carried
    across blocks), then d(Δu) = Σ_n g B, dB = Σ_d g Δu, dC = Σ_d h dy and, from x = g h_{t-1} e^{ΔA},
    dΔ += Σ_n x A, dA = Σ_{b,t} x Δ. Time-major tensors as saved by the forward pass."""
    length, b, d = dt.shape
    n = At.shape[0]
    dyt = dy.permute(2, 0, 1).contiguous()
    dC, dB = dt.new_empty(length, b, n), dt.new_empty(length, b, n)
    d_du, d_dt = dt.new_empty(length, b, d), dt.new_empty(length, b, d)
    dA = torch.zeros_like(At)
    decay, states = dt.new_empty(block + 1, b, n, d), dt.new_empty(block + 1, b, n, d)
    g = dt.new_zeros(block + 1, b, n, d)  # [:k] this block, [block] the next block's first
    x, xa = dt.new_empty(block, b, n, d), dt.new_empty(block, b, n, d)
    for i in reversed(range(ends.shape[0])):
        t0, t1 = i * block, min(length, (i + 1) * block)
        k = t1 - t0
        gb, xb = g[:k], x[:k]
        if t1 < length:
            decay[block].copy_(decay[0])  # the next block's first decay, before this block overwrites it
        _block_states(dt, du, At, Bt, t0, t1, ends[i], decay, states)
        torch.mul(dyt[t0:t1, :, None], Ct[t0:t1, :, :, None], out=gb)
        if t1 < length:
            gb[k - 1].addcmul_(decay[block], g[block])
        for j in range(k - 2, -1, -1):
            gb[j].addcmul_(decay[j + 1], gb[j + 1])
        g[block].copy_(gb[0])
        flat = gb.view(k * b, n, d)
        torch.bmm(states[1 : k + 1].view(k * b, n, d), dyt[t0:t1].view(k * b, d, 1),
                  out=dC[t0:t1].view(k * b, n, 1))
        torch.bmm(Bt[t0:t1].view(k * b, 1, n), flat, out=d_du[t0:t1].view(k * b, 1, d))
        torch.bmm(flat, du[t0:t1].view(k * b, d, 1), out=dB[t0:t1].view(k * b, n, 1))
        torch.mul(gb, states[:k], out=xb).mul_(decay[:k])  # states[0] = 0 before the first block
        torch.sum(torch.mul(xb, At, out=xa[:k]), 2, out=d_dt[t0:t1])
        dA += xb.mul_(dt[t0:t1, :, None]).sum((0, 1))
    d_dt.addcmul_(d_du, u.permute(2, 0, 1))
    d_u = d_du.mul_(dt)
    return d_dt.permute(1, 2, 0), d_u.permute(1, 2, 0), dA.t(), dB.permute(1, 2, 0), dC.permute(1, 2, 0)


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
    """The selective scan in plain PyTorch, float32 (see the module docstring).

    u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L); D, delta_bias: (D,) -> (B, D, L) in u's dtype.
    ``chunk``: steps per chunk of the chunked scan (1 is the plain step-by-step recurrence); None: on a
    CPU the blocked recurrence (`_Recurrence`), elsewhere chunks of `chunk_length`.
    """
    dtype = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if chunk is None and _use_recurrence(delta):
        y = _Recurrence.apply(delta, u, A, B, C, RECURRENCE_BLOCK)
    else:
        y = _chunked_scan(u, delta, A, B, C, chunk or chunk_length(delta, A))
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def _use_recurrence(delta: torch.Tensor) -> bool:
    """The blocked recurrence on CPU; the chunked scan elsewhere (GPUs, where per-step kernel launches
    cost more than memory passes: not measured yet), on the meta device and while exporting."""
    return delta.device.type == "cpu" and not torch.compiler.is_exporting()


def _chunked_scan(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Σ_n C_t h_t by the chunk-parallel log-space scan (module docstring); float32 (B, D, L)."""
    log_decay = delta.unsqueeze(-1) * A[:, None, :]  # (B, D, L, N)
    inputs = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (B, D, L, N)
    states, _ = _chunk_states(log_decay, inputs, chunk)
    return torch.einsum("bdln,bnl->bdl", states, C)


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
