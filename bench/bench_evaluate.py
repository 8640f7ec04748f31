"""Benchmark: our evaluator CLI end to end vs a straightforward baseline of the same computation.

The baseline follows the official ASVspoof 2019 script: np.genfromtxt parsing, compute_det_curve
re-sorting on every call, obtain_asv_error_rates with Python's sum(), compute_tDCF with its checks,
and a per-attack loop that re-parses both files. Both run as fresh subprocesses (interpreter start-up
included) in this same run; the script prints both wall times, the ratio and whether the numbers agree.
It also times the CLI with `--metrics asvspoof5` (adds minDCF, actDCF, Cllr, minCllr) against the
plain CLI (target: at most 1.5x) and checks that neither run imports torch.

    .venv/bin/python bench/bench_evaluate.py            # defaults: the XLS-R-LCNN eval scores in ../shared
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "asvspoof2019_la"
# The baseline (the official script's structure) is also the tests' oracle: it lives in tests/.
sys.path.insert(0, str(REPO / "tests"))
from official_asvspoof2019 import baseline  # noqa: E402

# ---- the benchmark -------------------------------------------------------------------------------------


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


# Runs the CLI as __main__ and prints whether torch got imported (on stderr, after the report).
NO_TORCH = (
    "import runpy, sys\n"
    "sys.argv = ['evaluate_tDCF_asvspoof19.py', *sys.argv[1:]]\n"
    "try:\n    runpy.run_path('evaluate_tDCF_asvspoof19.py', run_name='__main__')\n"
    "except SystemExit as e:\n    assert not e.code, e.code\n"
    "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)"
)


def imports_torch(args: list[str]) -> bool:
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *args], cwd=REPO, check=True, capture_output=True, text=True
    )
    return out.stderr.strip().splitlines()[-1] != "no torch"


def same_numbers(ours: dict, base: dict) -> bool:
    keys = ("eer", "min_tdcf", "min_tdcf_2021")
    pairs = [(ours[k], base[k]) for k in keys]
    pairs += [(ours["per_attack"][a][k], r[k]) for a, r in base["per_attack"].items() for k in keys]
    return set(ours["per_attack"]) == set(base["per_attack"]) and all(
        abs(x - y) <= 1e-12 * abs(y) for x, y in pairs
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", default=str(SHARED / "cm_scores/xlsr_lcnn_eval_scores.txt"))
    parser.add_argument(
        "--asv-scores", default=str(SHARED / "asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt")
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts (default 3)")
    parser.add_argument("--baseline-only", metavar="OUT_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_only:
        baseline(args.scores, args.asv_scores, args.baseline_only)
        return 0
    for path in (args.scores, args.asv_scores):
        if not Path(path).is_file():
            print(f"error: {path} not found (pass --scores / --asv-scores)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        ours_json, base_json = Path(tmp) / "ours.json", Path(tmp) / "base.json"
        ours_cmd = [
            sys.executable,
            "evaluate_tDCF_asvspoof19.py",
            args.scores,
            "--asv-scores",
            args.asv_scores,
        ]
        ours_cmd += ["--json", str(ours_json)]
        base_cmd = [sys.executable, str(Path(__file__).resolve()), "--scores", args.scores]
        base_cmd += ["--asv-scores", args.asv_scores, "--baseline-only", str(base_json)]
        asv5_json = Path(tmp) / "asv5.json"
        asv5_cmd = [*ours_cmd[:-1], str(asv5_json), "--metrics", "asvspoof5"]
        # Interleaved, so that load from other processes hits all three alike; the fastest run counts.
        runs = [[timed(cmd) for cmd in (ours_cmd, base_cmd, asv5_cmd)] for _ in range(args.repeat)]
        t_ours, t_base, t_asv5 = (min(r[k] for r in runs) for k in range(3))
        torch_loaded = imports_torch(ours_cmd[2:]) or imports_torch(asv5_cmd[2:])
        ours, base = json.loads(ours_json.read_text()), json.loads(base_json.read_text())
        asv5 = json.loads(asv5_json.read_text())
    print(f"score file: {args.scores}")
    print(f"ours (CLI, end to end):        {t_ours:7.3f} s")
    print(f"baseline (official structure): {t_base:7.3f} s")
    print(f"ratio ours / baseline:         {t_ours / t_base:7.3f}  (target <= 0.5)")
    agree = "yes" if same_numbers(ours, base) else "NO"
    print(f"same EER / min t-DCF (legacy, 2021), pooled and per attack: {agree}")
    print(
        f"  pooled: EER {ours['eer']!r} (baseline {base['eer']!r}), min t-DCF {ours['min_tdcf']!r} "
        f"(baseline {base['min_tdcf']!r})"
    )
    print(f"ours with --metrics asvspoof5:  {t_asv5:7.3f} s")
    print(f"ratio asvspoof5 / plain CLI:    {t_asv5 / t_ours:7.3f}  (target <= 1.5)")
    print(
        f"  minDCF {asv5['min_dcf']:.7f}, actDCF {asv5['act_dcf']:.7f}, Cllr {asv5['cllr']:.6f}, "
        f"minCllr {asv5['min_cllr']:.6f}; same EER / t-DCF as the plain CLI: "
        + ("yes" if same_numbers(asv5, base) else "NO")
    )
    print(f"torch imported by the CLI: {'YES' if torch_loaded else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
