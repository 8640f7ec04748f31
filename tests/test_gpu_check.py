"""bench/gpu_check.py on a machine without a GPU: the dry run, argument parsing, the host-side parts, the
FLOP counts it derives utilisation from, and that `pytest -m cuda` skips cleanly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO

from bench import gpu_check

PARTS = {
    "facts", "matmul", "flops", "cuda_tests", "train_lcnn", "train_sr_la_res2net", "ssl_extract",
    "store_read", "decode", "finetune",
}  # fmt: skip
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


def test_dry_run_lists_every_part_within_four_minutes(capsys, tmp_path: Path) -> None:
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "out")]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert listed == PARTS == set(gpu_check.part_names())
    assert not (tmp_path / "out").exists()
    args = gpu_check.build_parser().parse_args([])
    assert sum(budget for _, budget in gpu_check.selected_parts(args)) <= 240
    compiled = gpu_check.build_parser().parse_args(["--compile"])
    assert sum(b for _, b in gpu_check.selected_parts(compiled)) > 240 + 200  # compiling takes minutes


@no_cuda
def test_without_cuda_it_is_a_dry_run(capsys, tmp_path: Path) -> None:
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 0
    assert "CUDA is not available: dry run" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_argument_parsing(capsys) -> None:
    parser = gpu_check.build_parser()
    args = parser.parse_args(["--only", "matmul", "finetune", "--scale", "2", "--compile"])
    assert [(p.name, b) for p, b in gpu_check.selected_parts(args)] == [("matmul", 10.0), ("finetune", 60.0)]
    args = parser.parse_args(["--skip", "cuda_tests", "finetune"])
    assert {p.name for p, _ in gpu_check.selected_parts(args)} == PARTS - {"cuda_tests", "finetune"}
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--only", "no_such_part"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_flop_counts() -> None:
    ssl = gpu_check.ssl_flops()
    # XLS-R 300M on 64,600 samples (201 frames): the linear layers exactly as counted by hand: per layer and
    # frame Q, K, V, O (4·1024²) and the feed-forward pair (2·1024·4096) multiply-accumulates, 24 layers, plus
    # the 512 -> 1024 feature projection; 2 FLOPs each. 148.8 GFLOP with convolutions and attention.
    per_frame = 24 * (4 * 1024 * 1024 + 2 * 1024 * 4096) + 512 * 1024
    assert ssl.by_op["aten.addmm"] == 2 * 201 * per_frame == 121_610_698_752
    assert 145e9 < ssl.forward < 152e9
    lcnn = gpu_check.recipe_flops("xlsr_lcnn")
    assert 5.5e9 < lcnn.forward < 5.8e9 and 15e9 < lcnn.train < 18e9  # the "≈ 17 GFLOP"
    res2net = gpu_check.recipe_flops("sr_la_res2net_f0")
    assert 3.0e9 < res2net.forward < 3.5e9 and 2.5 * res2net.forward < res2net.train < 3.2 * res2net.forward
    finetune = gpu_check.finetune_flops()
    assert ssl.forward < finetune.forward < ssl.forward + 2e9 and 3 * ssl.forward < finetune.train


def test_datasheet_peaks() -> None:
    assert gpu_check.datasheet_peak("NVIDIA H200") == 989.0
    assert gpu_check.datasheet_peak("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.datasheet_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.datasheet_peak("NVIDIA A10") == 125.0
    assert gpu_check.datasheet_peak("NVIDIA A10G") is None


def test_host_parts_run_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert gpu_check.main(["--device", "cpu", "--only", "flops", "decode", "--out", str(out)]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert {n: r["status"] for n, r in report["parts"].items()} == {"flops": "ok", "decode": "ok"}
    gflop = report["parts"]["flops"]["raw"]["xlsr_lcnn back end training (fwd+bwd)"]["gflop"]
    assert 15 < gflop < 18
    assert report["parts"]["decode"]["raw"]["decode 3.5 s FLAC, 1 threads"]["utt_per_s"] > 0
    assert "## decode: ok" in (out / "gpu_check.md").read_text()


def test_a_failing_or_slow_part_is_reported_not_raised(tmp_path: Path) -> None:
    ctx = gpu_check.Context(gpu_check.build_parser().parse_args([]), torch.device("cpu"), tmp_path, tmp_path)

    def fails(ctx: gpu_check.Context) -> None:
        ctx.record("first", "1 utt/s", items=1)
        raise RuntimeError("boom")

    def slow(ctx: gpu_check.Context) -> None:
        time.sleep(5)

    result = gpu_check.run_part(ctx, gpu_check.Part("fails", 5, "", fails), 5)
    assert result["status"] == "failed" and result["error"] == "RuntimeError: boom"
    assert result["raw"] == {"first": {"items": 1}} and result["rows"][0]["value"] == "1 utt/s"
    start = time.perf_counter()
    result = gpu_check.run_part(ctx, gpu_check.Part("slow", 0.2, "", slow), 0.2, grace=0.0)
    assert result["status"] == "timeout" and time.perf_counter() - start < 2


def test_junit_and_verbose_log_parsing(tmp_path: Path) -> None:
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="t" name="a" time="1.5"><properties>'
        '<property name="diff" value="1e-3"/></properties></testcase>'
        '<testcase classname="t" name="b" time="0.1">'
        '<failure message="assert 2 &lt;= 1">x</failure></testcase>'
        '<testcase classname="t" name="c" time="0"><skipped message="needs a CUDA GPU"/></testcase>'
        "</testsuite></testsuites>"
    )
    cases = gpu_check.parse_junit(xml)
    assert [(c["name"], c["outcome"]) for c in cases] == [("a", "passed"), ("b", "failed"), ("c", "skipped")]
    assert cases[0]["properties"] == {"diff": "1e-3"} and cases[1]["message"] == "assert 2 <= 1"
    log = "tests/test_cuda.py::test_x[bf16] PASSED  [ 50%]\nnoise\ntests/test_cuda.py::test_y FAILED [100%]\n"
    outcomes = [(c["name"], c["outcome"]) for c in gpu_check.parse_verbose_log(log)]
    assert outcomes == [
        ("tests/test_cuda.py::test_x[bf16]", "passed"),
        ("tests/test_cuda.py::test_y", "failed"),
    ]


def test_carried_wheels_are_unpacked_when_a_module_is_missing(tmp_path: Path, monkeypatch) -> None:
    wheels = tmp_path / "whl"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "fakemod_gpu_check-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("fakemod_gpu_check/__init__.py", "VALUE = 42\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.setattr(gpu_check, "CARRIED_MODULES", ("json",))
    assert gpu_check.use_carried_wheels(wheels, tmp_path / "site") == []  # nothing missing: untouched
    monkeypatch.setattr(gpu_check, "CARRIED_MODULES", ("fakemod_gpu_check",))
    assert gpu_check.use_carried_wheels(wheels, tmp_path / "site") == [
        "fakemod_gpu_check-1.0-py3-none-any.whl"
    ]
    import fakemod_gpu_check

    assert fakemod_gpu_check.VALUE == 42 and sys.path[0] == str(tmp_path / "site")
    monkeypatch.delitem(sys.modules, "fakemod_gpu_check")


@no_cuda
def test_cuda_marked_tests_skip_cleanly_without_a_gpu() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "CUDA_TESTS_DEVICE"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]  # e.g. "22 skipped in 3.1s"
    assert re.fullmatch(r"=* ?\d+ skipped in [\d.]+s( \(.*\))? ?=*", summary), summary
