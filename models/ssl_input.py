"""The input layouts of back ends that read one SSL hidden-state map."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from utils.errors import UserError


def hidden_size_of(input_shape: Sequence[int], model: str) -> int:
    """The hidden size in a model's ``input_shape``: (frames, hidden) for a fine-tuned front end's
    hidden states, or (1, hidden, frames) for the ``ssl`` front end's stored layout."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 2:
        return shape[1]
    if len(shape) == 3 and shape[0] == 1:
        return shape[1]
    raise UserError(
        f"{model}: input_shape must be (frames, hidden) or (1, hidden, frames), got {list(shape)}"
    )


def frames_first(x: torch.Tensor) -> torch.Tensor:
    """(B, frames, hidden) or the stored layout (B, 1, hidden, frames) -> (B, frames, hidden)."""
    return x.squeeze(1).transpose(1, 2) if x.dim() == 4 else x
