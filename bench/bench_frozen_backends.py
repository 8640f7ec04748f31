"""Benchmark: back ends trained on the same frozen XLS-R store, Nes2Net-X (`nes2net_x_frozen.yaml`) vs
LCNN (`xlsr_lcnn.yaml`).

Both read the stored last hidden state (1, 1024, 201) per utterance, so their training costs compare
directly: one optimizer step of each recipe's model, loss and optimizer on the same batches of synthetic
features (float16-rounded, as read from a store), fp32, interleaved in rotating order in this process.
Prints samples/s of each and the ratio Nes2Net-X / LCNN, with the CPU it ran on.

    .venv/bin/python bench/bench_frozen_backends.py --steps 8 --batch 8
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_preprocess import interleaved  # noqa: E402

from engine.optim import build_optimizer  # noqa: E402
from engine.recipe_schema import load_recipe  # noqa: E402
from models import build_model  # noqa: E402
from models.losses import build_loss  # noqa: E402
from utils.precision import cpu_facts  # noqa: E402

RECIPES = {"nes2net_x": "nes2net_x_frozen", "lcnn": "xlsr_lcnn"}


def train_step(recipe: str, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[int], int]:
    """A function that runs one optimizer step of ``recipe`` on batch ``r % len(batches)`` -> batch size."""
    cfg = load_recipe(REPO / "configs" / f"{recipe}.yaml")
    torch.manual_seed(0)
    model, loss_fn = build_model(cfg["model"]).train(), build_loss(cfg["loss"])
    optimizer = build_optimizer([*model.parameters(), *loss_fn.parameters()], cfg["optim"])

    def step(r: int) -> int:
        x, y = batches[r % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        embedding, logits = model(x)
        loss_fn(embedding, logits, y).backward()
        optimizer.step()
        return int(y.numel())

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="steps per back end, interleaved (default 8)")
    parser.add_argument("--batch", type=int, default=8, help="training batch (default 8)")
    args = parser.parse_args(argv)
    facts = cpu_facts()
    print(f"CPU: {facts.model} ({facts.capability}, native bf16 {facts.native_bf16}), "
          f"{facts.threads} threads; fp32")
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(args.batch, 1, 1024, 201, generator=gen).half().float(),
         torch.randint(0, 2, (args.batch,), generator=gen))
        for _ in range(2)
    ]
    steps = {name: train_step(recipe, batches) for name, recipe in RECIPES.items()}
    for step in steps.values():  # warm-up: allocator, oneDNN primitives
        step(0)
    speed = interleaved(steps, args.steps)
    for name, rate in speed.items():
        print(f"  {name:10s} ({RECIPES[name]}.yaml): {rate:6.2f} samples/s")
    print(f"ratio nes2net_x / lcnn: {speed['nes2net_x'] / speed['lcnn']:.2f}x samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
