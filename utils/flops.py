"""FLOP counts of models, measured by running them on the ``meta`` device (no memory, no arithmetic).

Counts come from `torch.utils.flop_counter.FlopCounterMode` (torch >= 2.1): matrix products,
convolutions and attention count 2 FLOPs per multiply-accumulate; element-wise ops, norms and
activations count nothing (they are memory-bound and small next to the products). Running on ``meta``
tensors makes an XLS-R 300M forward count take about a second on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one sample: ``forward``, and ``train`` = forward + backward (0 when not counted);
    ``by_op``: forward FLOPs per aten op (e.g. ``aten.addmm``)."""

    forward: int
    train: int = 0
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def forward_gflop(self) -> float:
        return self.forward / 1e9

    @property
    def train_gflop(self) -> float:
        return self.train / 1e9


def _first_tensor(out: object) -> torch.Tensor:
    """The tensor a scalar loss is made from: a tensor itself, the last item of a tuple
    ((embedding, logits) models), or ``last_hidden_state`` of Hugging Face outputs."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list):
        return _first_tensor(out[-1])
    hidden = getattr(out, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    raise TypeError(f"cannot find an output tensor in {type(out).__name__}")


def module_flops(
    build: Callable[[], nn.Module], input_shape: Sequence[int], batch: int = 2, train: bool = True
) -> FlopCount:
    """FLOPs per sample of ``build()`` on inputs (batch, *input_shape), counted on the meta device.

    ``build`` is called under ``torch.device("meta")`` so no weights are allocated. ``train``: the
    module runs in train mode and the backward pass of ``output.float().sum()`` is counted too
    (gradients of the parameters; the input needs none, as in training). ``batch`` > 1 keeps batch
    norms in train mode valid; counts are divided by it.
    """
    with torch.device("meta"):
        module = build()
    module.train(train)
    x = torch.zeros(batch, *input_shape, device="meta")
    with FlopCounterMode(display=False) as counter:
        with torch.set_grad_enabled(train):
            out = _first_tensor(module(x))
        forward = counter.get_total_flops()
        by_op = {str(op): int(n) // batch for op, n in counter.get_flop_counts().get("Global", {}).items()}
        if train:
            out.float().sum().backward()
        total = counter.get_total_flops()
    return FlopCount(forward=int(forward) // batch, train=int(total) // batch if train else 0, by_op=by_op)
