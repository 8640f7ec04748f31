"""The staged recipe runner: preprocess → train → score → evaluate for one recipe on one corpus.

Every stage is the command a user would type (printed before it runs), so a run doubles as a worked
example, and each stage reuses what an earlier run finished: preprocessing resumes its stores,
training is skipped when the run folder has its summary (an interrupted one resumes), scoring is
skipped when the score file is newer than the checkpoint, evaluation is quick and always redone.

    out/runs/<recipe>/      training run (best.pt, last.pt, history, logs)
    out/features/           feature stores (recipes whose front end is frozen)
    out/scores/<recipe>_<partition>.txt, out/eval/<recipe>_<partition>.json and .png
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.corpora import recipe_corpus
from engine.partitions import FEATURES, input_mode
from engine.recipe_schema import load_recipe
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "train", "score", "evaluate")


@dataclass
class StageLog:
    """Commands run so far with their wall times (s), for the closing summary."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    def run(self, args: Sequence[str]) -> None:
        """Run one pipeline command from the repo root; a failure stops the run naming the command."""
        shown = " ".join(shlex.quote(a) for a in ["python", *args])
        print(f"\n$ {shown}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, *args], cwd=REPO)
        self.steps.append((shown, time.perf_counter() - start))
        if code != 0:
            raise UserError(f"stage failed with exit code {code}: {shown}")


def stage_range(stage: str, stop_stage: str) -> tuple[str, ...]:
    """Stages from ``stage`` to ``stop_stage`` inclusive; unknown names or a reversed range -> UserError."""
    for name in (stage, stop_stage):
        if name not in STAGES:
            raise UserError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    first, last = STAGES.index(stage), STAGES.index(stop_stage)
    if first > last:
        raise UserError(f"stage {stage!r} comes after stop stage {stop_stage!r}")
    return STAGES[first : last + 1]


def uses_store(cfg: dict[str, Any]) -> bool:
    """Recipes with a frozen feature front end read features from a store; raw-waveform (AASIST) and
    fine-tuning (XLS-R-AASIST) recipes train from audio (`engine.partitions.input_mode`)."""
    return input_mode(cfg) == FEATURES


@dataclass
class Recipe:
    """One recipe run: its config file, corpus and output folder, and the paths it writes."""

    config: Path
    data_root: Path | None
    out: Path
    name: str
    partition: str = "eval"
    seed: int = 0
    overrides: tuple[str, ...] = ()
    quiet: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / self.name

    @property
    def features(self) -> Path:
        return self.out / "features"

    @property
    def scores(self) -> Path:
        return self.out / "scores" / f"{self.name}_{self.partition}.txt"

    @property
    def report(self) -> Path:
        return self.out / "eval" / f"{self.name}_{self.partition}"


def _source(recipe: Recipe, cfg: dict[str, Any]) -> list[str]:
    """Where training and scoring read their inputs: the feature store (of the manifests, for manifest
    corpora), or the corpus audio."""
    corpus = recipe_corpus(cfg)
    if uses_store(cfg):
        return ["--features", str(recipe.features), *([] if corpus.needs_root else corpus_flags(recipe, cfg))]
    return corpus_flags(recipe, cfg)


def corpus_flags(recipe: Recipe, cfg: dict[str, Any]) -> list[str]:
    """The flags naming the recipe's data in each stage's command: ``--data-root ROOT``, or ``--manifest
    PART=FILE`` for each manifest (absolute paths: the stages run from the repository root)."""
    corpus = recipe_corpus(cfg)
    if recipe.data_root is None and corpus.needs_root:
        raise UserError(f"--data-root is required for the {corpus.name} corpus of {recipe.config}, unless "
                        "--manifest PART=FILE lists your recordings")
    return corpus.cli_arguments(recipe.data_root)


def run_stages(recipe: Recipe, stages: Sequence[str], log: StageLog) -> dict[str, Any] | None:
    """Run ``stages`` of ``recipe``; return the evaluator's JSON when the evaluate stage ran."""
    cfg = load_recipe(recipe.config, recipe.overrides)
    corpus = recipe_corpus(cfg)
    data = corpus_flags(recipe, cfg)
    quiet = list(recipe.quiet)
    if "preprocess" in stages:
        if uses_store(cfg):
            log.run(["preprocess.py", "--config", str(recipe.config), *data, "--out", str(recipe.features),
                     *quiet])
        else:
            print(f"\n# {recipe.name}: no preprocessing (the recipe trains from audio)")
    if "train" in stages:
        if (recipe.run_dir / "summary.json").exists():
            print(f"\n# {recipe.name}: {recipe.run_dir} is trained already (remove it to train again)")
        else:
            # --resume continues a run that was interrupted during training.
            # --data-root also when features come from the store: eval availability and protocols
            store = ["--features", str(recipe.features)] if uses_store(cfg) else []
            log.run(["main_train.py", "--config", str(recipe.config), *store, *data,
                     "--out", str(recipe.run_dir), "--seed",
                     str(recipe.seed), "--resume", "--no-eval", *quiet, *recipe.overrides])
    checkpoint = recipe.run_dir / "best.pt"
    if "score" in stages:
        if not checkpoint.is_file():
            raise UserError(f"{checkpoint}: no trained checkpoint to score; run the train stage first")
        fresh = recipe.scores.exists() and recipe.scores.stat().st_mtime >= checkpoint.stat().st_mtime
        if fresh:
            print(f"\n# {recipe.name}: {recipe.scores} is newer than {checkpoint}; not scored again")
        else:
            log.run(["generate_score.py", "--checkpoint", str(checkpoint), *_source(recipe, cfg),
                     "--partition", recipe.partition, "--output", str(recipe.scores), *quiet])
    if "evaluate" not in stages:
        return None
    evaluate = ["evaluate_tDCF_asvspoof19.py", str(recipe.scores),
                "--protocol", str(corpus.protocol_path(recipe.data_root, recipe.partition))]
    asv = corpus.asv_files(recipe.data_root, recipe.partition)  # None where the corpus has none
    if asv is not None:
        evaluate += ["--asv-scores", str(asv.scores)]
        evaluate += [] if asv.metadata is None else ["--asv-metadata", str(asv.metadata)]
    log.run([*evaluate, "--json", str(recipe.report.with_suffix(".json")),
             "--plot", str(recipe.report.with_suffix(".png"))])
    return json.loads(recipe.report.with_suffix(".json").read_text())
