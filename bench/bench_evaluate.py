"""Benchmark: our evaluator CLI end to end vs a straightforward baseline of the same computation.

The baseline follows the official ASVspoof 2019 script: np.genfromtxt parsing, compute_det_curve
re-sorting on every call, obtain_asv_error_rates with Python's sum(), compute_tDCF with its checks,
and a per-attack loop that re-parses both files. Both run as fresh subprocesses (interpreter start-up
included; compiled-module caches allowed even where PYTHONDONTWRITEBYTECODE is set, as on a user's
machine) in this same run; the script prints both wall times, the ratio and whether the numbers agree.
It also times the CLI with `--metrics asvspoof5` (adds minDCF, actDCF, Cllr, minCllr) against the
plain CLI (target: at most 1.5x), times the official script's pooled computation alone (one parse, EER and
both t-DCFs; target: our pooled + per-attack run in at most that time) and checks that neither run
imports torch.

    .venv/bin/python bench/bench_evaluate.py            # defaults: the XLS-R-LCNN eval scores in ../shared

With ``--track1`` it benchmarks ASVspoof 5 Track 1 instead: a generated eval protocol of 680,774 trials
(138,688 bona fide, 542,086 spoof: the released eval partition's balance; 16 attacks x 12 codec values)
and a score file in the evaluation package's format; our CLI with every per-cell table against the
package's full-mode computation (tests/official_asvspoof5_track1.py: its arithmetic, pandas queries per
cell when pandas is importable, else boolean masks), both as fresh subprocesses; it prints both times,
the ratio (target <= 0.1), whether every cell agrees to 1e-9, and the peak memory (RSS) of each.

    .venv/bin/python bench/bench_evaluate.py --track1 [--pandas-path DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "asvspoof2019_la"
# The baseline (the official script's structure) is also the tests' oracle: it lives in tests/.
sys.path.insert(0, str(REPO / "tests"))
from official_asvspoof5_track1 import track1_full, track1_full_frame  # noqa: E402
from official_asvspoof2019 import baseline, evaluate  # noqa: E402

# ---- the benchmark -------------------------------------------------------------------------------------


def with_bytecode_cache(environ: dict | os._Environ) -> dict:
    """``environ`` without PYTHONDONTWRITEBYTECODE: the runs use compiled modules as on a user's machine
    (the first run writes them; the fastest of the repeats is reported)."""
    return {k: v for k, v in environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, env=with_bytecode_cache(os.environ))
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


# ---- ASVspoof 5 Track 1 ---------------------------------------------------------------------------------

N_BONA, N_SPOOF = 138_688, 542_086
T1_ATTACKS = [f"A{i}" for i in range(17, 33)]
T1_CODECS = ["-", *(f"C{i:02d}" for i in range(1, 12))]


def write_track1_files(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A generated ASVspoof 5 eval protocol (10 columns) and a package-format score file, rows shuffled;
    scores are LLR-like with 4 decimals (ties), attacks of varying difficulty."""
    rng = np.random.default_rng(seed)
    n = N_BONA + N_SPOOF
    is_bona = np.zeros(n, bool)
    is_bona[rng.permutation(n)[:N_BONA]] = True
    attack = rng.integers(0, len(T1_ATTACKS), n)
    codec = rng.integers(0, len(T1_CODECS), n)
    scores = np.where(is_bona, rng.normal(3.0, 2.0, n), rng.normal(-4.0 + 0.4 * attack, 2.5, n))
    scores = np.round(scores - 0.3 * codec, 4)
    ids = [f"E_{i:010d}" for i in range(n)]
    labels = np.where(is_bona, "bonafide", np.array(T1_ATTACKS)[attack])
    keys = np.where(is_bona, "bonafide", "spoof")
    codecs = np.array(T1_CODECS)[codec]
    protocol, score_file = folder / "ASVspoof5.eval.track_1.tsv", folder / "scores.tsv"
    rows = zip(ids, codecs.tolist(), labels.tolist(), keys.tolist(), strict=True)
    protocol.write_text("".join(f"E_{i % 737:04d} {u} F {c} - - AT {a} {k} -\n" for i, (u, c, a, k) in
                                enumerate(rows)))
    score_file.write_text("filename\tcm-score\n" + "".join(f"{u}\t{s}\n" for u, s in
                                                            zip(ids, scores.tolist(), strict=True)))
    return protocol, score_file


def package_track1(protocol: Path, score_file: Path, out_json: str) -> None:
    """The package's full-mode Track 1 computation on the two files (pandas when importable)."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None:
        names = ["spk", "filename", "gender", "codec", "codec_q", "codec_seed", "attack_tag", "attack_anon",
                 "cm_label", "tmp"]
        keys = pd.read_csv(protocol, sep=" ", header=None, names=names).set_index("filename")
        frame = pd.read_csv(score_file, sep="\t", header=0).set_index("filename").join(keys)
        table = track1_full_frame(frame)
    else:
        cols = list(zip(*(line.split() for line in protocol.read_text().splitlines()), strict=True))
        score_of = dict(line.split("\t") for line in score_file.read_text().splitlines()[1:])
        scores = np.array([float(score_of[u]) for u in cols[1]])
        table = track1_full(scores, np.array(cols[8]), np.array(cols[7]), np.array(cols[3]))
    Path(out_json).write_text(json.dumps({"pandas": pd is not None, "table": table}))


def timed_peak(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of a command run in a fresh child of a fresh interpreter."""
    probe = ("import resource, subprocess, sys\n"
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=REPO, check=True, env=env,
                         capture_output=True, text=True)
    return time.perf_counter() - start, int(out.stdout.split()[-1]) / 1024


