"""The Mamba mixer layer (Gu & Dao 2023; ``mamba_ssm/modules/mamba_simple.py``) in plain PyTorch, and the
RMSNorm and pre-norm residual block that XLSR-Mamba stacks (docs/systems/xlsr_mamba.md).

Parameter names and initialisation follow the reference, so its weights load unchanged:
``in_proj`` d_model→2·d_inner (no bias), depthwise causal ``conv1d`` (kernel d_conv, bias) + SiLU on the
x half, ``x_proj`` d_inner→(dt_rank + 2·d_state) (no bias), ``dt_proj`` dt_rank→d_inner (its bias enters
the scan as delta_bias, softplus), ``A_log`` (S4D-real: A = −exp(A_log), rows log(1..d_state)), ``D``
(skip, ones), gate SiLU(z), ``out_proj`` d_inner→d_model (no bias). The scan is
`models.selective_scan.selective_scan`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.selective_scan import selective_scan


class Mamba(nn.Module):
    """One Mamba mixer: (B, L, d_model) -> (B, L, d_model). At d_model 144, d_state 16, d_conv 4,
    expand 2 (dt_rank ⌈144/16⌉ = 9) it has 145,440 parameters."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.d_inner, self.d_state = expand * d_model, d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.impl = impl
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        # dt log-uniform in [dt_min, dt_max]; the bias is its inverse softplus
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        a = torch.arange(1, d_state + 1, dtype=torch.float32)
        self.A_log = nn.Parameter(torch.log(a).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model)."""
        length = hidden.shape[1]
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :length])  # causal: the first `length` outputs of the padded conv
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, d_inner, L); the bias goes to the scan
        y = selective_scan(
            x, dt, -torch.exp(self.A_log.float()), B.transpose(1, 2), C.transpose(1, 2), self.D.float(),
            z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True, impl=self.impl,
        )
        return self.out_proj(y.transpose(1, 2))


class RMSNorm(nn.Module):
    """x · rsqrt(mean(x²) + eps) · weight over the last axis, computed in float32 (no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * scale * self.weight.float()).to(x.dtype)


class MambaBlock(nn.Module):
    """Add → RMSNorm → Mamba (the reference's ``Block`` with fused add+norm): takes (hidden, residual),
    returns (mixer output, residual = hidden + residual), the residual kept in float32."""

    def __init__(self, d_model: int, eps: float = 1e-5, **mamba: object) -> None:
        super().__init__()
        self.mixer = Mamba(d_model, **mamba)
        self.norm = RMSNorm(d_model, eps)

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        residual = hidden.float() if residual is None else residual + hidden.float()
        return self.mixer(self.norm(residual)), residual
