"""Benchmark: ASVspoof 5 Track 2 (SASV) measures on a generated trial list of the ASVspoof 5 eval size.

Ours: the exact concurrent t-EER plus the a-DCF and the min t-DCF (utils/sasv.py, the CM DET curve shared).
Baseline: the official package's approximate t-EER alone (`compute_teer_accelerated` after its curve
functions, transcribed in tests/official_asvspoof5_track2.py), on the same scores in the same run, and the
package's computation of all three (its per-trial a-DCF loop, min t-DCF, approximate t-EER). Ours and the
approximate t-EER take turns, `--repeats` runs each, and the fastest of each counts (load from other
processes weighs on both alike). Prints the times, the ratios (target: at most 0.2x the approximate
t-EER), the values, and the CPU; `--cli` also times the evaluator CLI end to end on the same trials
written as the official tab-separated files.

    .venv/bin/python bench/bench_sasv.py             # 680,774 trials, as ASVspoof 5 eval
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
import official_asvspoof5_track2 as official  # noqa: E402

from utils.sasv import TandemTrials, sasv_measures  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def generate(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """CM and ASV scores of target, nontarget, spoof trials with the eval set's balance (about 20 % bona
    fide, split evenly between targets and nontargets); 4 decimals, so there are ties."""
    rng = np.random.default_rng(seed)
    n_bona = round(n * 138_688 / 680_774)
    sizes = (n_bona // 2, n_bona - n_bona // 2, n - n_bona)
    cm = [np.round(rng.normal(m, 1.5, k), 4) for m, k in zip((3.0, 3.0, -2.0), sizes, strict=True)]
    asv = [np.round(rng.normal(m, 1.5, k), 4) for m, k in zip((3.0, -3.0, 1.0), sizes, strict=True)]
    return cm, asv


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def best_of_interleaved(fns: list, repeats: int) -> list[tuple[float, object]]:
    """`best_of` of each function, their runs taking turns, so that load from other processes on a shared
    machine weighs on all of them alike."""
    runs = [[best_of(fn, 1) for fn in fns] for _ in range(repeats)]
    return [min((run[k] for run in runs), key=lambda r: r[0]) for k in range(len(fns))]


def write_files(folder: Path, cm: list[np.ndarray], asv: list[np.ndarray]) -> tuple[Path, Path]:
    """The trials as the official SASV score and key files."""
    labels = np.repeat(["target", "nontarget", "spoof"], [x.size for x in cm])
    cm_all, asv_all = np.concatenate(cm), np.concatenate(asv)
    names = [f"E_{k:010d}" for k in range(labels.size)]
    scores, keys = folder / "sasv_scores.tsv", folder / "sasv_keys.tsv"
    triples = zip(names, cm_all.tolist(), asv_all.tolist(), strict=True)
    score_rows = (f"E_0001\t{f}\t{c!r}\t{a!r}\t{c + a!r}" for f, c, a in triples)
    scores.write_text("spk\tfilename\tcm-score\tasv-score\tsasv-score\n" + "\n".join(score_rows) + "\n")
    cm_labels = np.where(labels == "spoof", "spoof", "bonafide")
    key_rows = (f"E_0001\t{f}\t{c}\t{a}" for f, c, a in zip(names, cm_labels, labels, strict=True))
    keys.write_text("spk\tfilename\tcm-label\tasv-label\n" + "\n".join(key_rows) + "\n")
    return scores, keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=680_774)
    parser.add_argument("--repeats", type=int, default=7, help="runs of each, taking turns; fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli", action="store_true", help="also time the evaluator CLI on written files")
    args = parser.parse_args()
    cm, asv = generate(args.trials, args.seed)
    sasv = [c + a for c, a in zip(cm, asv, strict=True)]
    print(f"{args.trials:,} trials ({cm[0].size:,} target, {cm[1].size:,} nontarget, {cm[2].size:,} spoof); "
          f"CPU: {cpu_model()}; best of {args.repeats}")  # fmt: skip

    def ours() -> dict:
        return sasv_measures(TandemTrials(*cm, *asv), tuple(sasv), approx=False)

    def package() -> float:
        return official.compute_teer_accelerated(*official.teer_inputs(*cm, *asv)) / 100

    def package_all() -> tuple[float, float, float]:
        bona = np.concatenate(cm[:2])
        return official.a_dcf(*sasv), official.min_tdcf(bona, cm[2]), package()

    (t_ours, got), (t_pkg, approx) = best_of_interleaved([ours, package], args.repeats)
    t_all, (pkg_adcf, pkg_tdcf, _) = best_of(package_all, 1)
    print(f"  ours: exact t-EER + a-DCF + min t-DCF  {t_ours:7.3f} s   t-EER {100 * got['t_eer']:.6f} %   "
          f"a-DCF {got['a_dcf']:.6f}   min t-DCF {got['min_tdcf']:.6f}")  # fmt: skip
    print(f"  package: approximate t-EER alone      {t_pkg:7.3f} s   t-EER {100 * approx:.6f} %")
    print(f"  ratio {t_ours / t_pkg:.2f}x (target <= 0.2x); exact and approximate t-EER "
          f"{'agree' if got['t_eer'] == approx else 'differ'}")  # fmt: skip
    print(f"  package: all three (its a-DCF loop, min t-DCF, approximate t-EER) {t_all:7.3f} s "
          f"(ours {t_ours / t_all:.2f}x); a-DCF {pkg_adcf:.6f}, min t-DCF {pkg_tdcf:.6f}")  # fmt: skip
    if args.cli:
        with tempfile.TemporaryDirectory() as tmp:
            scores, keys = write_files(Path(tmp), cm, asv)
            cmd = [sys.executable, "evaluate_tDCF_asvspoof19.py", "--sasv-scores", str(scores)]
            cmd += ["--sasv-keys", str(keys)]
            run = lambda: subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)  # noqa: E731
            t_cli, _ = best_of(run, 1)
        print(f"  evaluator CLI end to end (parse, join, the three and the approximation): {t_cli:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