def max_cell_difference(ours: dict, table: dict) -> float:
    """Largest |ours − package| over every cell and measure; inf when the cells or the empty ones differ."""
    worst = 0.0
    for attack, row in table.items():
        for codec, expected in row.items():
            got = ours["per_cell"].get(attack, {}).get(codec, "missing")
            if (expected is None) != (got is None) or got == "missing":
                return float("inf")
            for key, value in (expected or {}).items():
                worst = max(worst, abs(got[key] - value))
    return worst


def bench_track1(args: argparse.Namespace) -> int:
    env = with_bytecode_cache(os.environ)
    if args.pandas_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (args.pandas_path, env.get("PYTHONPATH"))))
    with tempfile.TemporaryDirectory() as tmp:
        protocol, score_file = write_track1_files(Path(tmp))
        ours_json, package_json = Path(tmp) / "ours.json", Path(tmp) / "package.json"
        ours_cmd = [sys.executable, "evaluate_tDCF_asvspoof19.py", str(score_file)]
        ours_cmd += ["--protocol", str(protocol), "--json", str(ours_json)]
        package_cmd = [sys.executable, str(Path(__file__).resolve()), "--track1-package-only",
                       str(package_json), "--protocol", str(protocol), "--scores", str(score_file)]
        runs = [(timed_peak(ours_cmd, env), timed_peak(package_cmd, env)) for _ in range(args.repeat)]
        (t_ours, mem_ours), (t_pkg, mem_pkg) = (min(r[k] for r in runs) for k in range(2))
        ours, package = json.loads(ours_json.read_text()), json.loads(package_json.read_text())
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    how = "pandas queries per cell" if package["pandas"] else "pandas not installed: numpy masks per cell"
    print(f"ASVspoof 5 Track 1, {N_BONA + N_SPOOF:,} trials ({N_BONA:,} bona fide), "
          f"{len(T1_ATTACKS)} attacks x {len(T1_CODECS)} codec values; CPU: {cpu} ({os.cpu_count()} cores)")
    print(f"ours (CLI, all per-cell tables):   {t_ours:7.3f} s   peak RSS {mem_ours:7.1f} MiB "
          "(target <= 1 GB)")
    print(f"package full mode ({how}): {t_pkg:7.3f} s   peak RSS {mem_pkg:7.1f} MiB")
    print(f"ratio ours / package:              {t_ours / t_pkg:7.3f}  (target <= 0.1)")
    worst = max_cell_difference(ours, package["table"])
    print(f"every cell equal to 1e-9: {'yes' if worst <= 1e-9 else 'NO'} (largest difference {worst:.3g})")
    pooled = package["table"]["pooled"]["pooled"]
    print("  pooled: " + ", ".join(f"{k} {ours[k]!r} (package {v!r})" for k, v in pooled.items()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", default=str(SHARED / "cm_scores/xlsr_lcnn_eval_scores.txt"))
    parser.add_argument(
        "--asv-scores", default=str(SHARED / "asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt")
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts (default 3)")
    parser.add_argument("--baseline-only", metavar="OUT_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--pooled-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--track1", action="store_true", help="benchmark ASVspoof 5 Track 1 instead")
    parser.add_argument("--pandas-path", help="--track1: a folder holding pandas for the package's side")
    parser.add_argument("--protocol", help=argparse.SUPPRESS)
    parser.add_argument("--track1-package-only", metavar="OUT_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.track1_package_only:
        package_track1(Path(args.protocol), Path(args.scores), args.track1_package_only)
        return 0
    if args.track1:
        return bench_track1(args)
    if args.baseline_only and args.pooled_only:
        Path(args.baseline_only).write_text(json.dumps(evaluate(args.scores, args.asv_scores)))
        return 0
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
        pooled_cmd = [*base_cmd[:-1], str(Path(tmp) / "pooled.json"), "--pooled-only"]
        # Interleaved, so that load from other processes hits all four alike; the fastest run counts.
        cmds = (ours_cmd, base_cmd, asv5_cmd, pooled_cmd)
        runs = [[timed(cmd) for cmd in cmds] for _ in range(args.repeat)]
        t_ours, t_base, t_asv5, t_pooled = (min(r[k] for r in runs) for k in range(4))
        torch_loaded = imports_torch(ours_cmd[2:]) or imports_torch(asv5_cmd[2:])
        ours, base = json.loads(ours_json.read_text()), json.loads(base_json.read_text())
        asv5 = json.loads(asv5_json.read_text())
    print(f"score file: {args.scores}")
    print(f"ours (CLI, end to end):        {t_ours:7.3f} s")
    print(f"baseline (official structure): {t_base:7.3f} s")
    print(f"ratio ours / baseline:         {t_ours / t_base:7.3f}  (target <= 0.5)")
    print(f"official script, pooled only:  {t_pooled:7.3f} s")
    print(f"ratio ours (pooled + attacks) / official pooled only: {t_ours / t_pooled:7.3f}  (target <= 1.0)")
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
