"""The one-command demo (``make demo``): a generated corpus, then the recipe runner (`engine.recipe`:
preprocess → train → score → evaluate) for both demo recipes, and one summary table.

Every step is the command a user would type (printed before it runs), so the demo doubles as a
worked example. Steps whose outputs exist are reused, so a second run is quick. The corpus is
SYNTHETIC and the XLS-R path uses a narrow RANDOM-weight wav2vec2: the numbers show the pipeline
works end to end, not how the published systems perform on ASVspoof 2019 LA.

    python -m engine.demo --out demo_out
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.recipe import STAGES, Recipe, StageLog, run_stages
from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DemoSystem:
    """One published system as the demo runs it."""

    name: str
    title: str
    config: str


SYSTEMS = (
    DemoSystem(
        "sr_la_res2net_f0",
        "SR-LA-Res2Net + F0 subband",
        "configs/demo_sr_la_res2net_f0.yaml",
    ),
    DemoSystem(
        "xlsr_lcnn",
        "XLS-R-LCNN (narrow RANDOM wav2vec2 front end)",
        "configs/demo_xlsr_lcnn.yaml",
    ),
)


def run_demo(
    out: Path,
    seed: int = 0,
    progress: bool = True,
    sizes: tuple[int, int, int] = (200, 200, 400),
    overrides: Sequence[str] = (),
) -> dict[str, dict]:
    """Run the whole demo into ``out``; return each system's eval metrics (the evaluator's JSON).

    ``sizes`` are the train/dev/eval utterance counts of the generated corpus; ``overrides`` are
    ``key=value`` recipe overrides passed to main_train.py (the consistency test uses both).
    """
    out = out if out.is_absolute() else (Path.cwd() / out)
    corpus = out / "LA"
    quiet = () if progress else ("--no-progress",)
    log = StageLog()
    started = time.perf_counter()

    n_train, n_dev, n_eval = (str(n) for n in sizes)
    log.run(["-m", "data.demo", "--out", str(corpus), "--seed", str(seed), "--n-train", n_train,
             "--n-dev", n_dev, "--n-eval", n_eval, *quiet])
    results: dict[str, dict] = {}
    for system in SYSTEMS:
        recipe = Recipe(REPO / system.config, corpus, out, system.name, seed=seed, overrides=tuple(overrides),
                        quiet=quiet)
        results[system.name] = run_stages(recipe, STAGES, log)
    total = time.perf_counter() - started
    print("\n" + "=" * 78)
    print(f"Demo finished in {total:.0f} s. The corpus is SYNTHETIC, the XLS-R front end has RANDOM weights:")
    print("these numbers show the pipeline runs end to end, not the published ASVspoof 2019 LA results.")
    print(f"{'system':<48} {'eval EER %':>10} {'min t-DCF':>10}")
    for system in SYSTEMS:
        r = results[system.name]
        print(f"{system.title:<48} {100 * r['eer']:>10.2f} {r['min_tdcf']:>10.4f}")
    print("\nWhere everything went:")
    print(f"  corpus          {corpus}")
    print(f"  feature stores  {out / 'features'}")
    for system in SYSTEMS:
        print(f"  {system.name:<15} run {out / 'runs' / system.name}, scores {out / 'scores'}, "
              f"report {out / 'eval' / (system.name + '_eval.json')} and .png (DET curves)")
    print("\nStep times:")
    for shown, seconds in log.steps:
        print(f"  {seconds:7.1f} s  {shown[:110]}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.demo",
        description="End-to-end demo on a generated corpus: preprocess, train, score and evaluate "
        "both systems (CPU, a few minutes). Rerunning reuses finished steps.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the corpus and training (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    run_demo(args.out, seed=args.seed, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
